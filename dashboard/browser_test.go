package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/shoalgrid/shoal/dashboard"
	"github.com/shoalgrid/shoal/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

const (
	// browserTimeout bounds each wait on the page; the grid's own
	// timings (fast gossip) are well within it.
	browserTimeout = 30 * time.Second
	gridToken      = "dashboard-test-token"
	gridKey        = "MDEyMzQ1Njc4OWFiY2RlZg==" // 0123456789abcdef
)

// screenshotDir is where the browser test saves its screenshots:
// $SHOAL_SCREENSHOT_DIR, or shoal-dashboard-screenshots in the temporary
// directory (the same files overwritten each run).
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("SHOAL_SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "shoal-dashboard-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startBrowser starts Debian's headless Chromium, with a profile of its
// own and none of its calls home, and stops it when the test ends.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("SHOAL_REQUIRE_CHROMIUM") != "" {
			t.Fatal("SHOAL_REQUIRE_CHROMIUM is set but chromium is not on the PATH (apt-get install chromium)")
		}
		t.Skip("chromium is not on the PATH (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root has no user namespace sandbox here
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1500, 1100),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // kills chromium and waits for it
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	// The cancel button asks first; the test says yes.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return ctx
}

// run runs browser actions, bounded by browserTimeout.
func run(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression in the page, awaiting a promise.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("browser: %s: %v", expr, err)
	}
	return v
}

// waitPage waits until the JavaScript expression is true in the page.
func waitPage(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	testutil.WaitFor(t, browserTimeout, what, func() bool {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		return err == nil && ok
	})
}

// screenshot saves the whole page as name in the screenshot directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(screenshotDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// snapshot reads the dashboard's snapshot as a script would, with the
// token as a bearer.
func snapshot(t *testing.T, httpAddr string) dashboard.Snapshot {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+httpAddr+"/dashboard/api/snapshot", nil)
	req.Header.Set("Authorization", "Bearer "+gridToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("snapshot: %s", resp.Status)
	}
	var s dashboard.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDashboardInBrowser drives the dashboard of a secured grid of three
// node processes in headless Chromium while real jobs run: the login
// form refuses a browser without the token and lets one with it in, the
// page lists every member, a job's progress moves, a killed node turns
// dead, the job page lists failed items, and the cancel button stops a
// job on every node.
func TestDashboardInBrowser(t *testing.T) {
	ctx := startBrowser(t)
	tokenFile := writeFile(t, "token", gridToken+"\n")
	keyFile := writeFile(t, "gossip.key", gridKey+"\n")
	secure := []string{"--token-file", tokenFile, "--gossip-key-file", keyFile}
	a := testutil.StartNode(t, "a", "", secure...)
	b := testutil.StartNode(t, "b", a.Gossip, secure...)
	c := testutil.StartNode(t, "c", a.Gossip, secure...)
	nodes := map[string]*testutil.Node{"a": a, "b": b, "c": c}
	site := "http://" + a.HTTP

	// Without the token: the page sends the browser to the login form,
	// and the data is refused outright.
	run(t, ctx, chromedp.Navigate(site+"/"), chromedp.WaitVisible(chromedp.ID("login")))
	if url := eval[string](t, ctx, "location.pathname"); url != "/login" {
		t.Fatalf("without a session the page went to %s, not /login", url)
	}
	if status := eval[int](t, ctx, `fetch("/dashboard/api/snapshot").then(r => r.status)`); status != http.StatusUnauthorized {
		t.Fatalf("the snapshot without a session answered %d, want 401", status)
	}
	run(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), "not-the-token"),
		chromedp.Submit(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("login-problem")))
	screenshot(t, ctx, "login-refused.png")
	if problem := eval[string](t, ctx, `document.getElementById("login-problem").textContent`); !strings.Contains(problem, "refused") {
		t.Fatalf("a wrong token got %q", problem)
	}

	// With it: the grid, every member alive.
	run(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), gridToken),
		chromedp.Submit(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("members")))
	waitPage(t, ctx, "every member alive on the page",
		`["a","b","c"].every(n => document.querySelector('#members tr[data-name="'+n+'"]')?.dataset.state === "alive")`)

	// A detached job the test cancels, and an attached one with items
	// that time out.
	shoal := testutil.ShoalBinary(t)
	client := append([]string{"--seed", a.RPC}, secure[:2]...)
	// A cacheable job twice, the second from the grid cache.
	for range 2 {
		if _, stderr, code := testutil.Run(t, browserTimeout, nil, shoal, append([]string{"submit", "--range", "0:20000"}, append(client, "square")...)...); code != 0 {
			t.Fatalf("submit square exited %d: %s", code, stderr)
		}
	}
	waitPage(t, ctx, "the cache panel showing hits",
		`[...document.querySelectorAll('#cache tr[data-name] .hits')].some(td => parseFloat(td.textContent) > 0)`)

	// scripts/dashboard-screenshot.sh lets the grid run a while before
	// the screenshot the README shows, so that the load has a history.
	warmup, _ := time.ParseDuration(os.Getenv("SHOAL_SCREENSHOT_WARMUP"))
	items := writeFile(t, "items.jsonl", strings.Repeat("[20]\n", 4000+300*int(warmup.Seconds())))
	out, stderr, code := testutil.Run(t, browserTimeout, nil, shoal, append([]string{"submit", "--detach", "--input", items}, append(client, "sleep")...)...)
	if code != 0 {
		t.Fatalf("submit --detach exited %d: %s", code, stderr)
	}
	detached := strings.TrimSpace(out)
	// Items 200 to 239 sleep past their timeout.
	attached := testutil.Start(t, nil, shoal, append([]string{"submit", "--range", "0:240", "--timeout", "200ms", "--attempts", "1"}, append(client, "sleep")...)...)

	row := `document.querySelector('#jobs tr[data-id="` + detached + `"]')`
	waitPage(t, ctx, "the detached job listed running", row+`?.dataset.state === "running"`)
	first := eval[int](t, ctx, `Number(`+row+`.querySelector(".progress").dataset.done)`)
	waitPage(t, ctx, "the job's progress moving", fmt.Sprintf(`Number(%s.querySelector(".progress").dataset.done) > %d`, row, first))
	waitPage(t, ctx, "the attached job listed with its timeouts",
		`[...document.querySelectorAll('#jobs tr[data-state]')].some(r => r.textContent.includes("Timeout"))`)
	waitPage(t, ctx, "the functions panel counting sleep's calls",
		`Number(document.querySelector('#functions tr[data-name="sleep"] .calls')?.textContent) > 0`)
	if warmup > 0 {
		time.Sleep(warmup) // a picture's wait, not a condition: only with the variable set
	}
	screenshot(t, ctx, "dashboard.png")

	// A node killed mid-job turns dead on the page. Not a (the page's
	// node) and not the job's coordinator.
	var coordinator string
	for _, j := range snapshot(t, a.HTTP).Jobs {
		if j.ID == detached {
			coordinator = j.Coordinator
		}
	}
	victim := "c"
	if coordinator == "c" {
		victim = "b"
	}
	nodes[victim].Signal(syscall.SIGKILL)
	waitPage(t, ctx, victim+" dead on the page",
		`document.querySelector('#members tr[data-name="`+victim+`"]')?.dataset.state === "dead"`)
	screenshot(t, ctx, "node-dead.png")

	// The attached job's page lists its failed items.
	var attachedID string
	testutil.WaitFor(t, browserTimeout, "the attached job listed", func() bool {
		for _, j := range snapshot(t, a.HTTP).Jobs {
			if j.Mode == "attached" && j.Function == "sleep" { // not a square job that ran long enough to be listed
				attachedID = j.ID
			}
		}
		return attachedID != ""
	})
	run(t, ctx, chromedp.Navigate(site+"/jobs/"+attachedID))
	waitPage(t, ctx, "the job page listing timed-out items",
		`[...document.querySelectorAll('#failures tr[data-index]')].some(r => r.textContent.includes("Timeout"))`)
	screenshot(t, ctx, "job.png")
	if code := attached.Wait(2 * browserTimeout); code != 2 {
		t.Errorf("the attached job with timeouts exited %d, want 2 (some items failed)", code)
	}

	// A cancel from a page without the CSRF token is refused.
	run(t, ctx, chromedp.Navigate(site+"/"), chromedp.WaitVisible(chromedp.ID("jobs")))
	if status := eval[int](t, ctx, `fetch("/dashboard/api/jobs/`+detached+`/cancel", {method: "POST"}).then(r => r.status)`); status != http.StatusForbidden {
		t.Fatalf("a cancel without the CSRF token answered %d, want 403", status)
	}
	if s := jobState(t, a.HTTP, detached); s != "running" {
		t.Fatalf("the refused cancel left the job %s", s)
	}

	// The cancel button stops the job on every node.
	waitPage(t, ctx, "the cancel button", row+`?.querySelector("button.cancel") != null`)
	run(t, ctx, chromedp.Click(chromedp.CSS(`#jobs tr[data-id="`+detached+`"] button.cancel`)))
	waitPage(t, ctx, "the job canceled on the page", row+`?.dataset.state === "canceled"`)
	screenshot(t, ctx, "canceled.png")
	if s := jobState(t, a.HTTP, detached); s != "canceled" {
		t.Fatalf("after the cancel button the job is %s", s)
	}
	testutil.WaitFor(t, browserTimeout, "the live nodes idle", func() bool {
		for _, m := range snapshot(t, a.HTTP).Members {
			if m.State == "alive" && m.Running+m.Queued > 0 {
				return false
			}
		}
		return true
	})
}

// jobState returns the job's state as the grid lists it.
func jobState(t *testing.T, httpAddr, id string) string {
	t.Helper()
	for _, j := range snapshot(t, httpAddr).Jobs {
		if j.ID == id {
			return j.State
		}
	}
	t.Fatalf("job %s is not listed", id)
	return ""
}

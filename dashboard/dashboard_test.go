package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
)

const testToken = "let-me-in"

// fakeSource is a grid of two members and one job, in memory.
type fakeSource struct {
	mu       sync.Mutex
	canceled []string
	reads    int
}

func (f *fakeSource) Read(ctx context.Context) Reading {
	f.mu.Lock()
	f.reads++
	f.mu.Unlock()
	return Reading{
		Members: []grid.Member{{Name: "a", State: grid.StateAlive, Slots: 2, Running: 1}, {Name: "b", State: grid.StateDead, Slots: 2}},
		Stats:   map[string]grid.NodeStats{"a": {Name: "a", Slots: 2, Running: 1}},
		Jobs:    []grid.JobInfo{{ID: "j1", Function: "square", State: grid.JobRunning, Total: 10}},
	}
}

func (f *fakeSource) JobStatus(ctx context.Context, id string) (grid.JobInfo, error) {
	if id != "j1" {
		return grid.JobInfo{}, fmt.Errorf("%w: %s", ErrNoJob, id)
	}
	return grid.JobInfo{ID: "j1", State: grid.JobRunning, Failures: []grid.JobFailure{{Index: 3, Kind: "Timeout", Message: "slow"}}}, nil
}

func (f *fakeSource) CancelJob(ctx context.Context, id string) (grid.JobInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.canceled = append(f.canceled, id)
	return grid.JobInfo{ID: id, State: grid.JobCanceled}, nil
}

func (f *fakeSource) cancels() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.canceled...)
}

// serve starts the dashboard over a fake source behind a test server,
// with the token given ("" for an open grid).
func serve(t *testing.T, token string) (*httptest.Server, *fakeSource, *Dashboard) {
	t.Helper()
	src := &fakeSource{}
	d, err := New(Config{Source: src, Node: "a", Token: token,
		CheckToken: func(ctx context.Context, remote string, given []byte) error {
			if string(given) != token {
				return errors.New("wrong token")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(d)
	t.Cleanup(func() {
		d.Close()
		ts.Close()
	})
	return ts, src, d
}

// browser is an HTTP client that keeps cookies and follows no redirects.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func do(t *testing.T, c *http.Client, method, url string, body io.Reader, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var form = map[string]string{"Content-Type": "application/x-www-form-urlencoded"}

// login posts the token to the login form and returns the page's CSRF
// token once in.
func login(t *testing.T, ts *httptest.Server, c *http.Client) string {
	t.Helper()
	resp, _ := do(t, c, "POST", ts.URL+"/login", strings.NewReader("token="+testToken+"&next=/jobs/j1"), form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/jobs/j1" {
		t.Fatalf("login with the token: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	cookie := resp.Cookies()[0]
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Name != SessionCookie {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict", cookie)
	}
	resp, page := do(t, c, "GET", ts.URL+"/", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the page after login: %s", resp.Status)
	}
	m := regexp.MustCompile(`name="shoal-csrf" content="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the page carries no CSRF token:\n%s", page)
	}
	return m[1]
}

func TestWithATokenThePageNeedsALogin(t *testing.T) {
	ts, _, _ := serve(t, testToken)
	c := browser(t)

	resp, _ := do(t, c, "GET", ts.URL+"/jobs/j1", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=/jobs/j1" {
		t.Fatalf("the page without a session: %s to %q, want the login form", resp.Status, resp.Header.Get("Location"))
	}
	for _, path := range []string{"/dashboard/events", "/dashboard/api/snapshot", "/dashboard/api/jobs/j1"} {
		if resp, _ := do(t, c, "GET", ts.URL+path, nil, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without a session: %s, want 401", path, resp.Status)
		}
	}
	// The form and its assets are open; a wrong token is refused.
	if resp, body := do(t, c, "GET", ts.URL+"/login", nil, nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="token"`) {
		t.Errorf("the login form: %s\n%s", resp.Status, body)
	}
	if resp, _ := do(t, c, "GET", ts.URL+"/dashboard/static/app.js", nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("an asset: %s", resp.Status)
	}
	resp, body := do(t, c, "POST", ts.URL+"/login", strings.NewReader("token=guess"), form)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "refused") || len(resp.Cookies()) != 0 {
		t.Errorf("a wrong token: %s, cookies %v\n%s", resp.Status, resp.Cookies(), body)
	}
	// A login posted from another site is refused even with the token.
	resp, _ = do(t, c, "POST", ts.URL+"/login", strings.NewReader("token="+testToken), map[string]string{
		"Content-Type": form["Content-Type"], "Origin": "http://evil.example"})
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("a cross-site login: %s", resp.Status)
	}
	// next never leads off the site: browsers drop tabs and newlines, and
	// read a backslash as a slash.
	for _, next := range []string{"//evil.example/", "/%09/evil.example/", "/%0a/evil.example", "/%5Cevil.example", "https:evil.example", "/jobs/../..//evil.example", "/%2F%2Fevil.example"} {
		resp, _ = do(t, c, "POST", ts.URL+"/login", strings.NewReader("token="+testToken+"&next="+next), form)
		if loc := resp.Header.Get("Location"); loc != "/" {
			t.Errorf("login with next=%s leads to %q", next, loc)
		}
	}
	if resp, _ := do(t, c, "GET", ts.URL+"/login", nil, nil); resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("the login form may be framed: %v", resp.Header)
	}

	login(t, ts, c)
	resp, body = do(t, c, "GET", ts.URL+"/dashboard/api/snapshot", nil, nil)
	var s Snapshot
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil || len(s.Members) != 2 {
		t.Fatalf("the snapshot with a session: %s\n%s", resp.Status, body)
	}
	// A bearer token works without a session, as on the node's other paths.
	if resp, _ := do(t, http.DefaultClient, "GET", ts.URL+"/dashboard/api/snapshot", nil, map[string]string{"Authorization": "Bearer " + testToken}); resp.StatusCode != http.StatusOK {
		t.Errorf("the snapshot with a bearer token: %s", resp.Status)
	}
	// Logging out ends it.
	do(t, c, "POST", ts.URL+"/logout", nil, nil)
	if resp, _ := do(t, c, "GET", ts.URL+"/dashboard/api/snapshot", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the snapshot after logout: %s", resp.Status)
	}
}

func TestSessionCookies(t *testing.T) {
	s := newSessions(testToken)
	now := time.Now()
	v := s.issue(now.Add(time.Hour))
	if !s.valid(v, now) {
		t.Fatal("a fresh session is not valid")
	}
	if s.valid(v, now.Add(2*time.Hour)) {
		t.Error("an expired session is valid")
	}
	exp, mac, _ := strings.Cut(v, ".")
	if s.valid(fmt.Sprint(now.Add(48*time.Hour).Unix())+"."+mac, now) {
		t.Error("a session whose expiry was pushed back is valid")
	}
	if newSessions("another-token").valid(v, now) {
		t.Error("a session survives a change of token")
	}
	if !newSessions(testToken).valid(exp+"."+mac, now) {
		t.Error("a session is not valid on another node of the same grid")
	}
}

func TestCancelNeedsThePagesCSRFToken(t *testing.T) {
	ts, src, _ := serve(t, testToken)
	c := browser(t)
	csrf := login(t, ts, c)
	cancel := ts.URL + "/dashboard/api/jobs/j1/cancel"
	for _, tc := range []struct {
		name   string
		header map[string]string
	}{
		{"no token", nil},
		{"a wrong token", map[string]string{CSRFHeader: "x" + csrf}},
		{"another site's page", map[string]string{CSRFHeader: csrf, "Sec-Fetch-Site": "cross-site"}},
		{"another origin", map[string]string{CSRFHeader: csrf, "Origin": "http://evil.example"}},
	} {
		if resp, _ := do(t, c, "POST", cancel, nil, tc.header); resp.StatusCode != http.StatusForbidden {
			t.Errorf("a cancel with %s: %s, want 403", tc.name, resp.Status)
		}
	}
	if got := src.cancels(); len(got) != 0 {
		t.Fatalf("refused cancels reached the grid: %v", got)
	}
	if resp, _ := do(t, c, "GET", cancel, nil, map[string]string{CSRFHeader: csrf}); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("a cancel by GET: %s", resp.Status)
	}
	resp, body := do(t, c, "POST", cancel, nil, map[string]string{CSRFHeader: csrf, "Origin": ts.URL, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"canceled"`) {
		t.Fatalf("the page's cancel: %s\n%s", resp.Status, body)
	}
	// A script with the bearer token has no ambient credential to abuse.
	if resp, _ := do(t, http.DefaultClient, "POST", cancel, nil, map[string]string{"Authorization": "Bearer " + testToken}); resp.StatusCode != http.StatusOK {
		t.Errorf("a cancel with the bearer token: %s", resp.Status)
	}
	if got := src.cancels(); len(got) != 2 {
		t.Errorf("cancels that reached the grid: %v, want 2", got)
	}
	if resp, _ := do(t, c, "GET", ts.URL+"/dashboard/api/jobs/nope", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown job's status: %s, want 404", resp.Status)
	}
}

func TestOpenGridStillGuardsCancel(t *testing.T) {
	ts, src, _ := serve(t, "")
	c := browser(t)
	resp, page := do(t, c, "GET", ts.URL+"/", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the open page: %s", resp.Status)
	}
	csrf := regexp.MustCompile(`name="shoal-csrf" content="([^"]+)"`).FindStringSubmatch(page)[1]
	if resp, _ := do(t, c, "POST", ts.URL+"/dashboard/api/jobs/j1/cancel", nil, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cancel without the CSRF token on an open grid: %s", resp.Status)
	}
	if resp, _ := do(t, c, "POST", ts.URL+"/dashboard/api/jobs/j1/cancel", nil, map[string]string{CSRFHeader: csrf}); resp.StatusCode != http.StatusOK {
		t.Errorf("the page's cancel on an open grid: %s", resp.Status)
	}
	if got := src.cancels(); len(got) != 1 {
		t.Errorf("cancels: %v", got)
	}
}

// TestEventsStreamSnapshotsUntilClosed reads the stream as EventSource
// does: a snapshot at once, another after the interval, and the end when
// the dashboard closes, with the grid read once however many watch.
func TestEventsStreamSnapshotsUntilClosed(t *testing.T) {
	ts, src, d := serve(t, "")
	streams := make([]*bufio.Reader, 3)
	for i := range streams {
		resp, err := http.Get(ts.URL + "/dashboard/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("content type %q", ct)
		}
		streams[i] = bufio.NewReader(resp.Body)
	}
	next := func(r *bufio.Reader) Snapshot {
		t.Helper()
		var s Snapshot
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				if err := json.Unmarshal([]byte(data), &s); err != nil {
					t.Fatal(err)
				}
				return s
			}
		}
	}
	for _, r := range streams {
		if s := next(r); len(s.Members) != 2 || len(s.Jobs) != 1 || s.Node != "a" {
			t.Fatalf("first snapshot: %+v", s)
		}
	}
	for _, r := range streams {
		next(r)
	}
	src.mu.Lock()
	reads := src.reads
	src.mu.Unlock()
	if reads > 3 {
		t.Errorf("three watchers over two intervals read the grid %d times", reads)
	}
	d.Close()
	for _, r := range streams {
		if _, err := io.ReadAll(r); err != nil {
			t.Errorf("the stream did not end cleanly: %v", err)
		}
	}
}

func TestBuildTakesRatesOverTheWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var before, after grid.Histogram
	before.Add(grid.BucketIndex(time.Millisecond), 100)
	after.Add(grid.BucketIndex(time.Millisecond), 100)
	after.Add(grid.BucketIndex(40*time.Millisecond), 50)
	stats := func(calls, errs uint64, h grid.Histogram, hits, misses uint64, started int64) grid.NodeStats {
		return grid.NodeStats{StartedMs: started, Slots: 2,
			Functions: []grid.FunctionStats{{Name: "f", Calls: calls, Errors: errs, Latency: h}},
			Cache:     grid.CacheInfo{Hits: hits, Misses: misses}}
	}
	earlier := []reading{{at: t0, stats: map[string]grid.NodeStats{"a": stats(100, 0, before, 10, 90, 1), "b": stats(7, 0, before, 0, 0, 1)}, done: map[string]int64{"j": 100}}}
	r := Reading{
		Members: []grid.Member{{Name: "a", State: grid.StateAlive, Slots: 2}, {Name: "b", State: grid.StateAlive, Slots: 2}},
		// b restarted: its counters start again and count whole.
		Stats: map[string]grid.NodeStats{"a": stats(150, 5, after, 40, 100, 1), "b": stats(3, 0, grid.Histogram{}, 0, 0, 2)},
		Jobs:  []grid.JobInfo{{ID: "j", State: grid.JobRunning, Total: 1100, Done: 300, ItemsPerSecond: 1}},
	}
	s := build("a", t0.Add(10*time.Second), r, earlier, nil)
	if s.WindowSeconds != 10 {
		t.Fatalf("window %v", s.WindowSeconds)
	}
	f := s.Functions[0]
	if f.CallsPerSecond != 5 || f.ErrorsPerSecond != 0.5 || f.Calls != 153 {
		t.Errorf("function rates: %+v", f)
	}
	if f.P50Ms < 30 || f.P50Ms > 50 {
		t.Errorf("p50 %vms: the window's calls took 40ms", f.P50Ms)
	}
	if f.PerNode["a"] != 5 || f.PerNode["b"] != 0 {
		t.Errorf("per node: %v", f.PerNode)
	}
	j := s.Jobs[0]
	if j.RecentPerSecond != 20 || j.ETASeconds != 40 {
		t.Errorf("job: %v/s, ETA %vs; want 20/s and 40s", j.RecentPerSecond, j.ETASeconds)
	}
	if hit := s.Cache[0].HitRatio; hit != 0.75 {
		t.Errorf("hit ratio over the window %v, want 30/40", hit)
	}
	// Without an earlier reading: no rates, the job's average speed.
	s = build("a", t0, r, nil, nil)
	if s.Functions[0].CallsPerSecond != 0 || s.Functions[0].P50Ms != -1 || s.Jobs[0].RecentPerSecond != 1 {
		t.Errorf("first snapshot: %+v %+v", s.Functions[0], s.Jobs[0])
	}
}

func TestLoadHistory(t *testing.T) {
	var h loadHistory
	t0 := time.Unix(1000, 0)
	a := grid.Member{Name: "a", State: grid.StateAlive, Slots: 2, Running: 1}
	h.record(t0, []grid.Member{a})
	h.record(t0.Add(300*time.Millisecond), []grid.Member{a}) // the same second
	a.Running = 2
	h.record(t0.Add(3*time.Second), []grid.Member{a, {Name: "b", State: grid.StateDead, Slots: 2}})
	s := h.byName["a"]
	if len(s) != HistoryLength {
		t.Fatalf("history of %d samples", len(s))
	}
	if got := s[HistoryLength-4:]; got[0] != 0.5 || got[1] != 1 || got[2] != 1 || got[3] != 1 {
		t.Errorf("a's last samples %v: a missed second repeats the sample after it", got)
	}
	if b := h.byName["b"]; b[HistoryLength-1] != -1 {
		t.Errorf("a dead member's load %v, want unknown", b[HistoryLength-1])
	}
	h.record(t0.Add(4*time.Second), []grid.Member{a})
	if _, ok := h.byName["b"]; ok {
		t.Error("a forgotten member with no known load keeps a history")
	}
}

func TestBuildListsRunningJobsAndTheLastEnded(t *testing.T) {
	var r Reading
	for i := range MaxEndedJobs + 30 {
		r.Jobs = append(r.Jobs, grid.JobInfo{ID: fmt.Sprint("ended-", i), State: grid.JobDone, StartedMs: int64(i)})
	}
	r.Jobs = append(r.Jobs, grid.JobInfo{ID: "old-but-running", State: grid.JobRunning, StartedMs: -1})
	s := build("a", time.Now(), r, nil, nil)
	if len(s.Jobs) != MaxEndedJobs+1 || s.OlderJobs != 30 {
		t.Fatalf("%d jobs listed, %d left out; want %d and 30", len(s.Jobs), s.OlderJobs, MaxEndedJobs+1)
	}
	if s.Jobs[0].ID != "old-but-running" || s.Jobs[1].ID != fmt.Sprint("ended-", MaxEndedJobs+29) {
		t.Errorf("order: %s, %s; want the running job, then the newest", s.Jobs[0].ID, s.Jobs[1].ID)
	}
}

func TestOpenGridAnswersOnlyItsOwnNames(t *testing.T) {
	src := &fakeSource{}
	d, err := New(Config{Source: src, Node: "a", Hosts: []string{"node-a.example"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for host, want := range map[string]int{
		"127.0.0.1:8787":         http.StatusOK,
		"[::1]:8787":             http.StatusOK,
		"localhost:8787":         http.StatusOK,
		"node-a.example:8787":    http.StatusOK,
		"NODE-A.example.":        http.StatusOK,
		"evil.example:8787":      http.StatusMisdirectedRequest, // a rebound name
		"127.0.0.1.evil.example": http.StatusMisdirectedRequest,
	} {
		r := httptest.NewRequest("GET", "/dashboard/api/snapshot", nil)
		r.Host = host
		w := httptest.NewRecorder()
		d.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %s: %d, want %d", host, w.Code, want)
		}
	}
	// With a token a rebound page has no session: every name may ask.
	ts, _, _ := serve(t, testToken)
	req, _ := http.NewRequest("GET", ts.URL+"/login", nil)
	req.Host = "evil.example"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("the login form by another name with a token: %v %v", resp.Status, err)
	}
}

func TestOnlyTheScriptAndStyleAreServed(t *testing.T) {
	ts, _, _ := serve(t, "")
	for path, want := range map[string]int{
		"/dashboard/static/app.js":     http.StatusOK,
		"/dashboard/static/style.css":  http.StatusOK,
		"/dashboard/static/":           http.StatusNotFound,
		"/dashboard/static/index.html": http.StatusNotFound,
		"/dashboard/static/login.html": http.StatusNotFound,
	} {
		resp, _ := do(t, http.DefaultClient, "GET", ts.URL+path, nil, nil)
		if resp.StatusCode != want {
			t.Errorf("%s: %s, want %d", path, resp.Status, want)
		}
	}
}

func TestStreamsAreBoundedAndEndWithTheirSession(t *testing.T) {
	src := &fakeSource{}
	d, err := New(Config{Source: src, Node: "a", Token: testToken, MaxStreams: 2, Interval: 100 * time.Millisecond,
		CheckToken: func(context.Context, string, []byte) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(d)
	defer ts.Close()
	defer d.Close()
	// A session about to expire: its stream ends with it.
	cookie := &http.Cookie{Name: SessionCookie, Value: d.sessions.issue(time.Now().Add(1500 * time.Millisecond))}
	open := func() *http.Response {
		req, _ := http.NewRequest("GET", ts.URL+"/dashboard/events", nil)
		req.AddCookie(cookie)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	first, second := open(), open()
	defer second.Body.Close()
	if third := open(); third.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a third stream with a bound of two: %s", third.Status)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, first.Body)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the stream of an expired session ended badly: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived its session by 8s")
	}
}

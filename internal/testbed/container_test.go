//go:build linux

package testbed_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testbed"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// podmanRun are the options every test container needs here. runc, not
// Debian's default crun: crun refuses to start on a machine whose cgroup
// v2 hierarchy holds controllers beside v1 ones (a hybrid setup, as these
// test machines have). Limits at or below the caller's: podman's defaults
// raise them, which a root without CAP_SYS_RESOURCE (a sandbox) may not.
var podmanRun = []string{"run", "--pull=never", "--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"}

// needPodman skips the test without podman and runc, or fails it when
// SHOAL_REQUIRE_PODMAN is set, as CI sets it.
func needPodman(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("SHOAL_REQUIRE_PODMAN") != "" {
				t.Fatalf("%s not found, and SHOAL_REQUIRE_PODMAN is set", tool)
			}
			t.Skipf("%s not found (Debian package %s)", tool, tool)
		}
	}
}

func podman(t *testing.T, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("podman", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// buildImage builds the image with scripts/image.sh under a tag of this
// test, removed when the test ends.
func buildImage(t *testing.T) string {
	t.Helper()
	tag := fmt.Sprintf("localhost/shoal-test:%d-%s", os.Getpid(), strings.ToLower(t.Name()))
	cmd := exec.Command("./scripts/image.sh", tag)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "SHOAL_IMAGE_TOOL=podman")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", tag).Run() })
	return tag
}

// The image holds the static binary and nothing else, runs it as an
// unprivileged user, and declares the node's ports.
func TestImageHoldsOnlyTheStaticBinary(t *testing.T) {
	needPodman(t)
	t.Parallel()
	tag := buildImage(t)

	var inspected []struct {
		Config struct {
			User         string
			Entrypoint   []string
			Cmd          []string
			Env          []string
			ExposedPorts map[string]struct{}
		}
	}
	if err := json.Unmarshal([]byte(podman(t, "image", "inspect", tag)), &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("podman image inspect: %v", err)
	}
	c := inspected[0].Config
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/shoal"}) || !slices.Equal(c.Cmd, []string{"node"}) {
		t.Errorf("entrypoint %q, cmd %q; want [/shoal] [node]", c.Entrypoint, c.Cmd)
	}
	for _, port := range []string{"7946/tcp", "7946/udp", "7373/tcp", "8787/tcp"} {
		if _, ok := c.ExposedPorts[port]; !ok {
			t.Errorf("port %s not exposed: %v", port, c.ExposedPorts)
		}
	}
	for _, env := range []string{"SHOAL_GOSSIP=0.0.0.0:7946", "SHOAL_RPC=0.0.0.0:7373", "SHOAL_HTTP=0.0.0.0:8787", "SHOAL_DATA_DIR=/data"} {
		if !slices.Contains(c.Env, env) {
			t.Errorf("%s not in the image's environment %q", env, c.Env)
		}
	}

	// The OCI layout: two layers, holding /shoal, a static ELF executable
	// (no interpreter, so no libc is needed), and an empty /data.
	dir := filepath.Join(t.TempDir(), "oci")
	podman(t, "save", "--format", "oci-dir", "-o", dir, tag)
	var index struct{ Manifests []struct{ Digest string } }
	readJSON(t, filepath.Join(dir, "index.json"), &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json lists %d manifests", len(index.Manifests))
	}
	var manifest struct {
		Layers []struct{ Digest, MediaType string }
	}
	readJSON(t, blob(dir, index.Manifests[0].Digest), &manifest)
	if len(manifest.Layers) != 2 {
		t.Fatalf("%d layers, want 2 (/shoal, /data): %+v", len(manifest.Layers), manifest.Layers)
	}
	var names []string
	var binary []byte
	for _, l := range manifest.Layers {
		f, err := os.Open(blob(dir, l.Digest))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var layer io.Reader = f
		if strings.HasSuffix(l.MediaType, "+gzip") {
			if layer, err = gzip.NewReader(f); err != nil {
				t.Fatal(err)
			}
		}
		tr := tar.NewReader(layer)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("layer %s (%s): %v", l.Digest, l.MediaType, err)
			}
			names = append(names, h.Name)
			if h.Name == "data/" && (h.Typeflag != tar.TypeDir || h.Uid != 65532) {
				t.Errorf("data/ is not a directory of the node's user: type %c, uid %d", h.Typeflag, h.Uid)
			}
			if h.Name == "shoal" {
				if h.Mode&0o111 == 0 {
					t.Errorf("shoal is not executable: mode %o", h.Mode)
				}
				if binary, err = io.ReadAll(tr); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"data/", "shoal"}) {
		t.Fatalf("the layer holds %q, want only shoal and an empty data/", names)
	}
	exe, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		t.Fatalf("shoal is not an ELF file: %v", err)
	}
	for _, p := range exe.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("shoal is dynamically linked: it names an interpreter, which the image does not have")
		}
	}
}

func blob(dir, digest string) string {
	algo, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(dir, "blobs", algo, hex)
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Three containers of the image, each on a host of its own, form a grid
// with gossip key and token, advertise their hosts' addresses without
// being told them, run a job for a client on a fourth host, and one
// stopped (SIGTERM) leaves gracefully and exits 0.
func TestContainersFormAGrid(t *testing.T) {
	needPodman(t)
	t.Parallel()
	tag := buildImage(t)
	bed := testbed.New(t, 4)
	bin := testutil.PlainShoalBinary(t)

	secrets := t.TempDir()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	for name, content := range map[string]string{"gossip.key": base64.StdEncoding.EncodeToString(key), "token": "container-test-token"} {
		path := filepath.Join(secrets, name)
		if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, 65532, 65532); err != nil { // the image's user
			t.Fatal(err)
		}
	}
	if err := os.Chmod(secrets, 0o755); err != nil {
		t.Fatal(err)
	}

	var names []string
	t.Cleanup(func() {
		for _, name := range names {
			if t.Failed() {
				out, _ := exec.Command("podman", "logs", name).CombinedOutput()
				t.Logf("podman logs %s:\n%s", name, out)
			}
			exec.Command("podman", "rm", "-f", "-t", "0", name).Run()
		}
	})
	for i, h := range bed.Hosts[:3] {
		name := fmt.Sprintf("shoal-test-%d-c%d", os.Getpid(), i+1)
		names = append(names, name)
		args := append(slices.Clone(podmanRun), "-d", "--name", name, "--network", "ns:/run/netns/"+h.NS,
			"-v", secrets+":/etc/shoal:ro", tag,
			"node", "--name", fmt.Sprintf("c%d", i+1), "--join", bed.Hosts[0].IP+":7946",
			"--gossip-key-file", "/etc/shoal/gossip.key", "--token-file", "/etc/shoal/token", "--drain-timeout", "5s")
		podman(t, args...)
	}

	client := bed.Hosts[3]
	access := []string{"--seed", bed.Hosts[1].IP + ":7373", "--token-file", filepath.Join(secrets, "token"), "--insecure"}
	deadline := time.Now().Add(time.Minute)
	var members []grid.Member
	for {
		out, _, code := client.Run(30*time.Second, bin, append([]string{"members", "--json"}, access...)...)
		members = nil
		if code == 0 && json.Unmarshal([]byte(out), &members) == nil && len(members) == 3 &&
			!slices.ContainsFunc(members, func(m grid.Member) bool { return m.State != grid.StateAlive }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the containers did not form a grid of 3 within a minute: %+v", members)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, m := range members {
		if want := bed.Hosts[i].IP + ":7373"; m.RPC != want {
			t.Errorf("%s advertises %s, want its host's %s", m.Name, m.RPC, want)
		}
	}

	const items = 20_000
	out, stderr, code := client.Run(2*time.Minute, bin, append([]string{"submit", "--range", "0:" + strconv.Itoa(items), "square"}, access...)...)
	if code != 0 {
		t.Fatalf("shoal submit exited %d:\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	expectInOrder(t, lines, items, func(i int) string { return strconv.Itoa(i * i) })

	podman(t, "stop", "-t", "20", names[2])
	if got := strings.TrimSpace(podman(t, "inspect", "--format", "{{.State.ExitCode}}", names[2])); got != "0" {
		t.Errorf("the stopped container exited %s, want 0 (a drained leave)", got)
	}
	out, _, _ = client.Run(30*time.Second, bin, append([]string{"members", "--json"}, access...)...)
	if err := json.Unmarshal([]byte(out), &members); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(members, func(m grid.Member) bool { return m.Name == "c3" }); i < 0 || members[i].State != grid.StateLeft {
		t.Errorf("after podman stop, the grid lists c3 as %+v, want left", members)
	}
}

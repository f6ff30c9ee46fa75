// Package dashboard serves a node's live web dashboard: the grid's
// members with their load history, its jobs, its functions' calls and
// latencies, and its cache, pushed to the browser once a second by
// server-sent events. Its assets are embedded; it fetches nothing from
// elsewhere.
//
// It reads the grid through a Source (a node is one) and follows the
// node's security: with a token, a browser logs in with a form that
// sets a signed cookie, and the one action it offers, canceling a job,
// also needs the page's CSRF token and a same-origin request.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/grid"
)

// Source is the grid the dashboard shows.
type Source interface {
	// Read reads the grid now. It is called at most once per Interval,
	// and only while someone watches.
	Read(ctx context.Context) Reading
	// JobStatus returns a job's state from its coordinator, with its
	// per-node counts and failed items.
	JobStatus(ctx context.Context, id string) (grid.JobInfo, error)
	// CancelJob cancels a job wherever it runs.
	CancelJob(ctx context.Context, id string) (grid.JobInfo, error)
}

// ErrNoJob is what a Source returns, wrapped, for a job the grid does not
// list.
var ErrNoJob = errors.New("no such job in the grid")

// Config configures a Dashboard.
type Config struct {
	Source Source
	// Node names the node serving the page.
	Node string
	// Token is the grid's token; "" for a grid without one, whose
	// dashboard is open to whoever reaches the port.
	Token string
	// CheckToken checks a token a request presents, under the limits on
	// guessing of the node's other doors. Required with Token.
	CheckToken func(ctx context.Context, remote string, token []byte) error
	// Interval is how often the page is updated. Default: 1s.
	Interval time.Duration
	// ReadTimeout bounds one Read. Default: 3s.
	ReadTimeout time.Duration
	// Hosts are names the node is reached by (its advertised host, the
	// machine's name), which a grid without a token accepts in a
	// request's Host beside IP addresses and localhost.
	Hosts []string
	// MaxStreams bounds the event streams open at once. Default: 64.
	MaxStreams int
}

// streamWriteTimeout bounds writing one event: a browser that stops
// reading loses its stream instead of holding a goroutine and a snapshot.
const streamWriteTimeout = 10 * time.Second

//go:embed assets
var assets embed.FS

// Dashboard is the handler of a node's dashboard. Close it before
// shutting down the HTTP server, so that event streams end.
type Dashboard struct {
	cfg      Config
	sessions sessions
	pages    *template.Template
	static   http.Handler
	mux      *http.ServeMux

	closing   chan struct{}
	closeOnce sync.Once
	streams   chan struct{} // a token per open event stream

	histMu  sync.Mutex
	history loadHistory

	snapMu   sync.Mutex // one Read at a time
	snapJSON []byte     // the last snapshot, encoded
	snapAt   time.Time
	readings []reading // the last Window's readings, oldest first
}

// New returns a dashboard over cfg.Source.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Source == nil {
		return nil, errors.New("dashboard: no source")
	}
	if cfg.Token != "" && cfg.CheckToken == nil {
		return nil, errors.New("dashboard: a token needs CheckToken")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 3 * time.Second
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 64
	}
	pages, err := template.ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, err
	}
	static, _ := fs.Sub(assets, "assets")
	d := &Dashboard{cfg: cfg, sessions: newSessions(cfg.Token), pages: pages,
		static:  http.StripPrefix("/dashboard/static/", http.FileServer(http.FS(static))),
		closing: make(chan struct{}), streams: make(chan struct{}, cfg.MaxStreams)}
	d.mux = http.NewServeMux()
	d.mux.HandleFunc("GET /{$}", d.page)
	d.mux.HandleFunc("GET /jobs/{id}", d.page)
	d.mux.HandleFunc("/login", d.login)
	d.mux.HandleFunc("POST /logout", d.logout)
	d.mux.HandleFunc("GET /dashboard/static/", d.asset)
	d.mux.HandleFunc("GET /dashboard/events", d.events)
	d.mux.HandleFunc("GET /dashboard/api/snapshot", d.snapshotJSON)
	d.mux.HandleFunc("GET /dashboard/api/jobs/{id}", d.jobJSON)
	d.mux.HandleFunc("POST /dashboard/api/jobs/{id}/cancel", d.cancel)
	return d, nil
}

// Guards reports whether the dashboard checks a request for path itself:
// its page sends a browser without a session to the login form, and its
// form and assets are open. A node guards its other paths.
func Guards(path string) bool {
	return path == "/" || path == "/login" || path == "/logout" ||
		strings.HasPrefix(path, "/jobs/") || strings.HasPrefix(path, "/dashboard/")
}

// ServeHTTP serves the dashboard's paths: / and /jobs/ID (the page),
// /login, /logout, /dashboard/static/ (assets), /dashboard/events (the
// stream) and /dashboard/api/ (JSON).
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !d.hostAllowed(r) {
		http.Error(w, "this grid has no token, so its dashboard answers only requests addressed to an IP address, localhost or the node's own names (against DNS rebinding); give the grid a token to reach it by other names", http.StatusMisdirectedRequest)
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	d.mux.ServeHTTP(w, r)
}

// pageHeaders are the headers of an HTML page: never cached, its own
// files only, never in a frame.
func pageHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "same-origin")
}

// Close ends the event streams; the dashboard serves no more of them.
func (d *Dashboard) Close() {
	d.closeOnce.Do(func() { close(d.closing) })
}

// RecordLoad adds the members' loads at now to their history. A node
// calls it once a second, watched or not, so that the page opens on the
// last minutes.
func (d *Dashboard) RecordLoad(now time.Time, members []grid.Member) {
	d.histMu.Lock()
	defer d.histMu.Unlock()
	d.history.record(now, members)
}

func (d *Dashboard) historyCopy() map[string][]float64 {
	d.histMu.Lock()
	defer d.histMu.Unlock()
	out := make(map[string][]float64, len(d.history.byName))
	for name, s := range d.history.byName {
		out[name] = append([]float64(nil), s...)
	}
	return out
}

// current returns the snapshot of the grid, read again when the last is
// older than the interval: however many watch, the grid is read once.
func (d *Dashboard) current(ctx context.Context) []byte {
	d.snapMu.Lock()
	defer d.snapMu.Unlock()
	now := time.Now()
	if d.snapJSON != nil && now.Sub(d.snapAt) < d.cfg.Interval*9/10 {
		return d.snapJSON
	}
	// The reading is everyone's: the browser that asked may go.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ReadTimeout)
	r := d.cfg.Source.Read(ctx)
	cancel()
	now = time.Now()
	snap := build(d.cfg.Node, now, r, d.readings, d.historyCopy())
	b, err := json.Marshal(snap)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": err.Error()})
	}
	rd := reading{at: now, stats: r.Stats, done: make(map[string]int64, len(r.Jobs))}
	for _, j := range r.Jobs {
		rd.done[j.ID] = j.Done
	}
	d.readings = append(d.readings, rd)
	for len(d.readings) > 0 && now.Sub(d.readings[0].at) > Window+2*time.Second {
		d.readings = d.readings[1:]
	}
	d.snapJSON, d.snapAt = b, now
	return b
}

// page serves the dashboard's page, or sends a browser without a session
// to the login form.
func (d *Dashboard) page(w http.ResponseWriter, r *http.Request) {
	if d.accessOf(r) == denied {
		http.Redirect(w, r, "/login?next="+r.URL.EscapedPath(), http.StatusSeeOther)
		return
	}
	pageHeaders(w)
	d.pages.ExecuteTemplate(w, "index.html", map[string]any{
		"Node": d.cfg.Node, "CSRF": d.csrfFor(r), "Secured": d.cfg.Token != "",
	})
}

// asset serves the page's script and style; the page templates and the
// directory are not for serving.
func (d *Dashboard) asset(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, ".js") && !strings.HasSuffix(r.URL.Path, ".css") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	d.static.ServeHTTP(w, r)
}

// authorized answers a request without access with 401 and reports
// whether it had access.
func (d *Dashboard) authorized(w http.ResponseWriter, r *http.Request) (access, bool) {
	a := d.accessOf(r)
	if a == denied {
		w.Header().Set("WWW-Authenticate", `Bearer realm="shoal"`)
		http.Error(w, "log in at /login, or send the grid's token as: Authorization: Bearer <token>", http.StatusUnauthorized)
		return a, false
	}
	return a, true
}

// events streams a snapshot every interval as server-sent events, until
// the browser goes or the dashboard closes.
func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	a, ok := d.authorized(w, r)
	if !ok {
		return
	}
	select {
	case d.streams <- struct{}{}:
		defer func() { <-d.streams }()
	default:
		http.Error(w, fmt.Sprintf("%d dashboards are open on this node, its most; close one, or open another node's", cap(d.streams)), http.StatusServiceUnavailable)
		return
	}
	session, _ := d.sessionOf(r)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		if a == bySession && !d.sessions.valid(session, time.Now()) {
			return // the login expired: the page goes back to the form
		}
		b := d.current(r.Context())
		// The server's write timeout is for answers, not for a stream:
		// each event has its own.
		rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write([]byte("event: snapshot\ndata: ")); err != nil {
			return
		}
		w.Write(b)
		w.Write([]byte("\n\n"))
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-d.closing:
			return
		case <-t.C:
		}
	}
}

func (d *Dashboard) snapshotJSON(w http.ResponseWriter, r *http.Request) {
	if _, ok := d.authorized(w, r); !ok {
		return
	}
	b := d.current(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (d *Dashboard) jobJSON(w http.ResponseWriter, r *http.Request) {
	if _, ok := d.authorized(w, r); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d.cfg.ReadTimeout)
	defer cancel()
	info, err := d.cfg.Source.JobStatus(ctx, r.PathValue("id"))
	writeJob(w, info, err)
}

// cancel cancels a job: the dashboard's one action.
func (d *Dashboard) cancel(w http.ResponseWriter, r *http.Request) {
	a, ok := d.authorized(w, r)
	if !ok {
		return
	}
	if !d.checkCSRF(r, a) {
		http.Error(w, "refused: a request that changes state must come from the dashboard's own page, with its "+CSRFHeader+" header", http.StatusForbidden)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d.cfg.ReadTimeout)
	defer cancel()
	info, err := d.cfg.Source.CancelJob(ctx, r.PathValue("id"))
	writeJob(w, info, err)
}

func writeJob(w http.ResponseWriter, info grid.JobInfo, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		status := http.StatusBadGateway
		if errors.Is(err, ErrNoJob) {
			status = http.StatusNotFound
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(info)
}

package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// SessionCookie is the cookie the login form sets.
const SessionCookie = "shoal_session"

// CSRFHeader carries the page's CSRF token on requests that change
// state; a cross-site page cannot read the token, so cannot send it.
const CSRFHeader = "X-Shoal-CSRF"

// SessionLifetime is how long a login lasts.
const SessionLifetime = 12 * time.Hour

// sessions signs and checks session cookies and CSRF tokens. With a
// token, the key comes from it: every node of a grid accepts the others'
// sessions (a browser sends a host's cookies to every port), a node
// restarted keeps them, and a new token ends them all. Without one it is
// random, and serves CSRF tokens only.
type sessions struct {
	key []byte
}

func newSessions(token string) sessions {
	if token == "" {
		key := make([]byte, 32)
		rand.Read(key)
		return sessions{key: key}
	}
	sum := sha256.Sum256([]byte("shoal dashboard sessions\x00" + token))
	return sessions{key: sum[:]}
}

func (s sessions) sign(parts ...string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(strings.Join(parts, "\x00")))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// issue returns a new session's cookie value, valid until expires.
func (s sessions) issue(expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return exp + "." + s.sign("session", exp)
}

// valid reports whether value is a session this key issued that has not
// expired.
func (s sessions) valid(value string, now time.Time) bool {
	exp, mac, ok := strings.Cut(value, ".")
	if !ok {
		return false
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || now.Unix() >= unix {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(s.sign("session", exp)))
}

// csrf returns the CSRF token of the session whose cookie value is
// session ("" for a grid without a token).
func (s sessions) csrf(session string) string { return s.sign("csrf", session) }

// sessionOf returns the request's session cookie value when valid.
func (d *Dashboard) sessionOf(r *http.Request) (string, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || !d.sessions.valid(c.Value, time.Now()) {
		return "", false
	}
	return c.Value, true
}

// HasSession reports whether the request carries a valid session cookie:
// a browser that logged in. A node lets it read its other paths
// (/metrics, /members) as a bearer token would.
func (d *Dashboard) HasSession(r *http.Request) bool {
	if d.cfg.Token == "" {
		return false
	}
	_, ok := d.sessionOf(r)
	return ok
}

// access is how a request proved it may read the dashboard.
type access int

const (
	denied   access = iota
	open            // the grid has no token
	byBearer        // an Authorization header: no ambient credential, no CSRF to fear
	bySession
)

// accessOf checks the request's credentials: with a token, a valid
// session cookie or the token as a bearer (checked under the RPC
// server's limits on guessing).
func (d *Dashboard) accessOf(r *http.Request) access {
	if d.cfg.Token == "" {
		return open
	}
	if _, ok := d.sessionOf(r); ok {
		return bySession
	}
	if token := Bearer(r); token != nil && d.cfg.CheckToken(r.Context(), r.RemoteAddr, token) == nil {
		return byBearer
	}
	return denied
}

// Bearer returns the token of an "Authorization: Bearer" header, or nil.
// A node checks its other paths with it too.
func Bearer(r *http.Request) []byte {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil
	}
	return []byte(strings.TrimSpace(token))
}

// csrfFor returns the CSRF token the page of this request carries.
func (d *Dashboard) csrfFor(r *http.Request) string {
	session, _ := d.sessionOf(r)
	return d.sessions.csrf(session)
}

// pagePath matches the paths of the dashboard's pages, where a login may
// lead.
var pagePath = regexp.MustCompile(`^/(jobs/[0-9A-Za-z_.-]{1,64})?$`)

// sameOrigin refuses a request a browser says came from another site:
// by Sec-Fetch-Site, or by an Origin that is not this scheme and host.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u, err := url.Parse(origin)
	return err == nil && u.Scheme == scheme && u.Host == r.Host
}

// hostAllowed guards a grid without a token against DNS rebinding: a
// site whose name an attacker points at 127.0.0.1 is another origin to
// the browser, which would let its scripts read the page and cancel jobs
// with the page's own CSRF token. Such a request names the attacker's host
// in Host, so only IP addresses, localhost and the node's own names pass.
// With a token, a rebound page has no session cookie: every name is
// allowed.
func (d *Dashboard) hostAllowed(r *http.Request) bool {
	if d.cfg.Token != "" {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if net.ParseIP(strings.Trim(host, "[]")) != nil || host == "localhost" {
		return true
	}
	for _, name := range d.cfg.Hosts {
		if strings.EqualFold(name, host) {
			return true
		}
	}
	return false
}

// checkCSRF guards a request that changes state: a browser's must come
// from the page itself, with its CSRF token.
func (d *Dashboard) checkCSRF(r *http.Request, a access) bool {
	if a == byBearer {
		return true
	}
	if !sameOrigin(r) {
		return false
	}
	given := r.Header.Get(CSRFHeader)
	return given != "" && subtle.ConstantTimeCompare([]byte(given), []byte(d.csrfFor(r))) == 1
}

// login serves the login form (GET) and checks the token it posts.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	next := r.FormValue("next")
	if !pagePath.MatchString(next) {
		next = "/" // never off the site: browsers drop tabs and newlines in a URL, so only the page's own paths pass
	}
	if d.cfg.Token == "" {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	if r.Method != http.MethodPost {
		d.loginForm(w, next, "", http.StatusOK)
		return
	}
	if !sameOrigin(r) {
		d.loginForm(w, next, "This form was posted from another site.", http.StatusForbidden)
		return
	}
	token := r.PostFormValue("token")
	if token == "" {
		d.loginForm(w, next, "Enter the grid's token.", http.StatusUnauthorized)
		return
	}
	if err := d.cfg.CheckToken(r.Context(), r.RemoteAddr, []byte(token)); err != nil {
		d.loginForm(w, next, "That token was refused: "+err.Error(), http.StatusUnauthorized)
		return
	}
	expires := time.Now().Add(SessionLifetime)
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: d.sessions.issue(expires), Path: "/", Expires: expires,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the browser's session.
func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site request refused", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (d *Dashboard) loginForm(w http.ResponseWriter, next, problem string, status int) {
	pageHeaders(w)
	w.WriteHeader(status)
	d.pages.ExecuteTemplate(w, "login.html", map[string]string{"Next": next, "Problem": problem, "Node": d.cfg.Node})
}

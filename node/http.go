package node

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoalgrid/shoal/dashboard"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// metrics are the node's Prometheus metrics, in a registry of its own so
// that several nodes can live in one process.
type metrics struct {
	reg      *prometheus.Registry
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_rpc_calls_total",
			Help: "RPC calls answered, by method and outcome (ok or the error kind).",
		}, []string{"method", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_rpc_call_duration_seconds",
			Help:    "Time from a call's arrival to its answer, by method and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10), // 50µs to about 13s
		}, []string{"method", "outcome"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		m.calls, m.duration,
		gauge("shoal_executor_slots", "Calls that may run at once.", func() float64 { return float64(n.exec.Slots()) }),
		gauge("shoal_executor_running", "Calls running now.", func() float64 { r, _ := n.exec.Load(); return float64(r) }),
		gauge("shoal_executor_queued", "Calls waiting for a slot.", func() float64 { _, q := n.exec.Load(); return float64(q) }),
		gauge("shoal_gossip_health_score", "memberlist's awareness score: 0 is healthy, higher means this node is slow to answer probes.",
			func() float64 {
				if n.ml == nil {
					return 0
				}
				return float64(n.ml.GetHealthScore())
			}),
		(*memberCollector)(n),
		(*cacheCollector)(n),
		(*rpcCollector)(n),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// observeCall counts an answered call. Unknown method names are counted
// under one label so that callers cannot grow the label set at will.
func (m *metrics) observeCall(method string, outcome rpc.Kind, elapsed time.Duration) {
	label := "ok"
	if outcome != "" {
		label = string(outcome)
	}
	if outcome == rpc.KindUnknownFunction {
		method = "(unknown)"
	}
	m.calls.WithLabelValues(method, label).Inc()
	m.duration.WithLabelValues(method, label).Observe(elapsed.Seconds())
}

var membersDesc = prometheus.NewDesc("shoal_members", "Members this node knows, by state.", []string{"state"}, nil)

// memberCollector reports members by state when scraped.
type memberCollector Node

func (c *memberCollector) Describe(ch chan<- *prometheus.Desc) { ch <- membersDesc }

func (c *memberCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{grid.StateAlive: 0, grid.StateSuspect: 0, grid.StateDead: 0, grid.StateLeft: 0}
	for _, m := range (*Node)(c).Members() {
		counts[m.State]++
	}
	for state, count := range counts {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(count), state)
	}
}

var (
	rpcConnectionsDesc = prometheus.NewDesc("shoal_rpc_connections",
		"RPC connections open now.", nil, nil)
	rpcMaxConnectionsDesc = prometheus.NewDesc("shoal_rpc_max_connections",
		"The bound on open RPC connections (--max-conns); 0 for none.", nil, nil)
	rpcRefusedDesc = prometheus.NewDesc("shoal_rpc_connections_refused_total",
		"RPC connections closed as soon as accepted because the node was at its bound.", nil, nil)
	rpcAcceptErrorsDesc = prometheus.NewDesc("shoal_rpc_accept_errors_total",
		"Accepts of RPC connections that failed (out of file descriptors, say) and were retried.", nil, nil)
)

// rpcCollector reports the RPC server's connections from one snapshot of
// its Stats per scrape.
type rpcCollector Node

func (c *rpcCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rpcConnectionsDesc
	ch <- rpcMaxConnectionsDesc
	ch <- rpcRefusedDesc
	ch <- rpcAcceptErrorsDesc
}

func (c *rpcCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	ch <- prometheus.MustNewConstMetric(rpcConnectionsDesc, prometheus.GaugeValue, float64(st.Connections))
	ch <- prometheus.MustNewConstMetric(rpcMaxConnectionsDesc, prometheus.GaugeValue, float64(c.cfg.MaxConns))
	ch <- prometheus.MustNewConstMetric(rpcRefusedDesc, prometheus.CounterValue, float64(st.Refused))
	ch <- prometheus.MustNewConstMetric(rpcAcceptErrorsDesc, prometheus.CounterValue, float64(st.AcceptErrors))
}

// httpHandler serves /healthz, /readyz, /metrics, /members and the
// dashboard (every other path); all but the first two only to callers
// who may call the node.
func (n *Node) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if why := n.notReady(); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /members", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(n.Members())
	})
	mux.Handle("/", n.dash)
	return n.requireAccess(mux)
}

// openPaths are served to anyone: probes (a kubelet's, a load balancer's)
// know no token, and the answers tell nothing about the grid.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true}

// requireAccess guards every path but openPaths as RPC is guarded: with a
// token, the request must carry it as "Authorization: Bearer <token>" (or
// the session cookie of the dashboard's login); with TLS that requires
// client certificates, it must have come with one.
func (n *Node) requireAccess(next http.Handler) http.Handler {
	token := []byte(n.cfg.RPC.Token)
	needCert := n.cfg.RPC.TLS != nil && n.cfg.RPC.TLS.ClientAuth == tls.RequireAndVerifyClientCert
	if len(token) == 0 && !needCert {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		if needCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			http.Error(w, "a client certificate signed by the grid's CA is required", http.StatusUnauthorized)
			return
		}
		// The dashboard checks the token on its own paths, sending a
		// browser without it to its login form.
		if len(token) > 0 && !dashboard.Guards(r.URL.Path) && !n.dash.HasSession(r) {
			// A request that brings no token guesses nothing and is refused
			// at once; one that brings a token is checked under the RPC
			// server's limits on guessing.
			given := dashboard.Bearer(r)
			if given == nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="shoal"`)
				http.Error(w, "send the grid's token as: Authorization: Bearer <token>", http.StatusUnauthorized)
				return
			}
			if err := n.srv.CheckToken(r.Context(), r.RemoteAddr, given); err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="shoal", error="invalid_token"`)
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// httpTLS is the TLS the HTTP endpoint serves when RPC serves TLS: the same
// certificate and client CA, but a client certificate is only asked for,
// not required, so that probes without one reach /healthz and /readyz;
// requireAccess demands it on the other paths.
func (n *Node) httpTLS() *tls.Config {
	c := n.cfg.RPC.TLS.Clone()
	if c.ClientAuth == tls.RequireAndVerifyClientCert {
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}

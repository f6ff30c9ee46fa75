package dashboard

import (
	"math"
	"sort"
	"time"

	"github.com/shoalgrid/shoal/grid"
)

// Reading is the grid as a Source reads it at one moment: what the node
// knows of its members, the counters of those that answered, and the
// grid-wide job list.
type Reading struct {
	Members []grid.Member
	// Stats holds the counters of the members that answered, by name.
	Stats map[string]grid.NodeStats
	Jobs  []grid.JobInfo
	// Problems says what could not be read: a member that did not
	// answer, a job list that came incomplete.
	Problems []string
}

// Snapshot is what the page shows, as the dashboard sends it (as JSON)
// once a second.
type Snapshot struct {
	Node      string        `json:"node"` // the node serving the page
	NowMs     int64         `json:"now_ms"`
	Members   []MemberRow   `json:"members"`
	Jobs      []JobRow      `json:"jobs"`
	Functions []FunctionRow `json:"functions"`
	Cache     []CacheRow    `json:"cache"`
	Problems  []string      `json:"problems"`
	// OlderJobs counts the ended jobs left out: the page shows the running
	// ones and the MaxEndedJobs that ended last.
	OlderJobs int `json:"older_jobs"`
	// WindowSeconds is the time the rates and percentiles cover: up to
	// Window, less while the dashboard has been read for less.
	WindowSeconds float64 `json:"window_seconds"`
}

// MemberRow is one member: as gossip tells it, with the counters it
// reported itself when it answered.
type MemberRow struct {
	grid.Member
	Load float64 `json:"load"` // running and queued calls per slot
	// Answered is false when the member did not report its counters:
	// the fields below are then unknown.
	Answered    bool  `json:"answered"`
	HealthScore int   `json:"health_score"`
	Connections int   `json:"connections"`
	Goroutines  int   `json:"goroutines"`
	HeapBytes   int64 `json:"heap_bytes"`
	UptimeMs    int64 `json:"uptime_ms"`
	// History is the member's load once a second, oldest first, for the
	// last HistoryLength seconds; -1 where it was not a live member.
	History []float64 `json:"history"`
}

// JobRow is a job of the grid-wide list, with its recent speed.
type JobRow struct {
	grid.JobInfo
	// RecentPerSecond is the job's items per second over the window, or
	// its average when the dashboard has not seen it for long.
	RecentPerSecond float64 `json:"recent_per_second"`
	// ETASeconds is the time left at the recent speed; -1 when unknown
	// (the job ended, its inputs are still coming, or it makes no
	// progress).
	ETASeconds float64 `json:"eta_seconds"`
}

// FunctionRow is one function's calls over the window, summed over the
// members that answered.
type FunctionRow struct {
	Name            string  `json:"name"`
	CallsPerSecond  float64 `json:"calls_per_second"`
	ErrorsPerSecond float64 `json:"errors_per_second"`
	Calls           uint64  `json:"calls"`  // since each node started
	Errors          uint64  `json:"errors"` // since each node started
	// The latency percentiles of the window's calls, in milliseconds;
	// -1 when the window had none.
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P99Ms float64 `json:"p99_ms"`
	// PerNode is each member's calls per second over the window.
	PerNode map[string]float64 `json:"per_node"`
}

// CacheRow is one member's result cache.
type CacheRow struct {
	Name string `json:"name"`
	grid.CacheInfo
	// HitRatio is hits over lookups in the window, or since the node
	// started when the window had none; -1 with no lookups at all.
	HitRatio float64 `json:"hit_ratio"`
}

// MaxEndedJobs bounds the ended jobs a snapshot lists; shoal jobs lists
// them all.
const MaxEndedJobs = 50

// HistoryLength is the seconds of load history kept per member.
const HistoryLength = 300

// Window is the time over which rates and percentiles are taken.
const Window = 10 * time.Second

// loadHistory keeps each member's load once a second.
type loadHistory struct {
	last   time.Time // the second of the last sample
	byName map[string][]float64
}

// record samples the members' loads at now; seconds missed since the last
// sample (the node was busy) take this one.
func (h *loadHistory) record(now time.Time, members []grid.Member) {
	sec := now.Truncate(time.Second)
	if h.byName == nil {
		h.byName = make(map[string][]float64)
	}
	steps := 1
	if !h.last.IsZero() {
		steps = int(sec.Sub(h.last) / time.Second)
		if steps <= 0 {
			return
		}
		steps = min(steps, HistoryLength)
	}
	h.last = sec
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		load := -1.0
		if !m.Gone() && m.Slots > 0 {
			load = math.Round(m.Load()*100) / 100 // the page draws no finer, and sends less
		}
		seen[m.Name] = true
		h.push(m.Name, load, steps)
	}
	for name := range h.byName {
		if !seen[name] {
			h.push(name, -1, steps)
		}
	}
	for name, s := range h.byName {
		if !seen[name] && allUnknown(s) {
			delete(h.byName, name)
		}
	}
}

func (h *loadHistory) push(name string, load float64, steps int) {
	s := h.byName[name]
	if s == nil {
		s = make([]float64, HistoryLength)
		for i := range s {
			s[i] = -1
		}
	}
	copy(s, s[steps:])
	for i := HistoryLength - steps; i < HistoryLength; i++ {
		s[i] = load
	}
	h.byName[name] = s
}

func allUnknown(s []float64) bool {
	for _, v := range s {
		if v >= 0 {
			return false
		}
	}
	return true
}

// reading is a Reading kept for rates: when it was taken, the counters
// and the jobs' counts.
type reading struct {
	at    time.Time
	stats map[string]grid.NodeStats
	done  map[string]int64 // job id: items done
}

// build makes the snapshot of r, taken at now, against the earliest of
// the earlier readings within the window.
func build(node string, now time.Time, r Reading, earlier []reading, history map[string][]float64) *Snapshot {
	s := &Snapshot{Node: node, NowMs: now.UnixMilli(), Problems: r.Problems}
	if s.Problems == nil {
		s.Problems = []string{}
	}
	// The readings to take rates against: within the window, at least
	// half a second old, oldest first.
	var window []*reading
	for i := range earlier {
		if age := now.Sub(earlier[i].at); age <= Window+time.Second/2 && age >= time.Second/2 {
			window = append(window, &earlier[i])
		}
	}
	var base *reading
	if len(window) > 0 {
		base = window[0]
	}
	var secs float64
	if base != nil {
		secs = now.Sub(base.at).Seconds()
		s.WindowSeconds = secs
	}

	for _, m := range r.Members {
		row := MemberRow{Member: m, Load: m.Load(), History: history[m.Name]}
		if math.IsInf(row.Load, 0) {
			row.Load = -1
		}
		if row.History == nil {
			row.History = []float64{}
		}
		if st, ok := r.Stats[m.Name]; ok && !m.Gone() {
			row.Answered = true
			row.HealthScore, row.Connections, row.Goroutines, row.HeapBytes = st.HealthScore, st.Connections, st.Goroutines, st.HeapBytes
			row.UptimeMs = st.NowMs - st.StartedMs
			// The member's own count is newer than gossip's.
			row.Running, row.Queued, row.Slots = st.Running, st.Queued, st.Slots
			if st.Slots > 0 {
				row.Load = float64(st.Running+st.Queued) / float64(st.Slots)
			}
		}
		s.Members = append(s.Members, row)
	}
	sort.Slice(s.Members, func(a, b int) bool { return s.Members[a].Name < s.Members[b].Name })

	for _, job := range r.Jobs {
		row := JobRow{JobInfo: job, RecentPerSecond: job.ItemsPerSecond, ETASeconds: -1}
		if !job.Ended() {
			// Against the oldest reading that saw the job: one from before
			// it started would give its average since.
			for _, w := range window {
				if before, ok := w.done[job.ID]; ok {
					if job.Done >= before {
						row.RecentPerSecond = float64(job.Done-before) / now.Sub(w.at).Seconds()
					}
					break
				}
			}
		}
		if !job.Ended() && job.Total >= 0 && row.RecentPerSecond > 0 {
			row.ETASeconds = float64(job.Total-job.Done) / row.RecentPerSecond
		}
		s.Jobs = append(s.Jobs, row)
	}
	// Running jobs first, then the newest.
	sort.SliceStable(s.Jobs, func(a, b int) bool {
		ra, rb := !s.Jobs[a].Ended(), !s.Jobs[b].Ended()
		if ra != rb {
			return ra
		}
		return s.Jobs[a].StartedMs > s.Jobs[b].StartedMs
	})
	for i, j := range s.Jobs {
		if j.Ended() && len(s.Jobs)-i > MaxEndedJobs {
			s.OlderJobs = len(s.Jobs) - i - MaxEndedJobs
			s.Jobs = s.Jobs[:i+MaxEndedJobs]
			break
		}
	}
	if s.Jobs == nil {
		s.Jobs = []JobRow{}
	}

	s.Functions = functionRows(r, base, secs)
	for _, m := range s.Members {
		st, ok := r.Stats[m.Name]
		if !ok || m.Gone() {
			continue
		}
		row := CacheRow{Name: m.Name, CacheInfo: st.Cache, HitRatio: -1}
		hits, misses := st.Cache.Hits, st.Cache.Misses
		if base != nil {
			if prev, ok := base.stats[m.Name]; ok && prev.StartedMs == st.StartedMs {
				if dh, dm := hits-prev.Cache.Hits, misses-prev.Cache.Misses; dh+dm > 0 {
					hits, misses = dh, dm
				}
			}
		}
		if hits+misses > 0 {
			row.HitRatio = float64(hits) / float64(hits+misses)
		}
		s.Cache = append(s.Cache, row)
	}
	if s.Cache == nil {
		s.Cache = []CacheRow{}
	}
	return s
}

// functionRows sums each function's counters over the members, with
// rates and percentiles over the window since base.
func functionRows(r Reading, base *reading, secs float64) []FunctionRow {
	type acc struct {
		row     FunctionRow
		window  grid.Histogram
		calls   uint64
		errors  uint64
		perNode map[string]float64
	}
	byName := map[string]*acc{}
	for name, st := range r.Stats {
		var prev map[string]grid.FunctionStats
		if base != nil {
			if p, ok := base.stats[name]; ok && p.StartedMs == st.StartedMs {
				prev = make(map[string]grid.FunctionStats, len(p.Functions))
				for _, f := range p.Functions {
					prev[f.Name] = f
				}
			}
		}
		for _, f := range st.Functions {
			a := byName[f.Name]
			if a == nil {
				a = &acc{row: FunctionRow{Name: f.Name}, perNode: map[string]float64{}}
				byName[f.Name] = a
			}
			a.row.Calls += f.Calls
			a.row.Errors += f.Errors
			if prev == nil {
				continue
			}
			p := prev[f.Name]
			a.calls += f.Calls - min(p.Calls, f.Calls)
			a.errors += f.Errors - min(p.Errors, f.Errors)
			a.window.Merge(f.Latency.Sub(p.Latency))
			if secs > 0 {
				a.perNode[name] = float64(f.Calls-min(p.Calls, f.Calls)) / secs
			}
		}
	}
	rows := make([]FunctionRow, 0, len(byName))
	for _, a := range byName {
		row := a.row
		row.P50Ms, row.P90Ms, row.P99Ms = -1, -1, -1
		if secs > 0 {
			row.CallsPerSecond = float64(a.calls) / secs
			row.ErrorsPerSecond = float64(a.errors) / secs
		}
		if a.window.Total() > 0 {
			ms := func(q float64) float64 { return float64(a.window.Quantile(q)) / float64(time.Millisecond) }
			row.P50Ms, row.P90Ms, row.P99Ms = ms(0.5), ms(0.9), ms(0.99)
		}
		row.PerNode = a.perNode
		rows = append(rows, row)
	}
	sort.Slice(rows, func(a, b int) bool {
		if rows[a].CallsPerSecond != rows[b].CallsPerSecond {
			return rows[a].CallsPerSecond > rows[b].CallsPerSecond
		}
		return rows[a].Name < rows[b].Name
	})
	return rows
}

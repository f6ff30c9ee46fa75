package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/internal/local"
)

// CacheConfig sizes the cache scenario.
type CacheConfig struct {
	// Nodes is the grid's size. Default 3.
	Nodes int `json:"nodes"`
	// Memcached is how many memcached servers hold the results. Default 3.
	Memcached int `json:"memcached_servers"`
	// Items is the job's size. Default 100,000.
	Items int `json:"items"`
	// Rounds is the SHA-256 rounds of one item, the work a cache hit
	// saves. Default 500.
	Rounds int `json:"rounds"`
	// Jobs is how many warm runs are measured; the median counts. Default 5.
	Jobs int `json:"jobs"`
	// Binary is the shoal executable the nodes run as `shoal node`.
	Binary string `json:"-"`
}

// CacheReport is the cache scenario's figures.
type CacheReport struct {
	Backends []CacheResult `json:"backends"`
	// Skipped says why a backend was not measured.
	Skipped []string `json:"skipped,omitempty"`
}

// CacheResult is the job cold (computed, results written to the cache) and
// warm (every result from the cache) with one cache backend.
type CacheResult struct {
	Name               string  `json:"name"`
	Items              int     `json:"items"`
	ColdSeconds        float64 `json:"cold_seconds"`
	ColdItemsPerSecond float64 `json:"cold_items_per_second"`
	// ColdCached is the items the cold run found cached: 0 unless
	// something is wrong.
	ColdCached         int       `json:"cold_cached"`
	WarmSeconds        []float64 `json:"warm_seconds"`
	WarmItemsPerSecond float64   `json:"warm_items_per_second"`
	// WarmCached is the fewest items a warm run found cached: Items
	// unless the cache lost some.
	WarmCached int     `json:"warm_cached"`
	WarmVsCold float64 `json:"warm_vs_cold"`
	// EntriesPerNode is what each node of the grid cache held after the
	// cold run: its share of the results.
	EntriesPerNode []int64 `json:"entries_per_node,omitempty"`
}

// RunCache runs the same sha256 job cold and then warm on two grids of
// cfg.Nodes `shoal node` processes, the two taking turns: one writing
// results to cfg.Memcached memcached processes (skipped, with a note,
// where memcached is not installed), one keeping them in the grid cache
// its nodes' memory forms. The client finds each grid's cache through the
// nodes, as any client does. Zero fields of cfg take their defaults.
func RunCache(ctx context.Context, cfg CacheConfig, progress io.Writer) (*CacheReport, error) {
	cfg = Config{Cache: cfg}.withDefaults(DefaultConfig()).Cache
	if cfg.Binary == "" {
		return nil, errors.New("bench: the cache scenario needs the shoal binary")
	}
	p := progressLog{progress}
	report := &CacheReport{}
	var setups []*cacheSetup
	defer func() {
		for _, s := range setups {
			s.close()
		}
	}()
	mc, err := startMemcachedSetup(ctx, cfg, p)
	switch {
	case errors.Is(err, local.ErrNoMemcached):
		report.Skipped = append(report.Skipped, "cache: memcached not measured: "+err.Error())
	case err != nil:
		return nil, err
	default:
		setups = append(setups, mc)
	}
	p.printf("cache: starting a grid of %d node processes with the grid cache", cfg.Nodes)
	gc := &cacheSetup{name: "grid cache", gridCache: true}
	setups = append(setups, gc)
	if gc.grid, err = StartGrid(ctx, cfg.Binary, "gridcache", cfg.Nodes); err != nil {
		return nil, err
	}

	// A fresh prefix, so no run finds another's results.
	prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	inputs := make([]shoal.Args, cfg.Items)
	for i := range inputs {
		inputs[i] = shoal.Args{prefix + strconv.Itoa(i), cfg.Rounds}
	}
	results := make([]CacheResult, len(setups))
	computed := make([][]string, len(setups))
	for i, s := range setups {
		p.printf("cache: cold run, %s", s.name)
		out, st, err := s.run(ctx, inputs)
		if err != nil {
			return nil, err
		}
		computed[i] = out
		results[i] = CacheResult{Name: s.name, Items: cfg.Items, ColdSeconds: st.Wall.Seconds(),
			ColdItemsPerSecond: PerSecond(cfg.Items, st.Wall), ColdCached: st.Cached, WarmCached: cfg.Items}
		// Nodes write results after replying: let the writes land.
		if results[i].EntriesPerNode, err = s.awaitWrites(ctx, cfg.Items); err != nil {
			return nil, err
		}
	}
	for job := 1; job <= cfg.Jobs; job++ {
		p.printf("cache: warm run %d of %d with each cache", job, cfg.Jobs)
		for i, s := range setups {
			out, st, err := s.run(ctx, inputs)
			if err != nil {
				return nil, err
			}
			if !slices.Equal(out, computed[i]) {
				return nil, fmt.Errorf("bench: cache: %s: warm results differ from cold ones", s.name)
			}
			results[i].WarmSeconds = append(results[i].WarmSeconds, st.Wall.Seconds())
			results[i].WarmCached = min(results[i].WarmCached, st.Cached)
		}
	}
	for i := range results {
		results[i].WarmItemsPerSecond = Ratio(float64(cfg.Items), Median(results[i].WarmSeconds))
		results[i].WarmVsCold = Ratio(results[i].WarmItemsPerSecond, results[i].ColdItemsPerSecond)
	}
	report.Backends = results
	return report, nil
}

// cacheSetup is a grid of node processes with one cache backend, and a
// client of it.
type cacheSetup struct {
	name      string
	gridCache bool // the nodes keep the results in the grid cache
	memcached []*local.Memcached
	grid      *Grid
}

func startMemcachedSetup(ctx context.Context, cfg CacheConfig, p progressLog) (*cacheSetup, error) {
	s := &cacheSetup{name: fmt.Sprintf("memcached x%d", cfg.Memcached)}
	p.printf("cache: starting %d memcached servers and a grid of %d node processes", cfg.Memcached, cfg.Nodes)
	var addrs []string
	for range cfg.Memcached {
		m, err := local.StartMemcached(ctx, 256)
		if err != nil {
			s.close()
			return nil, err
		}
		s.memcached = append(s.memcached, m)
		addrs = append(addrs, m.Addr)
	}
	var err error
	if s.grid, err = StartGrid(ctx, cfg.Binary, "memcached", cfg.Nodes, "--memcached", strings.Join(addrs, ",")); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *cacheSetup) run(ctx context.Context, inputs []shoal.Args) ([]string, shoal.Stats, error) {
	var st shoal.Stats
	out, err := shoal.Map[shoal.Args, string](ctx, s.grid.Client, "sha256", inputs, shoal.WithStats(&st))
	if err != nil {
		return nil, st, fmt.Errorf("bench: cache: %s: %w", s.name, err)
	}
	return out, st, nil
}

// writesLanded bounds the wait for the nodes' cache writes after a cold
// run.
const writesLanded = time.Minute

// awaitWrites waits until the nodes have stored items results (the grid
// cache's entries, or the values the nodes stored in memcached) and
// returns the entries each node holds of the grid cache.
func (s *cacheSetup) awaitWrites(ctx context.Context, items int) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, writesLanded)
	defer cancel()
	for {
		var stored int64
		var entries []int64
		for _, a := range s.grid.Client.CacheInfo(ctx) {
			if a.Err != nil {
				return nil, fmt.Errorf("bench: cache: %s: %s: %w", s.name, a.Member.Name, a.Err)
			}
			if s.gridCache {
				stored += a.Info.Entries
				entries = append(entries, a.Info.Entries)
			} else {
				stored += int64(a.Info.Stored)
			}
		}
		if stored >= int64(items) {
			return entries, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bench: cache: %s: %d of %d results stored: %w", s.name, stored, items, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *cacheSetup) close() {
	if s.grid != nil {
		s.grid.Close()
	}
	for _, m := range s.memcached {
		m.Stop()
	}
}

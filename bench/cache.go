package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/internal/builtins"
	"github.com/shoalgrid/shoal/internal/local"
	"github.com/shoalgrid/shoal/node"
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
}

// RunCache runs the same sha256 job cold and then warm, with the results
// cached in cfg.Memcached memcached processes (skipped, with a note, where
// memcached is not installed) and in the in-memory cache, the two taking
// turns. The nodes run in this process, as in `shoal demo`, so that the
// in-memory cache can be shared by the nodes that write it and the client
// that reads it; with memcached the client finds the servers through the
// nodes, as any client does. Zero fields of cfg take their defaults.
func RunCache(ctx context.Context, cfg CacheConfig, progress io.Writer) (*CacheReport, error) {
	cfg = Config{Cache: cfg}.withDefaults(DefaultConfig()).Cache
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
	p.printf("cache: starting a grid of %d nodes with an in-memory cache", cfg.Nodes)
	mem := &cacheSetup{name: "in-memory", shared: cache.NewMemory(512<<20, 0)}
	setups = append(setups, mem)
	if err := mem.start(ctx, cfg.Nodes); err != nil {
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
		if err := s.flush(ctx); err != nil {
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

// cacheSetup is a grid of in-process nodes with one cache backend, and a
// client of it.
type cacheSetup struct {
	name      string
	shared    cache.Cache // the in-memory cache nodes and client share, or nil
	memcached []*local.Memcached
	nodes     []*node.Node
	client    *shoal.Client
}

func startMemcachedSetup(ctx context.Context, cfg CacheConfig, p progressLog) (*cacheSetup, error) {
	s := &cacheSetup{name: fmt.Sprintf("memcached x%d", cfg.Memcached)}
	p.printf("cache: starting %d memcached servers and a grid of %d nodes", cfg.Memcached, cfg.Nodes)
	for range cfg.Memcached {
		m, err := local.StartMemcached(ctx, 256)
		if err != nil {
			s.close()
			return nil, err
		}
		s.memcached = append(s.memcached, m)
	}
	if err := s.start(ctx, cfg.Nodes); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *cacheSetup) start(ctx context.Context, nodes int) error {
	quiet := slog.New(slog.DiscardHandler)
	for i := range nodes {
		cfg := node.FastConfig()
		cfg.Name = fmt.Sprintf("cache-%d", i+1)
		cfg.HTTPAddr = ""
		cfg.Logger = quiet
		cfg.Cache = s.shared
		for _, m := range s.memcached {
			cfg.Memcached = append(cfg.Memcached, m.Addr)
		}
		if i > 0 {
			cfg.Join = []string{s.nodes[0].GossipAddr()}
		}
		n, err := node.New(cfg, "bench")
		if err != nil {
			return err
		}
		if err := builtins.Register(n); err != nil {
			n.Close()
			return err
		}
		if err := n.Start(ctx); err != nil {
			n.Close()
			return err
		}
		s.nodes = append(s.nodes, n)
	}
	c, err := shoal.Dial(ctx, shoal.Config{Seeds: []string{s.nodes[0].RPCAddr()}, Cache: s.shared, Logger: quiet})
	if err != nil {
		return err
	}
	s.client = c
	wait, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return c.WaitForMembers(wait, nodes)
}

func (s *cacheSetup) run(ctx context.Context, inputs []shoal.Args) ([]string, shoal.Stats, error) {
	var st shoal.Stats
	out, err := shoal.Map[shoal.Args, string](ctx, s.client, "sha256", inputs, shoal.WithStats(&st))
	if err != nil {
		return nil, st, fmt.Errorf("bench: cache: %s: %w", s.name, err)
	}
	return out, st, nil
}

func (s *cacheSetup) flush(ctx context.Context) error {
	for _, n := range s.nodes {
		if err := n.FlushCache(ctx); err != nil {
			return fmt.Errorf("bench: cache: %s: %w", s.name, err)
		}
	}
	return nil
}

func (s *cacheSetup) close() {
	if s.client != nil {
		s.client.Close()
	}
	// The results are flushed: the nodes need no graceful leave.
	for _, n := range s.nodes {
		n.Close()
	}
	for _, m := range s.memcached {
		m.Stop()
	}
	if s.shared != nil {
		s.shared.Close()
	}
}

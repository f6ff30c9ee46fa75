// Package suggest finds what a mistyped name was probably meant to be,
// for "did you mean" hints on functions and flags.
package suggest

import (
	"sort"
	"strings"
)

// Closest returns the candidates that name may be a misspelling of,
// closest first: within a few letters of it (more for longer names),
// ignoring case. name itself is never suggested.
func Closest(name string, candidates []string) []string {
	type scored struct {
		name string
		d    int
	}
	var close []scored
	limit := max(1, min(3, (len(name)+2)/3))
	lower := strings.ToLower(name)
	for _, c := range candidates {
		if c == name {
			continue
		}
		if d := distance(lower, strings.ToLower(c)); d <= limit {
			close = append(close, scored{c, d})
		}
	}
	sort.SliceStable(close, func(i, j int) bool { return close[i].d < close[j].d })
	out := make([]string, len(close))
	for i, s := range close {
		out[i] = s.name
	}
	return out
}

// distance is the Levenshtein distance between a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

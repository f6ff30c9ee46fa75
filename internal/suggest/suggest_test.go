package suggest

import (
	"slices"
	"testing"
)

func TestClosest(t *testing.T) {
	fns := []string{"add", "echo", "fail", "fib", "sha256", "sleep", "square", "wordcount"}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"squre", []string{"square"}},
		{"sqaure", []string{"square"}},
		{"Square", []string{"square"}},
		{"wordcont", []string{"wordcount"}},
		{"sleeep", []string{"sleep"}},
		{"fob", []string{"fib"}},
		{"square", nil},
		{"sqre", []string{"square"}},
		{"nope", nil},
		{"x", nil},
	} {
		if got := Closest(tc.name, fns); !slices.Equal(got, tc.want) {
			t.Errorf("Closest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := Closest("wordcont", []string{"wordcounts", "timeout", "wordcount"}); !slices.Equal(got, []string{"wordcount", "wordcounts"}) {
		t.Errorf("closest first: %q", got)
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"", "ab", 2}, {"kitten", "sitting", 3}, {"flaw", "lawn", 2}, {"same", "same", 0}} {
		if got := distance(tc.a, tc.b); got != tc.d {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}

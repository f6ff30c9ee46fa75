package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseJSONArg(t *testing.T) {
	cases := []struct {
		raw  string
		want any
	}{
		{"42", int64(42)},
		{"-7", int64(-7)},
		{"18446744073709551615", uint64(18446744073709551615)},
		{"2.5", 2.5},
		{"1e3", 1000.0},
		{`"text"`, "text"},
		{"true", true},
		{"null", nil},
		{"[1, 2.5, \"x\"]", []any{int64(1), 2.5, "x"}},
		{`{"k": [3]}`, map[string]any{"k": []any{int64(3)}}},
	}
	for _, tc := range cases {
		got, err := parseJSONArg(tc.raw)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseJSONArg(%s) = %#v, %v; want %#v", tc.raw, got, err, tc.want)
		}
	}
	for _, bad := range []string{"hello", "", "1 2", "{", `"unterminated`} {
		if _, err := parseJSONArg(bad); err == nil {
			t.Errorf("parseJSONArg(%q) accepted", bad)
		}
	}
}

func TestJSONValue(t *testing.T) {
	in := map[any]any{int8(1): []any{map[any]any{"x": float32(0.5)}}, "s": "t"}
	got := jsonValue(in)
	want := map[string]any{"1": []any{map[string]any{"x": 0.5}}, "s": "t"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("jsonValue = %#v, want %#v", got, want)
	}
}

func TestNodeHelpListsBuiltins(t *testing.T) {
	if !strings.Contains(builtinList(), "sha256(text string, rounds int) string") {
		t.Errorf("node help lacks the sha256 signature:\n%s", builtinList())
	}
}

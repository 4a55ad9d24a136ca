package webhookalloc

import (
	"encoding/json"
	"strings"
	"testing"
)

// tokenDepth is depth computed from the tokens of encoding/json (which, unlike
// a decoded value, sees every member of an object with duplicate names).
func tokenDepth(t *testing.T, s string) int {
	dec := json.NewDecoder(strings.NewReader(s))
	d, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			d++
			deepest = max(deepest, d)
		case json.Delim('}'), json.Delim(']'):
			d--
		}
	}
}

func nested(n int) string {
	return strings.Repeat(`{"a":`, n-1) + `{"s":"}]\"{["}` + strings.Repeat(`}`, n-1)
}

func TestDepth(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{`1`, 0}, {`"{[{["`, 0}, {`{}`, 1}, {`[[],[[]]]`, 3}, {`{"a\"{":[{"b":"\\"}]}`, 3}, {nested(62), 62}, {nested(63), 63},
	} {
		if got := depth([]byte(tc.in)); got != tc.want {
			t.Errorf("depth(%.40s) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// FuzzShape: for any valid JSON, depth agrees with the decoded value, and
// checkPayload and checkTwin accept exactly what the device and the hub
// can take.
func FuzzShape(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `"x"`, `{"a":[{"b":"}"}]}`, `{"tags":{},"properties":{"desired":{"x":[1]}}}`,
		`{"tags":null,"properties":null}`, `{"properties":{"reported":{}}}`, `{"x":"\u005c"}`, nested(63)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v any
		if json.Unmarshal([]byte(s), &v) != nil {
			return
		}
		want := tokenDepth(t, s)
		if got := depth([]byte(s)); got != want {
			t.Fatalf("depth(%q) = %d, want %d", s, got, want)
		}
		_, isObject := v.(map[string]any)
		if err := checkPayload(json.RawMessage(s)); (err == nil) != (isObject && want <= MaxPayloadDepth) {
			t.Fatalf("checkPayload(%q) = %v", s, err)
		}
		if err := checkTwin(json.RawMessage(s)); (err == nil) != twinShaped(v) {
			t.Fatalf("checkTwin(%q) = %v", s, err)
		}
	})
}

// twinShaped is checkTwin's rule on a decoded value.
func twinShaped(v any) bool {
	obj := func(v any) bool { _, ok := v.(map[string]any); return ok || v == nil }
	twin, ok := v.(map[string]any)
	if !ok && v != nil {
		return false
	}
	for k, e := range twin {
		switch k {
		case "tags":
			if !obj(e) {
				return false
			}
		case "properties":
			props, ok := e.(map[string]any)
			if !ok && e != nil {
				return false
			}
			for pk, pe := range props {
				if pk != "desired" || !obj(pe) {
					return false
				}
			}
		default:
			return false
		}
	}
	return true
}

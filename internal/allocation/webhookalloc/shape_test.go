package webhookalloc

import (
	"encoding/json"
	"reflect"
	"slices"
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

// FuzzShape: for any valid JSON, depth agrees with the decoded value,
// checkPayload accepts exactly what the device can take, and cleanTwin
// fails exactly the twins whose parts have the wrong type and otherwise
// keeps tags and properties.desired, dropping (and naming) the rest.
func FuzzShape(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `"x"`, `{"a":[{"b":"}"}]}`, `{"tags":{},"properties":{"desired":{"x":[1]}}}`,
		`{"tags":null,"properties":null}`, `{"properties":{"reported":{}}}`, `{"x":"\u005c"}`, nested(63),
		`{"deviceId":"d","etag":"e","tags":{"t":1},"properties":{"desired":{"d":1},"reported":null}}`, `{"tags":[1]}`,
		`{"properties":{"desired":3}}`, `{"tags":{"a":1},"tags":null}`, `null`} {
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
		wantTwin, wantDropped, ok := cleanedTwin(v)
		twin, dropped, err := cleanTwin(json.RawMessage(s))
		if (err == nil) != ok {
			t.Fatalf("cleanTwin(%q) = %v, want ok %v", s, err, ok)
		}
		if !ok {
			return
		}
		var got any
		if err := json.Unmarshal(twin, &got); err != nil {
			t.Fatalf("cleanTwin(%q) = %q, not JSON: %v", s, twin, err)
		}
		if !reflect.DeepEqual(got, wantTwin) {
			t.Fatalf("cleanTwin(%q) = %s, want %v", s, twin, wantTwin)
		}
		if slices.Sort(wantDropped); !slices.Equal(dropped, wantDropped) {
			t.Fatalf("cleanTwin(%q) dropped %q, want %q", s, dropped, wantDropped)
		}
	})
}

// cleanedTwin is cleanTwin's rule on a decoded value: ok false when the
// twin, tags, properties or desired is neither an object nor null.
func cleanedTwin(v any) (twin map[string]any, dropped []string, ok bool) {
	twin = map[string]any{}
	if v == nil {
		return twin, nil, true
	}
	top, isObj := v.(map[string]any)
	if !isObj {
		return nil, nil, false
	}
	for k, e := range top {
		switch k {
		case "tags":
			switch e := e.(type) {
			case nil:
			case map[string]any:
				twin["tags"] = e
			default:
				return nil, nil, false
			}
		case "properties":
			if e == nil {
				continue
			}
			props, isObj := e.(map[string]any)
			if !isObj {
				return nil, nil, false
			}
			for pk, pe := range props {
				if pk != "desired" {
					dropped = append(dropped, "properties."+pk)
					continue
				}
				switch pe := pe.(type) {
				case nil:
				case map[string]any:
					twin["properties"] = map[string]any{"desired": pe}
				default:
					return nil, nil, false
				}
			}
		default:
			dropped = append(dropped, k)
		}
	}
	return twin, dropped, true
}

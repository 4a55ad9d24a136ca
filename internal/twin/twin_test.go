package twin

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
)

var (
	t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	t1 = time.Date(2026, 3, 1, 12, 0, 1, 123456789, time.UTC) // written as .1234567
	t2 = time.Date(2026, 3, 1, 12, 0, 2, 500000000, time.UTC) // written as .5
)

func mustNew(t testing.TB, initial string) Twin {
	t.Helper()
	tw, err := New(json.RawMessage(initial), t0)
	if err != nil {
		t.Fatalf("New(%s): %v", initial, err)
	}
	return tw
}

func encode(t testing.TB, tw Twin) []byte {
	t.Helper()
	b, err := tw.MarshalJSON() // json.Marshal would HTML-escape it
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// code returns the code of a *dps.Error of kind invalid, failing for any
// other error.
func code(t testing.TB, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	e, ok := errors.AsType[*dps.Error](err)
	if !ok || e.Kind != dps.KindInvalid {
		t.Fatalf("error %v (%T) is not a *dps.Error of kind invalid", err, err)
	}
	return e.Code
}

// compactJSON normalises a JSON text for comparisons.
func compactJSON(t testing.TB, s string) string {
	t.Helper()
	var v any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestNew(t *testing.T) {
	for _, tt := range []struct {
		name, initial string
		code          int
		device, tags  string
	}{
		{"ok/absent", ``, 0, `{"desired":{"$version":1},"reported":{"$version":1}}`, ``},
		{"ok/null", `null`, 0, `{"desired":{"$version":1},"reported":{"$version":1}}`, ``},
		{"ok/empty-object", `{}`, 0, `{"desired":{"$version":1},"reported":{"$version":1}}`, ``},
		{"ok/null-members", `{"tags":null,"properties":{"desired":null}}`, 0, `{"desired":{"$version":1},"reported":{"$version":1}}`, ``},
		{"ok/tags-and-desired", `{"tags":{"model":"hp","loc":{"b":"43"}},"properties":{"desired":{"interval":10,"greeting":"hi"}}}`, 0,
			`{"desired":{"greeting":"hi","interval":10,"$version":1},"reported":{"$version":1}}`, `{"loc":{"b":"43"},"model":"hp"}`},
		{"ok/nulls-dropped", `{"tags":{"a":null,"b":{"c":null}},"properties":{"desired":{"x":null,"y":1}}}`, 0,
			`{"desired":{"y":1,"$version":1},"reported":{"$version":1}}`, `{"b":{}}`},
		{"ok/ignores-reported-and-identity", `{"deviceId":"d","etag":"x","properties":{"reported":{"r":1},"desired":{"$version":7,"$metadata":{},"d":1}}}`, 0,
			`{"desired":{"d":1,"$version":1},"reported":{"$version":1}}`, ``},
		{"fail/not-json", `{`, dps.CodeFormatError, ``, ``},
		{"fail/array", `[1]`, dps.CodeInvalid, ``, ``},
		{"fail/tags-string", `{"tags":"x"}`, dps.CodeInvalid, ``, ``},
		{"fail/properties-number", `{"properties":1}`, dps.CodeInvalid, ``, ``},
		{"fail/desired-array", `{"properties":{"desired":[]}}`, dps.CodeInvalid, ``, ``},
		{"fail/tag-key-dollar", `{"tags":{"$x":1}}`, dps.CodeInvalid, ``, ``},
		{"fail/desired-key-dot", `{"properties":{"desired":{"a.b":1}}}`, dps.CodeInvalid, ``, ``},
		{"fail/tags-over-8k", `{"tags":{"a":"` + strings.Repeat("x", 4000) + `","b":"` + strings.Repeat("x", 4000) + `","c":"` + strings.Repeat("x", 400) + `"}}`, dps.CodeInvalid, ``, ``},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tw, err := New(json.RawMessage(tt.initial), t1)
			if got := code(t, err); got != tt.code {
				t.Fatalf("code %d (%v), want %d", got, err, tt.code)
			}
			if err != nil {
				return
			}
			if got := string(tw.DeviceDoc()); got != tt.device {
				t.Errorf("device doc %s, want %s", got, tt.device)
			}
			if got := string(tw.Service().Tags); got != tt.tags {
				t.Errorf("tags %s, want %s", got, tt.tags)
			}
			if tw.Version() != 2 || tw.DesiredVersion() != 1 || tw.ReportedVersion() != 1 {
				t.Errorf("versions %d/%d/%d, want 2/1/1", tw.Version(), tw.DesiredVersion(), tw.ReportedVersion())
			}
			if err := tw.check(); err != nil {
				t.Error(err)
			}
		})
	}
}

func deep(levels int, leaf string) string {
	return strings.Repeat(`{"l":`, levels) + leaf + strings.Repeat(`}`, levels)
}

func TestPatchReported(t *testing.T) {
	long := strings.Repeat("x", MaxStringLength)
	key := strings.Repeat("k", MaxKeyLength)
	const start = `{"fw":"1.0","nested":{"a":1,"b":{"c":true}},"list":[1,2]}`
	for _, tt := range []struct {
		name, patch string
		code        int
		want        string // reported properties afterwards
	}{
		{"ok/add", `{"battery":55}`, 0, `{"battery":55,"fw":"1.0","list":[1,2],"nested":{"a":1,"b":{"c":true}}}`},
		{"ok/merge-nested", `{"nested":{"b":{"d":"x"}}}`, 0, `{"fw":"1.0","list":[1,2],"nested":{"a":1,"b":{"c":true,"d":"x"}}}`},
		{"ok/null-deletes", `{"fw":null}`, 0, `{"list":[1,2],"nested":{"a":1,"b":{"c":true}}}`},
		{"ok/null-deletes-nested", `{"nested":{"a":null,"b":{"c":null}}}`, 0, `{"fw":"1.0","list":[1,2],"nested":{"b":{}}}`},
		{"ok/null-deletes-absent", `{"nothere":null}`, 0, start},
		{"ok/leaf-replaces-object", `{"nested":"flat"}`, 0, `{"fw":"1.0","list":[1,2],"nested":"flat"}`},
		{"ok/object-replaces-leaf", `{"fw":{"major":1,"gone":null}}`, 0, `{"fw":{"major":1},"list":[1,2],"nested":{"a":1,"b":{"c":true}}}`},
		{"ok/array-replaces", `{"list":[{"x":1},["y"],"z"]}`, 0, `{"fw":"1.0","list":[{"x":1},["y"],"z"],"nested":{"a":1,"b":{"c":true}}}`},
		{"ok/empty-patch", `{}`, 0, start},
		{"ok/numbers-as-written", `{"n":[4503599627370495,-4503599627370496,1.50,1e3,-0]}`, 0, `{"fw":"1.0","list":[1,2],"n":[4503599627370495,-4503599627370496,1.50,1e3,-0],"nested":{"a":1,"b":{"c":true}}}`},
		{"ok/depth-10", `{"d":` + deep(9, `{"leaf":1}`) + `}`, 0, ``},
		{"ok/array-depth-10", `{"d":` + strings.Repeat(`[`, 10) + `1` + strings.Repeat(`]`, 10) + `}`, 0, ``},
		{"ok/longest-string", `{"s":"` + long + `"}`, 0, ``},
		{"ok/longest-key", `{"` + key + `":1}`, 0, ``},
		{"ok/unicode-and-escapes", `{"température":"<&>\u2028\"\\\n","ключ":"é"}`, 0, ``},
		{"ok/whitespace-around", " \n{\"a\":1}\n ", 0, ``},
		{"fail/not-json", `{"a":`, dps.CodeFormatError, ``},
		{"fail/empty-body", ``, dps.CodeFormatError, ``},
		{"fail/one-space", ` `, dps.CodeFormatError, ``},
		{"fail/trailing-data", `{"a":1}{}`, dps.CodeFormatError, ``},
		{"fail/invalid-utf8", "{\"a\":\"\xff\"}", dps.CodeFormatError, ``},
		{"fail/array-body", `[{"a":1}]`, dps.CodeInvalid, ``},
		{"fail/null-body", `null`, dps.CodeInvalid, ``},
		{"fail/string-body", `"x"`, dps.CodeInvalid, ``},
		{"fail/dollar-version", `{"a":1,"$version":4}`, dps.CodeInvalid, ``},
		{"fail/dollar-metadata", `{"$metadata":{}}`, dps.CodeInvalid, ``},
		{"fail/dollar-inside", `{"a$b":1}`, dps.CodeInvalid, ``},
		{"fail/dot", `{"nested":{"a.b":1}}`, dps.CodeInvalid, ``},
		{"fail/space", `{"a b":1}`, dps.CodeInvalid, ``},
		{"fail/c0-control", `{"a\u0001":1}`, dps.CodeInvalid, ``},
		{"fail/del", `{"a\u007f":1}`, dps.CodeInvalid, ``},
		{"fail/c1-control", `{"a\u0085":1}`, dps.CodeInvalid, ``},
		{"fail/key-too-long", `{"` + key + `k":1}`, dps.CodeInvalid, ``},
		{"fail/string-too-long", `{"s":"` + long + `x"}`, dps.CodeInvalid, ``},
		{"fail/string-too-long-in-array", `{"s":["` + long + `x"]}`, dps.CodeInvalid, ``},
		{"fail/integer-too-large", `{"n":4503599627370496}`, dps.CodeInvalid, ``},
		{"fail/integer-too-small", `{"n":-4503599627370497}`, dps.CodeInvalid, ``},
		{"fail/integer-beyond-int64", `{"n":99999999999999999999}`, dps.CodeInvalid, ``},
		{"fail/float-overflow", `{"n":1e400}`, dps.CodeInvalid, ``},
		{"fail/depth-11", `{"d":` + deep(10, `{"leaf":1}`) + `}`, dps.CodeInvalid, ``},
		{"fail/array-depth-11", `{"d":` + strings.Repeat(`[`, 11) + `1` + strings.Repeat(`]`, 11) + `}`, dps.CodeInvalid, ``},
		{"fail/null-in-array", `{"a":[1,null]}`, dps.CodeInvalid, ``},
		{"fail/null-member-in-array-object", `{"a":[{"b":null}]}`, dps.CodeInvalid, ``},
		{"fail/bad-key-in-array-object", `{"a":[{"b.c":1}]}`, dps.CodeInvalid, ``},
		{"fail/over-32k", `{` + strings.Repeat(`"k0":"`+long[:4000]+`",`, 1) + manyKeys(8, 4000) + `}`, dps.CodeInvalid, ``},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tw := mustNew(t, ``)
			if _, err := tw.PatchReported([]byte(start), t0); err != nil {
				t.Fatal(err)
			}
			before := encode(t, tw)
			v, err := tw.PatchReported([]byte(tt.patch), t1)
			if got := code(t, err); got != tt.code {
				t.Fatalf("code %d (%v), want %d", got, err, tt.code)
			}
			if err != nil {
				if after := encode(t, tw); !bytes.Equal(after, before) {
					t.Errorf("a refused patch changed the twin:\n%s\n%s", before, after)
				}
				return
			}
			if v != 3 || tw.ReportedVersion() != 3 || tw.Version() != 4 || tw.DesiredVersion() != 1 {
				t.Errorf("versions: returned %d, reported %d, twin %d, desired %d; want 3, 3, 4, 1", v, tw.ReportedVersion(), tw.Version(), tw.DesiredVersion())
			}
			if tt.want != "" {
				if got := string(appendObject(nil, tw.reported.props)); got != compactJSON(t, tt.want) {
					t.Errorf("reported\n got %s\nwant %s", got, compactJSON(t, tt.want))
				}
			}
			if err := tw.check(); err != nil {
				t.Error(err)
			}
			if !json.Valid(tw.DeviceDoc()) {
				t.Errorf("device doc is not JSON: %s", tw.DeviceDoc())
			}
		})
	}
}

// manyKeys is n members of strings of size bytes, keys k1…kn.
func manyKeys(n, size int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + string(rune('0'+i)) + `":"` + strings.Repeat("y", size) + `"`)
	}
	return b.String()
}

func TestSizeLimit(t *testing.T) {
	tw := mustNew(t, ``)
	// 8 members of 2-byte keys and 4000-byte strings: 32016 bytes, under 32768.
	if _, err := tw.PatchReported([]byte(`{`+manyKeys(8, 4000)+`}`), t1); err != nil {
		t.Fatalf("a section of 32016 bytes: %v", err)
	}
	if got := sizeOf(tw.reported.props); got != 32016 {
		t.Fatalf("size %d, want 32016", got)
	}
	// 752 more bytes reach the limit exactly; one more is over it.
	if _, err := tw.PatchReported([]byte(`{"z":"`+strings.Repeat("y", 751)+`"}`), t1); err != nil {
		t.Fatalf("a section of exactly 32768 bytes: %v", err)
	}
	if _, err := tw.PatchReported([]byte(`{"z":"`+strings.Repeat("y", 752)+`"}`), t1); code(t, err) != dps.CodeInvalid {
		t.Fatalf("a section of 32769 bytes: %v", err)
	}
	// Control characters do not count; numbers count 8, booleans 4.
	if got := sizeOf(map[string]any{"ab": "c\n\u0085d\u007f\u001f", "n": json.Number("123456789"), "b": false, "o": map[string]any{"x": []any{true}}}); got != 2+2+1+8+1+4+1+1+4 {
		t.Errorf("sizeOf = %d, want %d", got, 2+2+1+8+1+4+1+1+4)
	}
}

// TestOverLimitMayShrink: a section already over its limit (a stored twin
// from before a limit change) accepts operations that do not grow it.
func TestOverLimitMayShrink(t *testing.T) {
	big := `{` + manyKeys(11, 4000) + `}` // 44022 bytes
	stored := `{"version":2,"tags":{},"desired":{"version":1,"properties":{},"metadata":{"lastUpdated":"2026-03-01T12:00:00.0000000Z"}},` +
		`"reported":{"version":1,"properties":` + big + `,"metadata":{"lastUpdated":"2026-03-01T12:00:00.0000000Z","members":{` + metaMembers(11) + `}}}}`
	var tw Twin
	if err := json.Unmarshal([]byte(stored), &tw); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.PatchReported([]byte(`{"k1":null}`), t1); err != nil {
		t.Errorf("shrinking an oversize section: %v", err)
	}
	if _, err := tw.PatchReported([]byte(`{"k2":"x"}`), t1); err != nil {
		t.Errorf("shrinking an oversize section: %v", err)
	}
	if _, err := tw.PatchReported([]byte(`{"new":"`+strings.Repeat("y", 4000)+`"}`), t1); code(t, err) != dps.CodeInvalid {
		t.Errorf("growing an oversize section: %v", err)
	}
}

func metaMembers(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + string(rune('0'+i)) + `":{"lastUpdated":"2026-03-01T12:00:00.0000000Z"}`)
	}
	return b.String()
}

func TestDesiredAndTags(t *testing.T) {
	const initial = `{"tags":{"model":"hp","site":{"b":"43"}},"properties":{"desired":{"interval":10,"greeting":"hi"}}}`
	type step struct {
		op   string // "patch-desired", "replace-desired", "patch-tags", "replace-tags", "update", "replace"
		body string
	}
	for _, tt := range []struct {
		name                          string
		step                          step
		code                          int
		note                          string // notification; "" for none
		desired, tags                 string // afterwards ("" = no tags)
		version, desiredVer, reported int64
	}{
		{"ok/patch-desired", step{"patch-desired", `{"interval":20,"greeting":null,"new":{"a":1}}`}, 0,
			`{"greeting":null,"interval":20,"new":{"a":1},"$version":2}`, `{"interval":20,"new":{"a":1}}`, `{"model":"hp","site":{"b":"43"}}`, 3, 2, 1},
		{"ok/patch-desired-ignores-version-and-metadata", step{"patch-desired", `{"interval":20,"$version":9,"$metadata":{"$lastUpdated":"x"}}`}, 0,
			`{"interval":20,"$version":2}`, `{"greeting":"hi","interval":20}`, `{"model":"hp","site":{"b":"43"}}`, 3, 2, 1},
		{"ok/replace-desired", step{"replace-desired", `{"only":true,"gone":null,"$version":1}`}, 0,
			`{"only":true,"$version":2}`, `{"only":true}`, `{"model":"hp","site":{"b":"43"}}`, 3, 2, 1},
		{"ok/patch-tags", step{"patch-tags", `{"site":{"floor":1},"model":null}`}, 0,
			``, `{"greeting":"hi","interval":10}`, `{"site":{"b":"43","floor":1}}`, 3, 1, 1},
		{"ok/patch-tags-removes-all", step{"patch-tags", `{"site":null,"model":null}`}, 0,
			``, `{"greeting":"hi","interval":10}`, ``, 3, 1, 1},
		{"ok/replace-tags", step{"replace-tags", `{"x":1}`}, 0,
			``, `{"greeting":"hi","interval":10}`, `{"x":1}`, 3, 1, 1},
		{"ok/update-both-counts-once", step{"update", `{"deviceId":"d","tags":{"x":1},"properties":{"desired":{"interval":5},"reported":{"r":1}}}`}, 0,
			`{"interval":5,"$version":2}`, `{"greeting":"hi","interval":5}`, `{"model":"hp","site":{"b":"43"},"x":1}`, 3, 2, 1},
		{"ok/update-tags-only", step{"update", `{"tags":{"x":1}}`}, 0,
			``, `{"greeting":"hi","interval":10}`, `{"model":"hp","site":{"b":"43"},"x":1}`, 3, 1, 1},
		{"ok/update-nothing", step{"update", `{"etag":"AAAAAAAAAAE=","properties":{}}`}, 0,
			``, `{"greeting":"hi","interval":10}`, `{"model":"hp","site":{"b":"43"}}`, 2, 1, 1},
		{"ok/replace-both", step{"replace", `{"tags":{"t":1},"properties":{"desired":{"d":1}}}`}, 0,
			`{"d":1,"$version":2}`, `{"d":1}`, `{"t":1}`, 3, 2, 1},
		{"ok/replace-absent-members-empty", step{"replace", `{}`}, 0,
			`{"$version":2}`, `{}`, ``, 3, 2, 1},
		{"fail/patch-desired-dollar-key", step{"patch-desired", `{"$foo":1}`}, dps.CodeInvalid, ``, ``, ``, 0, 0, 0},
		{"fail/patch-desired-nested-version", step{"patch-desired", `{"a":{"$version":1}}`}, dps.CodeInvalid, ``, ``, ``, 0, 0, 0},
		{"fail/patch-tags-metadata", step{"patch-tags", `{"$metadata":{}}`}, dps.CodeInvalid, ``, ``, ``, 0, 0, 0},
		{"fail/patch-desired-not-json", step{"patch-desired", `nope`}, dps.CodeFormatError, ``, ``, ``, 0, 0, 0},
		{"fail/update-not-object", step{"update", `[]`}, dps.CodeInvalid, ``, ``, ``, 0, 0, 0},
		{"fail/update-bad-desired-keeps-tags", step{"update", `{"tags":{"x":1},"properties":{"desired":{"a b":1}}}`}, dps.CodeInvalid, ``, ``, ``, 0, 0, 0},
		{"fail/update-tags-over-limit-keeps-desired", step{"update", `{"tags":{` + manyKeys(3, 4000) + `},"properties":{"desired":{"ok":1}}}`}, dps.CodeInvalid, ``, ``, ``, 0, 0, 0},
		{"fail/replace-desired-over-limit", step{"replace", `{"properties":{"desired":{` + manyKeys(9, 4000) + `}}}`}, dps.CodeInvalid, ``, ``, ``, 0, 0, 0},
		{"fail/replace-tags-string", step{"replace", `{"tags":"x"}`}, dps.CodeInvalid, ``, ``, ``, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tw := mustNew(t, initial)
			before := encode(t, tw)
			var note []byte
			var err error
			b := []byte(tt.step.body)
			switch tt.step.op {
			case "patch-desired":
				note, err = tw.PatchDesired(b, t1)
			case "replace-desired":
				note, err = tw.ReplaceDesired(b, t1)
			case "patch-tags":
				err = tw.PatchTags(b)
			case "replace-tags":
				err = tw.ReplaceTags(b)
			case "update":
				note, err = tw.Update(b, t1)
			case "replace":
				note, err = tw.Replace(b, t1)
			}
			if got := code(t, err); got != tt.code {
				t.Fatalf("code %d (%v), want %d", got, err, tt.code)
			}
			if err != nil {
				if after := encode(t, tw); !bytes.Equal(after, before) {
					t.Errorf("a refused operation changed the twin:\n%s\n%s", before, after)
				}
				return
			}
			if string(note) != tt.note {
				t.Errorf("notification %s, want %s", note, tt.note)
			}
			if got := string(appendObject(nil, tw.desired.props)); got != tt.desired {
				t.Errorf("desired %s, want %s", got, tt.desired)
			}
			if got := string(tw.Service().Tags); got != tt.tags {
				t.Errorf("tags %s, want %s", got, tt.tags)
			}
			if tw.Version() != tt.version || tw.DesiredVersion() != tt.desiredVer || tw.ReportedVersion() != tt.reported {
				t.Errorf("versions %d/%d/%d, want %d/%d/%d", tw.Version(), tw.DesiredVersion(), tw.ReportedVersion(), tt.version, tt.desiredVer, tt.reported)
			}
			if err := tw.check(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestMetadata follows $metadata through creation, merges, deletes and a
// replace, in the service view.
func TestMetadata(t *testing.T) {
	tw, err := New(json.RawMessage(`{"properties":{"desired":{"a":{"b":1,"c":2},"d":"x"}}}`), t0)
	if err != nil {
		t.Fatal(err)
	}
	check := func(step, want string) {
		t.Helper()
		if got := string(tw.Service().Properties.Desired); got != want {
			t.Errorf("%s:\n got %s\nwant %s", step, got, want)
		}
	}
	const (
		s0 = `"2026-03-01T12:00:00Z"`
		s1 = `"2026-03-01T12:00:01.1234567Z"`
		s2 = `"2026-03-01T12:00:02.5Z"`
	)
	check("new", `{"a":{"b":1,"c":2},"d":"x","$metadata":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":1,`+
		`"a":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":1,"b":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":1},"c":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":1}},`+
		`"d":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":1}},"$version":1}`)
	if _, err := tw.PatchDesired([]byte(`{"a":{"c":null,"e":{"f":true}}}`), t1); err != nil {
		t.Fatal(err)
	}
	check("merge", `{"a":{"b":1,"e":{"f":true}},"d":"x","$metadata":{"$lastUpdated":`+s1+`,"$lastUpdatedVersion":2,`+
		`"a":{"$lastUpdated":`+s1+`,"$lastUpdatedVersion":2,"b":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":1},`+
		`"e":{"$lastUpdated":`+s1+`,"$lastUpdatedVersion":2,"f":{"$lastUpdated":`+s1+`,"$lastUpdatedVersion":2}}},`+
		`"d":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":1}},"$version":2}`)
	if _, err := tw.PatchDesired([]byte(`{"a":"flat"}`), t2); err != nil {
		t.Fatal(err)
	}
	check("leaf replaces object", `{"a":"flat","d":"x","$metadata":{"$lastUpdated":`+s2+`,"$lastUpdatedVersion":3,`+
		`"a":{"$lastUpdated":`+s2+`,"$lastUpdatedVersion":3},"d":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":1}},"$version":3}`)
	if _, err := tw.ReplaceDesired([]byte(`{"z":[1]}`), t0); err != nil {
		t.Fatal(err)
	}
	check("replace", `{"z":[1],"$metadata":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":4,"z":{"$lastUpdated":`+s0+`,"$lastUpdatedVersion":4}},"$version":4}`)

	// Reported metadata has no $lastUpdatedVersion; a new twin's sections
	// carry only the root's $lastUpdated.
	fresh := mustNew(t, ``)
	s := fresh.Service()
	if got, want := string(s.Properties.Reported), `{"$metadata":{"$lastUpdated":`+s0+`},"$version":1}`; got != want {
		t.Errorf("new reported %s, want %s", got, want)
	}
	if got, want := string(s.Properties.Desired), `{"$metadata":{"$lastUpdated":`+s0+`},"$version":1}`; got != want {
		t.Errorf("new desired %s, want %s", got, want)
	}
	if _, err := fresh.PatchReported([]byte(`{"fw":"1"}`), t1); err != nil {
		t.Fatal(err)
	}
	if got, want := string(fresh.Service().Properties.Reported), `{"fw":"1","$metadata":{"$lastUpdated":`+s1+`,"fw":{"$lastUpdated":`+s1+`}},"$version":2}`; got != want {
		t.Errorf("reported %s, want %s", got, want)
	}
}

func TestServiceJSON(t *testing.T) {
	tw := mustNew(t, `{"tags":{"html":"<&>"}}`)
	b, err := json.Marshal(struct {
		DeviceID string `json:"deviceId"`
		Service
	}{"d1", tw.Service()})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"deviceId":"d1","version":2,"tags":{"html":"\u003c\u0026\u003e"},"properties":{"desired":{"$metadata":{"$lastUpdated":"2026-03-01T12:00:00Z"},"$version":1},"reported":{"$metadata":{"$lastUpdated":"2026-03-01T12:00:00Z"},"$version":1}}}`
	if string(b) != want {
		t.Errorf("service twin\n got %s\nwant %s", b, want)
	}
	if s := mustNew(t, ``).Service(); s.Tags != nil {
		t.Errorf("empty tags are %s, want omitted", s.Tags)
	}
}

// TestValueSemantics: a copy of a twin keeps its content when the
// original changes, and the reverse.
func TestValueSemantics(t *testing.T) {
	a := mustNew(t, `{"tags":{"t":{"u":1}},"properties":{"desired":{"d":{"e":1}}}}`)
	if _, err := a.PatchReported([]byte(`{"r":{"s":1}}`), t0); err != nil {
		t.Fatal(err)
	}
	b := a
	before := encode(t, b)
	if _, err := a.PatchReported([]byte(`{"r":{"s":2,"x":1}}`), t1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update([]byte(`{"tags":{"t":{"u":null}},"properties":{"desired":{"d":{"e":null}}}}`), t1); err != nil {
		t.Fatal(err)
	}
	if after := encode(t, b); !bytes.Equal(after, before) {
		t.Errorf("the copy changed:\n%s\n%s", before, after)
	}
	if _, err := b.PatchReported([]byte(`{"r":null}`), t2); err != nil {
		t.Fatal(err)
	}
	if got := string(appendObject(nil, a.reported.props)); got != `{"r":{"s":2,"x":1}}` {
		t.Errorf("the original changed with its copy: %s", got)
	}
}

// TestNotificationDecodes: the device's notification is JSON that merges
// into what the device read to give the new desired properties, as the
// Node SDK's _mergePatch does.
func TestNotificationDecodes(t *testing.T) {
	tw := mustNew(t, `{"properties":{"desired":{"a":1,"b":{"c":2}}}}`)
	var doc map[string]map[string]any
	if err := json.Unmarshal(tw.DeviceDoc(), &doc); err != nil {
		t.Fatal(err)
	}
	note, err := tw.PatchDesired([]byte(`{"a":null,"b":{"d":3}}`), t1)
	if err != nil {
		t.Fatal(err)
	}
	var patch map[string]any
	if err := json.Unmarshal(note, &patch); err != nil {
		t.Fatal(err)
	}
	merged := mergeNode(doc["desired"], patch)
	var now map[string]map[string]any
	if err := json.Unmarshal(tw.DeviceDoc(), &now); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(merged, now["desired"]) {
		t.Errorf("device merge %v, twin %v", merged, now["desired"])
	}
}

// mergeNode is the Node SDK's merge of a desired patch (twin.ts _mergePatch).
func mergeNode(dst, patch map[string]any) map[string]any {
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			d, ok := dst[k].(map[string]any)
			if !ok {
				d = map[string]any{}
			}
			dst[k] = mergeNode(d, v)
		default:
			dst[k] = v
		}
	}
	return dst
}

func TestTimes(t *testing.T) {
	tw := mustNew(t, ``)
	local := time.Date(2026, 3, 1, 14, 0, 3, 987654321, time.FixedZone("x", 2*3600))
	if _, err := tw.PatchReported([]byte(`{"a":1}`), local); err != nil {
		t.Fatal(err)
	}
	if got := tw.reported.meta.at; !got.Equal(time.Date(2026, 3, 1, 12, 0, 3, 987654300, time.UTC)) || got.Location() != time.UTC {
		t.Errorf("stamp %v, want UTC truncated to 100 ns", got)
	}
	if got := string(tw.Service().Properties.Reported); !strings.Contains(got, `"2026-03-01T12:00:03.9876543Z"`) {
		t.Errorf("reported %s: time not in Azure's format", got)
	}
}

func TestErrorMessages(t *testing.T) {
	tw := mustNew(t, ``)
	_, err := tw.PatchReported([]byte(`{"`+strings.Repeat("é", 600)+`":1}`), t1)
	e, ok := errors.AsType[*dps.Error](err)
	if !ok || !strings.Contains(e.Message, "longer than 1024 bytes") || len(e.Message) > 200 {
		t.Errorf("message %v", err)
	}
	_, err = tw.PatchReported([]byte(`{"a":{"b.c":1}}`), t1)
	if e, _ := errors.AsType[*dps.Error](err); e == nil || !strings.Contains(e.Message, `"b.c"`) || !strings.Contains(e.Message, "reported properties") {
		t.Errorf("message %v", err)
	}
}

func TestInitialCarriesTagsAndDesired(t *testing.T) {
	tw := mustNew(t, `{"tags":{"site":"a","n":{"x":1}},"properties":{"desired":{"rate":5,"cfg":{"on":true}}}}`)
	if _, err := tw.PatchReported([]byte(`{"fw":"1.0"}`), t1); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Update([]byte(`{"tags":{"site":"b"},"properties":{"desired":{"rate":null,"mode":"eco"}}}`), t2); err != nil {
		t.Fatal(err)
	}
	got := string(tw.Initial())
	want := `{"tags":{"n":{"x":1},"site":"b"},"properties":{"desired":{"cfg":{"on":true},"mode":"eco"}}}`
	if got != want {
		t.Fatalf("Initial() = %s\nwant        %s", got, want)
	}
	// A twin made from it has the same tags and desired properties, and
	// none of the reported ones.
	again := mustNew(t, got)
	if s := again.Service(); string(s.Tags) != `{"n":{"x":1},"site":"b"}` || !strings.HasPrefix(string(s.Properties.Desired), `{"cfg":{"on":true},"mode":"eco",`) ||
		!strings.HasPrefix(string(s.Properties.Reported), `{"$metadata"`) {
		t.Fatalf("twin from Initial(): %+v", s)
	}
	if got := string(mustNew(t, `{}`).Initial()); got != `{"tags":{},"properties":{"desired":{}}}` {
		t.Fatalf("empty twin: Initial() = %s", got)
	}
}

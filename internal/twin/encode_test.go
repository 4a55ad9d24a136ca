package twin

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/twin.json from the twin the golden test builds")

// golden builds a twin that uses every part of the stored form: tags,
// nested desired and reported members, an array, deletions, several
// versions and times.
func golden(t testing.TB) Twin {
	t.Helper()
	tw, err := New(json.RawMessage(`{"tags":{"model":"heatpump","site":{"building":"43"}},"properties":{"desired":{"interval":10,"greeting":"hi <&>","limits":{"min":-4503599627370496,"max":1.5e3}}}}`), t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{`{"fw":"1.0","sensors":[{"id":1},"x",true],"nested":{"a":{"b":null,"c":"\u2028\n"}}}`, `{"fw":null,"battery":55}`} {
		if _, err := tw.PatchReported([]byte(p), t1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tw.Update([]byte(`{"tags":{"site":{"floor":1}},"properties":{"desired":{"greeting":"<&> é","interval":null,"limits":{"max":100,"min":null}}}}`), t2); err != nil {
		t.Fatal(err)
	}
	return tw
}

func TestGoldenEncoding(t *testing.T) {
	path := filepath.Join("testdata", "twin.json")
	tw := golden(t)
	got := encode(t, tw)
	if *update {
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want = bytes.TrimSuffix(want, []byte("\n"))
	if !bytes.Equal(got, want) {
		t.Errorf("encoding changed (run with -update if intended):\n got %s\nwant %s", got, want)
	}
	var back Twin
	if err := json.Unmarshal(want, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, tw) {
		t.Errorf("decoded golden twin differs:\n got %#v\nwant %#v", back, tw)
	}
	if again := encode(t, back); !bytes.Equal(again, want) {
		t.Errorf("re-encoded golden twin differs:\n got %s\nwant %s", again, want)
	}
	// The views of the decoded twin are those of the original.
	if !bytes.Equal(back.DeviceDoc(), tw.DeviceDoc()) || !reflect.DeepEqual(back.Service(), tw.Service()) {
		t.Error("views of the decoded twin differ")
	}
}

func TestDeviceDocGolden(t *testing.T) {
	want := `{"desired":{"greeting":"<&> é","limits":{"max":100},"$version":2},` +
		`"reported":{"battery":55,"nested":{"a":{"c":"\u2028\n"}},"sensors":[{"id":1},"x",true],"$version":3}}`
	if got := string(golden(t).DeviceDoc()); got != want {
		t.Errorf("device doc\n got %s\nwant %s", got, want)
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	good := string(encode(t, golden(t)))
	for _, tt := range []struct{ name, doc string }{
		{"fail/not-json", `{`},
		{"fail/no-version", strings.Replace(good, `{"version":5,`, `{`, 1)},
		{"fail/no-desired", `{"version":2,"tags":{},"reported":{"version":1,"properties":{},"metadata":{"lastUpdated":"2026-03-01T12:00:00.0000000Z"}}}`},
		{"fail/zero-version", strings.Replace(good, `{"version":5,`, `{"version":0,`, 1)},
		{"fail/tags-array", strings.Replace(good, `"tags":{`, `"tags":[{`, 1)},
		{"fail/metadata-missing-member", strings.Replace(good, `"battery":{"lastUpdated":"2026-03-01T12:00:01.1234567Z"},`, ``, 1)},
		{"fail/no-metadata", strings.Replace(good, `"metadata":{"lastUpdated":"2026-03-01T12:00:01.1234567Z","members"`, `"x":{"lastUpdated":"2026-03-01T12:00:01.1234567Z","members"`, 1)},
		{"fail/null-property", strings.Replace(good, `"battery":55`, `"battery":null`, 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.doc == good {
				t.Fatal("the test's edit did not apply")
			}
			var tw Twin
			if err := json.Unmarshal([]byte(tt.doc), &tw); err == nil {
				t.Errorf("accepted %s", tt.doc)
			}
		})
	}
	if _, err := json.Marshal(Twin{}); err == nil {
		t.Error("the zero Twin encodes")
	}
}

package docs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLegacyShapeIsUsed: a document without a version is read through the
// frozen shape of the previous format, not through the current one (which
// encoding/json would also fill, matching names case-insensitively: the
// current names fold to the previous ones, but nothing should rest on that).
func TestLegacyShapeIsUsed(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "legacy", "*.json"))
	if len(files) == 0 {
		t.Fatal("no legacy documents")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cur, err := os.ReadFile(filepath.Join("testdata", filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			doc    []byte
			legacy bool
		}{{b, true}, {cur, false}} {
			var d struct{ V int }
			var old struct{}
			legacy, err := decode(tt.doc, &d, &d.V, &old)
			if err != nil || legacy != tt.legacy {
				t.Errorf("%s (%.12s…): legacy = %v, %v; want %v", filepath.Base(f), strings.TrimSpace(string(tt.doc)), legacy, err, tt.legacy)
			}
		}
	}
}

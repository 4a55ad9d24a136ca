package dps_test

import (
	"go/build"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/opendps/dps"

// rules lists, per package directory, the non-standard-library imports it
// may use (prefixes). Directories not listed may import anything under
// internal/ except cmd/.
var rules = map[string][]string{
	".":                                {},
	"internal/sas":                     {},
	"internal/logkey":                  {},
	"webhook":                          {},
	"internal/wire":                    {module},
	"internal/allocation":              {module},
	"internal/registration":            {module, module + "/internal/sas", module + "/internal/x509attest", module + "/internal/tpmattest", module + "/internal/logkey"},
	"internal/x509attest":              {module},
	"internal/hub/builtin":             {module},
	"internal/store/sqlite":            {module, "modernc.org/sqlite", module + "/internal/store/docs", module + "/internal/store/groupcache", module + "/internal/store/health"},
	"internal/store/docs":              {module},
	"internal/store/groupcache":        {module},
	"internal/store/health":            {module},
	"internal/httpapi":                 {module, module + "/internal/wire", module + "/internal/sas", module + "/internal/registration", module + "/internal/enrollment", module + "/internal/access", module + "/internal/logkey"},
	"internal/enrollment":              {module},
	"internal/access":                  {module, module + "/internal/sas"},
	"internal/client":                  {module, module + "/internal/wire", module + "/internal/sas"},
	"internal/allocation/webhookalloc": {module, module + "/webhook", module + "/internal/wire", module + "/internal/logkey"},
	"internal/wsstream":                {"github.com/gorilla/websocket"},
	"device":                           {module + "/internal/sas", module + "/internal/wsstream", "github.com/gorilla/websocket"}, // WebSocket: MQTT over 443
}

func TestImportRules(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && path != "." || d.Name() == "testdata" || d.Name() == "node_modules" {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(path, 0)
		if err != nil {
			return nil // no Go files
		}
		allowed, ruled := rules[filepath.ToSlash(path)]
		for _, imp := range pkg.Imports {
			first, _, _ := strings.Cut(imp, "/")
			if !strings.Contains(first, ".") {
				continue // standard library
			}
			if strings.HasPrefix(imp, module+"/cmd/") {
				t.Errorf("%s imports %s: nothing imports a command", path, imp)
			}
			if !ruled {
				continue
			}
			ok := false
			for _, a := range allowed {
				if imp == a || (a != module && strings.HasPrefix(imp, a+"/")) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s imports %s; allowed: %v", path, imp, allowed)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

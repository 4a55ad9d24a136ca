package dps_test

import (
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/opendps/dps"

// rules lists, per package directory, the non-standard-library imports it
// may use (prefixes: an entry other than the module itself allows its
// subpackages too). Every package has a rule (TestImportRules fails for one
// without), and doc.go names every package (TestPackageMap).
var rules = map[string][]string{
	".":                                {},
	"webhook":                          {},
	"device":                           {module + "/internal/sas", module + "/internal/wsstream", "github.com/gorilla/websocket"}, // WebSocket: MQTT over 443
	"examples/webhook":                 {module + "/webhook"},                                                                     // examples use public packages only
	"cmd/dpsd":                         {module, module + "/internal", "go.yaml.in/yaml/v3"},
	"cmd/dpsctl":                       {module + "/device", module + "/webhook", module + "/internal", "github.com/spf13/cobra"},
	"internal/sas":                     {},
	"internal/logkey":                  {},
	"internal/pki":                     {},
	"internal/buildinfo":               {},
	"internal/pgtest":                  {},
	"internal/wire":                    {module},
	"internal/allocation":              {module},
	"internal/registration":            {module, module + "/internal/logkey", module + "/internal/registration/engine"},
	"internal/registration/engine":     {module, module + "/internal/logkey"},
	"internal/symkey":                  {module, module + "/internal/sas"},
	"internal/x509attest":              {module, module + "/internal/logkey"},
	"internal/tpmattest":               {module, module + "/internal/sas", "github.com/google/go-tpm"},
	"internal/hub/builtin":             {module, module + "/internal/twin"},
	"internal/hub/remote":              {module, module + "/internal/sas"},
	"internal/iothub":                  {module, module + "/internal/twin", module + "/internal/hubproto", module + "/internal/hubquery"},
	"internal/hubquery":                {module},
	"internal/twin":                    {module},
	"internal/hubproto":                {module + "/internal/sas"},
	"internal/store/sqlite":            {module, "modernc.org/sqlite", module + "/internal/store/docs", module + "/internal/store/groupcache", module + "/internal/store/health"},
	"internal/store/postgres":          {module, "github.com/jackc/pgx/v5", module + "/internal/store/docs", module + "/internal/store/groupcache", module + "/internal/store/health"},
	"internal/store/storetest":         {module, module + "/internal/store/docs", module + "/internal/registration", module + "/internal/enrollment", module + "/internal/hub/builtin", module + "/internal/tpmattest", module + "/internal/issuance"},
	"internal/store/docs":              {module, module + "/internal/wire"}, // wire.Marshal: one JSON encoding
	"internal/store/groupcache":        {module},
	"internal/store/health":            {module},
	"internal/httpapi":                 {module, module + "/internal/wire", module + "/internal/sas", module + "/internal/registration", module + "/internal/enrollment", module + "/internal/access", module + "/internal/logkey", module + "/internal/iothub", module + "/internal/hubproto", module + "/internal/throttle", module + "/internal/faults", module + "/internal/regevents"},
	"internal/mqttapi":                 {module, module + "/internal/httpapi", module + "/internal/throttle", module + "/internal/faults", module + "/internal/registration", module + "/internal/iothub", module + "/internal/hubproto", module + "/internal/wire", module + "/internal/wsstream", module + "/internal/logkey", "github.com/mochi-mqtt/server/v2", "github.com/gorilla/websocket"},
	"internal/enrollment":              {module},
	"internal/issuance":                {module},
	"internal/access":                  {module, module + "/internal/sas"},
	"internal/client":                  {module, module + "/internal/wire", module + "/internal/sas", module + "/internal/faults"},
	"internal/manifest":                {module, module + "/internal/wire", module + "/internal/client", "go.yaml.in/yaml/v3"},
	"internal/allocation/webhookalloc": {module, module + "/webhook", module + "/internal/wire", module + "/internal/logkey"},
	"internal/wsstream":                {"github.com/gorilla/websocket"},
	"internal/throttle":                {},
	"internal/connlimit":               {},
	"internal/faults":                  {module + "/internal/logkey"},
	"internal/prom":                    {module, "github.com/prometheus/client_golang"},
	"internal/routing":                 {module},
	"internal/regevents":               {module},
	"internal/route/webhook":           {module, module + "/webhook", module + "/internal/route"},
	"internal/console":                 {module, module + "/internal/access", module + "/internal/sas", module + "/internal/iothub", module + "/internal/faults", module + "/internal/wire"},
	"internal/ceiling":                 {module, module + "/internal/registration"},
	"internal/bench":                   {module + "/device", module + "/internal/sas"},
	"internal/route":                   {module},
	"internal/route/routetest":         {module, module + "/internal/pki", module + "/internal/route"}, // test helpers
	"internal/route/kafka":             {module, module + "/internal/route", "github.com/twmb/franz-go"},
	"internal/route/nats":              {module, module + "/internal/route", "github.com/nats-io/nats.go"},
	"internal/route/mqtt":              {module, module + "/internal/route", module + "/internal/hubproto", "github.com/eclipse/paho.mqtt.golang"},
	"internal/dpstest":                 {module, module + "/internal/store/sqlite", "github.com/google/go-tpm"}, // test helpers
	"test/packaging":                   {module + "/internal/dpstest", "go.yaml.in/yaml/v3"},                    // tests only: image, release, compose, systemd
	"test/walkthrough":                 {},                                                                      // tests only: the README's walkthroughs
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
		if !ruled {
			t.Errorf("%s has no import rule in layout_test.go", path)
		}
		for _, imp := range pkg.Imports {
			first, _, _ := strings.Cut(imp, "/")
			if !strings.Contains(first, ".") {
				continue // standard library
			}
			if strings.HasPrefix(imp, module+"/cmd/") {
				t.Errorf("%s imports %s: nothing imports a command", path, imp)
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

// TestPackageMap: doc.go's package map names every package of the module.
func TestPackageMap(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for dir := range rules {
		if dir != "." && !strings.Contains(string(doc), dir) {
			t.Errorf("doc.go's package map does not name %s", dir)
		}
	}
}

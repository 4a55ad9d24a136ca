package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
)

// node is a dpsd process with one built-in hub, and the flags that reach
// its service API and its hub.
type node struct {
	p   *dpstest.Process
	svc []string // --connection-string, --endpoint, --ca-file
	hub []string // svc and --hub-connection-string
}

func startNode(t *testing.T, bin string) node {
	t.Helper()
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"\", admin: \"\" }\nretryAfterSeconds: 1\nlinkedHubs:\n  - { hostName: hub-a.example.net }\n", filepath.Join(t.TempDir(), "data")))
	p := dpstest.StartDPSD(t, bin, cfg)
	n := node{p: p, svc: []string{"--connection-string", p.ConnectionString, "--endpoint", "https://" + p.HTTPS, "--ca-file", p.CAFile}}
	n.hub = append(append([]string{}, n.svc...), "--hub-connection-string", p.HubConnectionString)
	return n
}

// run runs dpsctl and fails the test when it fails.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := dpsctl(t, args...)
	if err != nil {
		t.Fatalf("dpsctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (n node) register(t *testing.T, regID, key string) error {
	t.Helper()
	out, err := dpsctl(t, "register", "--endpoint", "https://"+n.p.HTTPS, "--ca-file", n.p.CAFile, "--id-scope", n.p.Scope, "--registration-id", regID, "--key", key)
	if err == nil && !strings.Contains(out, `"status": "assigned"`) {
		err = fmt.Errorf("not assigned:\n%s", out)
	}
	return err
}

// fleetYAML is a manifest of each kind; its keys come from the environment.
const fleetYAML = `
certificates:
  - name: factory
    certificate: "${DPS_TEST_CA}"
enrollmentGroups:
  - enrollmentGroupId: line-1
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_GROUP_KEY}"}}
enrollments:
  - registrationId: dev-1
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_DEV1_KEY}"}}
    initialTwin: {tags: {site: berlin}}
  - registrationId: dev-2
    attestation: {type: symmetricKey}
    provisioningStatus: disabled
hubDevices:
  hub-a.example.net:
    - deviceId: sensor-1
      authentication: {type: sas, symmetricKey: {primaryKey: "${DPSD_SENSOR_KEY}"}}
      twin: {tags: {site: berlin}, properties: {desired: {interval: 30}}}
`

// fleetEnv sets the fleet's variables and returns the keys.
func fleetEnv(t *testing.T) map[string]string {
	keys := map[string]string{"DPSD_GROUP_KEY": dpstest.Key(64), "DPSD_DEV1_KEY": dpstest.Key(64), "DPSD_SENSOR_KEY": dpstest.Key(32)}
	for k, v := range keys {
		t.Setenv(k, v)
	}
	t.Setenv("DPS_TEST_CA", dpstest.NewRoot(t, "Factory Root").PEM())
	return keys
}

func noKeys(t *testing.T, out string, keys map[string]string) {
	t.Helper()
	for name, k := range keys {
		if strings.Contains(out, k) {
			t.Errorf("the output holds %s's value:\n%s", name, out)
		}
	}
}

// TestApplyEndToEnd: dpsctl apply on a real dpsd — a dry run changes
// nothing, the first apply creates, the second changes nothing, one member
// changed is one update, --prune deletes what the file no longer names
// (not a device a registration assigned), keys are never printed, and a
// refused object makes dpsctl fail with the service's message.
func TestApplyEndToEnd(t *testing.T) {
	n := startNode(t, dpstest.BuildDPSD(t))
	keys := fleetEnv(t)
	file := dpstest.WriteFile(t, "fleet.yaml", fleetYAML)
	apply := func(args ...string) string {
		t.Helper()
		out := run(t, append(append([]string{"apply", "-f", file}, args...), n.hub...)...)
		noKeys(t, out, keys)
		return out
	}

	out := apply("--dry-run")
	for _, want := range []string{"+ certificate factory\n", "+ group line-1\n", "+ enrollment dev-1\n", "+ enrollment dev-2\n", "+ hubDevice hub-a.example.net/sensor-1\n",
		"5 to create, 0 to update, 0 to delete, 0 unchanged\n", "dry run: nothing was changed\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	if _, err := dpsctl(t, append([]string{"enrollment", "show", "dev-1"}, n.svc...)...); dps.KindOf(err) != dps.KindNotFound {
		t.Fatalf("after the dry run: %v", err)
	}

	if out = apply(); !strings.HasSuffix(out, "5 created, 0 updated, 0 deleted, 0 unchanged\n") || !strings.Contains(out, "+ created enrollment dev-1\n") {
		t.Errorf("first apply:\n%s", out)
	}
	if out = apply(); out != "no changes: 5 object(s) up to date\n" {
		t.Errorf("second apply:\n%s", out)
	}
	if err := n.register(t, "dev-1", keys["DPSD_DEV1_KEY"]); err != nil {
		t.Errorf("dev-1 registers with the file's key: %v", err)
	}
	tw := run(t, append([]string{"hub", "twin", "show", "sensor-1"}, n.hub[2:]...)...)
	if !strings.Contains(tw, `"interval": 30`) || !strings.Contains(tw, `"site": "berlin"`) {
		t.Errorf("sensor-1's twin:\n%s", tw)
	}

	if err := os.WriteFile(file, []byte(strings.Replace(fleetYAML, "provisioningStatus: disabled", "provisioningStatus: enabled", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	want := "~ updated enrollment dev-2\n    provisioningStatus: \"disabled\" → \"enabled\"\n0 created, 1 updated, 0 deleted, 4 unchanged\n"
	if out = apply(); out != want {
		t.Errorf("apply of one change:\n%s\nwant:\n%s", out, want)
	}

	// A device of the group registers: its hub device is the service's.
	devKey, _ := device.DeriveKey(keys["DPSD_GROUP_KEY"], "line-dev-1")
	if err := n.register(t, "line-dev-1", devKey); err != nil {
		t.Fatalf("line-dev-1: %v", err)
	}
	// The file no longer names dev-2 nor sensor-1.
	smaller := strings.Replace(fleetYAML, "  - registrationId: dev-2\n    attestation: {type: symmetricKey}\n    provisioningStatus: disabled\n", "", 1)
	smaller = smaller[:strings.Index(smaller, "    - deviceId")]
	smaller = strings.Replace(smaller, "hub-a.example.net:\n", "hub-a.example.net: []\n", 1)
	if err := os.WriteFile(file, []byte(smaller), 0o600); err != nil {
		t.Fatal(err)
	}
	if out = apply(); out != "no changes: 3 object(s) up to date\n" {
		t.Errorf("apply without --prune:\n%s", out)
	}
	if out = apply("--prune", "--dry-run"); out != "- hubDevice hub-a.example.net/sensor-1\n- enrollment dev-2\n0 to create, 0 to update, 2 to delete, 3 unchanged\ndry run: nothing was changed\n" {
		t.Errorf("prune dry run:\n%s", out)
	}
	if out = apply("--prune"); !strings.HasSuffix(out, "0 created, 0 updated, 2 deleted, 3 unchanged\n") {
		t.Errorf("prune:\n%s", out)
	}
	if _, err := dpsctl(t, append([]string{"enrollment", "show", "dev-2"}, n.svc...)...); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("dev-2 after prune: %v", err)
	}
	for _, id := range []string{"line-dev-1", "dev-1"} { // assigned by registrations: kept
		run(t, append([]string{"hub", "device", "show", id}, n.hub[2:]...)...)
	}

	bad := dpstest.WriteFile(t, "bad.yaml", "enrollments:\n  - {registrationId: bad-1, attestation: {type: symmetricKey}, iotHubs: [nowhere.example.net]}\n  - {registrationId: ok-1, attestation: {type: symmetricKey}}\n")
	out, err := dpsctl(t, append([]string{"apply", "-f", bad}, n.svc...)...)
	if err == nil || !strings.Contains(out, `! create enrollment bad-1 failed: iotHubs: "nowhere.example.net" is not a linked IoT hub of this instance (HTTP 400)`) ||
		!strings.Contains(out, "+ created enrollment ok-1") || !strings.Contains(err.Error(), "1 object(s) failed") {
		t.Errorf("a refused object: %v\n%s", err, out)
	}
}

// enrollmentKeys lists a node's enrollments or groups with their keys,
// by ID.
func enrollmentKeys(t *testing.T, n node, noun string) map[string]string {
	t.Helper()
	var list []map[string]any
	out := run(t, append([]string{noun, "list", "-o", "json", "--show-keys"}, n.svc...)...)
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	keys := map[string]string{}
	for _, e := range list {
		id, _ := e["registrationId"].(string)
		if id == "" {
			id, _ = e["enrollmentGroupId"].(string)
		}
		att, _ := e["attestation"].(map[string]any)
		sk, _ := att["symmetricKey"].(map[string]any)
		p, _ := sk["primaryKey"].(string)
		s, _ := sk["secondaryKey"].(string)
		st, _ := e["provisioningStatus"].(string)
		keys[id] = st + " " + p + " " + s
	}
	return keys
}

func sameKeys(t *testing.T, a, b node) {
	t.Helper()
	for _, noun := range []string{"enrollment", "group"} {
		ka, kb := enrollmentKeys(t, a, noun), enrollmentKeys(t, b, noun)
		if fmt.Sprint(ka) != fmt.Sprint(kb) || len(ka) == 0 {
			t.Errorf("%ss differ:\n%v\n%v", noun, ka, kb)
		}
	}
}

// TestExportImportEndToEnd: an export of one dpsd imported into another
// gives the same objects with the same keys (a device registers on the
// second with its original key, a group device with a key derived from
// the original group key); importing it again changes nothing.
func TestExportImportEndToEnd(t *testing.T) {
	bin := dpstest.BuildDPSD(t)
	a, b := startNode(t, bin), startNode(t, bin)
	keys := fleetEnv(t)
	run(t, append([]string{"apply", "-f", dpstest.WriteFile(t, "fleet.yaml", fleetYAML)}, a.hub...)...)
	devKey, _ := device.DeriveKey(keys["DPSD_GROUP_KEY"], "line-dev-1")
	if err := a.register(t, "line-dev-1", devKey); err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(t.TempDir(), "backup.jsonl")
	run(t, append([]string{"export", "-o", file}, a.hub...)...)
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("export file: %v %v", err, fi)
	}
	data, _ := os.ReadFile(file)
	var kinds []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var o struct{ Kind string }
		if err := json.Unmarshal([]byte(l), &o); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		kinds = append(kinds, o.Kind)
	}
	sort.Strings(kinds)
	if got := strings.Join(kinds, ","); got != "certificate,enrollment,enrollment,group,hubDevice,hubDevice,registration" {
		t.Errorf("kinds: %s", got)
	}

	out := run(t, append([]string{"import", "-f", file}, b.hub...)...)
	if !strings.HasSuffix(out, "6 created, 0 updated, 0 deleted, 0 unchanged\n") {
		t.Errorf("import:\n%s", out)
	}
	noKeys(t, out, keys)
	if out = run(t, append([]string{"import", "-f", file}, b.hub...)...); !strings.HasSuffix(out, "\nno changes: 6 object(s) up to date\n") || !strings.Contains(out, "1 registration state(s) not imported") {
		t.Errorf("second import:\n%s", out)
	}
	sameKeys(t, a, b)
	showA := run(t, append([]string{"hub", "device", "show", "sensor-1", "--show-keys", "-o", "json"}, a.hub[2:]...)...)
	showB := run(t, append([]string{"hub", "device", "show", "sensor-1", "--show-keys", "-o", "json"}, b.hub[2:]...)...)
	if !strings.Contains(showB, keys["DPSD_SENSOR_KEY"]) || !strings.Contains(showB, `"sas"`) || len(showA) == 0 {
		t.Errorf("sensor-1 on b:\n%s", showB)
	}
	if err := b.register(t, "dev-1", keys["DPSD_DEV1_KEY"]); err != nil {
		t.Errorf("dev-1 on b with its original key: %v", err)
	}
	devKey2, _ := device.DeriveKey(keys["DPSD_GROUP_KEY"], "line-dev-2")
	if err := b.register(t, "line-dev-2", devKey2); err != nil {
		t.Errorf("a group device on b with a key derived from the original group key: %v", err)
	}
}

// TestImportFromEndToEnd: import --from copies one dpsd's CA certificates,
// groups and enrollments (keys included) to another, paging through the
// query API; stopped after --limit objects it resumes from its state file
// and copies only the rest; the report says what was not copied whole;
// devices register on the target with their original keys.
func TestImportFromEndToEnd(t *testing.T) {
	bin := dpstest.BuildDPSD(t)
	a, b := startNode(t, bin), startNode(t, bin)
	keys := fleetEnv(t)
	run(t, append([]string{"apply", "-f", dpstest.WriteFile(t, "fleet.yaml", fleetYAML)}, a.hub...)...)
	ek, _ := dpstest.SoftwareTPMKeys(t)
	for i := range 4 {
		run(t, append([]string{"enrollment", "create", fmt.Sprintf("more-%d", i)}, a.svc...)...)
	}
	run(t, append([]string{"enrollment", "create", "tpm-1", "--attestation", "tpm", "--endorsement-key", ek}, a.svc...)...)
	if err := a.register(t, "dev-1", keys["DPSD_DEV1_KEY"]); err != nil {
		t.Fatal(err)
	}

	state := filepath.Join(t.TempDir(), "import.state.json")
	from := []string{"import", "--from", a.p.ConnectionString, "--from-endpoint", "https://" + a.p.HTTPS, "--from-ca-file", a.p.CAFile, "--state-file", state, "--page-size", "2"}
	from = append(from, b.svc...)
	out := run(t, append(from, "--limit", "4")...)
	if !strings.Contains(out, "copied: 4 created, 0 updated, 0 unchanged, 0 failed\n") || !strings.Contains(out, "stopped after --limit 4 object(s)") {
		t.Errorf("first run:\n%s", out)
	}
	st, err := os.ReadFile(state)
	if err != nil || !strings.Contains(string(st), `"phase": "enrollment"`) {
		t.Fatalf("state file: %v\n%s", err, st)
	}
	noKeys(t, string(st), keys)
	if got := enrollmentKeys(t, b, "enrollment"); len(got) != 2 {
		t.Errorf("after the first run b has %d enrollments, want 2: %v", len(got), got)
	}

	// The source's connection string from the environment, out of argv:
	// $DPS_SOURCE_CONNECTION_STRING, or the variable --from-env names.
	fromEnv := append([]string{"import"}, from[3:]...)
	if out, err := dpsctl(t, append(fromEnv, "--from-env", "DPS_TEST_OLD_DPS")...); err == nil || !strings.Contains(err.Error(), "--from-env DPS_TEST_OLD_DPS: the environment variable is not set") {
		t.Errorf("--from-env of an unset variable: %v\n%s", err, out)
	}
	if out, err := dpsctl(t, append(from, "--from-env", "DPS_TEST_OLD_DPS")...); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("--from and --from-env: %v\n%s", err, out)
	}
	t.Setenv("DPS_SOURCE_CONNECTION_STRING", a.p.ConnectionString)
	out = run(t, fromEnv...)
	noKeys(t, out, keys)
	for _, want := range []string{"resumed the copy recorded in", "copied: 9 created, 0 updated, 0 unchanged, 0 failed\n", "enrollments: copying\n", "enrollments: 7 of 7 copied\n",
		"TPM enrollments: the endorsement key is copied, the TPM registration is not (the device registers again and receives a new hub key): tpm-1",
		"registration states are not copied (the service API cannot create them): these devices register again on the target, and may be assigned another hub: dev-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("second run lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the state file was kept: %v", err)
	}
	sameKeys(t, a, b)
	if err := b.register(t, "dev-1", keys["DPSD_DEV1_KEY"]); err != nil {
		t.Errorf("dev-1 on b with its original key: %v", err)
	}
	devKey, _ := device.DeriveKey(keys["DPSD_GROUP_KEY"], "line-dev-9")
	if err := b.register(t, "line-dev-9", devKey); err != nil {
		t.Errorf("a group device on b: %v", err)
	}
	t.Setenv("DPS_SOURCE_CONNECTION_STRING", "")
	t.Setenv("DPS_TEST_OLD_DPS", a.p.ConnectionString)
	if out = run(t, append(fromEnv, "--from-env", "DPS_TEST_OLD_DPS")...); !strings.Contains(out, "copied: 0 created, 0 updated, 9 unchanged, 0 failed\n") {
		t.Errorf("a copy run again:\n%s", out)
	}
}

// TestImportProgress: plain progress lines name the copied count, and the
// total once the copy knows it (it does not read the source ahead).
func TestImportProgress(t *testing.T) {
	var b strings.Builder
	p := newProgress(&b)
	p.update("enrollment", 0, -1)
	for i := 1; i <= 200; i++ {
		p.update("enrollment", i, -1)
	}
	p.update("enrollment", 250, 250)
	p.update("group", 0, 3)
	p.update("group", 3, 3)
	p.finish()
	want := "enrollments: copying\nenrollments: 100 copied\nenrollments: 200 copied\nenrollments: 250 of 250 copied\ngroups: copying\ngroups: 3 of 3 copied\n"
	if b.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", b.String(), want)
	}
}

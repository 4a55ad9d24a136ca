package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
)

// TestHubRegistryCommands: dpsctl manages the identities and twins of the
// built-in hub localhost of a real dpsd with the hub connection string it
// printed: device create/show/list/update/delete (keys redacted unless
// --show-keys), twin update/show with --set and --desired-file, c2d send.
func TestHubRegistryCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"\", admin: \"\" }\n", filepath.Join(dir, "data")))
	p := dpstest.StartDPSD(t, dpstest.BuildDPSD(t), cfg)
	common := []string{"--hub-connection-string", p.HubConnectionString, "--endpoint", "https://" + p.HTTPS, "--ca-file", p.CAFile}
	run := func(args ...string) string {
		t.Helper()
		out, err := dpsctl(t, append(args, common...)...)
		if err != nil {
			t.Fatalf("dpsctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	type device struct {
		DeviceID, Status, StatusReason, ETag string
		Authentication                       struct {
			SymmetricKey struct{ PrimaryKey, SecondaryKey string }
		}
	}
	decode := func(out string) device {
		t.Helper()
		var d device
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return d
	}
	d := decode(run("hub", "device", "create", "cli-1", "--status-reason", "new", "-o", "json"))
	if d.DeviceID != "cli-1" || d.Status != "enabled" || d.StatusReason != "new" || d.Authentication.SymmetricKey.PrimaryKey != "REDACTED" {
		t.Errorf("create: %+v", d)
	}
	shown := decode(run("hub", "device", "show", "cli-1", "--show-keys", "-o", "json"))
	if len(shown.Authentication.SymmetricKey.PrimaryKey) != 44 || shown.ETag != d.ETag {
		t.Errorf("show --show-keys: %+v", shown)
	}
	if out := run("hub", "device", "show", "cli-1", "--show-keys"); !strings.Contains(out, "primaryKey: "+shown.Authentication.SymmetricKey.PrimaryKey) {
		t.Errorf("show as text:\n%s", out)
	}
	if _, err := dpsctl(t, append([]string{"hub", "device", "create", "cli-1"}, common...)...); err == nil || !strings.Contains(err.Error(), "DeviceAlreadyExists") {
		t.Errorf("second create: %v", err)
	}
	u := decode(run("hub", "device", "update", "cli-1", "--disable", "--status-reason", "stolen", "-o", "json"))
	if u.Status != "disabled" || u.StatusReason != "stolen" || u.ETag == d.ETag {
		t.Errorf("update --disable: %+v", u)
	}
	if again := decode(run("hub", "device", "show", "cli-1", "--show-keys", "-o", "json")); again.Authentication != shown.Authentication {
		t.Error("update changed the keys")
	}
	run("hub", "device", "create", "cli-2")
	if out := run("hub", "device", "list"); !strings.Contains(out, "cli-1\tdisabled (stolen)\tDisconnected") || !strings.Contains(out, "cli-2\tenabled\t") || strings.Count(out, "\n") != 2 {
		t.Errorf("list:\n%s", out)
	}

	desired := filepath.Join(dir, "desired.json")
	if err := os.WriteFile(desired, []byte(`{"interval":30,"mode":"eco"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	run("hub", "twin", "update", "cli-2", "--desired-file", desired, "--set", "tags.site.name=berlin", "--set", "desired.level=3")
	var tw struct {
		Tags       map[string]any
		Properties struct{ Desired map[string]any }
	}
	if err := json.Unmarshal([]byte(run("hub", "twin", "show", "cli-2")), &tw); err != nil {
		t.Fatal(err)
	}
	if site, _ := tw.Tags["site"].(map[string]any); site["name"] != "berlin" || tw.Properties.Desired["interval"] != 30.0 ||
		tw.Properties.Desired["mode"] != "eco" || tw.Properties.Desired["level"] != 3.0 {
		t.Errorf("twin after update: %+v", tw)
	}
	if out := run("hub", "c2d", "send", "cli-2", `{"cmd":"x"}`, "--prop", "priority=high"); !strings.Contains(out, "queued for cli-2") {
		t.Errorf("c2d send: %s", out)
	}
	if n := decodeCount(t, run("hub", "device", "show", "cli-2", "-o", "json")); n != 1 {
		t.Errorf("cloudToDeviceMessageCount = %d after one send", n)
	}
	// Feedback: two messages that ask for negative feedback, purged
	// (through the service API), give two Purged records, printed once.
	if out := run("hub", "c2d", "feedback"); out != "" {
		t.Errorf("feedback before any: %q", out)
	}
	run("hub", "c2d", "send", "cli-2", "a", "--message-id", "fb-1", "--ack", "negative")
	run("hub", "c2d", "send", "cli-2", "b", "--message-id", "fb-2", "--ack", "full")
	svc, err := client.FromConnectionString(p.HubConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	svc.Endpoint = "https://" + p.HTTPS
	if svc.HTTP, err = (&tlsFlags{caFile: p.CAFile}).client(0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.HubCall(t.Context(), "DELETE", "/devices/cli-2/commands", nil, nil); err != nil {
		t.Fatal(err)
	}
	out := run("hub", "c2d", "feedback", "-o", "json")
	var recs []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]string
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("feedback line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 2 || recs[0]["originalMessageId"] != "fb-1" || recs[1]["originalMessageId"] != "fb-2" || recs[0]["statusCode"] != "Purged" ||
		recs[0]["deviceId"] != "cli-2" || recs[0]["deviceGenerationId"] == "" {
		t.Errorf("feedback:\n%s", out)
	}
	if out := run("hub", "c2d", "feedback"); out != "" {
		t.Errorf("feedback printed twice: %q", out)
	}
	if out, err := dpsctl(t, "hub", "connection-string", "--hub", "hub.example.net", "--key", "a2V5"); err != nil || out != "HostName=hub.example.net;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5\n" {
		t.Errorf("connection-string: %q, %v", out, err)
	}
	if _, err := dpsctl(t, "hub", "connection-string", "--hub", "h", "--key", "not base64!"); err == nil {
		t.Error("connection-string with a key that is not base64 succeeded")
	}
	if _, err := dpsctl(t, append([]string{"hub", "method", "invoke", "cli-2", "ping"}, common...)...); err == nil || !strings.Contains(err.Error(), "isn't online") {
		t.Errorf("method to an offline device: %v", err)
	}
	// Queries, paged one twin at a time: every page is read.
	run("hub", "device", "create", "cli-3")
	run("hub", "twin", "update", "cli-3", "--set", "tags.site.name=berlin")
	if out := run("hub", "query", "SELECT * FROM devices WHERE tags.site.name = 'berlin'", "--page-size", "1"); out != "cli-2\tenabled\t{\"site\":{\"name\":\"berlin\"}}\ncli-3\tenabled\t{\"site\":{\"name\":\"berlin\"}}\n" {
		t.Errorf("query:\n%q", out)
	}
	if out := run("hub", "query", "SELECT COUNT() AS n FROM devices", "-o", "json"); strings.Join(strings.Fields(out), "") != `[{"n":3}]` {
		t.Errorf("count query: %s", out)
	}
	if _, err := dpsctl(t, append([]string{"hub", "query", "SELECT * FROM devices ORDER BY deviceId"}, common...)...); err == nil {
		t.Error("an unsupported query succeeded")
	}
	run("hub", "device", "delete", "cli-1")
	if _, err := dpsctl(t, append([]string{"hub", "device", "show", "cli-1"}, common...)...); err == nil || !strings.Contains(err.Error(), "DeviceNotFound") {
		t.Errorf("show after delete: %v", err)
	}
}

func decodeCount(t *testing.T, out string) int {
	t.Helper()
	var d struct {
		N int `json:"cloudToDeviceMessageCount"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	return d.N
}

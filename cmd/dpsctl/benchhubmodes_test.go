package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/dpstest"
)

// TestBenchHubIdle: dpsctl bench hub --idle creates its devices on a real
// dpsd, connects every one over TLS MQTT from two source addresses, holds
// them and finds them all still open, and reports dpsd's memory from
// /proc; --handshake-only against the same listener connects the same
// count without devices; a wrong key connects none.
func TestBenchHubIdle(t *testing.T) {
	dir := t.TempDir()
	bin := dpstest.BuildDPSD(t)
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\n", filepath.Join(dir, "data")))
	p := dpstest.StartDPSD(t, bin, cfg)
	common := []string{"--hub-connection-string", p.HubConnectionString, "--endpoint", "https://" + p.HTTPS, "--mqtt-address", p.MQTT,
		"--ca-file", p.CAFile, "--devices", "7", "--connect-concurrency", "3", "--hold", "300ms", "--pid", strconv.Itoa(p.PID()),
		"--source-addresses", "127.0.0.1,127.0.0.2", "-o", "json"}

	out, err := dpsctl(t, append([]string{"bench", "hub", "--idle", "--prefix", "idle", "--group-key", "QUFBQUFBQUFBQUFBQUFBQUFBQUE="}, common...)...)
	if err != nil {
		t.Fatalf("bench hub --idle: %v\n%s", err, out)
	}
	s := decodeConnectSummary(t, out)
	if s.Mode != "mqtt" || s.Devices != 7 || s.Connected != 7 || s.StillOpen != 7 || s.Concurrency != 3 || s.PerSecond <= 0 ||
		s.LatencyMS.P50 <= 0 || s.LatencyMS.P99 < s.LatencyMS.P50 || s.HeldSeconds < 0.3 ||
		strings.Join(s.SourceAddresses, ",") != "127.0.0.1,127.0.0.2" || len(s.Failures) != 0 {
		t.Errorf("summary: %+v\n%s", s, out)
	}
	if s.ServerUp == nil || s.ServerEnd == nil || s.ServerUp.RSSMiB < 5 || s.ServerEnd.HWMMiB < s.ServerEnd.RSSMiB || s.Client == nil || s.Client.RSSMiB <= 0 {
		t.Errorf("memory: up %+v end %+v client %+v", s.ServerUp, s.ServerEnd, s.Client)
	}

	out, err = dpsctl(t, append([]string{"bench", "hub", "--idle", "--handshake-only"}, common...)...)
	if err != nil {
		t.Fatalf("bench hub --idle --handshake-only: %v\n%s", err, out)
	}
	if s := decodeConnectSummary(t, out); s.Mode != "tls-handshake" || s.Connected != 7 || s.StillOpen != 7 || s.LatencyMS.P50 <= 0 {
		t.Errorf("handshake summary: %+v", s)
	}

	// The devices exist with keys from that group key: another key is refused.
	out, err = dpsctl(t, "bench", "hub", "--idle", "--prefix", "idle", "--hub", hubHost(t, p.HubConnectionString), "--group-key", "QkJCQkJCQkJCQkJCQkJCQkJCQkI=",
		"--mqtt-address", p.MQTT, "--ca-file", p.CAFile, "--devices", "2", "--hold", "0s", "-o", "json")
	if err == nil || !strings.Contains(out, "refused, return code 5") {
		t.Errorf("a wrong group key: %v\n%s", err, out)
	}
	if s := decodeConnectSummary(t, out); s.Connected != 0 || s.Failures["CONNACK: refused, return code 5"] != 2 {
		t.Errorf("wrong-key summary: %+v", s)
	}
}

// TestBenchHubTwin: dpsctl bench hub --twin on a real dpsd counts reported
// PATCHes and twin GETs from its devices, and times exactly --samples
// desired notifications and direct methods, none failed; the last reported
// patch is in a device's twin.
func TestBenchHubTwin(t *testing.T) {
	dir := t.TempDir()
	bin := dpstest.BuildDPSD(t)
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\n", filepath.Join(dir, "data")))
	p := dpstest.StartDPSD(t, bin, cfg)
	out, err := dpsctl(t, "bench", "hub", "--twin", "--hub-connection-string", p.HubConnectionString, "--endpoint", "https://"+p.HTTPS,
		"--mqtt-address", p.MQTT, "--ca-file", p.CAFile, "--devices", "3", "--duration", "500ms", "--samples", "9",
		"--service-in-flight", "2", "--prefix", "tw", "-o", "json")
	if err != nil {
		t.Fatalf("bench hub --twin: %v\n%s", err, out)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &fields); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, k := range []string{"devices", "connected", "connectSeconds", "serviceInFlight", "reportedPatch", "twinGet", "desiredNotification", "methodRoundTrip", "failures"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("the summary has no %q: %s", k, out)
		}
	}
	type op struct {
		Count, Failed      int
		Seconds, PerSecond float64
		LatencyMS          struct{ P50, P90, P99, Max float64 }
	}
	var s struct {
		Devices, Connected, ServiceInFlight int
		ReportedPatch, TwinGet              op
		Desired                             op `json:"desiredNotification"`
		Method                              op `json:"methodRoundTrip"`
		Failures                            map[string]int
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.Devices != 3 || s.Connected != 3 || s.ServiceInFlight != 2 || len(s.Failures) != 0 {
		t.Errorf("summary: %s", out)
	}
	for name, o := range map[string]op{"reportedPatch": s.ReportedPatch, "twinGet": s.TwinGet} {
		if o.Count < 3 || o.Failed != 0 || o.Seconds < 0.4 || o.Seconds > 0.6 || o.PerSecond <= 0 || o.LatencyMS.P50 <= 0 || o.LatencyMS.Max < o.LatencyMS.P99 {
			t.Errorf("%s: %+v", name, o)
		}
	}
	for name, o := range map[string]op{"desired": s.Desired, "method": s.Method} {
		if o.Count != 9 || o.Failed != 0 || o.LatencyMS.P50 <= 0 || o.LatencyMS.Max < o.LatencyMS.P99 {
			t.Errorf("%s: %+v", name, o)
		}
	}
	tw, err := dpsctl(t, "hub", "twin", "show", "tw-000002", "-o", "json", "--hub-connection-string", p.HubConnectionString,
		"--endpoint", "https://"+p.HTTPS, "--ca-file", p.CAFile)
	if err != nil || !strings.Contains(tw, `"bench"`) {
		t.Errorf("twin of tw-000002: %v\n%s", err, tw)
	}
}

type connectSummary struct {
	Mode                            string
	Devices, Connected, Concurrency int
	StillOpen                       int
	SourceAddresses                 []string
	Seconds, HeldSeconds            float64
	PerSecond                       float64                              `json:"connectionsPerSecond"`
	LatencyMS                       struct{ P50, P90, P99, Max float64 } `json:"connectLatencyMs"`
	Failures                        map[string]int
	ServerUp                        *procMemory `json:"serverMemoryUp"`
	ServerEnd                       *procMemory `json:"serverMemoryEnd"`
	Client                          *procMemory `json:"clientMemory"`
}

func decodeConnectSummary(t *testing.T, out string) connectSummary {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &fields); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, k := range []string{"mode", "devices", "connected", "concurrency", "sourceAddresses", "seconds", "connectionsPerSecond",
		"connectLatencyMs", "heldSeconds", "stillOpen", "failures"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("the summary has no %q: %s", k, out)
		}
	}
	var s connectSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// hubHost is a connection string's HostName.
func hubHost(t *testing.T, cs string) string {
	for part := range strings.SplitSeq(cs, ";") {
		if v, ok := strings.CutPrefix(part, "HostName="); ok {
			return v
		}
	}
	t.Fatalf("no HostName in %q", cs)
	return ""
}

type procMemory struct {
	RSSMiB float64 `json:"vmRssMiB"`
	HWMMiB float64 `json:"vmHwmMiB"`
}

package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/internal/dpstest"
)

// TestBenchHub: dpsctl bench hub creates its devices on a real dpsd's
// built-in hub through the registry API, connects them over TLS MQTT and
// sends exactly --messages QoS 1 messages, every one acknowledged and in
// the hub's event log; the JSON summary has its fields. Against
// dpsd --ceiling, the devices are not created (their keys are derived from
// the ceiling's group key) and the messages are acknowledged all the same.
func TestBenchHub(t *testing.T) {
	dir := t.TempDir()
	bin := dpstest.BuildDPSD(t)
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\n", filepath.Join(dir, "data")))
	p := dpstest.StartDPSD(t, bin, cfg)

	out, err := dpsctl(t, "bench", "hub", "--hub-connection-string", p.HubConnectionString, "--endpoint", "https://"+p.HTTPS,
		"--mqtt-address", p.MQTT, "--ca-file", p.CAFile, "--devices", "5", "--in-flight", "2", "--messages", "40",
		"--payload-size", "1024", "--prefix", "bt", "-o", "json")
	if err != nil {
		t.Fatalf("bench hub: %v\n%s", err, out)
	}
	s := decodeHubSummary(t, out)
	if s.Devices != 5 || s.Connected != 5 || s.Sent != 40 || s.Acknowledged != 40 || s.InFlight != 2 || s.PayloadBytes != 1024 ||
		s.PerSecond <= 0 || s.LatencyMS.P50 <= 0 || s.LatencyMS.P99 < s.LatencyMS.P50 || s.LatencyMS.Max < s.LatencyMS.P99 {
		t.Errorf("summary: %+v\n%s", s, out)
	}
	events, err := dpsctl(t, "hub", "events", "-o", "json", "--hub-connection-string", p.HubConnectionString,
		"--endpoint", "https://"+p.HTTPS, "--ca-file", p.CAFile)
	if err != nil {
		t.Fatalf("hub events: %v\n%s", err, events)
	}
	n := 0
	for _, line := range strings.Split(events, "\n") {
		if strings.Contains(line, `"iothub-connection-device-id":"bt-`) && strings.Contains(line, `"iothub-message-source":"Telemetry"`) &&
			strings.Contains(line, `"body":"`+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("x"), 1024))+`"`) {
			n++
		}
	}
	if n != 40 {
		t.Errorf("the event log holds %d bench messages, want 40:\n%s", n, events)
	}

	mqtt, ca := startCeiling(t, bin, dir)
	out, err = dpsctl(t, "bench", "hub", "--hub", "localhost", "--group-key", "QUFBQUFBQUFBQUFBQUFBQUFBQUE=", "--mqtt-address", mqtt,
		"--ca-file", ca, "--devices", "3", "--messages", "30", "-o", "json")
	if err != nil {
		t.Fatalf("bench hub against the ceiling: %v\n%s", err, out)
	}
	if s := decodeHubSummary(t, out); s.Connected != 3 || s.Acknowledged != 30 || s.InFlight != 1 || s.PayloadBytes != 1024 {
		t.Errorf("ceiling summary: %+v", s)
	}
	if out, err := dpsctl(t, "bench", "hub", "--hub", "localhost", "--group-key", "QkJCQkJCQkJCQkJCQkJCQkJCQkI=", "--mqtt-address", mqtt,
		"--ca-file", ca, "--devices", "2", "--messages", "2", "-o", "json"); err == nil || !strings.Contains(err.Error(), "no device connected") {
		t.Errorf("a wrong group key against the ceiling: %v\n%s", err, out)
	}
}

type hubSummary struct {
	Devices, Connected, Sent, Acknowledged, InFlight, PayloadBytes int
	PerSecond                                                      float64                              `json:"messagesPerSecond"`
	LatencyMS                                                      struct{ P50, P90, P99, Max float64 } `json:"pubackLatencyMs"`
}

// decodeHubSummary checks that every field of the JSON summary is there
// and decodes it.
func decodeHubSummary(t *testing.T, out string) hubSummary {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &fields); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, k := range []string{"devices", "connected", "connectSeconds", "inFlight", "payloadBytes", "sent", "acknowledged", "failed",
		"seconds", "messagesPerSecond", "pubackLatencyMs", "connectFailures"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("the summary has no %q: %s", k, out)
		}
	}
	var s hubSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// startCeiling runs dpsd --ceiling on loopback and returns its MQTT
// address and CA file.
func startCeiling(t *testing.T, bin, dir string) (mqtt, ca string) {
	t.Helper()
	cfg := dpstest.WriteFile(t, "ceiling.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\nlinkedHubs: [{hostName: localhost}]\n", filepath.Join(dir, "ceiling")))
	cmd := exec.Command(bin, "--ceiling", "--config", cfg)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Linked hubs:") {
				banner <- b.String()
			}
		}
	}()
	var text string
	select {
	case text = <-banner:
	case <-time.After(60 * time.Second):
		t.Fatal("dpsd --ceiling did not start")
	}
	m := regexp.MustCompile(`\(TLS ([0-9.:]+)\)`).FindStringSubmatch(text)
	c := regexp.MustCompile(`CA certificate:\s+(\S+)`).FindStringSubmatch(text)
	if m == nil || c == nil {
		t.Fatalf("ceiling banner:\n%s", text)
	}
	return m[1], c[1]
}

package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestEvents: dpsctl events prints the registration-events feed, one line
// per event (filtered by registration ID, kind and time, or as JSON
// lines), and with --follow prints a device registering after it started.
func TestEvents(t *testing.T) {
	https, mqtt, scope, cs, ca := startDPSD(t)
	endpoint := "https://" + https
	svc := []string{"--connection-string", cs, "--endpoint", endpoint, "--ca-file", ca}
	run := func(args ...string) string {
		t.Helper()
		out, err := dpsctl(t, args...)
		if err != nil {
			t.Fatalf("dpsctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	key := func(id string) string {
		t.Helper()
		var e struct {
			Attestation struct {
				SymmetricKey struct{ PrimaryKey string } `json:"symmetricKey"`
			} `json:"attestation"`
		}
		out := run(append([]string{"enrollment", "create", id, "--show-keys", "-o", "json", "--hub", "hub-b.example.net"}, svc...)...)
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return e.Attestation.SymmetricKey.PrimaryKey
	}
	k1 := key("evt-1")
	run("register", "--endpoint", endpoint, "--ca-file", ca, "--id-scope", scope, "--registration-id", "evt-1", "--key", k1, "--payload", `{"fw":"1.0"}`)
	if out, err := dpsctl(t, "register", "--transport", "mqtt", "--mqtt-address", mqtt, "--ca-file", ca, "--id-scope", scope, "--registration-id", "evt-1",
		"--key", "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMTI="); err == nil {
		t.Fatalf("a wrong key registered:\n%s", out)
	}

	// The feed is written asynchronously: wait for the three events.
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; {
		out = run(append([]string{"events", "--registration-id", "evt-1"}, svc...)...)
		if strings.Count(out, "\n") >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("events printed %d lines, want 3:\n%s", len(lines), out)
	}
	for i, want := range []string{` accepted evt-1 https 127.0.0.1:`, ` assigned evt-1 https 127.0.0.1:`, ` refused  evt-1 mqtt 127.0.0.1:`} {
		if !strings.HasPrefix(lines[i], "20") || !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %q, want <time>%s…", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[0], ` payload={"fw":"1.0"}`) || !strings.Contains(lines[1], " hub=hub-b.example.net device=evt-1") ||
		!strings.Contains(lines[2], ` 401002 authentication: "mqtt connect: `) {
		t.Errorf("the details:\n%s", out)
	}
	if out := run(append([]string{"events", "--kind", "refused", "-o", "json"}, svc...)...); strings.Count(out, "\n") != 1 ||
		!strings.Contains(out, `"kind":"refused"`) || !strings.Contains(out, `"transport":"mqtt"`) || !strings.Contains(out, `"errorCode":401002`) {
		t.Errorf("--kind refused -o json:\n%s", out)
	}
	if out := run(append([]string{"events", "--since", "1ms"}, svc...)...); out != "" {
		t.Errorf("--since 1ms printed older events:\n%s", out)
	}
	if out, err := dpsctl(t, append([]string{"events", "--kind", "exploded"}, svc...)...); err == nil {
		t.Errorf("--kind exploded: no error\n%s", out)
	}

	// --follow prints the events kept, then what happens after it started,
	// and ends on interrupt.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var follow lockedBuffer
	done := make(chan error, 1)
	go func() {
		cmd := newRoot(&follow, &follow)
		cmd.SetArgs(append([]string{"events", "--follow"}, svc...))
		done <- cmd.ExecuteContext(ctx)
	}()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(follow.String(), " refused  evt-1 mqtt "); {
		if time.Now().After(deadline) {
			t.Fatalf("--follow did not print the events kept:\n%s", follow.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	k2 := key("evt-2")
	run("register", "--endpoint", endpoint, "--ca-file", ca, "--id-scope", scope, "--registration-id", "evt-2", "--key", k2)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(follow.String(), " assigned evt-2 https "); {
		if time.Now().After(deadline) {
			t.Fatalf("--follow did not print evt-2's assignment within 10s:\n%s", follow.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := follow.String(); !strings.Contains(got, " accepted evt-2 https ") || strings.Index(got, "evt-1") > strings.Index(got, "evt-2") {
		t.Errorf("--follow printed:\n%s", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("--follow ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("--follow did not end on interrupt")
	}
}

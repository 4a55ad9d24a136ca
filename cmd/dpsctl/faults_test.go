package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestFaultsCommands: against a dpsd with no faults: key (fault injection
// on, no rules), dpsctl faults set makes a device's register fail as told,
// list shows the count, delete removes the rule.
func TestFaultsCommands(t *testing.T) {
	https, _, scope, cs, ca := startDPSD(t)
	endpoint := "https://" + https
	svc := []string{"--connection-string", cs, "--endpoint", endpoint, "--ca-file", ca}
	run := func(args ...string) (string, error) {
		t.Helper()
		return dpsctl(t, append(args, svc...)...)
	}
	out, err := run("enrollment", "create", "fw-dev", "--show-keys", "-o", "json")
	var e struct {
		Attestation struct {
			SymmetricKey struct{ PrimaryKey string } `json:"symmetricKey"`
		} `json:"attestation"`
	}
	if err != nil || json.Unmarshal([]byte(out), &e) != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	if out, err := run("faults", "set", "fw-503", "--registration-id", "fw-*", "--operation", "register", "--status", "503", "--retry-after", "1", "--times", "1"); err != nil || !strings.Contains(out, "status 503 retry-after 1s") {
		t.Fatalf("set: %v\n%s", err, out)
	}
	if out, err := run("faults", "set", "bad", "--transport", "amqp", "--status", "500"); err == nil {
		t.Fatalf("an invalid rule was set:\n%s", out)
	}
	reg := []string{"register", "--endpoint", endpoint, "--ca-file", ca, "--id-scope", scope, "--registration-id", "fw-dev", "--key", e.Attestation.SymmetricKey.PrimaryKey}
	if out, err := dpsctl(t, reg...); err == nil || !strings.Contains(err.Error()+out, "503") {
		t.Fatalf("register under the fault: %v\n%s", err, out)
	}
	if out, err := dpsctl(t, reg...); err != nil {
		t.Fatalf("register after the fault: %v\n%s", err, out)
	}
	out, err = run("faults", "list", "-o", "json")
	var list []struct {
		Name     string
		Injected int
	}
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Name != "fw-503" || list[0].Injected != 1 {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if out, err := run("faults", "delete", "fw-503"); err != nil || !strings.Contains(out, "fw-503") {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if out, err := run("faults", "list"); err != nil || strings.Contains(out, "fw-503") {
		t.Fatalf("list after delete: %v\n%s", err, out)
	}
}

// TestFaultsOff: against a dpsd whose fault injection is turned off
// (faults.enabled: false), every faults command fails with dpsd's answer:
// 409 and how to turn it on.
func TestFaultsOff(t *testing.T) {
	https, _, _, cs, ca := startDPSDWith(t, "faults: { enabled: false }\n")
	svc := []string{"--connection-string", cs, "--endpoint", "https://" + https, "--ca-file", ca}
	for _, args := range [][]string{{"faults", "list"}, {"faults", "set", "x", "--status", "503"}, {"faults", "delete", "x"}} {
		out, err := dpsctl(t, append(args, svc...)...)
		if err == nil || !strings.Contains(err.Error(), "HTTP 409") || !strings.Contains(err.Error(), "Fault injection is off on this instance: dpsd's configuration sets faults.enabled: false") {
			t.Errorf("dpsctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

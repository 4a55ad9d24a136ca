package routing

import (
	"strings"
	"testing"

	"github.com/opendps/dps"
)

func sample() dps.Message {
	return dps.Message{Hub: "h", DeviceID: "dev-1", ModuleID: "", MessageID: "m-1", ContentType: "application/json",
		Properties: map[string]string{"level": "critical", "temp": "21.5", "on": "TRUE", "it's": "x", "a-b.c": "1"},
		System:     map[string]string{"iothub-connection-auth-method": `{"type":"sas"}`, "dt-dataschema": "dtmi:x;1"}}
}

func TestConditions(t *testing.T) {
	m := sample()
	life := m
	life.System = map[string]string{PropMessageSource: "deviceLifecycleEvents", "opType": "createDeviceIdentity"}
	for _, tc := range []struct {
		q    string
		msg  dps.Message
		want bool
	}{
		{"", m, true},
		{"true", m, true},
		{"FALSE", m, false},
		{"level = 'critical'", m, true},
		{`level = "critical"`, m, true},
		{"level != 'critical'", m, false},
		{"level <> 'info'", m, true},
		{"Level = 'critical'", m, false}, // property names are case-sensitive
		{"temp > 20", m, true},
		{"temp >= 21.5 AND temp <= 21.5", m, true},
		{"temp < 20", m, false},
		{"temp > '3'", m, false}, // as strings: "21.5" < "3"
		{"on = true", m, true},
		{"on = false", m, false},
		{"level = 5", m, false},         // undefined: not a number
		{"NOT (level = 5)", m, false},   // NOT undefined is undefined
		{"NOT missing = 'x'", m, false}, // undefined
		{"missing = 'x' OR true", m, true},
		{"missing = 'x' AND false", m, false},
		{"NOT (missing = 'x' AND false)", m, true},
		{"IS_DEFINED(level)", m, true},
		{"NOT IS_DEFINED(missing)", m, true},
		{"IS_DEFINED($userId)", m, false},
		{"$contentType = 'application/json'", m, true},
		{"$messageId = 'm-1' and $connectionDeviceId = 'dev-1'", m, true},
		{"$iothub-connection-device-id = 'dev-1'", m, true},
		{"$deviceId = 'dev-2'", m, false},
		{"$iothub-message-source = 'Telemetry'", m, true},
		{"$iothub-message-source = 'deviceLifecycleEvents'", life, true},
		{"$opType = 'createDeviceIdentity'", life, true},
		{"$dt-dataschema = 'dtmi:x;1'", m, true},
		{"STARTS_WITH($connectionDeviceId, 'dev-')", m, true},
		{"ENDS_WITH(level, 'cal') AND CONTAINS(level, 'iti')", m, true},
		{"a-b.c = 1", m, true},
		{"(level = 'critical' OR level = 'warning') AND NOT temp > 30", m, true},
		{"level = 'critical' OR temp > 100 AND false", m, true}, // AND binds tighter
		{"'it''s' = 'it''s'", m, true},
		{"1 < 2", m, true},
		{"-1.5e1 < -10", m, true},
	} {
		c, err := Compile(tc.q)
		if err != nil {
			t.Errorf("Compile(%q): %v", tc.q, err)
			continue
		}
		if got := c.Match(tc.msg); got != tc.want {
			t.Errorf("%q (%s) = %v, want %v", tc.q, c, got, tc.want)
		}
		again, err := Compile(c.String())
		if err != nil || again.Match(tc.msg) != tc.want {
			t.Errorf("%q printed as %q: %v, matches %v", tc.q, c, err, again != nil && again.Match(tc.msg))
		}
	}
}

func TestConditionErrors(t *testing.T) {
	for _, q := range []string{
		"level =", "= 'x'", "(level = 'x'", "level = 'x')", "level = 'x", "level ! 'x'", "$body.temp > 5", "$twin.tags.x = 1",
		"UPPER(level) = 'X'", "level", "level = 'x' AND", "IS_DEFINED('x')", "STARTS_WITH(level)", "$ = 1", "1e999 > 1",
		"level = 'x' level = 'y'", "NOT", "null = 1", "@", strings.Repeat("(", 500) + "true" + strings.Repeat(")", 500),
	} {
		if c, err := Compile(q); err == nil {
			t.Errorf("Compile(%q) = %s, want an error", q, c)
		} else if !strings.Contains(err.Error(), "route condition") {
			t.Errorf("Compile(%q): %v does not say it is a route condition", q, err)
		}
	}
	if _, err := Compile("$body.x = 1"); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("$body: %v, want not supported", err)
	}
}

// FuzzCompile: no input panics; what compiles prints to a condition that
// compiles and matches the same messages.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{"true", "level = 'critical' AND NOT (temp > 20 OR IS_DEFINED($messageId))", "a <> 'b''c'",
		"STARTS_WITH($connectionDeviceId, 'dev')", "x >= -1.5e3", `"q" = x`, "((true))"} {
		f.Add(s)
	}
	msgs := []dps.Message{sample(), {DeviceID: "d"}}
	f.Fuzz(func(t *testing.T, q string) {
		c, err := Compile(q)
		if err != nil {
			return
		}
		again, err := Compile(c.String())
		if err != nil {
			t.Fatalf("%q printed as %q, which does not compile: %v", q, c, err)
		}
		for _, m := range msgs {
			if c.Match(m) != again.Match(m) {
				t.Fatalf("%q and its print %q disagree", q, c)
			}
		}
	})
}

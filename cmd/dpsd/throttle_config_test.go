package main

import (
	"strings"
	"testing"

	"github.com/opendps/dps/internal/faults"
)

// TestThrottlingAndFaultsConfig: the configuration contract (the
// throttling: and faults: keys), its defaults, environment overrides and
// validation.
func TestThrottlingAndFaultsConfig(t *testing.T) {
	cfg, err := loadConfig("", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Throttling; d.Device.PollsPer10s != 5 || d.Device.RegistersPer10s != 0 || d.Instance.RegistrationsPerMinute != 0 || len(cfg.Faults) != 0 {
		t.Fatalf("defaults: %+v %+v", d, cfg.Faults)
	}
	p := writeConfig(t, `
throttling:
  device:   { registersPer10s: 0, pollsPer10s: 5 }   # per registration ID; 0 = no limit
  instance: { registrationsPerMinute: 0 }          # 0 = no limit (Azure: 1000 per unit)
faults:                                            # also managed at run time: service API + dpsctl faults
  - name: flaky-register
    match: { registrationId: "flaky-*", transport: any, operation: register }   # glob; https|mqtt|mqttws|any
    action: { status: 429, errorCode: 429001, retryAfterSeconds: 3 }         # or delayMs, assigningPolls, drop
    times: 2                                                                   # or probability: 0.3
  - { name: slow, match: { group: "fleet-*", operation: poll }, action: { assigningPolls: 3 }, probability: 0.5 }
  - { name: lag, match: { enrollment: dev-1 }, action: { delayMs: 1500 } }
  - { name: cut, match: { transport: mqtt, operation: hubConnect }, action: { drop: afterConnack } }
`)
	env := map[string]string{"DPSD_THROTTLING_DEVICE_REGISTERSPER10S": "3", "DPSD_THROTTLING_INSTANCE_REGISTRATIONSPERMINUTE": "1000"}
	cfg, err = loadConfig(p, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Throttling; d.Device.PollsPer10s != 5 || d.Device.RegistersPer10s != 3 || d.Instance.RegistrationsPerMinute != 1000 {
		t.Fatalf("throttling: %+v", d)
	}
	want := faults.Rule{Name: "flaky-register", Match: faults.Match{RegistrationID: "flaky-*", Transport: "any", Operation: "register"},
		Action: faults.Action{Status: 429, ErrorCode: 429001, RetryAfterSeconds: 3}, Times: 2}
	if len(cfg.Faults) != 4 || cfg.Faults[0] != want || cfg.Faults[1].Probability != 0.5 || cfg.Faults[1].Action.AssigningPolls != 3 ||
		cfg.Faults[2].Action.DelayMs != 1500 || cfg.Faults[3].Action.Drop != "afterConnack" {
		t.Fatalf("faults: %+v", cfg.Faults)
	}

	for _, c := range []struct{ yaml, env, want string }{
		{"throttling: { device: { pollsPer10s: -1 } }", "", "throttling.device.pollsPer10s: -1"},
		{"throttling: { instance: { registrationsPerMinute: 20000000 } }", "", "throttling.instance.registrationsPerMinute"},
		{"throttling: { device: { pollsPerMinute: 3 } }", "", "pollsPerMinute"},
		{"", "x", "DPSD_THROTTLING_DEVICE_POLLSPER10S: must be a whole number"},
		{"faults: [ { name: a, match: { transport: amqp }, action: { status: 500 } } ]", "", "faults[0].match.transport"},
		{"faults: [ { name: a, action: { status: 500 } }, { name: A, action: { status: 503 } } ]", "", `faults[1].name: "A" is defined twice`},
		{"faults: [ { name: a, action: { status: 500, delayMs: 3 } } ]", "", "faults[0].action: must set exactly one"},
		{"faults: [ { name: a, action: { status: 500 }, times: 1, extra: 1 } ]", "", "extra"},
	} {
		_, err := loadConfig(writeConfig(t, c.yaml), func(k string) string {
			if k == "DPSD_THROTTLING_DEVICE_POLLSPER10S" {
				return c.env
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one with %q", c.yaml, err, c.want)
		}
	}
}

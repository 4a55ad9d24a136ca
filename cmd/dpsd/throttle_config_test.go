package main

import (
	"bytes"
	"context"
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
	if d := cfg.Throttling; d.Device.PollsPer10s != 5 || d.Device.RegistersPer10s != 0 || d.Instance.RegistrationsPerMinute != 0 ||
		d.Service != (ServiceThrottling{}) || d.HubService != (HubServiceThrottling{}) || len(cfg.Faults.Rules) != 0 || !cfg.Faults.On() {
		t.Fatalf("defaults (fault injection on, no rules): %+v %+v", d, cfg.Faults)
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
	if !cfg.Faults.On() {
		t.Fatal("rules listed, yet fault injection is off")
	}
	want := faults.Rule{Name: "flaky-register", Match: faults.Match{RegistrationID: "flaky-*", Transport: "any", Operation: "register"},
		Action: faults.Action{Status: 429, ErrorCode: 429001, RetryAfterSeconds: 3}, Times: 2}
	if f := cfg.Faults.Rules; len(f) != 4 || f[0] != want || f[1].Probability != 0.5 || f[1].Action.AssigningPolls != 3 ||
		f[2].Action.DelayMs != 1500 || f[3].Action.Drop != "afterConnack" {
		t.Fatalf("faults: %+v", f)
	}

	// The service APIs' limits, and faults written as a mapping.
	p = writeConfig(t, `
throttling:
  service: { operationsPerMinute: 1000 }
  hubService: { registryOperationsPerMinute: 100, twinReadsPerSecond: 100, twinUpdatesPerSecond: 50, queriesPerMinute: 20, methodsPerSecond: 40, c2dSendsPerMinute: 100 }
faults:
  enabled: true
  rules:
    - { name: a, match: { operation: poll }, action: { status: 503 } }
`)
	env = map[string]string{"DPSD_THROTTLING_HUBSERVICE_QUERIESPERMINUTE": "7", "DPSD_THROTTLING_SERVICE_OPERATIONSPERMINUTE": "9"}
	if cfg, err = loadConfig(p, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if d := cfg.Throttling; d.Service.OperationsPerMinute != 9 || d.HubService != (HubServiceThrottling{100, 100, 50, 7, 40, 100}) {
		t.Fatalf("service throttling: %+v %+v", d.Service, d.HubService)
	}
	if !cfg.Faults.On() || len(cfg.Faults.Rules) != 1 || cfg.Faults.Rules[0].Action.Status != 503 {
		t.Fatalf("faults mapping: %+v", cfg.Faults)
	}
	// On unless turned off: enabled: false (or DPSD_FAULTS_ENABLED=false)
	// is the only way.
	for yml, want := range map[string]bool{
		"":                           true,
		"faults: { enabled: true }":  true,
		"faults: { enabled: false }": false,
		"faults: []":                 true,
		"faults: {}":                 true,
		"faults: { rules: [] }":      true,
	} {
		cfg, err := loadConfig(writeConfig(t, yml), noEnv)
		if err != nil || cfg.Faults.On() != want {
			t.Errorf("%q: on %v (%v), want %v", yml, cfg.Faults.On(), err, want)
		}
		for env, want := range map[string]bool{"true": true, "false": false} {
			cfg, err = loadConfig(writeConfig(t, yml), func(k string) string { return map[string]string{"DPSD_FAULTS_ENABLED": env}[k] })
			if err != nil || cfg.Faults.On() != want {
				t.Errorf("%q with DPSD_FAULTS_ENABLED=%s: on %v (%v)", yml, env, cfg.Faults.On(), err)
			}
		}
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
		{"faults: { enabled: true, rules: [ { name: a, action: { status: 500 }, extra: 1 } ] }", "", "extra"},
		{"faults: { enabled: true, rules: [ { name: a, match: { transport: amqp }, action: { status: 500 } } ] }", "", "faults.rules[0].match.transport"},
		{"faults: { enabled: false, rules: [ { name: a, action: { status: 500 } } ] }", "", "faults.enabled: false, yet 1 rule(s) are listed"},
		{"faults: { enable: true }", "", "enable"},
		{"faults: { enabled: maybe }", "", "faults.enabled"},
		{"throttling: { service: { operationsPerMinute: -1 } }", "", "throttling.service.operationsPerMinute: -1"},
		{"throttling: { service: { requestsPerMinute: 5 } }", "", "requestsPerMinute"},
		{"throttling: { hubService: { twinReadsPerSecond: 2000000 } }", "", "throttling.hubService.twinReadsPerSecond: 2000000"},
		{"throttling: { hubService: { queriesPerMinute: -3 } }", "", "throttling.hubService.queriesPerMinute: -3"},
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

// TestCheckConfigThrottlingAndFaults: dpsd --check-config accepts the
// service APIs' limits and both forms of faults:, and names each bad key.
func TestCheckConfigThrottlingAndFaults(t *testing.T) {
	dir := t.TempDir()
	good := writeConfig(t, "dataDir: "+dir+"\nthrottling: { service: { operationsPerMinute: 1000 }, hubService: { registryOperationsPerMinute: 100, methodsPerSecond: 40 } }\nfaults: { enabled: true }\n")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"--check-config", "--config", good}, noEnv, &out, &errOut); err != nil || !strings.Contains(out.String(), "configuration OK") {
		t.Fatalf("good configuration: %v\n%s%s", err, out.String(), errOut.String())
	}
	bad := writeConfig(t, "dataDir: "+dir+"\nthrottling: { service: { operationsPerMinute: -1 }, hubService: { c2dSendsPerMinute: 20000000 } }\nfaults: { enabled: false, rules: [ { name: a, action: { status: 503 } } ] }\n")
	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), []string{"--check-config", "--config", bad}, noEnv, &out, &errOut); err == nil {
		t.Fatalf("bad configuration passed:\n%s", out.String())
	}
	for _, want := range []string{"throttling.service.operationsPerMinute: -1", "throttling.hubService.c2dSendsPerMinute: 20000000", "faults.enabled: false, yet 1 rule(s)"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("the problems do not mention %q:\n%s", want, errOut.String())
		}
	}
}

package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/prom"
	"github.com/opendps/dps/internal/throttle"
)

// ThrottlingConfig is Azure DPS's back-pressure (the throttling: key).
// Zero is no limit. Limits are per node: N nodes admit up to N times each.
type ThrottlingConfig struct {
	Device   DeviceThrottling   `yaml:"device"`
	Instance InstanceThrottling `yaml:"instance"`

	envErrs []string // DPSD_THROTTLING_… values that are not numbers
}

// DeviceThrottling limits the requests of one registration ID.
type DeviceThrottling struct {
	RegistersPer10s int `yaml:"registersPer10s"` // default 0 (none)
	PollsPer10s     int `yaml:"pollsPer10s"`     // default 5, as Azure
	// TwinPer10s limits a built-in hub device's twin GET and reported
	// PATCH over MQTT (answered 429 on $iothub/twin/res/429/); default 0.
	TwinPer10s int `yaml:"twinPer10s"`
}

// InstanceThrottling limits the registrations of the whole instance.
type InstanceThrottling struct {
	// RegistrationsPerMinute: default 0 (none); Azure's is 1000 per unit.
	RegistrationsPerMinute int `yaml:"registrationsPerMinute"`
}

func defaultThrottling() ThrottlingConfig {
	return ThrottlingConfig{Device: DeviceThrottling{PollsPer10s: 5}}
}

// applyThrottlingEnv applies DPSD_THROTTLING_DEVICE_REGISTERSPER10S,
// DPSD_THROTTLING_DEVICE_POLLSPER10S and
// DPSD_THROTTLING_INSTANCE_REGISTRATIONSPERMINUTE.
func applyThrottlingEnv(c *ThrottlingConfig, getenv func(string) string) {
	for name, dst := range map[string]*int{
		"DPSD_THROTTLING_DEVICE_REGISTERSPER10S":          &c.Device.RegistersPer10s,
		"DPSD_THROTTLING_DEVICE_POLLSPER10S":              &c.Device.PollsPer10s,
		"DPSD_THROTTLING_DEVICE_TWINPER10S":               &c.Device.TwinPer10s,
		"DPSD_THROTTLING_INSTANCE_REGISTRATIONSPERMINUTE": &c.Instance.RegistrationsPerMinute,
	} {
		v := getenv(name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			c.envErrs = append(c.envErrs, name)
			continue
		}
		*dst = n
	}
}

func (c ThrottlingConfig) validate(bad func(key, format string, args ...any)) {
	for _, name := range c.envErrs {
		bad(name, "must be a whole number")
	}
	for key, v := range map[string]int{
		"throttling.device.registersPer10s": c.Device.RegistersPer10s,
		"throttling.device.pollsPer10s":     c.Device.PollsPer10s,
		"throttling.device.twinPer10s":      c.Device.TwinPer10s,
	} {
		if v < 0 || v > 100_000 {
			bad(key, "%d: must be between 0 (no limit) and 100000", v)
		}
	}
	if v := c.Instance.RegistrationsPerMinute; v < 0 || v > 10_000_000 {
		bad("throttling.instance.registrationsPerMinute", "%d: must be between 0 (no limit) and 10000000", v)
	}
}

// validateFaults checks the faults: rules.
func validateFaults(bad func(key, format string, args ...any), rules []faults.Rule) {
	names := map[string]bool{}
	for i, r := range rules {
		key := fmt.Sprintf("faults[%d]", i)
		if _, err := r.Validate(); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				k, msg, _ := strings.Cut(line, ": ")
				bad(key+"."+k, "%s", msg)
			}
		}
		if n := strings.ToLower(r.Name); n != "" && names[n] {
			bad(key+".name", "%q is defined twice", r.Name)
		}
		names[strings.ToLower(r.Name)] = true
	}
}

// limiter is the configured throttling, counted in metrics.
func (c ThrottlingConfig) limiter(m *prom.Metrics) *throttle.Limiter {
	return throttle.New(throttle.Options{
		RegistersPer10s:        c.Device.RegistersPer10s,
		PollsPer10s:            c.Device.PollsPer10s,
		TwinPer10s:             c.Device.TwinPer10s,
		RegistrationsPerMinute: c.Instance.RegistrationsPerMinute,
		Throttled:              func(transport string, op throttle.Op) { m.Throttled(transport, op.String()) },
	})
}

// newInjector is the fault injection of the configured rules, logged and
// counted in metrics; it is also managed at run time (service API).
func newInjector(rules []faults.Rule, m *prom.Metrics, log *slog.Logger) (*faults.Injector, error) {
	return faults.New(faults.Options{Logger: log, Injected: m.FaultInjected}, rules...)
}

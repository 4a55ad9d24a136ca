package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/prom"
	"github.com/opendps/dps/internal/throttle"
)

// ThrottlingConfig is Azure DPS's back-pressure (the throttling: key).
// Zero is no limit. Limits are per node: N nodes admit up to N times each.
type ThrottlingConfig struct {
	Device   DeviceThrottling   `yaml:"device"`
	Instance InstanceThrottling `yaml:"instance"`
	// Service and HubService limit the DPS service API and each built-in
	// hub's service API, modelled on Azure's quotas; off by default (see
	// ServiceThrottling).
	Service    ServiceThrottling    `yaml:"service"`
	HubService HubServiceThrottling `yaml:"hubService"`

	envErrs []string // DPSD_THROTTLING_… values that are not numbers
}

// ServiceThrottling limits the DPS service API (enrollments, groups,
// registrations, CA certificates; not /faults) of the whole node. Off by
// default: the service API's callers hold a policy key — back-office code
// the operator runs — and Azure's quota exists to share a multi-tenant
// service, so a self-hosted instance that enforced it would only slow
// bulk imports down (1,000 enrollments a minute). Set it to see how
// back-end code copes with Azure's 429s.
type ServiceThrottling struct {
	// OperationsPerMinute: default 0 (none); Azure's is 1000 per unit.
	OperationsPerMinute int `yaml:"operationsPerMinute"`
}

// HubServiceThrottling limits each built-in hub's service API, per hub
// and node, as IoT Hub's operation throttles (Azure's S1 figures per unit
// in the comments). Off by default, for the reason ServiceThrottling
// gives.
type HubServiceThrottling struct {
	RegistryOperationsPerMinute int `yaml:"registryOperationsPerMinute"` // create/get/update/delete/list/bulk/statistics; S1: 100 (S3: 5000)
	TwinReadsPerSecond          int `yaml:"twinReadsPerSecond"`          // GET /twins/{id}; S1: 100
	TwinUpdatesPerSecond        int `yaml:"twinUpdatesPerSecond"`        // PATCH/PUT /twins/{id}; S1: 50
	QueriesPerMinute            int `yaml:"queriesPerMinute"`            // POST /devices/query; S1: 20
	MethodsPerSecond            int `yaml:"methodsPerSecond"`            // direct methods; Azure meters 160 KB/s in 4 KB units
	C2DSendsPerMinute           int `yaml:"c2dSendsPerMinute"`           // cloud-to-device sends; S1: 100
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

// applyThrottlingEnv applies DPSD_THROTTLING_<SECTION>_<KEY> (upper-cased)
// for every throttling key.
func applyThrottlingEnv(c *ThrottlingConfig, getenv func(string) string) {
	h := &c.HubService
	for name, dst := range map[string]*int{
		"DPSD_THROTTLING_DEVICE_REGISTERSPER10S":                 &c.Device.RegistersPer10s,
		"DPSD_THROTTLING_DEVICE_POLLSPER10S":                     &c.Device.PollsPer10s,
		"DPSD_THROTTLING_DEVICE_TWINPER10S":                      &c.Device.TwinPer10s,
		"DPSD_THROTTLING_INSTANCE_REGISTRATIONSPERMINUTE":        &c.Instance.RegistrationsPerMinute,
		"DPSD_THROTTLING_SERVICE_OPERATIONSPERMINUTE":            &c.Service.OperationsPerMinute,
		"DPSD_THROTTLING_HUBSERVICE_REGISTRYOPERATIONSPERMINUTE": &h.RegistryOperationsPerMinute,
		"DPSD_THROTTLING_HUBSERVICE_TWINREADSPERSECOND":          &h.TwinReadsPerSecond,
		"DPSD_THROTTLING_HUBSERVICE_TWINUPDATESPERSECOND":        &h.TwinUpdatesPerSecond,
		"DPSD_THROTTLING_HUBSERVICE_QUERIESPERMINUTE":            &h.QueriesPerMinute,
		"DPSD_THROTTLING_HUBSERVICE_METHODSPERSECOND":            &h.MethodsPerSecond,
		"DPSD_THROTTLING_HUBSERVICE_C2DSENDSPERMINUTE":           &h.C2DSendsPerMinute,
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
	h := c.HubService
	for key, v := range map[string]int{
		"throttling.instance.registrationsPerMinute":        c.Instance.RegistrationsPerMinute,
		"throttling.service.operationsPerMinute":            c.Service.OperationsPerMinute,
		"throttling.hubService.registryOperationsPerMinute": h.RegistryOperationsPerMinute,
		"throttling.hubService.queriesPerMinute":            h.QueriesPerMinute,
		"throttling.hubService.c2dSendsPerMinute":           h.C2DSendsPerMinute,
	} {
		if v < 0 || v > 10_000_000 {
			bad(key, "%d: must be between 0 (no limit) and 10000000", v)
		}
	}
	for key, v := range map[string]int{
		"throttling.hubService.twinReadsPerSecond":   h.TwinReadsPerSecond,
		"throttling.hubService.twinUpdatesPerSecond": h.TwinUpdatesPerSecond,
		"throttling.hubService.methodsPerSecond":     h.MethodsPerSecond,
	} {
		if v < 0 || v > 1_000_000 {
			bad(key, "%d: must be between 0 (no limit) and 1000000", v)
		}
	}
}

// FaultsConfig is the faults: key, fault injection for device tests. It is
// written either as a list of rules or as { enabled: …, rules: […] }.
// Enabled defaults to true: with no faults: key at all the service API's
// /faults (and dpsctl faults) take rules at run time, and an injector
// without rules injects nothing. enabled: false (DPSD_FAULTS_ENABLED=false)
// is the opt-out: then no request is checked against a rule and /faults
// refuses (409).
type FaultsConfig struct {
	Enabled *bool // nil: on
	Rules   []faults.Rule

	list    bool     // written as a list (validation names faults[i])
	envErrs []string // DPSD_FAULTS_ENABLED not a boolean
}

// UnmarshalYAML reads either form. It uses the decoder's unmarshal
// function, so unknown keys are still refused and errors keep their lines.
func (f *FaultsConfig) UnmarshalYAML(unmarshal func(any) error) error {
	var v any
	if err := unmarshal(&v); err != nil {
		return err
	}
	if _, ok := v.([]any); ok {
		f.list = true
		return unmarshal(&f.Rules)
	}
	var m struct {
		Enabled *bool         `yaml:"enabled"`
		Rules   []faults.Rule `yaml:"rules"`
	}
	if err := unmarshal(&m); err != nil {
		return err
	}
	f.Enabled, f.Rules = m.Enabled, m.Rules
	return nil
}

// On reports whether fault injection is enabled (unless set false, it is).
func (f FaultsConfig) On() bool { return f.Enabled == nil || *f.Enabled }

// applyFaultsEnv applies DPSD_FAULTS_ENABLED (true or false).
func applyFaultsEnv(f *FaultsConfig, getenv func(string) string) {
	v := strings.TrimSpace(getenv("DPSD_FAULTS_ENABLED"))
	if v == "" {
		return
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		f.envErrs = append(f.envErrs, "DPSD_FAULTS_ENABLED")
		return
	}
	f.Enabled = &b
}

// validate checks the faults: key and its rules.
func (f FaultsConfig) validate(bad func(key, format string, args ...any)) {
	for _, name := range f.envErrs {
		bad(name, "must be true or false")
	}
	prefix := "faults.rules"
	if f.list {
		prefix = "faults"
	}
	if f.Enabled != nil && !*f.Enabled && len(f.Rules) > 0 {
		bad("faults.enabled", "false, yet %d rule(s) are listed: remove them or set enabled: true", len(f.Rules))
	}
	validateFaults(bad, prefix, f.Rules)
}

// validateFaults checks fault rules; prefix names the list.
func validateFaults(bad func(key, format string, args ...any), prefix string, rules []faults.Rule) {
	names := map[string]bool{}
	for i, r := range rules {
		key := fmt.Sprintf("%s[%d]", prefix, i)
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

// limiter is the configured throttling, counted in metrics; the refusals
// its log gate kept from the log are logged as they are reported
// (unloggedDevice).
func (c ThrottlingConfig) limiter(m *prom.Metrics, log *slog.Logger) *throttle.Limiter {
	return throttle.New(throttle.Options{
		RegistersPer10s:        c.Device.RegistersPer10s,
		PollsPer10s:            c.Device.PollsPer10s,
		TwinPer10s:             c.Device.TwinPer10s,
		RegistrationsPerMinute: c.Instance.RegistrationsPerMinute,
		Throttled:              func(transport string, op throttle.Op) { m.Throttled(transport, op.String()) },
		Unlogged:               func(s throttle.Summary[throttle.DeviceKey]) { unloggedDevice(log, s) },
	})
}

// unloggedDevice logs the count of throttled device requests that were not
// logged ("device refused" lines carry the refusals before the next line
// in suppressed; a storm that stops has no next line): one line per
// registration ID and operation whose 10 s ended with refusals not logged
// (for the registration IDs past the log gate's cap, one for all).
func unloggedDevice(log *slog.Logger, s throttle.Summary[throttle.DeviceKey]) {
	attrs := []slog.Attr{slog.Int(logkey.ErrorCode, dps.CodeThrottled)}
	if s.Untracked {
		attrs = append(attrs, slog.Bool("untracked", true))
	} else {
		attrs = append(attrs, slog.String(logkey.RegistrationID, s.Key.RegistrationID), slog.String("operation", s.Key.Op.String()))
	}
	attrs = append(attrs, slog.Int64(logkey.Suppressed, s.Suppressed))
	log.LogAttrs(context.Background(), slog.LevelInfo, "throttled device requests not logged", attrs...)
}

// unloggedService is unloggedDevice for the service APIs, per quota and
// hub.
func unloggedService(log *slog.Logger, s throttle.Summary[throttle.ServiceKey]) {
	attrs := []slog.Attr{slog.Int(logkey.ErrorCode, dps.CodeThrottled)}
	switch {
	case s.Untracked:
		attrs = append(attrs, slog.Bool("untracked", true))
	case s.Key.Hub != "":
		attrs = append(attrs, slog.String("api", s.Key.Quota.API()), slog.String("quota", s.Key.Quota.String()), slog.String(logkey.Hub, s.Key.Hub))
	default:
		attrs = append(attrs, slog.String("api", s.Key.Quota.API()), slog.String("quota", s.Key.Quota.String()))
	}
	attrs = append(attrs, slog.Int64(logkey.Suppressed, s.Suppressed))
	log.LogAttrs(context.Background(), slog.LevelInfo, "throttled service requests not logged", attrs...)
}

// serviceLimiter is the configured throttling of the service APIs (DPS's
// and the built-in hubs'), counted in metrics; nil when off.
func (c ThrottlingConfig) serviceLimiter(m *prom.Metrics, log *slog.Logger) *throttle.ServiceLimiter {
	h := c.HubService
	return throttle.NewService(throttle.ServiceOptions{
		OperationsPerMinute:         c.Service.OperationsPerMinute,
		RegistryOperationsPerMinute: h.RegistryOperationsPerMinute,
		TwinReadsPerSecond:          h.TwinReadsPerSecond,
		TwinUpdatesPerSecond:        h.TwinUpdatesPerSecond,
		QueriesPerMinute:            h.QueriesPerMinute,
		MethodsPerSecond:            h.MethodsPerSecond,
		C2DSendsPerMinute:           h.C2DSendsPerMinute,
		Throttled:                   func(q throttle.Quota) { m.ServiceThrottled(q.API(), q.String()) },
		Unlogged:                    func(s throttle.Summary[throttle.ServiceKey]) { unloggedService(log, s) },
	})
}

// newInjector is the fault injection of the configured rules, logged and
// counted in metrics; it is also managed at run time (service API). nil
// when fault injection is off (faults.enabled: false). Configured rules
// are warned about at start: they refuse devices from the first request.
func newInjector(c FaultsConfig, m *prom.Metrics, log *slog.Logger) (*faults.Injector, error) {
	if !c.On() {
		return nil, nil
	}
	if len(c.Rules) > 0 {
		log.Warn("fault injection rules are configured: devices matching them are refused on purpose (faults:; not for production)", "rules", len(c.Rules))
	}
	return faults.New(faults.Options{Logger: log, Injected: m.FaultInjected}, c.Rules...)
}

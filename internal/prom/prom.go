// Package prom exposes dps metrics through the Prometheus client library,
// on a registry owned by the caller (no global registration).
package prom

import (
	"net/http"
	"time"

	"github.com/opendps/dps"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics implements registration.Observer.
type Metrics struct {
	reg       *prometheus.Registry
	outcomes  *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	latency   prometheus.Histogram
	inflight  prometheus.Gauge
	throttled *prometheus.CounterVec
	// svcThrottled is the service APIs' (apart, so that
	// dps_throttled_requests_total keeps its labels).
	svcThrottled *prometheus.CounterVec
	faults       *prometheus.CounterVec
	refused      *prometheus.CounterVec
}

// New creates the metrics on a fresh registry, with Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_registrations_total",
			Help: "Finished registration operations by outcome (assigned, failed, disabled).",
		}, []string{"outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_registration_requests_rejected_total",
			Help: "Register requests refused before an operation was created, by error kind.",
		}, []string{"kind"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dps_registration_duration_seconds",
			Help:    "Time from an accepted register request to the operation's final state.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dps_operations_in_flight",
			Help: "Registration operations being processed now.",
		}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_throttled_requests_total",
			Help: "Device requests answered 429 (throttled), by transport (https, mqtt, mqttws) and operation (register, poll, twin).",
		}, []string{"transport", "operation"}),
		svcThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_service_throttled_requests_total",
			Help: "Service API requests answered 429 (throttled), by API (service: the DPS service API; hubService: a built-in hub's) and quota (operations; registry, twinRead, twinUpdate, query, method, c2dSend).",
		}, []string{"api", "quota"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_faults_injected_total",
			Help: "Faults injected by fault injection rules, by rule.",
		}, []string{"rule"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_connections_refused_total",
			Help: "Connections closed as soon as accepted, before TLS, by listener (https, mqtt) and the limit they were over (total, source).",
		}, []string{"listener", "reason"}),
	}
	m.reg.MustRegister(m.outcomes, m.rejected, m.latency, m.inflight, m.throttled, m.svcThrottled, m.faults, m.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Completed records a finished operation.
func (m *Metrics) Completed(outcome dps.Status, latency time.Duration) {
	m.outcomes.WithLabelValues(string(outcome)).Inc()
	if outcome != dps.StatusDisabled {
		m.latency.Observe(latency.Seconds())
	}
}

// Rejected records a refused request.
func (m *Metrics) Rejected(kind dps.Kind) { m.rejected.WithLabelValues(kind.String()).Inc() }

// Throttled records a device request refused by throttling.
func (m *Metrics) Throttled(transport, operation string) {
	m.throttled.WithLabelValues(transport, operation).Inc()
}

// ServiceThrottled records a service API request refused by throttling.
func (m *Metrics) ServiceThrottled(api, quota string) {
	m.svcThrottled.WithLabelValues(api, quota).Inc()
}

// FaultInjected records a fault injected by rule.
func (m *Metrics) FaultInjected(rule string) { m.faults.WithLabelValues(rule).Inc() }

// ConnectionRefused records a connection refused by a connection limit.
func (m *Metrics) ConnectionRefused(listener, reason string) {
	m.refused.WithLabelValues(listener, reason).Inc()
}

// InFlight adjusts the in-flight gauge.
func (m *Metrics) InFlight(delta int) { m.inflight.Add(float64(delta)) }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

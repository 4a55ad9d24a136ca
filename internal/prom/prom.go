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
	reg      *prometheus.Registry
	outcomes *prometheus.CounterVec
	rejected *prometheus.CounterVec
	latency  prometheus.Histogram
	inflight prometheus.Gauge
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
	}
	m.reg.MustRegister(m.outcomes, m.rejected, m.latency, m.inflight,
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

// InFlight adjusts the in-flight gauge.
func (m *Metrics) InFlight(delta int) { m.inflight.Add(float64(delta)) }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

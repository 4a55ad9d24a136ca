package prom

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RouteMetrics are the message routes' metrics (internal/routing's
// Observer), by hub and route.
type RouteMetrics struct {
	delivered, failed *prometheus.CounterVec
	dead, dropped     *prometheus.CounterVec
	lagMessages       *prometheus.GaugeVec
	lagSeconds        *prometheus.GaugeVec
}

// Routes registers the routing metrics on m's registry and returns them;
// call it once.
func (m *Metrics) Routes() *RouteMetrics {
	labels := []string{"hub", "route"}
	r := &RouteMetrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dps_route_delivered_messages_total",
			Help: "Messages a route's endpoint acknowledged (redeliveries included)."}, labels),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dps_route_failed_messages_total",
			Help: "Messages of failed deliveries (each attempt counts its batch)."}, labels),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dps_route_dead_lettered_messages_total",
			Help: "Messages a route gave up on, by reason: retries (the retry budget ran out), maxLag (the route fell too far behind), deleted (retention removed them before delivery), refused (the endpoint refused them for good)."},
			[]string{"hub", "route", "reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dps_route_dead_letters_dropped_total",
			Help: "Dead letters a route did not keep past routing.maxDeadLetters: its oldest deleted, and messages given up on for maxLag beyond the newest maxDeadLetters, never written."}, labels),
		lagMessages: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dps_route_lag_messages",
			Help: "Positions of the hub's event log after the route's checkpoint."}, labels),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dps_route_lag_seconds",
			Help: "Age of the oldest message the route has not delivered yet."}, labels),
	}
	m.reg.MustRegister(r.delivered, r.failed, r.dead, r.dropped, r.lagMessages, r.lagSeconds)
	return r
}

// Declare exposes a route's series at zero before anything happened to
// it (dead-lettered once per reason), so that /metrics names every
// configured route from the start and rate() and alerts see the first
// increase.
func (r *RouteMetrics) Declare(hub, route string, reasons ...string) {
	r.delivered.WithLabelValues(hub, route)
	r.failed.WithLabelValues(hub, route)
	for _, why := range reasons {
		r.dead.WithLabelValues(hub, route, why)
	}
	r.dropped.WithLabelValues(hub, route)
	r.lagMessages.WithLabelValues(hub, route)
	r.lagSeconds.WithLabelValues(hub, route)
}

// Delivered counts acknowledged messages.
func (r *RouteMetrics) Delivered(hub, route string, n int) {
	r.delivered.WithLabelValues(hub, route).Add(float64(n))
}

// Failed counts messages of failed deliveries.
func (r *RouteMetrics) Failed(hub, route string, n int) {
	r.failed.WithLabelValues(hub, route).Add(float64(n))
}

// DeadLettered counts messages given up on.
func (r *RouteMetrics) DeadLettered(hub, route, why string, n int) {
	r.dead.WithLabelValues(hub, route, why).Add(float64(n))
}

// DeadLettersDropped counts dead letters not kept for the route's cap.
func (r *RouteMetrics) DeadLettersDropped(hub, route string, n int) {
	r.dropped.WithLabelValues(hub, route).Add(float64(n))
}

// Lag sets how far the route is behind.
func (r *RouteMetrics) Lag(hub, route string, messages int64, age time.Duration) {
	r.lagMessages.WithLabelValues(hub, route).Set(float64(messages))
	r.lagSeconds.WithLabelValues(hub, route).Set(age.Seconds())
}

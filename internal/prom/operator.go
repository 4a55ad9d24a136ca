package prom

import (
	"net/url"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/prometheus/client_golang/prometheus"
)

// OperatorMetrics are what an operator watches beyond the registration
// totals: per hub, per webhook, per transport, the store's latency and
// the registration-events feed. It implements regevents.Observer: the
// metrics of assignments, refusals and webhook calls are counted from the
// feed's events (one recording point per outcome), dropped ones included.
type OperatorMetrics struct {
	assignments  *prometheus.CounterVec
	hubFailures  *prometheus.CounterVec
	webhookTime  *prometheus.HistogramVec
	webhookFails *prometheus.CounterVec
	connections  *prometheus.CounterVec
	open         *prometheus.GaugeVec
	refusals     *prometheus.CounterVec
	storeTime    *prometheus.HistogramVec
	dropped      prometheus.Counter
}

// Operator registers the operator metrics on m's registry and returns
// them; call it once.
func (m *Metrics) Operator() *OperatorMetrics {
	o := &OperatorMetrics{
		assignments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dps_hub_assignments_total",
			Help: "Registrations assigned to each hub."}, []string{"hub"}),
		hubFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dps_hub_failures_total",
			Help: "Calls to a hub that failed, by hub and operation (provision: create or update a device identity; deprovision: remove one). Transient failures are retried, each attempt counts."},
			[]string{"hub", "operation"}),
		webhookTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dps_webhook_duration_seconds",
			Help:    "Latency of each custom allocation webhook call, by the URL's scheme and host (no path, no query).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"url"}),
		webhookFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dps_webhook_failures_total",
			Help: "Custom allocation webhook calls that failed (no answer, or a status other than 2xx), by the URL's scheme and host (no path, no query)."}, []string{"url"}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dps_connections_total",
			Help: "Connections accepted, by listener (https: HTTPS and MQTT over WebSocket; mqtt), those refused by a connection limit not included."}, []string{"listener"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dps_connections_open",
			Help: "Connections open now, by listener."}, []string{"listener"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dps_device_refusals_total",
			Help: "Device registration requests and connections refused, by transport (https, mqtt, mqttws) and reason (authentication, throttled, badRequest, notFound, fault, unavailable)."},
			[]string{"transport", "reason"}),
		storeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dps_store_operation_duration_seconds",
			Help:    "Latency of the store's operations on the registration path, by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}, []string{"operation"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "dps_registration_events_dropped_total",
			Help: "Registration events lost: the feed's queue was full, or the store did not take them."}),
	}
	m.reg.MustRegister(o.assignments, o.hubFailures, o.webhookTime, o.webhookFails, o.connections, o.open, o.refusals, o.storeTime, o.dropped)
	return o
}

// Event counts an event of the registration-events feed.
func (o *OperatorMetrics) Event(e dps.RegistrationEvent) {
	switch e.Kind {
	case dps.EventAssigned:
		o.assignments.WithLabelValues(e.Hub).Inc()
	case dps.EventRefused:
		o.refusals.WithLabelValues(e.Transport, e.Cause).Inc()
	case dps.EventWebhook:
		if w := e.Webhook; w != nil {
			target := webhookTarget(w.URL)
			o.webhookTime.WithLabelValues(target).Observe(w.Latency.Seconds())
			if w.Error != "" || w.Status < 200 || w.Status > 299 {
				o.webhookFails.WithLabelValues(target).Inc()
			}
		}
	}
}

// webhookTarget is a webhook URL as the webhook metrics label it: its
// scheme and host only. The paths of the enrollments' URLs are not bounded
// (one per function, tenant or device class), and each label value is a
// series kept for the process' life.
func webhookTarget(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "invalid"
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host)
}

// EventsDropped counts registration events lost.
func (o *OperatorMetrics) EventsDropped(n int) { o.dropped.Add(float64(n)) }

// HubFailed counts a failed call to a hub.
func (o *OperatorMetrics) HubFailed(hub, operation string) {
	o.hubFailures.WithLabelValues(hub, operation).Inc()
}

// DeclareHub exposes a hub's series at zero, so that /metrics names every
// linked hub from the start.
func (o *OperatorMetrics) DeclareHub(hub string) {
	o.assignments.WithLabelValues(hub)
	for _, op := range []string{"provision", "deprovision"} {
		o.hubFailures.WithLabelValues(hub, op)
	}
}

// Connected counts a connection accepted by listener, open until the
// returned function is called.
func (o *OperatorMetrics) Connected(listener string) (closed func()) {
	o.connections.WithLabelValues(listener).Inc()
	g := o.open.WithLabelValues(listener)
	g.Inc()
	return g.Dec
}

// DeclareListener exposes a listener's series at zero.
func (o *OperatorMetrics) DeclareListener(listener string) {
	o.connections.WithLabelValues(listener)
	o.open.WithLabelValues(listener)
}

// StoreCall records the latency of a store operation begun at start.
func (o *OperatorMetrics) StoreCall(operation string, start time.Time) {
	o.storeTime.WithLabelValues(operation).Observe(time.Since(start).Seconds())
}

package prom_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/prom"
)

// TestThrottledMetrics: device throttling keeps dps_throttled_requests_total
// with its labels of old (transport, operation; dashboards and alerts
// select on them); the service APIs' throttling has a metric of its own.
func TestThrottledMetrics(t *testing.T) {
	m := prom.New()
	m.Throttled("mqtt", "poll")
	m.Throttled("https", "register")
	m.Throttled("https", "register")
	m.ServiceThrottled("service", "operations")
	m.ServiceThrottled("hubService", "query")
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	text := w.Body.String()
	for _, want := range []string{
		`dps_throttled_requests_total{operation="poll",transport="mqtt"} 1`,
		`dps_throttled_requests_total{operation="register",transport="https"} 2`,
		`dps_service_throttled_requests_total{api="service",quota="operations"} 1`,
		`dps_service_throttled_requests_total{api="hubService",quota="query"} 1`,
	} {
		if !strings.Contains(text, "\n"+want+"\n") {
			t.Errorf("no line %s in:\n%s", want, grep(text, "throttled"))
		}
	}
	if got := grep(text, "dps_throttled_requests_total{"); strings.Count(got, "\n") != 2 {
		t.Errorf("device throttling series:\n%s", got)
	}
}

func grep(text, s string) string {
	var b strings.Builder
	for l := range strings.Lines(text) {
		if strings.Contains(l, s) {
			b.WriteString(l)
		}
	}
	return b.String()
}

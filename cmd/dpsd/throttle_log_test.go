package main

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps/internal/prom"
	"github.com/opendps/dps/internal/throttle"
)

// logLines returns the JSON log lines in text whose msg is msg.
func logLines(text, msg string) []map[string]any {
	var out []map[string]any
	for l := range strings.Lines(text) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestThrottledUnloggedLines: the refusals a throttle kept from the log
// are logged once their 10 s end, though no refusal follows (a storm that
// stops): per registration ID and operation for devices, per quota and
// hub for the service APIs; Close logs what is left.
func TestThrottledUnloggedLines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out syncBuffer
		log := slog.New(slog.NewJSONHandler(&out, nil))
		c := ThrottlingConfig{Device: DeviceThrottling{PollsPer10s: 5}, HubService: HubServiceThrottling{QueriesPerMinute: 1}}
		m := prom.New()
		dev, svc := c.limiter(m, log), c.serviceLimiter(m, log)
		for range 4 {
			dev.LogThrottled(throttle.Poll, "Dev-1") // one logged by the caller, three not
			svc.LogThrottled(throttle.HubQuery, "hub-a")
		}
		time.Sleep(throttle.LogInterval + time.Second)
		synctest.Wait()
		d := logLines(out.String(), "throttled device requests not logged")
		if len(d) != 1 || d[0]["registration_id"] != "dev-1" || d[0]["operation"] != "poll" || d[0]["suppressed"] != float64(3) ||
			d[0]["error_code"] != float64(429001) || d[0]["level"] != "INFO" {
			t.Fatalf("device lines: %v", d)
		}
		s := logLines(out.String(), "throttled service requests not logged")
		if len(s) != 1 || s[0]["api"] != "hubService" || s[0]["quota"] != "query" || s[0]["hub"] != "hub-a" || s[0]["suppressed"] != float64(3) {
			t.Fatalf("service lines: %v", s)
		}
		dev.LogThrottled(throttle.Register, "dev-2")
		dev.LogThrottled(throttle.Register, "dev-2")
		dev.Close()
		svc.Close()
		if d := logLines(out.String(), "throttled device requests not logged"); len(d) != 2 || d[1]["registration_id"] != "dev-2" || d[1]["suppressed"] != float64(1) {
			t.Fatalf("device lines after Close: %v", d)
		}
	})
}

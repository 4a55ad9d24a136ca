package route_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/route"
)

func TestHeaders(t *testing.T) {
	m := dps.Message{
		Hub: "h.example", DeviceID: "d1", ModuleID: "m1", Seq: 42,
		Enqueued:  time.Date(2026, 5, 1, 10, 0, 0, 123000000, time.FixedZone("x", 3600)),
		MessageID: "mid", CorrelationID: "cid", UserID: "uid", ContentType: "application/json", ContentEncoding: "utf-8",
		System:     map[string]string{"iothub-connection-device-id": "d1", "dt-dataschema": "dtmi:x;1", "iothub-connection-auth-method": "{}"},
		Properties: map[string]string{"z": "1", "a": "2", "message-id": "app"},
	}
	got := route.Headers(m)
	want := []route.Header{
		{"message-id", "mid"}, {"correlation-id", "cid"}, {"user-id", "uid"}, {"content-type", "application/json"}, {"content-encoding", "utf-8"},
		{"iothub-connection-device-id", "d1"}, {"iothub-connection-module-id", "m1"}, {"iothub-enqueuedtime", "2026-05-01T09:00:00.123Z"},
		{"dt-dataschema", "dtmi:x;1"}, {"iothub-connection-auth-method", "{}"},
		{"dps-event-id", "h.example/42"},
		{"a", "2"}, {"message-id", "app"}, {"z", "1"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Headers\n got %v\nwant %v", got, want)
	}
	bare := route.Headers(dps.Message{Hub: "h", DeviceID: "d", Seq: 1})
	if want := []route.Header{{"iothub-connection-device-id", "d"}, {"dps-event-id", "h/1"}}; !slices.Equal(bare, want) {
		t.Errorf("Headers of a bare message: %v, want %v", bare, want)
	}
}

func TestTemplate(t *testing.T) {
	esc := func(s string) string { return route.Escape(s, func(c byte) bool { return c == '.' }) }
	for _, tc := range []struct{ tmpl, want string }{
		{"dps.{hub}.{deviceId}", "dps.a%2Eb.d%25%2E1"},
		{"fixed", "fixed"},
		{"{deviceId}-{deviceId}", "d%25%2E1-d%25%2E1"},
	} {
		tm, err := route.ParseTemplate(tc.tmpl)
		if err != nil {
			t.Fatalf("%s: %v", tc.tmpl, err)
		}
		if got := tm.Expand("a.b", "d%.1", esc); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.tmpl, got, tc.want)
		}
	}
	for _, bad := range []string{"", "x.{moduleId}", "x.{hub", "x}", "{}"} {
		if _, err := route.ParseTemplate(bad); err == nil {
			t.Errorf("ParseTemplate(%q) accepted it", bad)
		}
	}
}

func TestTLSFiles(t *testing.T) {
	for name, f := range map[string]route.TLSFiles{
		"missing-ca":     {CAFile: "/nonexistent/ca.pem"},
		"cert-alone":     {CertFile: "/nonexistent/c.pem"},
		"missing-client": {CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"},
	} {
		if _, err := f.Config(); err == nil {
			t.Errorf("fail/%s: accepted", name)
		}
	}
	c, err := route.TLSFiles{ServerName: "broker"}.Config()
	if err != nil || c.ServerName != "broker" || c.RootCAs != nil {
		t.Errorf("Config() = %v, %v", c, err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"mqtts://user:s3cret@broker:8883": "mqtts://user:xxxxx@broker:8883",
		"nats://t0ken@127.0.0.1:4222":     "nats://xxxxx@127.0.0.1:4222",
		"nats://127.0.0.1:4222":           "nats://127.0.0.1:4222",
		"tls://a:b@h:1,tls://c:d@h2:2":    "tls://a:xxxxx@h:1,tls://c:xxxxx@h2:2",
		"http://[bad":                     "(an unparsable URL)",
	} {
		got := route.RedactURL(in)
		if got != want || strings.Contains(got, "s3cret") || strings.Contains(got, "t0ken") || strings.Contains(got, ":d@") {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

package httpapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/throttle"
)

// clock is a settable time source for the limiters.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// logLines returns the JSON log lines whose msg is msg.
func logLines(t *testing.T, logs *lockedBuf, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.Lines(logs.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func infoLogger(logs *lockedBuf) *slog.Logger {
	return slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// TestThrottledDeviceLoggedOncePerInterval: a device hammering its
// register gets 429s, and the log gets one "device refused" line per
// registration ID per 10 s, the next carrying the count of refusals not
// logged in between; every refusal is recorded in the events feed.
func TestThrottledDeviceLoggedOncePerInterval(t *testing.T) {
	clk := newClock()
	var logs lockedBuf
	rec := &dpstest.Recorder{}
	h := httpapi.New(httpapi.Options{Registrar: fake(), Logger: infoLogger(&logs), Events: rec,
		Throttle: throttle.New(throttle.Options{RegistersPer10s: 1, Now: clk.Now})})
	register := func(id string) int {
		req := httptest.NewRequest("PUT", "https://dps.example/0ne00000001/registrations/"+id+"/register", nil)
		req.Header.Set("Authorization", "sas")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	for i := range 100 {
		if got, want := register("dev-1"), map[bool]int{true: 202, false: 429}[i == 0]; got != want {
			t.Fatalf("register %d: %d, want %d", i+1, got, want)
		}
	}
	lines := logLines(t, &logs, "device refused")
	if len(lines) != 1 || lines[0]["registration_id"] != "dev-1" || lines[0]["suppressed"] != float64(0) || lines[0]["error_code"] != float64(dps.CodeThrottled) {
		t.Fatalf("99 throttled registers logged %d lines: %v", len(lines), lines)
	}
	// Only the log line is gated: every 429 is a refused event (and so
	// counted in dps_device_refusals_total).
	throttled := 0
	for _, e := range rec.Take() {
		if e.Kind == dps.EventRefused && e.Code == dps.CodeThrottled && e.RegistrationID == "dev-1" && e.Transport == "https" {
			throttled++
		}
	}
	if throttled != 99 {
		t.Fatalf("99 throttled registers recorded %d refused events", throttled)
	}
	register("dev-2")
	register("dev-2")
	if lines = logLines(t, &logs, "device refused"); len(lines) != 2 || lines[1]["registration_id"] != "dev-2" {
		t.Fatalf("another device's refusal: %v", lines)
	}
	clk.Advance(10 * time.Second)
	if got := register("dev-1"); got != 202 {
		t.Fatalf("register after 10 s: %d", got)
	}
	register("dev-1")
	if lines = logLines(t, &logs, "device refused"); len(lines) != 3 || lines[2]["suppressed"] != float64(98) {
		t.Fatalf("the line after the interval: %v, want suppressed 98", lines)
	}
}

// allowOK authorizes the token "ok" only.
type allowOK struct{}

func (allowOK) Check(token, _ string, _ access.Right) error {
	if token != "ok" {
		return &dps.Error{Kind: dps.KindUnauthorized, Code: dps.CodeUnauthorized, Message: "bad token"}
	}
	return nil
}

// noEnrollments is a Manager that knows no enrollment (only Enrollment is
// called by these tests).
type noEnrollments struct{ httpapi.Manager }

func (noEnrollments) Enrollment(context.Context, string) (dps.Enrollment, error) {
	return dps.Enrollment{}, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNotFound, Message: "no such enrollment"}
}

func serve(h http.Handler, method, path, auth string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "https://dps.example"+path, strings.NewReader("{}"))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// TestServiceAPIThrottled: the DPS service API's quota admits its burst
// to authorized callers (a refused token consumes nothing), then answers
// 429 in the DPS error shape with Retry-After; /faults is not limited; the
// refusals are logged once per interval.
func TestServiceAPIThrottled(t *testing.T) {
	clk := newClock()
	var logs lockedBuf
	in, _ := faults.New(faults.Options{})
	svc := httpapi.NewService(httpapi.ServiceOptions{Manager: noEnrollments{}, Authorizer: allowOK{}, Logger: infoLogger(&logs), Now: clk.Now,
		Faults: in, Throttle: throttle.NewService(throttle.ServiceOptions{OperationsPerMinute: 2, Now: clk.Now})})
	for range 5 {
		if w := serve(svc, "GET", "/enrollments/e1", "bad"); w.Code != 401 {
			t.Fatalf("bad token: %d %s", w.Code, w.Body)
		}
	}
	for i := range 2 {
		if w := serve(svc, "GET", "/enrollments/e1", "ok"); w.Code != 404 {
			t.Fatalf("request %d: %d %s, want the manager's 404", i+1, w.Code, w.Body)
		}
	}
	for range 3 {
		w := serve(svc, "GET", "/enrollments/e1", "ok")
		var body map[string]any
		json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != 429 || body["errorCode"] != float64(dps.CodeThrottled) || body["message"] != throttle.Message ||
			body["trackingId"] == "" || body["trackingId"] != w.Header().Get("x-ms-request-id") || body["timestampUtc"] == nil {
			t.Fatalf("third request: %d %s", w.Code, w.Body)
		}
		if ra := w.Header()["retry-after"]; len(ra) != 1 || ra[0] != "30" { // 2 a minute: one every 30 s
			t.Fatalf("retry-after %v, want 30", w.Header())
		}
	}
	if w := serve(svc, "GET", "/faults", "ok"); w.Code != 200 {
		t.Fatalf("GET /faults while throttled: %d %s", w.Code, w.Body)
	}
	lines := logLines(t, &logs, "service request throttled")
	if len(lines) != 1 || lines[0]["api"] != "service" || lines[0]["quota"] != "operations" || lines[0]["path"] != "/enrollments/e1" || lines[0]["suppressed"] != float64(0) {
		t.Fatalf("3 throttled requests logged: %v", lines)
	}
	if strings.Contains(logs.String(), `"ok"`) {
		t.Errorf("the log shows the token:\n%s", logs.String())
	}
	clk.Advance(30 * time.Second)
	if w := serve(svc, "GET", "/enrollments/e1", "ok"); w.Code != 404 {
		t.Fatalf("after the retry-after: %d %s", w.Code, w.Body)
	}
}

// TestFaultsOff: without an injector (faults.enabled: false) every
// /faults request of an authorized caller is answered 409 with the DPS
// error shape and a message saying how to turn it on; a caller without
// a valid token learns nothing (401).
func TestFaultsOff(t *testing.T) {
	svc := httpapi.NewService(httpapi.ServiceOptions{Manager: noEnrollments{}, Authorizer: allowOK{}})
	for _, r := range []struct{ method, path string }{{"GET", "/faults"}, {"PUT", "/faults/x"}, {"DELETE", "/faults/x"}} {
		w := serve(svc, r.method, r.path, "ok")
		var body map[string]any
		json.Unmarshal(w.Body.Bytes(), &body)
		if msg, _ := body["message"].(string); w.Code != 409 || body["errorCode"] != float64(dps.CodeConflict) || !strings.Contains(msg, "sets faults.enabled: false") || body["trackingId"] == "" {
			t.Fatalf("%s %s: %d %s", r.method, r.path, w.Code, w.Body)
		}
		if w := serve(svc, r.method, r.path, "bad"); w.Code != 401 {
			t.Fatalf("%s %s with a bad token: %d", r.method, r.path, w.Code)
		}
	}
}

// TestHubServiceThrottled: a built-in hub's service API quotas, per
// request kind: the registry's burst, then 429 in IoT Hub's shape with
// ThrottlingException as the Node service SDK parses it and Retry-After;
// twin reads have their own bucket; what has no limit (twin updates,
// device telemetry) is untouched; a refused token consumes nothing.
func TestHubServiceThrottled(t *testing.T) {
	clk := newClock()
	var logs lockedBuf
	f := newHubFixture(t, nil, func(o *httpapi.Options) {
		o.Logger = infoLogger(&logs)
		o.ServiceThrottle = throttle.NewService(throttle.ServiceOptions{RegistryOperationsPerMinute: 2, TwinReadsPerSecond: 1, Now: clk.Now})
	})
	ts := f.server(t)
	c := ts.Client()
	owner := map[string]string{"Authorization": f.serviceToken("iothubowner", f.owner)}
	device := map[string]string{"Authorization": f.deviceToken("dev-1", f.key1)}
	for range 3 {
		wantHubError(t, do(t, c, ts, "GET", "/devices/dev-1?api-version=2021-04-12", device, nil), 401, "IotHubUnauthorizedAccess")
	}
	for i := range 2 {
		if a := do(t, c, ts, "GET", "/devices/dev-1?api-version=2021-04-12", owner, nil); a.status != 200 {
			t.Fatalf("registry read %d: %d %s", i+1, a.status, a.body)
		}
	}
	for _, path := range []string{"/devices/dev-1", "/devices", "/statistics/devices"} {
		a := do(t, c, ts, "GET", path+"?api-version=2021-04-12", owner, nil)
		wantHubError(t, a, 429, "ThrottlingException")
		if ra := a.header.Get("Retry-After"); ra != "30" {
			t.Fatalf("%s: Retry-After %q, want 30", path, ra)
		}
		// azure-iothub: JSON.parse(body).Message.split(';'), the code after
		// "ErrorCode:", the message the second part.
		var body struct{ Message string }
		json.Unmarshal([]byte(a.body), &body)
		parts := strings.Split(body.Message, ";")
		if len(parts) != 2 || strings.Split(parts[0], ":")[1] != "ThrottlingException" || parts[1] == "" {
			t.Fatalf("%s: Message %q does not parse as the Node SDK parses it", path, body.Message)
		}
	}
	if a := do(t, c, ts, "GET", "/twins/dev-1?api-version=2021-04-12", owner, nil); a.status != 200 {
		t.Fatalf("twin read: %d %s", a.status, a.body)
	}
	a := do(t, c, ts, "GET", "/twins/dev-1?api-version=2021-04-12", owner, nil)
	wantHubError(t, a, 429, "ThrottlingException")
	if ra := a.header.Get("Retry-After"); ra != "1" {
		t.Fatalf("twin read Retry-After %q, want 1", ra)
	}
	for range 5 {
		if a := do(t, c, ts, "PATCH", "/twins/dev-1?api-version=2021-04-12", map[string]string{"Authorization": owner["Authorization"], "If-Match": "*"}, []byte(`{"tags":{"x":1}}`)); a.status != 200 {
			t.Fatalf("twin update (no limit): %d %s", a.status, a.body)
		}
	}
	if a := do(t, c, ts, "POST", eventsPath, device, []byte("t")); a.status != 204 {
		t.Fatalf("device telemetry while the service API is throttled: %d %s", a.status, a.body)
	}
	lines := logLines(t, &logs, "service request throttled")
	if len(lines) != 2 || lines[0]["quota"] != "registry" || lines[0]["hub"] != hubHost || lines[1]["quota"] != "twinRead" || lines[0]["api"] != "hubService" {
		t.Fatalf("throttled hub requests logged: %v", lines)
	}
	clk.Advance(time.Second)
	if a := do(t, c, ts, "GET", "/twins/dev-1?api-version=2021-04-12", owner, nil); a.status != 200 {
		t.Fatalf("twin read after its retry-after: %d %s", a.status, a.body)
	}
}

package webhookalloc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/allocation/webhookalloc"
	"github.com/opendps/dps/webhook"
)

var candidates = []dps.LinkedHub{{HostName: "hub-a.example.net"}, {HostName: "hub-b.example.net"}}

func request(url string) dps.AllocationRequest {
	e := &dps.Enrollment{RegistrationID: "dev-1", Settings: dps.Settings{
		Attestation:      dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeS1rZXktc2VjcmV0LTEyMzQ=", SecondaryKey: "c2Vjb25kYXJ5LWtleS1zZWNyZXQtMTI="}},
		AllocationPolicy: dps.AllocationCustom,
		CustomAllocation: &dps.CustomAllocation{WebhookURL: url, APIVersion: "2021-10-01"},
	}}
	return dps.AllocationRequest{RegistrationID: "dev-1", Candidates: candidates, Enrollment: e, Attestation: dps.AttestationSymmetricKey, Payload: json.RawMessage(`{"model":"m1"}`)}
}

func newAllocator(o webhookalloc.Options) *webhookalloc.Allocator {
	if o.Sleep == nil {
		// A fake clock: sleeping advances it without waiting.
		var mu sync.Mutex
		now := time.Now()
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		o.Sleep = func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(d)
			return ctx.Err()
		}
	}
	return webhookalloc.New(o)
}

func TestFailureMatrix(t *testing.T) {
	big := `{"iotHubHostName":"hub-a.example.net","payload":"` + strings.Repeat("x", webhook.MaxBody) + `"}`
	tests := []struct {
		name     string
		status   int
		body     string
		wantCode int
		wantHub  string
	}{
		{"ok/assigned", 200, `{"iotHubHostName":"hub-b.example.net","payload":{"a":1}}`, 0, "hub-b.example.net"},
		{"ok/casing-variant", 200, `{"iotHubHostname":"HUB-A.example.net"}`, 0, "hub-a.example.net"},
		{"ok/201", 201, `{"IoTHubHostName":"hub-a.example.net"}`, 0, "hub-a.example.net"},
		{"fail/401", 401, `{}`, 400209, ""},
		{"fail/no-hub", 200, `{"payload":{}}`, 400208, ""},
		{"fail/null-hub", 200, `{"iotHubHostName":null}`, 400208, ""},
		{"fail/hub-not-candidate", 200, `{"iotHubHostName":"evil.example.net"}`, 400207, ""},
		{"fail/invalid-json", 200, `{"iotHubHostName":`, 400207, ""},
		{"fail/twin-not-object", 200, `{"iotHubHostName":"hub-a.example.net","initialTwin":[1]}`, 400207, ""},
		{"fail/too-large", 200, big, 400207, ""},
		{"fail/404", 404, `not found`, 400207, ""},
		{"fail/400", 400, `{}`, 400207, ""},
		{"fail/redirect", 302, ``, 400207, ""},
		{"fail/500-forever", 500, `{}`, 400207, ""},
		{"fail/429-forever", 429, `{}`, 400207, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			a := newAllocator(webhookalloc.Options{Client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}})
			got, err := a.Allocate(context.Background(), request(srv.URL+"/api/alloc?code=secret-function-key"))
			if tt.wantCode == 0 {
				if err != nil || got.Hub != tt.wantHub {
					t.Fatalf("Allocate = %+v, %v", got, err)
				}
				return
			}
			f, ok := errors.AsType[*dps.AllocationFailure](err)
			if !ok || f.Code != tt.wantCode {
				t.Fatalf("err = %v, want failure %d", err, tt.wantCode)
			}
			if strings.Contains(f.Message, "secret-function-key") {
				t.Errorf("message leaks the function key: %s", f.Message)
			}
		})
	}
}

func TestRetriesThenSucceeds(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			w.WriteHeader(503)
		case 2:
			w.WriteHeader(429)
		default:
			io.WriteString(w, `{"iotHubHostName":"hub-a.example.net"}`)
		}
	}))
	defer srv.Close()
	var slept []time.Duration
	a := webhookalloc.New(webhookalloc.Options{Sleep: func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return nil }})
	got, err := a.Allocate(context.Background(), request(srv.URL))
	if err != nil || got.Hub != "hub-a.example.net" || calls.Load() != 3 {
		t.Fatalf("Allocate = %+v, %v after %d calls", got, err, calls.Load())
	}
	if len(slept) != 2 || slept[0] != time.Second || slept[1] != 2*time.Second {
		t.Errorf("backoff = %v", slept)
	}
}

func TestRetryBudgetBoundsTheExchange(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(503)
	}))
	defer srv.Close()
	a := webhookalloc.New(webhookalloc.Options{RetryBudget: 1500 * time.Millisecond})
	start := time.Now()
	_, err := a.Allocate(context.Background(), request(srv.URL))
	if f, ok := errors.AsType[*dps.AllocationFailure](err); !ok || f.Code != 400207 {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s with a 1.5s budget", d)
	}
	if calls.Load() != 2 {
		t.Errorf("calls = %d, want 2 (one retry fits in 1.5s)", calls.Load())
	}
}

func TestTimeoutAndConnectionErrors(t *testing.T) {
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(block)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	a := newAllocator(webhookalloc.Options{Timeout: 200 * time.Millisecond})
	for name, url := range map[string]string{"timeout": slow.URL, "refused": dead} {
		t.Run(name, func(t *testing.T) {
			_, err := a.Allocate(context.Background(), request(url))
			if f, ok := errors.AsType[*dps.AllocationFailure](err); !ok || f.Code != 400207 {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestRequestBodyAndSignature(t *testing.T) {
	secret := []byte("s3cret")
	var got []byte
	var sig string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		sig = r.Header.Get(webhook.SignatureHeader)
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net"}`)
	}))
	defer srv.Close()
	req := request(srv.URL)
	req.CurrentHub, req.CurrentDeviceID = "hub-b.example.net", "dev-1"
	if _, err := newAllocator(webhookalloc.Options{Secret: secret}).Allocate(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if err := webhook.Verify(secret, got, sig, time.Minute, time.Now()); err != nil {
		t.Errorf("signature: %v", err)
	}
	if err := webhook.Verify([]byte("other"), got, sig, time.Minute, time.Now()); err == nil {
		t.Errorf("signature verified with the wrong secret")
	}
	for _, k := range []dps.Key{req.Enrollment.Attestation.SymmetricKey.PrimaryKey, req.Enrollment.Attestation.SymmetricKey.SecondaryKey} {
		if strings.Contains(string(got), string(k)) {
			t.Errorf("request body contains a key")
		}
	}
	var parsed webhook.Request
	if err := json.Unmarshal(got, &parsed); err != nil {
		t.Fatal(err)
	}
	drc := parsed.DeviceRuntimeContext
	if parsed.IndividualEnrollment == nil || parsed.EnrollmentGroup != nil || parsed.IndividualEnrollment.Attestation.Type != "symmetricKey" {
		t.Errorf("enrollment = %+v", parsed.IndividualEnrollment)
	}
	if drc.RegistrationID != "dev-1" || drc.CurrentIoTHubHostName != "hub-b.example.net" || drc.CurrentDeviceID != "dev-1" || drc.SymmetricKey == nil || string(drc.Payload) != `{"model":"m1"}` {
		t.Errorf("deviceRuntimeContext = %+v", drc)
	}
	if strings.Join(parsed.LinkedHubs, ",") != "hub-a.example.net,hub-b.example.net" {
		t.Errorf("linkedHubs = %v", parsed.LinkedHubs)
	}
	if !strings.Contains(string(got), `"currentIotHubHostName"`) {
		t.Errorf("casing of currentIotHubHostName: %s", got)
	}
}

// BenchmarkOverhead measures what dps adds around a webhook that answers
// at once: building and signing the request, the loopback HTTP exchange,
// and validating the answer.
func BenchmarkOverhead(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net","initialTwin":{"tags":{"t":1}},"payload":{"hello":"device"}}`)
	}))
	defer srv.Close()
	a := webhookalloc.New(webhookalloc.Options{Client: srv.Client(), Secret: []byte("s")})
	req := request(srv.URL)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Allocate(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPayloadAndTwinShape: a webhook's payload must be a JSON object the
// devices can parse, and its initialTwin's parts (tags, properties,
// properties.desired) objects; anything else fails the registration with
// 400207 and says why. Twin members provisioning does not set (reported
// properties, a whole twin's deviceId or etag) are dropped with a warning
// naming them, and the rest reaches the hub.
func TestPayloadAndTwinShape(t *testing.T) {
	deep := func(n int) string { return strings.Repeat(`{"a":`, n-1) + `{}` + strings.Repeat(`}`, n-1) }
	tests := []struct {
		name, extra string
		why         string // in the failure message; "" when it succeeds
		twin        string // the twin passed on, when it succeeds
		dropped     string // the members named in the warning
	}{
		{"ok/object", `"payload":{"a":[1,{"b":null}]}`, "", "", ""},
		{"ok/null-payload", `"payload":null`, "", "", ""},
		{"ok/62-levels", `"payload":` + deep(62), "", "", ""},
		{"ok/twin", `"initialTwin":{"tags":{"t":1},"properties":{"desired":{"d":{"$metadata":{}}}}}`, "",
			`{"tags":{"t":1},"properties":{"desired":{"d":{"$metadata":{}}}}}`, ""},
		{"ok/twin-parts-null", `"initialTwin":{"tags":null,"properties":{"desired":null}}`, "", `{}`, ""},
		{"ok/twin-empty", `"initialTwin":{}`, "", `{}`, ""},
		// Microsoft.Azure.Devices.Shared.TwinState with an empty TwinCollection as Reported.
		{"ok/twin-reported-empty", `"initialTwin":{"tags":{"t":1},"properties":{"desired":{"d":1},"reported":{}}}`, "",
			`{"tags":{"t":1},"properties":{"desired":{"d":1}}}`, "properties.reported"},
		{"ok/twin-reported-null", `"initialTwin":{"properties":{"reported":null}}`, "", `{}`, "properties.reported"},
		{"ok/twin-whole", `"initialTwin":{"deviceId":"secret-value-1","etag":"AAAA","version":2,"tags":{"t":2},"properties":{"desired":{"d":2},"reported":{"r":"secret-value-2"}}}`, "",
			`{"tags":{"t":2},"properties":{"desired":{"d":2}}}`, "deviceId etag properties.reported version"},
		{"fail/string-payload", `"payload":"hello"`, "a payload that is a string, not a JSON object", "", ""},
		{"fail/array-payload", `"payload":[{"a":1}]`, "a payload that is an array, not a JSON object", "", ""},
		{"fail/number-payload", `"payload":42`, "a payload that is a number", "", ""},
		{"fail/63-levels", `"payload":` + deep(63), "a payload nested 63 levels deep (devices read at most 62)", "", ""},
		{"fail/twin-array", `"initialTwin":[1]`, "an initialTwin that is an array, not an object", "", ""},
		{"fail/twin-string", `"initialTwin":"t"`, "an initialTwin that is a string", "", ""},
		{"fail/twin-tags-array", `"initialTwin":{"tags":[1]}`, "tags is an array", "", ""},
		{"fail/twin-properties-string", `"initialTwin":{"properties":"p"}`, "initialTwin.properties that is a string", "", ""},
		{"fail/twin-desired-number", `"initialTwin":{"properties":{"desired":3}}`, "properties.desired is a number", "", ""},
		{"fail/twin-desired-array-beside-reported", `"initialTwin":{"properties":{"reported":{},"desired":[]}}`, "properties.desired is an array", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, `{"iotHubHostName":"hub-a.example.net",`+tt.extra+`}`)
			}))
			defer srv.Close()
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			got, err := newAllocator(webhookalloc.Options{Logger: log}).Allocate(context.Background(), request(srv.URL+"/hook?code=k"))
			if tt.why != "" {
				f, ok := errors.AsType[*dps.AllocationFailure](err)
				if !ok || f.Code != 400207 || !strings.Contains(f.Message, tt.why) {
					t.Fatalf("err = %v, want 400207 saying %q", err, tt.why)
				}
				return
			}
			if err != nil || got.Hub != "hub-a.example.net" {
				t.Fatalf("Allocate = %+v, %v", got, err)
			}
			if string(got.InitialTwin) != tt.twin {
				t.Errorf("initial twin = %s, want %s", got.InitialTwin, tt.twin)
			}
			warnings := strings.Count(logs.String(), "level=WARN")
			named := strings.Contains(logs.String(), "members=["+tt.dropped+"]") || strings.Contains(logs.String(), `members="[`+tt.dropped+`]"`)
			switch {
			case tt.dropped == "" && warnings != 0:
				t.Errorf("warned though nothing was dropped:\n%s", &logs)
			case tt.dropped != "" && (warnings != 1 || !named):
				t.Errorf("want one warning naming %s, got:\n%s", tt.dropped, &logs)
			}
			if strings.Contains(logs.String(), "secret-value") || strings.Contains(logs.String(), "code=k") {
				t.Errorf("the warning shows values or the function key:\n%s", &logs)
			}
		})
	}
}

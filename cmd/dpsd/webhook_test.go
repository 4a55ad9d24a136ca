package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/wire"
	"github.com/opendps/dps/webhook"
)

// hookServer is a custom allocation webhook on loopback TLS that records
// every request body and answers through a per-device behaviour.
type hookServer struct {
	srv               *httptest.Server
	mu                sync.Mutex
	bodies            [][]byte
	delay             time.Duration
	active, maxActive int
}

func newHookServer(t *testing.T) (*hookServer, string) {
	h := &hookServer{}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(h.serve))
	h.srv.EnableHTTP2 = true
	h.srv.StartTLS()
	t.Cleanup(h.srv.Close)
	caFile := filepath.Join(t.TempDir(), "webhook-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return h, caFile
}

func (h *hookServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.bodies = append(h.bodies, body)
	delay := h.delay
	h.active++
	h.maxActive = max(h.maxActive, h.active)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.active--
		h.mu.Unlock()
	}()
	if r.URL.Query().Get("code") != "fn-key" {
		w.WriteHeader(401) // the function key must reach the webhook
		return
	}
	time.Sleep(delay)
	var req webhook.Request
	if err := json.Unmarshal(body, &req); err != nil {
		w.WriteHeader(400)
		return
	}
	id := req.DeviceRuntimeContext.RegistrationID
	mode, _, _ := strings.Cut(id, "--")
	switch mode {
	case "fail-401":
		w.WriteHeader(401)
	case "fail-nohub":
		io.WriteString(w, `{"payload":{"x":1}}`)
	case "fail-badhub":
		io.WriteString(w, `{"iotHubHostName":"not-linked.example.net"}`)
	case "fail-json":
		io.WriteString(w, `{"iotHubHostName":`)
	case "fail-big":
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net","payload":"`+strings.Repeat("x", 100*1024)+`"}`)
	case "fail-strpayload": // the device would get a string, not an object
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net","payload":"hello"}`)
	case "fail-listpayload":
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net","payload":[1,2]}`)
	case "fail-deeppayload": // deeper than the embedded C SDK reads
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net","payload":`+strings.Repeat(`{"a":`, 62)+`{}`+strings.Repeat(`}`, 62)+`}`)
	case "fail-twin": // desired properties the hub could not take
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net","initialTwin":{"tags":{"t":1},"properties":{"desired":"on"}}}`)
	case "twinstate": // a C# TwinState: its empty reported properties are dropped
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net","initialTwin":{"tags":{"t":1},"properties":{"desired":{"d":1},"reported":{}}}}`)
	case "fail-500":
		w.WriteHeader(500)
	case "fail-404":
		w.WriteHeader(404)
	case "fail-slow":
		time.Sleep(1500 * time.Millisecond)
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net"}`)
	default:
		// Pick the hub by payload.model; return a twin and a payload that
		// echo what the device sent.
		var p struct {
			Model string `json:"model"`
		}
		json.Unmarshal(req.DeviceRuntimeContext.Payload, &p)
		hub := "hub-a.example.net"
		if p.Model == "heatpump" {
			hub = "hub-b.example.net"
		}
		resp := map[string]any{
			"iotHubHostName": hub,
			"initialTwin":    map[string]any{"tags": map[string]any{"model": p.Model}, "properties": map[string]any{"desired": map[string]any{"interval": 30}}},
			"payload":        map[string]any{"echo": req.DeviceRuntimeContext.Payload, "hub": hub, "list": []any{1, "two", nil, 3.5}},
		}
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.Encode(resp)
	}
}

func (h *hookServer) requests() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.bodies...)
}

func customEnrollmentAttestation() *wire.AttestationMechanism { return symmetric() }

func startWithWebhook(t *testing.T, extraWebhook string) (*server, *http.Client, *client.Client, *hookServer, string) {
	return startWithWebhookTimeout(t, "1s", "2s", extraWebhook)
}

// startWithWebhookTimeout is startWithWebhook with another webhook call
// timeout and retry budget.
func startWithWebhookTimeout(t *testing.T, timeout, budget, extraWebhook string) (*server, *http.Client, *client.Client, *hookServer, string) {
	hook, caFile := newHookServer(t)
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey)+
		"webhook: { caFile: "+caFile+", timeout: "+timeout+", retryBudget: "+budget+extraWebhook+" }\n")
	return s, hc, serviceClient(t, s, hc, "provisioningserviceowner", ownerKey), hook, hook.srv.URL + "/api/allocate?code=fn-key"
}

func asJSON(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("not JSON: %s", raw)
	}
	return v
}

func TestCustomAllocationRoundTrip(t *testing.T) {
	s, hc, svc, hook, url := startWithWebhook(t, "")
	ctx := context.Background()
	cad := &wire.CustomAllocationDefinition{WebhookURL: url, APIVersion: "2021-10-01"}
	ind, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "custom-ind", Attestation: symmetric(), AllocationPolicy: "custom", CustomAllocationDefinition: cad,
		InitialTwin: json.RawMessage(`{"tags":{"from":"enrollment"}}`)}, "")
	if err != nil {
		t.Fatal(err)
	}
	grp, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "custom-grp", Attestation: symmetric(), AllocationPolicy: "custom", CustomAllocationDefinition: cad,
		IoTHubs: []string{"hub-a.example.net", "hub-b.example.net"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	gk, _ := device.DeriveKey(grp.Attestation.SymmetricKey.PrimaryKey, "custom-grp-dev")
	payload := json.RawMessage(`{"model":"heatpump","fw":{"version":"1.2.3","features":["a","b"],"nested":{"deep":[{"x":null},{"y":-1.5e3}]}},"unicode":"caf\u00e9 \u2603","url":"https://x.example/?a=1&b=<2>"}`)
	cases := []struct {
		name, id, key string
		group         bool
	}{
		{"individual", "custom-ind", ind.Attestation.SymmetricKey.PrimaryKey, false},
		{"group", "custom-grp-dev", gk, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(hook.requests())
			res, err := s.client(hc).Register(ctx, tc.id, device.SymmetricKey(tc.key), payload)
			if err != nil {
				t.Fatal(err)
			}
			rs := res.RegistrationState
			if res.Status != "assigned" || rs.AssignedHub != "hub-b.example.net" {
				t.Fatalf("result = %+v / %+v", res, rs)
			}
			reqs := hook.requests()[before:]
			if len(reqs) != 1 {
				t.Fatalf("webhook called %d times", len(reqs))
			}
			var got webhook.Request
			if err := json.Unmarshal(reqs[0], &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(asJSON(t, got.DeviceRuntimeContext.Payload), asJSON(t, payload)) {
				t.Errorf("webhook got payload %s\nwant %s", got.DeviceRuntimeContext.Payload, payload)
			}
			if (got.EnrollmentGroup != nil) != tc.group || (got.IndividualEnrollment != nil) == tc.group {
				t.Errorf("enrollment members: individual=%v group=%v", got.IndividualEnrollment != nil, got.EnrollmentGroup != nil)
			}
			if got.DeviceRuntimeContext.SymmetricKey == nil || got.DeviceRuntimeContext.RegistrationID != tc.id || len(got.LinkedHubs) != 2 {
				t.Errorf("request = %s", reqs[0])
			}
			if !strings.Contains(string(rs.Payload), `a=1&b=<2>`) {
				t.Errorf("the device's payload lost its characters: %s", rs.Payload)
			}
			wantPayload := map[string]any{"echo": asJSON(t, payload), "hub": "hub-b.example.net", "list": []any{1.0, "two", nil, 3.5}}
			if !reflect.DeepEqual(asJSON(t, rs.Payload), any(wantPayload)) {
				t.Errorf("device got payload %s", rs.Payload)
			}
			hd, err := s.store.HubDevice(ctx, rs.AssignedHub, rs.DeviceID)
			if err != nil {
				t.Fatal(err)
			}
			wantTwin := map[string]any{"tags": map[string]any{"model": "heatpump"}, "properties": map[string]any{"desired": map[string]any{"interval": 30.0}}}
			if !reflect.DeepEqual(asJSON(t, hd.Twin), any(wantTwin)) {
				t.Errorf("recorded twin = %s", hd.Twin)
			}
			// The payload is on the registration record and visible through the service API.
			reg, err := svc.Registration(ctx, tc.id)
			if err != nil || !reflect.DeepEqual(asJSON(t, reg.Payload), any(wantPayload)) {
				t.Errorf("service registration payload = %s, %v", reg.Payload, err)
			}
			// Re-registration: the webhook sees the current hub and device.
			before = len(hook.requests())
			if _, err := s.client(hc).Register(ctx, tc.id, device.SymmetricKey(tc.key), json.RawMessage(`{"model":"toaster"}`)); err != nil {
				t.Fatal(err)
			}
			var again webhook.Request
			json.Unmarshal(hook.requests()[before], &again)
			if again.DeviceRuntimeContext.CurrentIoTHubHostName != "hub-b.example.net" || again.DeviceRuntimeContext.CurrentDeviceID != tc.id {
				t.Errorf("re-registration context = %+v", again.DeviceRuntimeContext)
			}
		})
	}

	// No webhook request carries a key (nor the function key of the URL: Azure masks it as ?****).
	secrets := []string{ind.Attestation.SymmetricKey.PrimaryKey, ind.Attestation.SymmetricKey.SecondaryKey, grp.Attestation.SymmetricKey.PrimaryKey, grp.Attestation.SymmetricKey.SecondaryKey, gk, "fn-key"}
	for i, body := range hook.requests() {
		for _, k := range secrets {
			if strings.Contains(string(body), k) {
				t.Errorf("webhook request %d contains a key: %s", i, body)
			}
		}
	}
}

// shapeErrors are what the errorMessage says of answers the device or the
// hub could not take.
var shapeErrors = map[string]string{
	"fail-strpayload":  "a payload that is a string, not a JSON object",
	"fail-listpayload": "a payload that is an array, not a JSON object",
	"fail-deeppayload": "a payload nested 63 levels deep",
	"fail-twin":        "properties.desired is a string",
}

// TestCustomAllocationTwinState: a webhook answering the initial twin as the
// Azure SDK's TwinState serialises it (with "reported":{}) assigns the
// device; the hub gets the tags and desired properties.
func TestCustomAllocationTwinState(t *testing.T) {
	s, hc, svc, _, url := startWithWebhook(t, "")
	ctx := context.Background()
	grp, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "twinstate-grp", Attestation: symmetric(), AllocationPolicy: "custom",
		CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: url, APIVersion: "2021-10-01"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	k, _ := device.DeriveKey(grp.Attestation.SymmetricKey.PrimaryKey, "twinstate--1")
	res, err := s.client(hc).Register(ctx, "twinstate--1", device.SymmetricKey(k), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rs := res.RegistrationState; res.Status != "assigned" || rs == nil || rs.AssignedHub != "hub-a.example.net" {
		t.Fatalf("result = %+v / %+v", res, rs)
	}
	hd, err := s.store.HubDevice(ctx, "hub-a.example.net", "twinstate--1")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"tags": map[string]any{"t": 1.0}, "properties": map[string]any{"desired": map[string]any{"d": 1.0}}}; !reflect.DeepEqual(asJSON(t, hd.Twin), any(want)) {
		t.Errorf("recorded twin = %s", hd.Twin)
	}
}

func TestCustomAllocationFailures(t *testing.T) {
	s, hc, svc, _, url := startWithWebhook(t, "")
	ctx := context.Background()
	grp, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "fail-grp", Attestation: symmetric(), AllocationPolicy: "custom",
		CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: url, APIVersion: "2021-10-01"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	register := func(id string) *device.Result {
		k, _ := device.DeriveKey(grp.Attestation.SymmetricKey.PrimaryKey, id)
		res, err := s.client(hc).Register(ctx, id, device.SymmetricKey(k), json.RawMessage(`{"model":"toaster"}`))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	tests := []struct {
		mode string
		code int
	}{
		{"fail-401", 400209}, {"fail-nohub", 400208}, {"fail-badhub", 400207}, {"fail-json", 400207},
		{"fail-big", 400207}, {"fail-500", 400207}, {"fail-404", 400207}, {"fail-slow", 400207},
		{"fail-strpayload", 400207}, {"fail-listpayload", 400207}, {"fail-deeppayload", 400207}, {"fail-twin", 400207},
	}
	for i, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			res := register(fmt.Sprintf("%s--%d", tt.mode, i))
			rs := res.RegistrationState
			if res.Status != "failed" || rs == nil || rs.Status != "failed" || rs.ErrorCode != tt.code || rs.ErrorMessage == "" {
				t.Fatalf("result = %+v / %+v", res, rs)
			}
			if strings.Contains(rs.ErrorMessage, "fn-key") {
				t.Errorf("errorMessage leaks the function key: %s", rs.ErrorMessage)
			}
			if why := shapeErrors[tt.mode]; why != "" && !strings.Contains(rs.ErrorMessage, why) {
				t.Errorf("errorMessage %q does not say %q", rs.ErrorMessage, why)
			}
			// A normal device right after still succeeds.
			if ok := register(fmt.Sprintf("normal-%d", i)); ok.Status != "assigned" {
				t.Fatalf("normal device after %s: %+v", tt.mode, ok.RegistrationState)
			}
		})
	}
	// A dead webhook.
	dead, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "dead-hook", Attestation: symmetric(), AllocationPolicy: "custom",
		CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: "https://127.0.0.1:1/none", APIVersion: "2021-10-01"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.client(hc).Register(ctx, "dead-hook", device.SymmetricKey(dead.Attestation.SymmetricKey.PrimaryKey), nil)
	if err != nil || res.Status != "failed" || res.RegistrationState.ErrorCode != 400207 {
		t.Fatalf("dead webhook: %+v, %v", res, err)
	}
}

func TestCustomAllocationConcurrency(t *testing.T) {
	// A generous call timeout: a 200 ms webhook answered late on a loaded
	// machine (the race detector, other packages testing beside it) is not
	// what this test measures; the bounds below are.
	s, _, svc, hook, url := startWithWebhookTimeout(t, "10s", "20s", "")
	hook.delay = 200 * time.Millisecond
	ctx := context.Background()
	grp, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "conc", Attestation: symmetric(), AllocationPolicy: "custom",
		CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: url, APIVersion: "2021-10-01"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	// One HTTP/2 connection carries all devices, so the test measures
	// dps's concurrency rather than 100 TLS handshakes.
	pool := s.clientTLS(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pool, ForceAttemptHTTP2: true}}
	const n = 100
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("conc-%03d", i)
			k, _ := device.DeriveKey(grp.Attestation.SymmetricKey.PrimaryKey, id)
			c := s.client(hc)
			c.PollInterval = 50 * time.Millisecond
			res, err := c.Register(ctx, id, device.SymmetricKey(k), json.RawMessage(`{"model":"toaster"}`))
			if err == nil && res.Status != "assigned" {
				err = fmt.Errorf("%s: %s", id, res.Status)
			}
			errs <- err
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	hook.mu.Lock()
	maxActive := hook.maxActive
	hook.mu.Unlock()
	t.Logf("%d registrations against a 200 ms webhook: %s, up to %d webhook calls at once", n, elapsed, maxActive)
	// Done one after another, the webhook calls alone would take 20 s.
	if maxActive < 10 || elapsed > 10*time.Second {
		t.Errorf("webhook calls are not concurrent: at most %d at once, %s in all", maxActive, elapsed)
	}
	// The race detector (and the other test packages running beside it)
	// slow everything several times over; the 1 s bound of the issue is
	// checked by the run without the race detector in `make test`.
	if !raceEnabled && elapsed > time.Second {
		t.Errorf("%d registrations took %s, want well under 1s", n, elapsed)
	}
}

func (s *server) clientTLS(t *testing.T) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(s.caFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{}
	cfg.RootCAs = x509PoolFromPEM(pem)
	return cfg
}

// TestWebhookSignedAndMutualTLS: with webhook.signingSecret and a client
// certificate configured, the webhook receives signed requests over mutual
// TLS; a webhook that demands another secret refuses them (400209).
func TestWebhookSignedAndMutualTLS(t *testing.T) {
	clientCA := dpstest.NewRoot(t, "webhook client CA")
	clientCert := clientCA.Leaf(t, "dps")
	keyDER, _ := x509.MarshalPKCS8PrivateKey(clientCert.Key)
	certFile := dpstest.WriteFile(t, "client.pem", clientCert.PEM())
	keyFile := dpstest.WriteFile(t, "client-key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))

	pool := x509.NewCertPool()
	pool.AddCert(clientCA.Cert)
	var seenClientCN string
	var mu sync.Mutex
	serve := func(secret string) *httptest.Server {
		h := webhook.Handler(func(ctx context.Context, req *webhook.Request) (*webhook.Response, error) {
			return &webhook.Response{IoTHubHostName: req.LinkedHubs[0], Payload: json.RawMessage(`{"signed":true}`)}, nil
		}, webhook.HandlerOptions{Secret: []byte(secret)})
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if len(r.TLS.PeerCertificates) > 0 {
				seenClientCN = r.TLS.PeerCertificates[0].Subject.CommonName
			}
			mu.Unlock()
			h.ServeHTTP(w, r)
		}))
		srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	good, bad := serve("s3cret"), serve("another")
	caFile := dpstest.WriteFile(t, "hooks-ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: good.Certificate().Raw}))+
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bad.Certificate().Raw})))

	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey)+
		fmt.Sprintf("webhook: { caFile: %s, signingSecret: s3cret, clientCertFile: %s, clientKeyFile: %s }\n", caFile, certFile, keyFile))
	svc := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	ctx := context.Background()
	for _, tc := range []struct {
		id, url string
		ok      bool
	}{{"signed-ok", good.URL, true}, {"signed-bad", bad.URL, false}} {
		e, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: tc.id, Attestation: symmetric(), AllocationPolicy: "custom",
			CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: tc.url, APIVersion: "2021-10-01"}}, "")
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.client(hc).Register(ctx, tc.id, device.SymmetricKey(e.Attestation.SymmetricKey.PrimaryKey), nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.ok && (res.Status != "assigned" || string(res.RegistrationState.Payload) != `{"signed":true}`) {
			t.Errorf("%s: %+v / %+v", tc.id, res, res.RegistrationState)
		}
		if !tc.ok && (res.Status != "failed" || res.RegistrationState.ErrorCode != 400209) {
			t.Errorf("%s: a webhook refusing the signature gave %+v / %+v, want failed 400209", tc.id, res, res.RegistrationState)
		}
	}
	// A per-enrollment secret (a dps extension) signs that enrollment's
	// requests instead: the webhook that wants "another" now accepts them.
	own, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "signed-own", Attestation: symmetric(), AllocationPolicy: "custom",
		CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: bad.URL, APIVersion: "2021-10-01", SigningSecret: "another"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if own.CustomAllocationDefinition.SigningSecret != "" {
		t.Errorf("the signing secret was returned")
	}
	// An update that omits the secret keeps it.
	own.ProvisioningStatus = "enabled"
	if own, err = svc.PutEnrollment(ctx, own, own.ETag); err != nil {
		t.Fatal(err)
	}
	got, _ := svc.Enrollment(ctx, "signed-own")
	if got.CustomAllocationDefinition == nil || got.CustomAllocationDefinition.SigningSecret != "" {
		t.Errorf("GET customAllocationDefinition = %+v", got.CustomAllocationDefinition)
	}
	res, err := s.client(hc).Register(ctx, "signed-own", device.SymmetricKey(own.Attestation.SymmetricKey.PrimaryKey), nil)
	if err != nil || res.Status != "assigned" {
		t.Fatalf("per-enrollment secret: %+v, %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seenClientCN != "dps" {
		t.Errorf("webhook saw client certificate CN %q, want dps", seenClientCN)
	}
}

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
)

// TestServiceThrottling: throttling.service and throttling.hubService
// limit the DPS service API and the built-in hub's service API of the
// node: the burst, then 429 with Retry-After in each API's error shape;
// a caller with a bad key consumes nothing; devices are unaffected; every
// refusal is counted with its API and quota (device throttling's metric
// is not touched). Fault injection was not configured, so it is on:
// /faults is served, and is not limited.
func TestServiceThrottling(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey)+`linkedHubs: [ { hostName: localhost } ]
throttling:
  device: { pollsPer10s: 0 }
  service: { operationsPerMinute: 3 }
  hubService: { registryOperationsPerMinute: 2, queriesPerMinute: 1 }
`)
	ctx := context.Background()
	owner := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	wrong := serviceClient(t, s, hc, "provisioningserviceowner", readerKey)
	for range 5 {
		if _, err := wrong.Enrollment(ctx, "none"); client.StatusOf(err) != http.StatusUnauthorized {
			t.Fatalf("a wrong key: %v", err)
		}
	}
	for i := range 3 {
		if _, err := owner.Enrollment(ctx, "none"); client.StatusOf(err) != http.StatusNotFound {
			t.Fatalf("service request %d: %v, want 404", i+1, err)
		}
	}
	if _, err := owner.Enrollment(ctx, "none"); client.StatusOf(err) != http.StatusTooManyRequests {
		t.Fatalf("fourth service request: %v, want 429", err)
	}
	tok := sas.New("localhost", mustB64(t, ownerKey), "provisioningserviceowner", time.Now().Add(time.Hour))
	r := do(t, hc, "GET", s.endpoint()+"/enrollmentGroups/none?api-version=2021-10-01", tok, nil)
	if r.status != 429 || r.body["errorCode"] != float64(429001) || r.body["message"] != "Operations are being throttled for this tenant." ||
		r.body["trackingId"] == "" || r.body["timestampUtc"] == nil {
		t.Fatalf("throttled service answer = %d %s", r.status, r.raw)
	}
	retryAfter(t, r, 20) // 3 a minute: one every 20 s
	if rules, err := owner.Faults(ctx); err != nil || len(rules) != 0 {
		t.Fatalf("GET /faults with the service quota used up: %v %v, want no rules", rules, err)
	}

	// The built-in hub's registry and query quotas.
	_, port, _ := net.SplitHostPort(s.httpsLn.Addr().String())
	hub := "https://localhost:" + port // the hub by its name
	hubOwner := s.hubOwners["localhost"]
	hubTok := sas.New("localhost", mustB64(t, hubOwner.PrimaryKey), hubOwner.Name, time.Now().Add(time.Hour))
	for i := range 2 {
		if r := do(t, hc, "GET", hub+"/devices/none?api-version=2021-04-12", hubTok, nil); r.status != http.StatusNotFound {
			t.Fatalf("registry request %d: %d %s", i+1, r.status, r.raw)
		}
	}
	r = do(t, hc, "GET", hub+"/devices?api-version=2021-04-12", hubTok, nil)
	msg, _ := r.body["Message"].(string)
	if r.status != http.StatusTooManyRequests || r.header.Get("iothub-errorcode") != "ThrottlingException" || !strings.HasPrefix(msg, "ErrorCode:ThrottlingException;") {
		t.Fatalf("third registry request: %d %v %s", r.status, r.header, r.raw)
	}
	retryAfter(t, r, 30)  // 2 a minute
	query := func() int { // the answer is a JSON array, which do does not read
		req, _ := http.NewRequest("POST", hub+"/devices/query?api-version=2021-04-12", strings.NewReader(`{"query":"SELECT * FROM devices"}`))
		req.Header.Set("Authorization", hubTok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := query(); st != http.StatusOK {
		t.Fatalf("query: %d", st)
	}
	if st := query(); st != http.StatusTooManyRequests {
		t.Fatalf("second query within a minute: %d", st)
	}

	// Devices are not limited by the service APIs' quotas.
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("svc-throttled-bystander"))
	res, err := s.client(hc).Register(ctx, "svc-throttled-bystander", device.SymmetricKey(string(e.Attestation.SymmetricKey.PrimaryKey)), nil)
	if err != nil || res.Status != "assigned" {
		t.Fatalf("a device during the throttling: %+v %v", res, err)
	}
	for sample, want := range map[string]float64{
		`dps_service_throttled_requests_total{api="service",quota="operations"}`:  2,
		`dps_service_throttled_requests_total{api="hubService",quota="registry"}`: 1,
		`dps_service_throttled_requests_total{api="hubService",quota="query"}`:    1,
	} {
		if got := metric(t, s, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	for l := range strings.Lines(metricsText(t, s)) {
		if strings.HasPrefix(l, "dps_throttled_requests_total{") {
			t.Errorf("service throttling counted as device throttling: %s", l)
		}
	}
}

// retryAfter checks a throttled answer's Retry-After: whole seconds, at
// least 1 and at most window, the time one request of the quota takes to
// come back (how much less depends on how fast the test ran).
func retryAfter(t *testing.T, r rawResponse, window int) {
	t.Helper()
	ra := r.header.Get("Retry-After")
	if n, err := strconv.Atoi(ra); err != nil || n < 1 || n > window {
		t.Fatalf("Retry-After %q, want 1 to %d", ra, window)
	}
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/sas"
)

// metric returns the value of one sample of the admin endpoint's metrics
// (0 when absent).
func metric(t *testing.T, s *server, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.adminLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// regAuth is a registration SAS token of an individual enrollment's device.
func regAuth(t *testing.T, key, regID string) string {
	return sas.New(testScope+"/registrations/"+regID, mustB64(t, key), "registration", time.Now().Add(time.Hour))
}

func checkThrottled(t *testing.T, r rawResponse) {
	t.Helper()
	if r.status != 429 || r.body["errorCode"] != float64(429001) || r.body["message"] != "Operations are being throttled for this tenant." ||
		r.body["trackingId"] == "" || r.body["timestampUtc"] == nil {
		t.Fatalf("throttled answer = %d %s", r.status, r.raw)
	}
	if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 || n > 10 {
		t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
	}
}

// TestThrottleHammeredDevice: one device hammers register (1,000 requests
// in a tight loop, four at a time) and gets 429s; another device registers
// as if nothing happened; the refusals are counted by transport.
func TestThrottleHammeredDevice(t *testing.T) {
	dir := t.TempDir()
	s, hc := startServer(t, dir, "throttling: { device: { registersPer10s: 5, pollsPer10s: 5 } }\n")
	hammer := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("hammer"))
	other := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("bystander"))
	auth := regAuth(t, string(hammer.Attestation.SymmetricKey.PrimaryKey), "hammer")
	url := s.endpoint() + "/" + testScope + "/registrations/hammer/register?api-version=2021-06-01"

	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for range 4 {
		wg.Go(func() {
			for range 250 {
				r := do(t, hc, "PUT", url, auth, []byte(`{"registrationId":"hammer"}`))
				if r.status == 429 {
					checkThrottled(t, r)
				}
				mu.Lock()
				counts[r.status]++
				mu.Unlock()
			}
		})
	}
	// Meanwhile another device registers, and polls at the server's pace.
	res, err := s.client(hc).Register(context.Background(), "bystander", device.SymmetricKey(string(other.Attestation.SymmetricKey.PrimaryKey)), nil)
	if err != nil || res.Status != "assigned" {
		t.Fatalf("the other device: %+v %v", res, err)
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("1000 registers of one device in %s (%.0f a second): %v", elapsed.Round(time.Millisecond), 1000/elapsed.Seconds(), counts)
	admitted := counts[202]
	if admitted < 5 || admitted > 5+int(elapsed/(2*time.Second))+1 || counts[429] != 1000-admitted {
		t.Fatalf("answers %v in %s: want 5 admitted (plus one per 2s) and the rest 429", counts, elapsed)
	}
	if got := metric(t, s, `dps_throttled_requests_total{operation="register",transport="https"}`); got != float64(counts[429]) {
		t.Fatalf("metric counts %v throttled registers, want %d", got, counts[429])
	}
	if n := countRows(t, dir, "operations"); n > admitted+1 {
		t.Fatalf("%d operations stored for %d admitted registers", n, admitted)
	}
}

// TestThrottlePollDefault: Azure's default, 5 polls per 10 s per device,
// over HTTPS and MQTT (the 429 topic with retry-after).
func TestThrottlePollDefault(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), "throttling: { device: { pollsPer10s: 5 } }\n")
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("poller"))
	key := string(e.Attestation.SymmetricKey.PrimaryKey)
	auth := regAuth(t, key, "poller")
	base := s.endpoint() + "/" + testScope + "/registrations/poller"
	r := do(t, hc, "PUT", base+"/register?api-version=2021-06-01", auth, nil)
	if r.status != 202 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	opID := r.body["operationId"].(string)
	for i := range 5 {
		if p := do(t, hc, "GET", base+"/operations/"+opID+"?api-version=2021-06-01", auth, nil); p.status != 200 && p.status != 202 {
			t.Fatalf("poll %d = %d %s", i+1, p.status, p.raw)
		}
	}
	checkThrottled(t, do(t, hc, "GET", base+"/operations/"+opID+"?api-version=2021-06-01", auth, nil))
	// Registers are not limited by default.
	if r := do(t, hc, "PUT", base+"/register?api-version=2021-06-01", auth, nil); r.status != 202 {
		t.Fatalf("register after throttled polls = %d %s", r.status, r.raw)
	}

	// MQTT: the poller's allowance is shared across transports.
	for _, transport := range []string{"mqtt", "mqttws"} {
		id := "mq-poller-" + transport
		me := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment(id))
		cl, err := pahoDial(t, pahoOptions(t, s, transport, id, string(me.Attestation.SymmetricKey.PrimaryKey)), id)
		if err != nil {
			t.Fatal(err)
		}
		msgs := subscribe(t, cl)
		publish(t, cl, 1, "$dps/registrations/PUT/iotdps-register/?$rid=r", "{}")
		var res device.Result
		json.Unmarshal(next(t, msgs).Payload(), &res)
		for i := range 6 {
			publish(t, cl, 1, fmt.Sprintf("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=p%d&operationId=%s", i, res.OperationID), "")
			m := next(t, msgs)
			throttled := strings.HasPrefix(m.Topic(), "$dps/registrations/res/429/?$rid=p5&retry-after=")
			if throttled != (i == 5) {
				t.Fatalf("%s poll %d: %s %s", transport, i+1, m.Topic(), m.Payload())
			}
			if throttled {
				var body map[string]any
				json.Unmarshal(m.Payload(), &body)
				if body["errorCode"] != float64(429001) || body["message"] != "Operations are being throttled for this tenant." {
					t.Fatalf("%s throttled body %s", transport, m.Payload())
				}
				n, err := strconv.Atoi(m.Topic()[strings.LastIndex(m.Topic(), "=")+1:])
				if err != nil || n < 1 || n > 10 {
					t.Fatalf("retry-after in %s", m.Topic())
				}
			}
		}
		cl.Disconnect(0)
		if got := metric(t, s, `dps_throttled_requests_total{operation="poll",transport="`+transport+`"}`); got != 1 {
			t.Fatalf("%s: metric %v, want 1", transport, got)
		}
	}
}

// TestFaultsHTTPS: rules from the configuration and set at run time, over
// HTTPS: an injected 429 with retry-after then success (no operation
// stored for the refused registers), assigningPolls, and drop.
func TestFaultsHTTPS(t *testing.T) {
	dir := t.TempDir()
	s, hc := startServer(t, dir, fmt.Sprintf(policiesYAML, ownerKey, readerKey)+`faults:
  - name: flaky-register
    match: { registrationId: "flaky-*", transport: any, operation: register }
    action: { status: 429, errorCode: 429001, retryAfterSeconds: 3 }
    times: 2
`)
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("flaky-1"))
	key := string(e.Attestation.SymmetricKey.PrimaryKey)
	auth := regAuth(t, key, "flaky-1")
	base := s.endpoint() + "/" + testScope + "/registrations/flaky-1"
	ops := countRows(t, dir, "operations")
	for range 2 {
		r := do(t, hc, "PUT", base+"/register?api-version=2021-06-01", auth, nil)
		checkThrottled(t, r)
		if r.header.Get("Retry-After") != "3" {
			t.Fatalf("Retry-After = %q, want the rule's 3", r.header.Get("Retry-After"))
		}
	}
	if n := countRows(t, dir, "operations"); n != ops {
		t.Fatalf("injected 429s stored operations: %d → %d", ops, n)
	}
	r := do(t, hc, "PUT", base+"/register?api-version=2021-06-01", auth, nil)
	if r.status != 202 {
		t.Fatalf("third register = %d %s", r.status, r.raw)
	}
	if got := metric(t, s, `dps_faults_injected_total{rule="flaky-register"}`); got != 2 {
		t.Fatalf("metric %v, want 2", got)
	}

	// Run time: assigningPolls, through the service API.
	svc := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	ctx := context.Background()
	if _, err := svc.PutFault(ctx, faults.Rule{Name: "slow", Match: faults.Match{RegistrationID: "flaky-1", Operation: "poll"}, Action: faults.Action{AssigningPolls: 3}}); err != nil {
		t.Fatal(err)
	}
	opID := r.body["operationId"].(string)
	var statuses []string
	for range 20 {
		p := do(t, hc, "GET", base+"/operations/"+opID+"?api-version=2021-06-01", auth, nil)
		statuses = append(statuses, p.body["status"].(string))
		if p.body["status"] == "assigned" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	held := 0
	for _, st := range statuses {
		if st == "assigning" {
			held++
		}
	}
	if statuses[len(statuses)-1] != "assigned" || held < 3 {
		t.Fatalf("poll statuses %v: want at least 3 assigning, then assigned", statuses)
	}
	st, err := svc.Faults(ctx)
	if err != nil || len(st) != 2 || st[0].Name != "flaky-register" || st[0].Injected != 2 || st[1].Name != "slow" || st[1].Injected != 3 {
		t.Fatalf("GET /faults = %+v %v", st, err)
	}
	stored, err := s.store.Operation(ctx, opID)
	if err != nil || stored.Status != "assigned" {
		t.Fatalf("the held operation was touched: %+v %v", stored, err)
	}

	// drop: the register is served, its answer never arrives.
	if _, err := svc.PutFault(ctx, faults.Rule{Name: "lost", Match: faults.Match{RegistrationID: "flaky-*", Transport: "https"}, Action: faults.Action{Drop: "beforeResponse"}, Times: 1}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", base+"/register?api-version=2021-06-01", nil)
	req.Header.Set("Authorization", auth)
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("dropped request answered %d", resp.StatusCode)
	}
	if r := do(t, hc, "PUT", base+"/register?api-version=2021-06-01", auth, nil); r.status != 202 {
		t.Fatalf("register after the drop = %d %s", r.status, r.raw)
	}
	if del, err := svc.DeleteFault(ctx, "lost"); err != nil || del.Injected != 1 {
		t.Fatalf("DELETE = %+v %v", del, err)
	}
	if _, err := svc.DeleteFault(ctx, "lost"); err == nil {
		t.Fatal("deleting a deleted rule succeeded")
	}
	// A reader may not manage faults; a bad rule is refused.
	reader := serviceClient(t, s, hc, "reader", readerKey)
	if _, err := reader.Faults(ctx); err == nil {
		t.Fatal("a reader listed the faults")
	}
	if _, err := svc.PutFault(ctx, faults.Rule{Name: "bad", Match: faults.Match{Transport: "amqp"}, Action: faults.Action{Status: 500}}); err == nil {
		t.Fatal("an invalid rule was accepted")
	}
}

// TestFaultsMQTT: an injected 429 with retry-after on register then
// success, drop beforeResponse and afterConnack, over MQTT.
func TestFaultsMQTT(t *testing.T) {
	dir := t.TempDir()
	s, _ := startServer(t, dir, `faults:
  - { name: mq-429, match: { registrationId: "mq-flaky", transport: mqtt, operation: register }, action: { status: 429, retryAfterSeconds: 2 }, times: 1 }
  - { name: mq-503-poll, match: { registrationId: "mq-flaky", operation: poll }, action: { status: 503, errorCode: 503001, retryAfterSeconds: 1 }, times: 1 }
  - { name: mq-lost, match: { registrationId: "mq-lost" }, action: { drop: beforeResponse }, times: 1 }
  - { name: mq-connack, match: { registrationId: "mq-connack", operation: register }, action: { drop: afterConnack }, times: 1 }
`)
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("mq-flaky"))
	cl := pahoConnect(t, s, "mq-flaky", string(e.Attestation.SymmetricKey.PrimaryKey), true)
	msgs := subscribe(t, cl)
	ops := countRows(t, dir, "operations")
	publish(t, cl, 1, "$dps/registrations/PUT/iotdps-register/?$rid=1", "{}")
	if m := next(t, msgs); m.Topic() != "$dps/registrations/res/429/?$rid=1&retry-after=2" || !strings.Contains(string(m.Payload()), `"errorCode":429001`) {
		t.Fatalf("injected answer %s %s", m.Topic(), m.Payload())
	}
	if n := countRows(t, dir, "operations"); n != ops {
		t.Fatalf("an injected 429 stored an operation")
	}
	publish(t, cl, 1, "$dps/registrations/PUT/iotdps-register/?$rid=2", "{}")
	m := next(t, msgs)
	var res device.Result
	if json.Unmarshal(m.Payload(), &res); !strings.HasPrefix(m.Topic(), "$dps/registrations/res/202/?$rid=2") || res.OperationID == "" {
		t.Fatalf("second register %s %s", m.Topic(), m.Payload())
	}
	publish(t, cl, 1, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=3&operationId="+res.OperationID, "")
	if m := next(t, msgs); m.Topic() != "$dps/registrations/res/503/?$rid=3&retry-after=1" || !strings.Contains(string(m.Payload()), `"errorCode":503001`) {
		t.Fatalf("injected poll answer %s %s", m.Topic(), m.Payload())
	}
	cl.Disconnect(0)

	// drop beforeResponse: the connection is lost instead of the answer.
	le := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("mq-lost"))
	lost := newLost()
	cl, err := pahoDial(t, pahoOptions(t, s, "mqtt", "mq-lost", string(le.Attestation.SymmetricKey.PrimaryKey)).SetConnectionLostHandler(lost.handler), "mq-lost")
	if err != nil {
		t.Fatal(err)
	}
	msgs = subscribe(t, cl)
	cl.Publish("$dps/registrations/PUT/iotdps-register/?$rid=1", 1, false, "{}")
	select {
	case <-lost.ch:
	case m := <-msgs:
		t.Fatalf("dropped request answered: %s", m.Topic())
	case <-time.After(5 * time.Second):
		t.Fatal("connection not dropped")
	}
	cl = pahoConnect(t, s, "mq-lost", string(le.Attestation.SymmetricKey.PrimaryKey), true)
	pahoRegister(t, cl, subscribe(t, cl), "mq-lost") // times: 1 — served now
	cl.Disconnect(0)

	// drop afterConnack: CONNACK accepted, then the connection closes.
	ce := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("mq-connack"))
	lost = newLost()
	cl, err = pahoDial(t, pahoOptions(t, s, "mqtt", "mq-connack", string(ce.Attestation.SymmetricKey.PrimaryKey)).SetConnectionLostHandler(lost.handler), "mq-connack")
	if err != nil {
		t.Fatalf("CONNACK not accepted: %v", err)
	}
	select {
	case err := <-lost.ch:
		if err == nil {
			t.Fatal("lost without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection not dropped after CONNACK")
	}
	cl = pahoConnect(t, s, "mq-connack", string(ce.Attestation.SymmetricKey.PrimaryKey), true)
	pahoRegister(t, cl, subscribe(t, cl), "mq-connack")
	cl.Disconnect(0)
	for rule, want := range map[string]float64{"mq-429": 1, "mq-503-poll": 1, "mq-lost": 1, "mq-connack": 1} {
		if got := metric(t, s, `dps_faults_injected_total{rule="`+rule+`"}`); got != want {
			t.Errorf("%s: metric %v, want %v", rule, got, want)
		}
	}
}

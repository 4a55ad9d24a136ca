package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/mqttapi"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

func (s *server) mqttClient(t *testing.T) *device.Client {
	return &device.Client{Endpoint: s.endpoint(), IDScope: s.idScope, Transport: "mqtt", MQTTAddress: s.mqtt.Addr().String(),
		TLSConfig: s.clientTLS(t), PollInterval: 20 * time.Millisecond}
}

// MQTT over WebSocket on the HTTPS port: the same registrations and refusals.
func TestMQTTOverWebSocket(t *testing.T) {
	s, _, svc, _, _ := startWithWebhook(t, "")
	ctx := context.Background()
	e, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "ws-ind", Attestation: symmetric()}, "")
	if err != nil {
		t.Fatal(err)
	}
	g, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "ws-grp", Attestation: symmetric()}, "")
	if err != nil {
		t.Fatal(err)
	}
	gk, _ := device.DeriveKey(g.Attestation.SymmetricKey.PrimaryKey, "ws-g-1")
	c := &device.Client{Endpoint: s.endpoint(), IDScope: s.idScope, Transport: "mqttws", TLSConfig: s.clientTLS(t), PollInterval: 20 * time.Millisecond}
	for _, tc := range []struct{ id, key string }{{"ws-ind", e.Attestation.SymmetricKey.PrimaryKey}, {"ws-g-1", gk}} {
		res, err := c.Register(ctx, tc.id, device.SymmetricKey(tc.key), map[string]any{"over": "websocket"})
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if res.Status != "assigned" || res.RegistrationState.DeviceID != tc.id || res.RegistrationState.AssignedHub == "" {
			t.Fatalf("%s: %+v / %+v", tc.id, res, res.RegistrationState)
		}
	}
	_, err = c.Register(ctx, "ws-ind", device.SymmetricKey(dpstest.Key(32)), nil)
	var ce *device.ConnectRefusedError
	if !errors.As(err, &ce) {
		t.Fatalf("wrong key: err = %v, want a CONNACK refusal", err)
	}
}

func TestMQTTRegistration(t *testing.T) {
	s, hc, svc, hook, url := startWithWebhook(t, "")
	ctx := context.Background()
	e, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "mqtt-ind", Attestation: symmetric()}, "")
	if err != nil {
		t.Fatal(err)
	}
	g, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "mqtt-grp", Attestation: symmetric()}, "")
	if err != nil {
		t.Fatal(err)
	}
	gk, _ := device.DeriveKey(g.Attestation.SymmetricKey.SecondaryKey, "mqtt-g-1")
	c := s.mqttClient(t)
	for name, tc := range map[string]struct{ id, key string }{
		"individual-primary":   {"mqtt-ind", e.Attestation.SymmetricKey.PrimaryKey},
		"individual-secondary": {"mqtt-ind", e.Attestation.SymmetricKey.SecondaryKey},
		"group-derived":        {"mqtt-g-1", gk},
	} {
		t.Run("ok/"+name, func(t *testing.T) {
			res, err := c.Register(ctx, tc.id, device.SymmetricKey(tc.key), map[string]any{"fw": "1"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != "assigned" || res.RegistrationState.AssignedHub == "" || res.RegistrationState.DeviceID != tc.id {
				t.Fatalf("result = %+v / %+v", res, res.RegistrationState)
			}
		})
	}

	t.Run("ok/custom-allocation-payload-round-trip", func(t *testing.T) {
		ce, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "mqtt-custom", Attestation: symmetric(), AllocationPolicy: "custom",
			CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: url, APIVersion: "2021-10-01"}}, "")
		if err != nil {
			t.Fatal(err)
		}
		payload := json.RawMessage(`{"model":"heatpump","nested":{"list":[1,"x",null,{"deep":true}]}}`)
		before := len(hook.requests())
		res, err := c.Register(ctx, "mqtt-custom", device.SymmetricKey(ce.Attestation.SymmetricKey.PrimaryKey), payload)
		if err != nil {
			t.Fatal(err)
		}
		if res.RegistrationState.AssignedHub != "hub-b.example.net" {
			t.Errorf("hub = %s", res.RegistrationState.AssignedHub)
		}
		var got struct {
			Echo json.RawMessage `json:"echo"`
		}
		json.Unmarshal(res.RegistrationState.Payload, &got)
		if !reflect.DeepEqual(asJSON(t, got.Echo), asJSON(t, payload)) {
			t.Errorf("device got %s", res.RegistrationState.Payload)
		}
		var req struct {
			DeviceRuntimeContext struct {
				Payload json.RawMessage `json:"payload"`
			} `json:"deviceRuntimeContext"`
		}
		json.Unmarshal(hook.requests()[before], &req)
		if !reflect.DeepEqual(asJSON(t, req.DeviceRuntimeContext.Payload), asJSON(t, payload)) {
			t.Errorf("webhook got %s", req.DeviceRuntimeContext.Payload)
		}
	})

	refused := []struct {
		name string
		c    *device.Client
		id   string
		key  string
	}{
		{"fail/wrong-key", c, "mqtt-ind", dpstest.Key(32)},
		{"fail/unknown-device", c, "mqtt-nobody", dpstest.Key(32)},
		{"fail/group-key-itself", c, "mqtt-g-2", g.Attestation.SymmetricKey.PrimaryKey},
		{"fail/wrong-scope", &device.Client{IDScope: "0ne0000WRNG", Transport: "mqtt", MQTTAddress: s.mqtt.Addr().String(), TLSConfig: s.clientTLS(t)}, "mqtt-ind", e.Attestation.SymmetricKey.PrimaryKey},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c.Register(ctx, tt.id, device.SymmetricKey(tt.key), nil)
			var ce *device.ConnectRefusedError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a CONNACK refusal", err)
			}
		})
	}

	// An operation started over HTTPS is polled over MQTT.
	t.Run("ok/https-then-mqtt", func(t *testing.T) {
		hcl := s.client(hc)
		key := e.Attestation.SymmetricKey.PrimaryKey
		op, _, err := hcl.Start(ctx, "mqtt-ind", device.SymmetricKey(key), nil)
		if err != nil {
			t.Fatal(err)
		}
		cl := pahoConnect(t, s, "mqtt-ind", key, true)
		defer cl.Disconnect(0)
		msgs := subscribe(t, cl)
		deadline := time.Now().Add(5 * time.Second)
		for {
			publish(t, cl, 1, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=poll-1&operationId="+op.OperationID, " ")
			m := next(t, msgs)
			if !strings.HasPrefix(m.Topic(), "$dps/registrations/res/") || !strings.Contains(m.Topic(), "?$rid=poll-1") {
				t.Fatalf("topic %q", m.Topic())
			}
			var r device.Result
			json.Unmarshal(m.Payload(), &r)
			if r.OperationID != op.OperationID || r.RegistrationState == nil || r.RegistrationState.RegistrationID != "mqtt-ind" {
				t.Fatalf("poll answer %s", m.Payload())
			}
			if r.Status == "assigned" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("never assigned: %s", m.Payload())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func pahoConnect(t *testing.T, s *server, regID, key string, clean bool) paho.Client {
	t.Helper()
	cl, err := pahoTry(t, s, regID, key, clean)
	if err != nil {
		t.Fatalf("connect %s: %v", regID, err)
	}
	return cl
}

func pahoTry(t *testing.T, s *server, regID, key string, clean bool) (paho.Client, error) {
	return pahoDial(t, pahoOptions(t, s, "mqtt", regID, key).SetCleanSession(clean), regID)
}

// pahoOptions are a paho client's options for a device over MQTT ("mqtt")
// or MQTT over WebSocket on the HTTPS port ("mqttws").
func pahoOptions(t *testing.T, s *server, transport, regID, key string) *paho.ClientOptions {
	url := "tls://" + s.mqtt.Addr().String()
	if transport == "mqttws" {
		url = "wss://" + s.httpsLn.Addr().String() + mqttapi.WebSocketPath
	}
	return paho.NewClientOptions().AddBroker(url).SetClientID(regID).
		SetUsername(s.idScope + "/registrations/" + regID + "/api-version=2019-03-31&ClientVersion=paho").
		SetPassword(sas.New(s.idScope+"/registrations/"+regID, mustB64(t, key), "registration", time.Now().Add(time.Hour))).
		SetTLSConfig(s.clientTLS(t)).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetProtocolVersion(4).SetConnectTimeout(5 * time.Second)
}

func pahoDial(t *testing.T, o *paho.ClientOptions, regID string) (paho.Client, error) {
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect: %v", tok.Error())
	}
	if ct, ok := tok.(*paho.ConnectToken); ok && ct.SessionPresent() {
		t.Errorf("CONNACK SessionPresent=1 for %s", regID)
	}
	return cl, nil
}

// pahoRegister registers over an open paho connection, polling until the
// registration is assigned.
func pahoRegister(t *testing.T, cl paho.Client, msgs chan paho.Message, regID string) {
	t.Helper()
	publish(t, cl, 1, "$dps/registrations/PUT/iotdps-register/?$rid=reg-"+regID, `{"registrationId":"`+regID+`"}`)
	for i := 0; ; i++ {
		m := next(t, msgs)
		var r device.Result
		if err := json.Unmarshal(m.Payload(), &r); err != nil || r.OperationID == "" {
			t.Fatalf("answer %s %s", m.Topic(), m.Payload())
		}
		if r.Status == "assigned" {
			if r.RegistrationState == nil || r.RegistrationState.DeviceID != regID {
				t.Fatalf("assigned answer %s", m.Payload())
			}
			return
		}
		if i > 100 {
			t.Fatalf("never assigned: %s", m.Payload())
		}
		time.Sleep(20 * time.Millisecond)
		publish(t, cl, 1, fmt.Sprintf("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=poll-%d&operationId=%s", i, r.OperationID), " ")
	}
}

// lost records when a paho connection is lost.
type lost struct{ ch chan error }

func newLost() *lost { return &lost{ch: make(chan error, 1)} }

func (l *lost) handler(_ paho.Client, err error) { l.ch <- err }

func (l *lost) none(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-l.ch:
		t.Fatalf("%s: the connection was lost: %v", what, err)
	default:
	}
}

// Sessions over MQTT and MQTT over WebSocket: a CONNECT with the device's
// client ID and a wrong key is refused and leaves the connected device
// alone, whose registration completes; a second connection with the right
// key replaces the first (whose connection is closed) and registers.
func TestMQTTSessionTakeover(t *testing.T) {
	s, _ := startServer(t, t.TempDir(), "")
	for _, transport := range []string{"mqtt", "mqttws"} {
		t.Run(transport, func(t *testing.T) {
			id := "take-" + transport
			key := string(dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment(id)).Attestation.SymmetricKey.PrimaryKey)
			firstLost := newLost()
			first, err := pahoDial(t, pahoOptions(t, s, transport, id, key).SetConnectionLostHandler(firstLost.handler), id)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Disconnect(0)
			msgs := subscribe(t, first)

			if _, err := pahoDial(t, pahoOptions(t, s, transport, id, dpstest.Key(32)), id); err == nil {
				t.Fatal("a connection with a wrong key was accepted")
			}
			time.Sleep(100 * time.Millisecond) // a takeover would have closed the first connection by now
			firstLost.none(t, "after a CONNECT with a wrong key")
			pahoRegister(t, first, msgs, id)
			firstLost.none(t, "after registering")

			second, err := pahoDial(t, pahoOptions(t, s, transport, id, key), id)
			if err != nil {
				t.Fatal(err)
			}
			defer second.Disconnect(0)
			select {
			case <-firstLost.ch:
			case <-time.After(5 * time.Second):
				t.Fatal("an authenticated second connection left the first one connected")
			}
			pahoRegister(t, second, subscribe(t, second), id)
		})
	}
}

// A device with keep-alive 1 s is allowed 1.5 s of silence, so paho stays
// connected through 10 s of waiting (the bound), then registers,
// over MQTT and MQTT over WebSocket. paho checks every k/4 and pings once k
// has passed since it last sent: about every 1.25 s, inside the allowance;
// an allowance of whole seconds (1 s) drops it at its first or second ping.
func TestMQTTKeepAliveOneSecond(t *testing.T) {
	s, _ := startServer(t, t.TempDir(), "")
	for _, transport := range []string{"mqtt", "mqttws"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			id := "keepalive-" + transport
			key := string(dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment(id)).Attestation.SymmetricKey.PrimaryKey)
			l := newLost()
			cl, err := pahoDial(t, pahoOptions(t, s, transport, id, key).SetKeepAlive(time.Second).SetConnectionLostHandler(l.handler), id)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Disconnect(0)
			msgs := subscribe(t, cl)
			select {
			case err := <-l.ch:
				t.Fatalf("connection lost while waiting: %v", err)
			case <-time.After(10 * time.Second):
			}
			pahoRegister(t, cl, msgs, id)
			l.none(t, "after registering")
		})
	}
}

func subscribe(t *testing.T, cl paho.Client) chan paho.Message {
	t.Helper()
	msgs := make(chan paho.Message, 16)
	tok := cl.Subscribe("$dps/registrations/res/#", 1, func(_ paho.Client, m paho.Message) { msgs <- m })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if st := tok.(*paho.SubscribeToken).Result()["$dps/registrations/res/#"]; st != 1 {
		t.Fatalf("granted QoS %d, want 1", st)
	}
	return msgs
}

func publish(t *testing.T, cl paho.Client, qos byte, topic, payload string) {
	t.Helper()
	tok := cl.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatalf("publish %s timed out", topic)
	}
}

func next(t *testing.T, msgs chan paho.Message) paho.Message {
	t.Helper()
	select {
	case m := <-msgs:
		if m.Qos() != 1 {
			t.Errorf("response QoS %d, want 1", m.Qos())
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no response")
		return nil
	}
}

func TestMQTTIsolationAndMalformedRequests(t *testing.T) {
	s, _ := startServer(t, t.TempDir(), "")
	a := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("iso-a"))
	b := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("iso-b"))
	ca := pahoConnect(t, s, "iso-a", string(a.Attestation.SymmetricKey.PrimaryKey), true)
	defer ca.Disconnect(0)
	cb := pahoConnect(t, s, "iso-b", string(b.Attestation.SymmetricKey.PrimaryKey), true)
	defer cb.Disconnect(0)
	ma, mb := subscribe(t, ca), subscribe(t, cb)

	// A registers (QoS 1, Node-style body); only A receives the answer.
	publish(t, ca, 1, "$dps/registrations/PUT/iotdps-register/?$rid=A%2Fx", `{"registrationId":"iso-a","payload":{"k":1}}`)
	m := next(t, ma)
	if m.Topic() != "$dps/registrations/res/202/?$rid=A%2Fx&retry-after=1" {
		t.Errorf("topic = %q", m.Topic())
	}
	// The C SDK publishes at QoS 0; embedded C reuses $rid=1.
	publish(t, ca, 0, "$dps/registrations/PUT/iotdps-register/?$rid=1", ``)
	if m := next(t, ma); !strings.HasPrefix(m.Topic(), "$dps/registrations/res/202/?$rid=1&") {
		t.Errorf("QoS 0 request topic = %q", m.Topic())
	}
	// Malformed body: an error answer, connection kept.
	publish(t, ca, 1, "$dps/registrations/PUT/iotdps-register/?$rid=2", `{"registrationId":`)
	if m := next(t, ma); m.Topic() != "$dps/registrations/res/400/?$rid=2" || !strings.Contains(string(m.Payload()), `"errorCode":400004`) {
		t.Errorf("malformed body answer = %q %s", m.Topic(), m.Payload())
	}
	// Another device's registration ID in the body.
	publish(t, ca, 1, "$dps/registrations/PUT/iotdps-register/?$rid=3", `{"registrationId":"iso-b"}`)
	if m := next(t, ma); m.Topic() != "$dps/registrations/res/400/?$rid=3" {
		t.Errorf("foreign registration ID answer = %q", m.Topic())
	}
	select {
	case m := <-mb:
		t.Fatalf("device B received A's response %q", m.Topic())
	case <-time.After(200 * time.Millisecond):
	}

	// B may subscribe only to the response filter.
	tok := cb.Subscribe("#", 1, nil)
	tok.WaitTimeout(5 * time.Second)
	if st := tok.(*paho.SubscribeToken).Result()["#"]; st != 0x80 {
		t.Errorf("subscription to # granted %d, want refusal (0x80)", st)
	}
	// Publishing any other topic ends the connection.
	publish(t, cb, 1, "devices/iso-b/messages/events/", `{}`)
	deadline := time.Now().Add(3 * time.Second)
	for cb.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if cb.IsConnectionOpen() {
		t.Errorf("connection still open after publishing a non-DPS topic")
	}

	// A persistent-session CONNECT is still answered SessionPresent=0 (checked in pahoTry).
	for range 2 {
		cl := pahoConnect(t, s, "iso-a", string(a.Attestation.SymmetricKey.PrimaryKey), false)
		cl.Disconnect(0)
	}
	// The client ID must be the registration ID of the username.
	o := paho.NewClientOptions().AddBroker("tls://" + s.mqtt.Addr().String()).SetClientID("iso-b").
		SetUsername(s.idScope + "/registrations/iso-a/api-version=2019-03-31").
		SetPassword(sas.New(s.idScope+"/registrations/iso-a", mustB64(t, string(a.Attestation.SymmetricKey.PrimaryKey)), "registration", time.Now().Add(time.Hour))).
		SetTLSConfig(&tls.Config{RootCAs: s.clientTLS(t).RootCAs}).SetAutoReconnect(false)
	wrong := paho.NewClient(o)
	if tok := wrong.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		wrong.Disconnect(0)
		t.Errorf("connection with a client ID other than the username's registration ID was accepted")
	}
}

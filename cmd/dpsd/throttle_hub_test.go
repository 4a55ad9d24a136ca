package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
)

// TestHubTwinThrottleAndFaults: a built-in hub device's twin requests over
// MQTT are limited by throttling.device.twinPer10s (429 on
// $iothub/twin/res/429/), and twin, hubConnect and telemetry fault rules
// apply to its connection.
func TestHubTwinThrottleAndFaults(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), "linkedHubs:\n  - { hostName: localhost }\nthrottling: { device: { pollsPer10s: 0, twinPer10s: 2 } }\n"+`faults:
  - { name: twin-503, match: { registrationId: hub-twin-2, operation: twin }, action: { status: 503, retryAfterSeconds: 1 }, times: 1 }
  - { name: hub-cut, match: { registrationId: hub-twin-2, operation: hubConnect }, action: { drop: afterConnack }, times: 1 }
  - { name: tele-lost, match: { registrationId: hub-twin-2, operation: telemetry }, action: { drop: beforeResponse }, times: 1 }
`)
	ctx := context.Background()
	connect := func(id string, lost chan error) (paho.Client, chan paho.Message) {
		t.Helper()
		e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment(id))
		key := string(e.Attestation.SymmetricKey.PrimaryKey)
		if _, err := s.client(hc).Register(ctx, id, device.SymmetricKey(key), nil); err != nil {
			t.Fatal(err)
		}
		tc := s.clientTLS(t)
		tc.ServerName = "localhost"
		o := paho.NewClientOptions().AddBroker("tls://" + s.mqtt.Addr().String()).SetClientID(id).
			SetUsername("localhost/" + id + "/?api-version=2021-04-12").
			SetPassword(sas.New("localhost/devices/"+id, mustB64(t, key), "", time.Now().Add(time.Hour))).
			SetTLSConfig(tc).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetProtocolVersion(4).SetConnectTimeout(5 * time.Second).
			SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
		for attempt := 0; ; attempt++ {
			cl := paho.NewClient(o)
			if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("connect %s: %v", id, tok.Error())
			}
			msgs := make(chan paho.Message, 16)
			tok := cl.Subscribe("$iothub/twin/res/#", 0, func(_ paho.Client, m paho.Message) { msgs <- m })
			subscribed := tok.WaitTimeout(5*time.Second) && tok.Error() == nil
			select {
			case <-lost: // dropped after CONNACK (hub-cut): connect again
			case <-time.After(300 * time.Millisecond):
				if subscribed {
					return cl, msgs
				}
			}
			if attempt > 0 {
				t.Fatalf("%s: connection lost twice", id)
			}
		}
	}
	twinGet := func(cl paho.Client, msgs chan paho.Message, rid string) string {
		t.Helper()
		cl.Publish("$iothub/twin/GET/?$rid="+rid, 0, false, "").WaitTimeout(5 * time.Second)
		select {
		case m := <-msgs:
			return m.Topic()
		case <-time.After(5 * time.Second):
			t.Fatalf("no answer to twin GET %s", rid)
			return ""
		}
	}

	lost1 := make(chan error, 4)
	cl, msgs := connect("hub-twin-1", lost1)
	for i, want := range []string{"$iothub/twin/res/200/?$rid=1", "$iothub/twin/res/200/?$rid=2", "$iothub/twin/res/429/?$rid=3"} {
		if got := twinGet(cl, msgs, fmt.Sprint(i+1)); got != want {
			t.Fatalf("twin GET %d: %s, want %s", i+1, got, want)
		}
	}
	cl.Disconnect(0)
	if got := metric(t, s, `dps_throttled_requests_total{operation="twin",transport="mqtt"}`); got != 1 {
		t.Fatalf("twin throttled metric %v, want 1", got)
	}

	lost2 := make(chan error, 4)
	cl, msgs = connect("hub-twin-2", lost2) // the first connection is dropped after its CONNACK
	if got := twinGet(cl, msgs, "a"); !strings.HasPrefix(got, "$iothub/twin/res/503/?$rid=a") {
		t.Fatalf("injected twin answer %s", got)
	}
	if got := twinGet(cl, msgs, "b"); got != "$iothub/twin/res/200/?$rid=b" {
		t.Fatalf("twin GET after the fault: %s", got)
	}
	cl.Publish("devices/hub-twin-2/messages/events/", 1, false, `{"t":1}`)
	select {
	case <-lost2:
	case <-time.After(5 * time.Second):
		t.Fatal("telemetry fault did not drop the connection")
	}
	for rule, want := range map[string]float64{"twin-503": 1, "hub-cut": 1, "tele-lost": 1} {
		if got := metric(t, s, `dps_faults_injected_total{rule="`+rule+`"}`); got != want {
			t.Errorf("%s: %v injected, want %v", rule, got, want)
		}
	}
}

package routing_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/routing"
	"github.com/opendps/dps/internal/store/sqlite"
)

const wakeHub = "hub-w.example.net"

// stamped records what it was given and when.
type stamped struct {
	mu  sync.Mutex
	got []dps.Message
	at  []time.Time
}

func (e *stamped) Deliver(_ context.Context, msgs []dps.Message) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range msgs {
		e.got, e.at = append(e.got, m), append(e.at, time.Now())
	}
	return nil
}
func (e *stamped) Close() error { return nil }

func (e *stamped) received() ([]dps.Message, []time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]dps.Message(nil), e.got...), append([]time.Time(nil), e.at...)
}

type nopConn struct{}

func (nopConn) Desired(int64, []byte) bool         { return false }
func (nopConn) Method(string, string, []byte) bool { return false }
func (nopConn) C2D()                               {}
func (nopConn) Close(error)                        {}

// TestHubAppendsWakeRoutes: with the hub's OnAppend wired to Wake, a
// telemetry message, a provisioned device's createDeviceIdentity event
// and a connection's deviceConnected and deviceDisconnected events reach
// their routes (telemetry, deviceLifecycle, deviceConnectionState) within
// the batch linger, not after the poll interval of an hour; each route
// gets its own source only.
func TestHubAppendsWakeRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db, err := sqlite.OpenWith(context.Background(), filepath.Join(t.TempDir(), "dps.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		tel, life, conn := &stamped{}, &stamped{}, &stamped{}
		route := func(name string, src routing.Source, ep routing.Endpoint) routing.Route {
			return routing.Route{Hub: wakeHub, Name: name, Source: src, Query: "true", Endpoint: name, Deliver: ep, Enabled: true}
		}
		e, err := routing.New(routing.Options{Store: db, Node: "n1", Poll: time.Hour,
			Routes: []routing.Route{route("tel", routing.SourceTelemetry, tel), route("life", routing.SourceDeviceLifecycle, life),
				route("conn", routing.SourceConnection, conn)}})
		if err != nil {
			t.Fatal(err)
		}
		hub := iothub.New(iothub.Options{Store: db, Events: db, Hubs: []string{wakeHub}, OnAppend: e.Wake})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { e.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		time.Sleep(time.Second) // the routes claimed and are waiting (an hour) for messages

		var sent []time.Time
		id := iothub.Identity{Hub: wakeHub, DeviceID: "dev-1", GenerationID: "g1", Method: "sas"}
		sent = append(sent, time.Now())
		if _, err := hub.Send(ctx, id, dps.Message{MessageID: "m1", Body: []byte("hi")}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		d, err := db.PutHubDevice(ctx, dps.HubDevice{Hub: wakeHub, DeviceID: "dev-1", GenerationID: "g1", Replaces: dps.ReplacesNothing,
			Twin: json.RawMessage(`{"properties":{"desired":{"interval":30}}}`)})
		if err != nil {
			t.Fatal(err)
		}
		d.Replaces = dps.ReplacesNothing // as the provisioning's event carries it
		sent = append(sent, time.Now())
		hub.Provisioned(ctx, d, nil)
		time.Sleep(time.Second)
		sent = append(sent, time.Now())
		detach := hub.Attach(id, nopConn{})
		time.Sleep(time.Second)
		sent = append(sent, time.Now())
		detach()
		time.Sleep(time.Second)

		check := func(name string, ep *stamped, sentAt []time.Time, ops ...string) {
			t.Helper()
			got, at := ep.received()
			if len(got) != len(ops) {
				t.Fatalf("%s received %d messages, want %d: %+v", name, len(got), len(ops), got)
			}
			for i, m := range got {
				if lag := at[i].Sub(sentAt[i]); lag > 100*time.Millisecond {
					t.Errorf("%s: message %d delivered %v after it was appended: not woken", name, i, lag)
				}
				if ops[i] != "" && m.Properties["opType"] != ops[i] {
					t.Errorf("%s: message %d is %v, want opType %s", name, i, m.Properties, ops[i])
				}
			}
		}
		check("telemetry", tel, sent[:1], "")
		check("lifecycle", life, sent[1:2], iothub.OpCreateDevice)
		check("connection state", conn, sent[2:], iothub.OpConnected, iothub.OpDisconnected)
		if got, _ := tel.received(); got[0].System[routing.PropMessageSource] != "Telemetry" {
			t.Errorf("telemetry stamped %v", got[0].System)
		}
	})
}

// TestSourceNamesAgree: the hub stamps the source values the routes'
// source filter reads (iothub cannot import routing, so they are written
// twice).
func TestSourceNamesAgree(t *testing.T) {
	if iothub.PropMessageSource != routing.PropMessageSource {
		t.Errorf("property %q vs %q", iothub.PropMessageSource, routing.PropMessageSource)
	}
	for src, v := range map[routing.Source]string{routing.SourceTelemetry: iothub.SourceTelemetry,
		routing.SourceDeviceLifecycle: iothub.SourceDeviceLifecycle, routing.SourceTwinChange: iothub.SourceTwinChange,
		routing.SourceConnection: iothub.SourceConnectionState} {
		if src.MessageSource() != v || routing.SourceOf(dps.Message{System: map[string]string{routing.PropMessageSource: v}}) != src {
			t.Errorf("source %s: routing says %q, the hub stamps %q", src, src.MessageSource(), v)
		}
	}
}

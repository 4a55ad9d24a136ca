package httpapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/routing"
	"github.com/opendps/dps/internal/wire"
)

type nopEndpoint struct{}

func (nopEndpoint) Deliver(context.Context, []dps.Message) error { return nil }
func (nopEndpoint) Close() error                                 { return nil }

// TestHubRoutesAPI: GET /routes shows each route of the hub (a real
// routing engine on a real SQLite store) with its checkpoint, lag, lease
// and last error; GET /routes/{name}/deadletters pages through a route's
// dead letters; both need a ServiceConnect token; a hub without routes
// has none; an unknown route is 404.
func TestHubRoutesAPI(t *testing.T) {
	ctx := context.Background()
	st := dpstest.NewSQLite(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	e, err := routing.New(routing.Options{Store: st, Node: "node-a", Now: func() time.Time { return now },
		Routes: []routing.Route{
			{Hub: hubHost, Name: "life", Source: routing.SourceDeviceLifecycle, Query: "true", Endpoint: "hook", Deliver: nopEndpoint{}, Enabled: true},
			{Hub: hubHost, Name: "off", Source: routing.SourceTelemetry, Query: "level = 'x'", Endpoint: "hook", Deliver: nopEndpoint{}},
			{Hub: "other.example.net", Name: "elsewhere", Query: "true", Endpoint: "hook", Deliver: nopEndpoint{}, Enabled: true},
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := st.ClaimRoute(ctx, hubHost, "life", "node-a", now, now.Add(time.Minute)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	var msgs []dps.Message
	for i := range 5 {
		msgs = append(msgs, dps.Message{Hub: hubHost, DeviceID: "dev-1", MessageID: fmt.Sprint("m", i), Enqueued: now.Add(-10 * time.Second)})
	}
	stored, err := st.AppendMessages(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range stored[:3] {
		if err := st.DeadLetterMessages(ctx, hubHost, "life", "node-a", []dps.Message{m}, "not delivered", now); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AdvanceRoute(ctx, hubHost, "life", "node-a", 3, "endpoint hook: 503", now); err != nil { // the dead letters moved it there
		t.Fatal(err)
	}

	key := randomKey()
	hub := iothub.New(iothub.Options{Store: st, Events: st, Hubs: []string{hubHost}})
	h := httpapi.New(httpapi.Options{Registrar: fake(), Hub: hub, Routes: e, HubPolicies: map[string][]access.Policy{hubHost: {
		{Name: "iothubowner", PrimaryKey: base64.StdEncoding.EncodeToString(key), Rights: access.HubRights()},
		{Name: "registryRead", PrimaryKey: base64.StdEncoding.EncodeToString(key), Rights: []access.Right{access.RegistryRead}}}}})
	ts := httptest.NewTLSServer(h)
	defer ts.Close()
	owner := map[string]string{"Authorization": (&hubFixture{}).serviceToken("iothubowner", key)}
	c := ts.Client()

	a := do(t, c, ts, "GET", "/routes?api-version=2021-04-12", owner, nil)
	stamp, lease := wire.Time(now), wire.Time(now.Add(time.Minute))
	want := `{"routes":[` +
		`{"name":"life","endpoint":"hook","source":"deviceLifecycle","condition":"true","enabled":true,"state":"standby","checkpoint":3,` +
		`"lag":{"messages":2,"seconds":10},"owner":"node-a","leaseUntil":"` + lease + `","lastError":"endpoint hook: 503","lastErrorTime":"` + stamp + `",` +
		`"updated":"` + stamp + `","attempt":0,"retryTime":null,"delivered":0,"failed":0,"deadLettered":0},` +
		`{"name":"off","endpoint":"hook","source":"telemetry","condition":"level = 'x'","enabled":false,"state":"disabled","checkpoint":0,` +
		`"lag":{"messages":0,"seconds":0},"owner":null,"leaseUntil":null,"lastError":null,"lastErrorTime":null,"updated":null,"attempt":0,` +
		`"retryTime":null,"delivered":0,"failed":0,"deadLettered":0}]}`
	if a.status != 200 || a.body != want {
		t.Errorf("GET /routes: %d\n%s\nwant\n%s", a.status, a.body, want)
	}

	a = do(t, c, ts, "GET", "/routes/life/deadletters?api-version=2021-04-12&max=2", owner, nil)
	var page struct {
		DeadLetters []struct {
			Route, Reason, Time string
			Message             struct {
				SequenceNumber int64
				MessageID      string
			}
		}
		Next int64
	}
	if err := json.Unmarshal([]byte(a.body), &page); err != nil || a.status != 200 || len(page.DeadLetters) != 2 || page.Next != 2 ||
		page.DeadLetters[0].Message.MessageID != "m0" || page.DeadLetters[1].Reason != "not delivered" || page.DeadLetters[1].Route != "life" ||
		page.DeadLetters[0].Time != stamp {
		t.Errorf("dead letters page 1: %d %s (%v)", a.status, a.body, err)
	}
	a = do(t, c, ts, "GET", "/routes/life/deadletters?api-version=2021-04-12&after=2", owner, nil)
	if a.status != 200 || json.Unmarshal([]byte(a.body), &page) != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].Message.SequenceNumber != 3 || page.Next != 3 {
		t.Errorf("dead letters page 2: %d %s", a.status, a.body)
	}
	a = do(t, c, ts, "GET", "/routes/life/deadletters?api-version=2021-04-12&after=3", owner, nil)
	if a.status != 200 || a.body != `{"deadLetters":[],"next":3}` {
		t.Errorf("dead letters past the end: %d %s", a.status, a.body)
	}

	wantHubError(t, do(t, c, ts, "GET", "/routes/nope/deadletters?api-version=2021-04-12", owner, nil), 404, "NotFound")
	wantHubError(t, do(t, c, ts, "GET", "/routes/life/deadletters?max=5000", owner, nil), 400, "ArgumentInvalid")
	wantHubError(t, do(t, c, ts, "GET", "/routes/life/deadletters?after=x", owner, nil), 400, "ArgumentInvalid")
	wantHubError(t, do(t, c, ts, "GET", "/routes", nil, nil), 401, "IotHubUnauthorizedAccess")
	reader := map[string]string{"Authorization": (&hubFixture{}).serviceToken("registryRead", key)}
	wantHubError(t, do(t, c, ts, "GET", "/routes", reader, nil), 401, "IotHubUnauthorizedAccess")
	wantHubError(t, do(t, c, ts, "POST", "/routes", owner, nil), 405, "InvalidOperation")

	// A handler without a routing engine: no routes.
	ts2 := httptest.NewTLSServer(httpapi.New(httpapi.Options{Registrar: fake(), Hub: hub, HubPolicies: map[string][]access.Policy{hubHost: {
		{Name: "iothubowner", PrimaryKey: base64.StdEncoding.EncodeToString(key), Rights: access.HubRights()}}}}))
	defer ts2.Close()
	if a := do(t, ts2.Client(), ts2, "GET", "/routes", owner, nil); a.status != 200 || a.body != `{"routes":[]}` {
		t.Errorf("without routes: %d %s", a.status, a.body)
	}
}

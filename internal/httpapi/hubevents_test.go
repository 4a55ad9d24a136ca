package httpapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/store/sqlite"
)

// eventsFixture is the built-in hub localhost serving its event log from
// a real SQLite store over loopback TLS.
type eventsFixture struct {
	st    *sqlite.DB
	hub   *iothub.Service
	ts    *httptest.Server
	owner map[string]string // the Authorization header of iothubowner
}

func newEventsFixture(t *testing.T) *eventsFixture {
	t.Helper()
	f := &eventsFixture{st: dpstest.NewSQLite(t)}
	f.hub = iothub.New(iothub.Options{Store: f.st, Events: f.st, Hubs: []string{hubHost}})
	key := randomKey()
	h := httpapi.New(httpapi.Options{Registrar: fake(), Hub: f.hub, HubPolicies: map[string][]access.Policy{hubHost: {
		{Name: "iothubowner", PrimaryKey: base64.StdEncoding.EncodeToString(key), Rights: access.HubRights()}}}})
	f.ts = httptest.NewTLSServer(h)
	t.Cleanup(f.ts.Close)
	f.owner = map[string]string{"Authorization": (&hubFixture{}).serviceToken("iothubowner", key)}
	return f
}

func (f *eventsFixture) send(t *testing.T, msgs ...dps.Message) {
	t.Helper()
	if _, err := f.hub.Send(context.Background(), iothub.Identity{Hub: hubHost, DeviceID: "dev-1", GenerationID: "g-1", Method: "sas"}, msgs...); err != nil {
		t.Fatal(err)
	}
}

type eventsAnswer struct {
	Messages []map[string]any
	Next     int64
	First    int64
	Skipped  int64
}

func (f *eventsFixture) read(t *testing.T, query string) (eventsAnswer, hubAnswer) {
	t.Helper()
	a := do(t, f.ts.Client(), f.ts, "GET", "/messages/events?api-version=2021-04-12"+query, f.owner, nil)
	var out eventsAnswer
	if a.status == 200 {
		if err := json.Unmarshal([]byte(a.body), &out); err != nil {
			t.Fatalf("%s: %v", a.body, err)
		}
	}
	return out, a
}

// TestHubEventsShape: the answer's JSON, member by member, for a message
// with every field and one with none; the page members.
func TestHubEventsShape(t *testing.T) {
	f := newEventsFixture(t)
	if _, a := f.read(t, ""); a.status != 200 || a.body != `{"messages":[],"next":1,"first":1,"skipped":0}` {
		t.Errorf("empty log: %d %s", a.status, a.body)
	}
	f.send(t, dps.Message{MessageID: "m-1", CorrelationID: "c-1", UserID: "u-1", ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: map[string]string{"alert": "<high>"}, Body: []byte(`{"t":21}`)}, dps.Message{})
	_, a := f.read(t, "")
	if a.status != 200 || a.header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("read: %d %s", a.status, a.body)
	}
	var raw struct {
		Messages []json.RawMessage `json:"messages"`
	}
	json.Unmarshal([]byte(a.body), &raw)
	if len(raw.Messages) != 2 {
		t.Fatalf("read: %s", a.body)
	}
	var got map[string]any
	json.Unmarshal(raw.Messages[0], &got)
	enq, _ := got["enqueuedTimeUtc"].(string)
	if _, err := time.Parse(time.RFC3339Nano, enq); err != nil || !strings.HasSuffix(enq, "Z") {
		t.Errorf("enqueuedTimeUtc %q", enq)
	}
	want := `{"sequenceNumber":1,"enqueuedTimeUtc":"` + enq + `","deviceId":"dev-1","moduleId":null,"messageId":"m-1","correlationId":"c-1","userId":"u-1",` +
		`"contentType":"application/json","contentEncoding":"utf-8","properties":{"alert":"<high>"},` +
		`"systemProperties":{"iothub-connection-auth-generation-id":"g-1","iothub-connection-auth-method":"{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\"}","iothub-connection-device-id":"dev-1","iothub-message-source":"Telemetry"},` +
		`"body":"eyJ0IjoyMX0="}`
	if string(raw.Messages[0]) != want {
		t.Errorf("message\n%s\nwant\n%s", raw.Messages[0], want)
	}
	json.Unmarshal(raw.Messages[1], &got)
	for _, k := range []string{"moduleId", "messageId", "correlationId", "userId", "contentType", "contentEncoding", "body"} {
		if v, ok := got[k]; !ok || v != nil {
			t.Errorf("a message without %s: %s = %v, want null", k, k, v)
		}
	}
	if p, ok := got["properties"].(map[string]any); !ok || len(p) != 0 {
		t.Errorf("a message without properties: %v, want {}", got["properties"])
	}
	if !strings.HasSuffix(a.body, `],"next":3,"first":1,"skipped":0}`) {
		t.Errorf("page members: %s", a.body)
	}
}

// TestHubEventsPaging: from and max page through the log; from=end reads
// only what comes next; a from behind retention starts at the oldest kept
// message and says how many went; bad parameters are 400, other methods
// 405.
func TestHubEventsPaging(t *testing.T) {
	f := newEventsFixture(t)
	for i := range 7 {
		f.send(t, dps.Message{MessageID: fmt.Sprint("m", i+1)})
	}
	seqs := func(p eventsAnswer) string {
		var out []string
		for _, m := range p.Messages {
			out = append(out, fmt.Sprintf("%s:%v", m["messageId"], m["sequenceNumber"]))
		}
		return fmt.Sprintf("%v next=%d first=%d skipped=%d", out, p.Next, p.First, p.Skipped)
	}
	for _, tc := range []struct{ query, want string }{
		{"&max=3", "[m1:1 m2:2 m3:3] next=4 first=1 skipped=0"},
		{"&from=4&max=3", "[m4:4 m5:5 m6:6] next=7 first=1 skipped=0"},
		{"&from=7", "[m7:7] next=8 first=1 skipped=0"},
		{"&from=8&wait=0", "[] next=8 first=1 skipped=0"},
		{"&from=end", "[] next=8 first=1 skipped=0"},
	} {
		p, a := f.read(t, tc.query)
		if got := seqs(p); a.status != 200 || got != tc.want {
			t.Errorf("%s: %d %s, want %s", tc.query, a.status, got, tc.want)
		}
	}
	if _, err := f.st.TrimMessages(context.Background(), hubHost, 3); err != nil {
		t.Fatal(err)
	}
	if p, a := f.read(t, "&from=2&max=2"); a.status != 200 || seqs(p) != "[m5:5 m6:6] next=7 first=5 skipped=3" {
		t.Errorf("from behind retention: %d %s", a.status, seqs(p))
	}
	for _, q := range []string{"&from=x", "&from=-1", "&max=0", "&max=1001", "&max=x", "&wait=soon", "&wait=-1s"} {
		_, a := f.read(t, q)
		wantHubError(t, a, 400, "ArgumentInvalid")
	}
	wantHubError(t, do(t, f.ts.Client(), f.ts, "POST", "/messages/events", f.owner, []byte(`{}`)), 405, "InvalidOperation")
}

// TestHubEventsLongPoll: a read with wait answers as soon as a device's
// message arrives, with that message; with none it answers empty when the
// wait is over.
func TestHubEventsLongPoll(t *testing.T) {
	f := newEventsFixture(t)
	start := time.Now()
	if p, a := f.read(t, "&wait=1"); a.status != 200 || len(p.Messages) != 0 || time.Since(start) < time.Second {
		t.Errorf("wait with nothing to read: %d %s after %s", a.status, a.body, time.Since(start))
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		if _, err := f.hub.Send(context.Background(), iothub.Identity{Hub: hubHost, DeviceID: "dev-1"}, dps.Message{MessageID: "late"}); err != nil {
			t.Error(err)
		}
	}()
	start = time.Now()
	p, a := f.read(t, "&from=end&wait=20s")
	if a.status != 200 || len(p.Messages) != 1 || p.Messages[0]["messageId"] != "late" || p.Next != 2 {
		t.Fatalf("long poll: %d %s", a.status, a.body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the long poll answered after %s, not when the message arrived", d)
	}
}

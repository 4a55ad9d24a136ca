package console_test

import (
	"bufio"
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
)

// openStream opens a live stream of the console at path (as the page
// gives it, HTML-escaped) in b's session.
func openStream(t *testing.T, e *env, b *browser, path string) *bufio.Reader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+html.UnescapeString(path), nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", path, resp.StatusCode)
	}
	return bufio.NewReader(resp.Body)
}

var streamAttr = regexp.MustCompile(`data-stream="([^"]+)"`)

// TestFeedStreamStartsAtNewest: the feed page's stream starts after the
// newest event of the feed, even when none of the last hour passes the
// page's filter, so that it sends only new events; a stream without a
// position starts there too, and one from 0 replays no event older than
// the page's hour.
func TestFeedStreamStartsAtNewest(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser()
	b.mustSignIn(e.owner)
	old := e.clock.now().Add(-2 * time.Hour)
	for i := range 3 {
		e.feed.add(dps.RegistrationEvent{Time: old, Kind: dps.EventAccepted, RegistrationID: fmt.Sprintf("old-%d", i)})
	}
	page := b.get("/console/feed").body
	m := streamAttr.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no stream on the page:\n%s", page)
	}
	u, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil || u.Query().Get("after") != "3" {
		t.Fatalf("stream %s: want after=3 (the newest event)", m[1])
	}
	mustNotContain(t, page, "old-0", "old-2")

	fromPage := openStream(t, e, b, m[1])
	noPosition := openStream(t, e, b, "/console/feed/stream")
	fromZero := openStream(t, e, b, "/console/feed/stream?after=0")
	time.Sleep(100 * time.Millisecond) // the streams are following
	e.feed.add(dps.RegistrationEvent{Time: e.clock.now(), Kind: dps.EventAssigned, RegistrationID: "new-1"})
	for name, rd := range map[string]*bufio.Reader{"from the page": fromPage, "without a position": noPosition, "from 0": fromZero} {
		if id, data := readRow(t, rd); id != "4" || !strings.Contains(data, "new-1") {
			t.Errorf("stream %s: first row %s: %s; want the new event 4", name, id, data)
		}
	}
}

// TestBusyHourNewestFirst: in an hour with more events than the page and
// the overview read, both show the newest ones.
func TestBusyHourNewestFirst(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser()
	b.mustSignIn(e.owner)
	now := e.clock.now()
	for i := range 10_050 {
		e.feed.add(dps.RegistrationEvent{Time: now.Add(-30 * time.Minute), Kind: dps.EventRefused, RegistrationID: fmt.Sprintf("early-%d", i), Code: 401002, Reason: "authentication failed"})
	}
	for i := range 7 {
		e.feed.add(dps.RegistrationEvent{Time: now, Kind: dps.EventAssigned, RegistrationID: fmt.Sprintf("latest-%d", i), Hub: testHub})
	}
	page := b.get("/console/feed").body
	mustContain(t, page, "latest-6", "latest-0")
	mustNotContain(t, page, "early-0<", "early-9899<")
	ov := b.get("/console/").body
	if !regexp.MustCompile(`Assigned \(1 h\)</div><div class="n">7</div>`).MatchString(ov) {
		t.Errorf("the overview does not count the 7 latest assignments:\n%s", ov)
	}
}

// TestRegistrationEventsNeedServiceConfig: the registration page shows the
// feed's events (source, payload, reasons, webhook calls) only to a
// session with ServiceConfig, as GET /registrationEvents.
func TestRegistrationEventsNeedServiceConfig(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.register(dps.Registration{RegistrationID: "dev-1", DeviceID: "dev-1", AssignedHub: testHub, Status: dps.StatusAssigned})
	now := e.clock.now()
	e.feed.add(dps.RegistrationEvent{Time: now, Kind: dps.EventAccepted, RegistrationID: "dev-1", Transport: "https", Source: "127.0.0.9:5555", Payload: []byte(`{"model":"secret-model"}`)})
	e.feed.add(dps.RegistrationEvent{Time: now, Kind: dps.EventWebhook, RegistrationID: "dev-1", Webhook: &dps.WebhookCall{URL: "https://fn.example/api/alloc", Status: 200}})
	e.feed.add(dps.RegistrationEvent{Time: now, Kind: dps.EventRefused, RegistrationID: "dev-1", Code: 401002, Reason: "a reason of the feed"})
	feedData := []string{"127.0.0.9:5555", "secret-model", "fn.example", "a reason of the feed"}

	owner := e.browser()
	owner.mustSignIn(e.owner)
	mustContain(t, html.UnescapeString(owner.get("/console/registration/dev-1").body), feedData...)

	reader := e.browser()
	reader.mustSignIn(e.reader)
	a := reader.get("/console/registration/dev-1")
	if a.status != http.StatusOK {
		t.Fatalf("GET the registration as a reader = %d", a.status)
	}
	body := html.UnescapeString(a.body)
	mustNotContain(t, body, feedData...)
	mustContain(t, body, "needs the ServiceConfig right")
}

// TestStreamsEndWithTheSession: a live stream ends at the next heartbeat
// once its session has (idle, signed out).
func TestStreamsEndWithTheSession(t *testing.T) {
	e := newEnv(t, envOptions{heartbeat: 50 * time.Millisecond})
	if _, err := e.hub.CreateDevice(context.Background(), testHub, iothub.Device{DeviceID: "dev-1"}); err != nil {
		t.Fatal(err)
	}
	t.Run("feed, session idle", func(t *testing.T) {
		b := e.browser()
		b.mustSignIn(e.owner)
		rd := openStream(t, e, b, "/console/feed/stream")
		e.clock.advance(31 * time.Minute) // past SessionIdle
		requireEOF(t, rd)
	})
	t.Run("telemetry, signed out", func(t *testing.T) {
		b := e.browser()
		b.mustSignIn(e.hubCS)
		page := b.get("/console/hubs/" + testHub + "/device/dev-1/telemetry").body
		m := streamAttr.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no stream on the page:\n%s", page)
		}
		rd := openStream(t, e, b, m[1])
		b.get("/console/")
		b.post("/console/signout", nil)
		requireEOF(t, rd)
	})
}

// TestStreamRowsKeepTheirID: a carriage return in an event's text (a lone
// \r ends a line for an EventSource) cannot start a field of its own in a
// row: no id: line but the event's.
func TestStreamRowsKeepTheirID(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser()
	b.mustSignIn(e.owner)
	rd := openStream(t, e, b, "/console/feed/stream?after=0")
	e.feed.add(dps.RegistrationEvent{Time: e.clock.now(), Kind: dps.EventRefused, RegistrationID: "dev-1", Reason: "bad\rid: 999\r\ndata: x\rretry: 1"})
	var block []string
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\n" && len(block) > 0 {
			break
		}
		if line != "\n" && !strings.HasPrefix(line, ":") {
			block = append(block, line)
		}
	}
	raw := strings.Join(block, "")
	// Split as an EventSource does: on \r\n, \r or \n.
	var ids []string
	for _, l := range strings.FieldsFunc(strings.ReplaceAll(raw, "\r\n", "\n"), func(r rune) bool { return r == '\r' || r == '\n' }) {
		if strings.HasPrefix(l, "id:") || strings.HasPrefix(l, "retry:") {
			ids = append(ids, l)
		}
	}
	if len(ids) != 1 || ids[0] != "id: 1" {
		t.Errorf("the row's fields %q, want only id: 1:\n%q", ids, raw)
	}
}

package httpapi_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
)

// rawHeaders reads a response's header lines as written.
func rawHeaders(t *testing.T, ts *httptest.Server, req string) (lines []string, body string) {
	t.Helper()
	c, err := tls.Dial("tcp", ts.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	all, _ := io.ReadAll(c)
	head, rest, _ := strings.Cut(string(all), "\r\n\r\n")
	return strings.Split(head, "\r\n"), rest
}

func header(lines []string, name string) (string, bool) {
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, ": "); ok && k == name {
			return v, true
		}
	}
	return "", false
}

const c2dPath = "/devices/dev-1/messages/deviceBound?api-version=2021-04-12"

// HTTPS C2D: the service sends (204), the device receives with the exact
// header names of §3.2 (the C SDK compares them case-sensitively),
// completes, abandons (delivered again, count 1) and rejects by lock
// token; an empty queue is 204; a settled or unknown lock is 412002.
func TestHubC2DDevice(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	c := ts.Client()
	svc := f.serviceToken("iothubowner", f.owner)
	dev := f.deviceToken("dev-1", f.key1)
	send := func(hdr map[string]string, body string) {
		t.Helper()
		hdr["Authorization"] = svc
		if a := do(t, c, ts, "POST", c2dPath, hdr, []byte(body)); a.status != http.StatusNoContent || a.body != "" {
			t.Fatalf("send: %d %s", a.status, a.body)
		}
	}
	send(map[string]string{"iothub-messageid": "m1", "IoTHub-CorrelationId": "c1", "iothub-userid": "u1", "iothub-ack": "full",
		"iothub-expiry": "2099-01-01T00:00:00Z", "Content-Type": "application/json", "Content-Encoding": "utf-8",
		"iothub-app-Temperature": "45"}, `{"n":1}`)
	send(map[string]string{}, "two")

	// Receive (Node spells it devicebound), raw to see the names.
	lines, body := rawHeaders(t, ts, "GET /devices/dev-1/messages/devicebound?api-version=2021-04-12 HTTP/1.1\r\nHost: "+hubHost+
		"\r\nAuthorization: "+dev+"\r\nConnection: close\r\n\r\n")
	if lines[0] != "HTTP/1.1 200 OK" || body != `{"n":1}` {
		t.Fatalf("receive: %q %q", lines[0], body)
	}
	etag, _ := header(lines, "ETag")
	if len(etag) < 3 || etag[0] != '"' || etag[len(etag)-1] != '"' {
		t.Fatalf("ETag %q (headers %q), want a quoted lock token", etag, lines)
	}
	lock := strings.Trim(etag, `"`)
	for name, want := range map[string]string{
		"iothub-messageid": "m1", "iothub-to": "/devices/dev-1/messages/deviceBound", "iothub-correlationid": "c1", "iothub-userid": "u1",
		"iothub-ack": "full", "iothub-expiry": "2099-01-01T00:00:00.000Z", "iothub-deliverycount": "0",
		"ContentType": "application/json", "ContentEncoding": "utf-8", "iothub-app-temperature": "45",
	} {
		if v, ok := header(lines, name); !ok || v != want {
			t.Errorf("header %s = %q (present %v), want %q", name, v, ok, want)
		}
	}
	for _, name := range []string{"iothub-sequencenumber", "iothub-enqueuedtime"} {
		if v, ok := header(lines, name); !ok || v == "" {
			t.Errorf("header %s missing", name)
		}
	}

	// Complete with If-Match quoted (the C SDK), lock unquoted in the path.
	a := do(t, c, ts, "DELETE", "/devices/dev-1/messages/deviceBound/"+lock+"?api-version=2016-11-14", map[string]string{"Authorization": dev, "If-Match": etag}, nil)
	if a.status != http.StatusNoContent {
		t.Fatalf("complete: %d %s", a.status, a.body)
	}
	a = do(t, c, ts, "DELETE", "/devices/dev-1/messages/deviceBound/"+lock+"?api-version=2016-11-14", map[string]string{"Authorization": dev, "If-Match": lock}, nil)
	wantHubError(t, a, http.StatusPreconditionFailed, "DeviceMessageLockLost")

	// Abandon, then receive again: count 1, a new lock.
	recv := func() hubAnswer {
		t.Helper()
		return do(t, c, ts, "GET", c2dPath, map[string]string{"Authorization": dev, "IotHub-MessageLockTimeout": "30"}, nil)
	}
	a = recv()
	if a.status != http.StatusOK || a.body != "two" || a.header.Get("iothub-deliverycount") != "0" || a.header.Get("iothub-ack") != "none" {
		t.Fatalf("receive two: %d %q %v", a.status, a.body, a.header)
	}
	lock2 := strings.Trim(a.header.Get("Etag"), `"`)
	a = do(t, c, ts, "POST", "/devices/dev-1/messages/deviceBound/"+lock2+"/abandon?api-version=2021-04-12", map[string]string{"Authorization": dev, "If-Match": lock2}, nil)
	if a.status != http.StatusNoContent {
		t.Fatalf("abandon: %d %s", a.status, a.body)
	}
	a = recv()
	lock3 := strings.Trim(a.header.Get("Etag"), `"`)
	if a.status != http.StatusOK || a.body != "two" || a.header.Get("iothub-deliverycount") != "1" || lock3 == lock2 {
		t.Fatalf("receive after abandon: %d %q count %q lock %q", a.status, a.body, a.header.Get("iothub-deliverycount"), lock3)
	}
	// Nothing else is deliverable while it is locked.
	if a := recv(); a.status != http.StatusNoContent || a.body != "" {
		t.Fatalf("receive with the only message locked: %d %q", a.status, a.body)
	}
	// Reject (C#: ?reject&api-version=…, no value).
	a = do(t, c, ts, "DELETE", "/devices/dev-1/messages/DEVICEBOUND/"+lock3+"?reject&api-version=2020-09-30", map[string]string{"Authorization": dev}, nil)
	if a.status != http.StatusNoContent {
		t.Fatalf("reject: %d %s", a.status, a.body)
	}
	if n, err := f.hub.QueueDepth(context.Background(), hubHost, "dev-1"); err != nil || n != 0 {
		t.Errorf("queue depth after reject = %d, %v", n, err)
	}
	if a := recv(); a.status != http.StatusNoContent {
		t.Fatalf("empty queue: %d %q", a.status, a.body)
	}
	// Another device's token, or none, is refused.
	a = do(t, c, ts, "GET", c2dPath, map[string]string{"Authorization": f.deviceToken("dev-2", f.key1)}, nil)
	wantHubError(t, a, http.StatusUnauthorized, "IotHubUnauthorizedAccess")
}

// The service send's contract: 204; the 51st queued message 403004; an
// unknown device 404 DeviceNotFound; a device token is not a service
// one; purge answers IoT Hub's PurgeMessageQueueResult.
func TestHubC2DService(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	c := ts.Client()
	svc := map[string]string{"Authorization": f.serviceToken("iothubowner", f.owner)}
	for i := range iothub.MaxC2DQueue {
		if a := do(t, c, ts, "POST", c2dPath, svc, []byte(fmt.Sprint(i))); a.status != http.StatusNoContent {
			t.Fatalf("send %d: %d %s", i, a.status, a.body)
		}
	}
	a := do(t, c, ts, "POST", c2dPath, svc, []byte("over"))
	wantHubError(t, a, http.StatusForbidden, "DeviceMaximumQueueDepthExceeded")
	if !strings.Contains(a.body, "403004") && a.header.Get("iothub-errorcode") != "DeviceMaximumQueueDepthExceeded" {
		t.Errorf("full queue: %s", a.body)
	}
	a = do(t, c, ts, "POST", "/devices/nobody/messages/deviceBound?api-version=2021-04-12", svc, []byte("x"))
	wantHubError(t, a, http.StatusNotFound, "DeviceNotFound")
	a = do(t, c, ts, "POST", c2dPath, map[string]string{"Authorization": f.deviceToken("dev-1", f.key1)}, []byte("x"))
	wantHubError(t, a, http.StatusUnauthorized, "IotHubUnauthorizedAccess")
	a = do(t, c, ts, "POST", c2dPath, map[string]string{"Authorization": svc["Authorization"], "iothub-expiry": "tomorrow"}, []byte("x"))
	wantHubError(t, a, http.StatusBadRequest, "ArgumentInvalid")

	a = do(t, c, ts, "DELETE", "/devices/dev-1/commands?api-version=2021-04-12", svc, nil)
	var res map[string]any
	if a.status != http.StatusOK || json.Unmarshal([]byte(a.body), &res) != nil {
		t.Fatalf("purge: %d %s", a.status, a.body)
	}
	if want := map[string]any{"totalMessagesPurged": float64(iothub.MaxC2DQueue), "deviceId": "dev-1", "moduleId": nil}; fmt.Sprint(res) != fmt.Sprint(want) {
		t.Errorf("purge = %v, want %v", res, want)
	}
	if a := do(t, c, ts, "POST", c2dPath, svc, []byte("fits")); a.status != http.StatusNoContent {
		t.Fatalf("send after purge: %d %s", a.status, a.body)
	}
	a = do(t, c, ts, "DELETE", "/devices/nobody/commands?api-version=2021-04-12", svc, nil)
	wantHubError(t, a, http.StatusNotFound, "DeviceNotFound")
}

const feedbackPath = "/messages/serviceBound/feedback"

// C2D feedback over HTTPS: the outcomes the senders' iothub-ack asked for
// (a completion with full, a rejection with negative; not a completion
// with negative) come as one locked batch in IoT Hub's record shape with
// the lock as a quoted ETag; a locked batch is not received again until
// abandoned; completed it is gone (204); a settled lock is 412002. An
// expired message that no device asked for gives Expired feedback through
// the sweep. Only ServiceConnect reads feedback.
func TestHubC2DFeedback(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	c := ts.Client()
	svc := map[string]string{"Authorization": f.serviceToken("iothubowner", f.owner)}
	dev := map[string]string{"Authorization": f.deviceToken("dev-1", f.key1)}
	if a := do(t, c, ts, "GET", feedbackPath+"?api-version=2021-04-12", svc, nil); a.status != http.StatusNoContent || a.body != "" {
		t.Fatalf("empty feedback: %d %s", a.status, a.body)
	}
	deliver := func(id, ack, settle string) {
		t.Helper()
		hdr := map[string]string{"Authorization": svc["Authorization"], "iothub-messageid": id, "iothub-ack": ack}
		if a := do(t, c, ts, "POST", c2dPath, hdr, []byte(id)); a.status != http.StatusNoContent {
			t.Fatalf("send %s: %d %s", id, a.status, a.body)
		}
		a := do(t, c, ts, "GET", c2dPath, dev, nil)
		if a.status != http.StatusOK || a.body != id {
			t.Fatalf("receive %s: %d %s", id, a.status, a.body)
		}
		lock := strings.Trim(a.header.Get("ETag"), `"`)
		if a := do(t, c, ts, "DELETE", "/devices/dev-1/messages/deviceBound/"+lock+settle, dev, nil); a.status != http.StatusNoContent {
			t.Fatalf("settle %s: %d %s", id, a.status, a.body)
		}
	}
	deliver("m-full", "full", "")
	deliver("m-quiet", "negative", "")
	deliver("m-rejected", "negative", "?reject")

	get := func() (string, []map[string]string) {
		t.Helper()
		a := do(t, c, ts, "GET", feedbackPath+"?api-version=2021-04-12", svc, nil)
		if a.status != http.StatusOK || !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
			t.Fatalf("feedback: %d %s %s", a.status, a.header.Get("Content-Type"), a.body)
		}
		etag := a.header.Get("ETag")
		if len(etag) < 3 || etag[0] != '"' || etag[len(etag)-1] != '"' {
			t.Fatalf("feedback ETag %q, want a quoted lock token", etag)
		}
		var recs []map[string]string
		if err := json.Unmarshal([]byte(a.body), &recs); err != nil {
			t.Fatalf("feedback body %s: %v", a.body, err)
		}
		return etag, recs
	}
	etag, recs := get()
	if len(recs) != 2 {
		t.Fatalf("feedback %v, want m-full and m-rejected", recs)
	}
	for i, want := range []map[string]string{
		{"originalMessageId": "m-full", "statusCode": "Success", "description": "Success", "deviceId": "dev-1", "deviceGenerationId": "g-dev-1"},
		{"originalMessageId": "m-rejected", "statusCode": "Rejected", "description": "Message rejected", "deviceId": "dev-1", "deviceGenerationId": "g-dev-1"},
	} {
		got := recs[i]
		if _, err := time.Parse(time.RFC3339Nano, got["enqueuedTimeUtc"]); err != nil {
			t.Errorf("record %d enqueuedTimeUtc %q", i, got["enqueuedTimeUtc"])
		}
		delete(got, "enqueuedTimeUtc")
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("record %d = %v, want %v", i, got, want)
		}
	}
	if a := do(t, c, ts, "GET", feedbackPath, svc, nil); a.status != http.StatusNoContent {
		t.Errorf("a locked batch was received again: %d %s", a.status, a.body)
	}
	lock := strings.Trim(etag, `"`)
	if a := do(t, c, ts, "POST", feedbackPath+"/"+lock+"/abandon?api-version=2021-04-12", svc, nil); a.status != http.StatusNoContent {
		t.Fatalf("abandon: %d %s", a.status, a.body)
	}
	etag2, recs := get()
	if etag2 == etag || len(recs) != 2 {
		t.Errorf("after abandon: ETag %s (was %s), %d records", etag2, etag, len(recs))
	}
	lock = strings.Trim(etag2, `"`)
	if a := do(t, c, ts, "DELETE", feedbackPath+"/"+lock+"?api-version=2021-04-12", svc, nil); a.status != http.StatusNoContent {
		t.Fatalf("complete: %d %s", a.status, a.body)
	}
	wantHubError(t, do(t, c, ts, "DELETE", feedbackPath+"/"+lock, svc, nil), http.StatusPreconditionFailed, "DeviceMessageLockLost")
	wantHubError(t, do(t, c, ts, "POST", feedbackPath+"/"+lock+"/abandon", svc, nil), http.StatusPreconditionFailed, "DeviceMessageLockLost")
	if a := do(t, c, ts, "GET", feedbackPath, svc, nil); a.status != http.StatusNoContent {
		t.Errorf("completed feedback received again: %d %s", a.status, a.body)
	}

	// An expired message of a device that never polls: the sweep.
	past := time.Now().Add(-time.Hour)
	if _, err := f.store.EnqueueCloudMessage(t.Context(), dps.CloudMessage{Hub: hubHost, DeviceID: "dev-1", GenerationID: "g-dev-1", MessageID: "m-old",
		Ack: "negative", Enqueued: past, Expiry: past.Add(time.Minute)}, iothub.MaxC2DQueue); err != nil {
		t.Fatal(err)
	}
	if n, err := f.hub.ExpireC2D(t.Context()); err != nil || n != 1 {
		t.Fatalf("ExpireC2D = %d, %v", n, err)
	}
	if _, recs := get(); len(recs) != 1 || recs[0]["originalMessageId"] != "m-old" || recs[0]["statusCode"] != "Expired" || recs[0]["description"] != "Message expired" {
		t.Errorf("expiry feedback %v", recs)
	}

	for _, auth := range []string{f.serviceToken("registryRead", f.reader), dev["Authorization"]} {
		hdr := map[string]string{"Authorization": auth}
		wantHubError(t, do(t, c, ts, "GET", feedbackPath, hdr, nil), http.StatusUnauthorized, "IotHubUnauthorizedAccess")
		wantHubError(t, do(t, c, ts, "DELETE", feedbackPath+"/x", hdr, nil), http.StatusUnauthorized, "IotHubUnauthorizedAccess")
	}
	wantHubError(t, do(t, c, ts, "PUT", feedbackPath, svc, nil), http.StatusMethodNotAllowed, "InvalidOperation")
}

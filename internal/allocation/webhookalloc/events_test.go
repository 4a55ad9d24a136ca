package webhookalloc_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/allocation/webhookalloc"
	"github.com/opendps/dps/internal/dpstest"
)

// TestCallsRecorded: each webhook call, retries included, is one webhook
// event: the registration, its operation, the URL without its query (a
// function key travels there), the status, the latency and, for a call
// that got no answer, why.
func TestCallsRecorded(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(503)
			return
		}
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, `{"iotHubHostName":"hub-a.example.net"}`)
	}))
	defer srv.Close()
	rec := &dpstest.Recorder{}
	a := newAllocator(webhookalloc.Options{Events: rec})
	req := request(srv.URL + "/api/alloc?code=secret-function-key")
	req.OperationID = "1.op.x"
	req.Enrollment, req.Group = nil, &dps.Group{ID: "grp-1", Settings: req.Enrollment.Settings}
	if _, err := a.Allocate(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	events := rec.Take()
	if len(events) != 2 {
		t.Fatalf("%d events, want one per call (2): %+v", len(events), events)
	}
	for i, status := range []int{503, 200} {
		e := events[i]
		if e.Kind != dps.EventWebhook || e.RegistrationID != "dev-1" || e.OperationID != "1.op.x" || e.EnrollmentGroup != "grp-1" ||
			e.Attestation != dps.AttestationSymmetricKey || e.Webhook == nil {
			t.Fatalf("event %d = %+v", i, e)
		}
		w := e.Webhook
		if w.URL != srv.URL+"/api/alloc" || w.Status != status || w.Error != "" || w.Latency <= 0 {
			t.Errorf("call %d = %+v, want %s, status %d", i, w, srv.URL+"/api/alloc", status)
		}
	}
	if l := events[1].Webhook.Latency; l < 20*time.Millisecond {
		t.Errorf("latency %s, want the call's (at least 20ms)", l)
	}

	// No answer: status 0 and the reason, without the key.
	srv.Close()
	if _, err := a.Allocate(context.Background(), req); err == nil {
		t.Fatal("a webhook that is down allocated")
	}
	if events := rec.Take(); len(events) != 1 || events[0].Webhook.Status != 0 || events[0].Webhook.Error == "" || strings.Contains(events[0].Webhook.Error, "secret-function-key") {
		t.Errorf("events %+v", events)
	}
}

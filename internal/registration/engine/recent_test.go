package engine

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// TestRecentBoundedByBytes: the poll cache stays within its byte budget
// whatever the operations hold, drops the oldest first, and keeps no
// device payload.
func TestRecentBoundedByBytes(t *testing.T) {
	r := recentOps{maxBytes: 1 << 20}
	payload := json.RawMessage(`{"blob":"` + strings.Repeat("x", 96*1024) + `"}`)
	now := time.Now()
	for i := range 5000 {
		r.put(dps.Operation{ID: fmt.Sprintf("op-%04d", i), RegistrationID: "dev", Status: dps.StatusAssigned, Payload: payload, Created: now,
			Result: &dps.Registration{RegistrationID: "dev", Status: dps.StatusAssigned, Payload: json.RawMessage(`{"for":"device"}`)}})
	}
	if r.size > r.maxBytes {
		t.Errorf("cache holds %d bytes, budget %d", r.size, r.maxBytes)
	}
	op, ok := r.get("op-4999", now.Add(-time.Hour))
	if !ok || op.Payload != nil || string(op.Result.Payload) != `{"for":"device"}` {
		t.Errorf("newest = %v %+v", ok, op)
	}
	if _, ok := r.get("op-0000", now.Add(-time.Hour)); ok {
		t.Errorf("the oldest operation is still cached")
	}
	if len(r.m) < 500 {
		t.Errorf("only %d operations cached in 1 MiB: payloads are counted", len(r.m))
	}
	// Operations bigger than the whole budget are not cached.
	big := dps.Operation{ID: "big", Status: dps.StatusAssigned, Result: &dps.Registration{Payload: json.RawMessage(`"` + strings.Repeat("y", 2<<20) + `"`)}}
	r.put(big)
	if _, ok := r.get("big", now.Add(-time.Hour)); ok || r.size > r.maxBytes {
		t.Errorf("an operation over the budget was cached (size %d)", r.size)
	}
}

package storetest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// testPendingHeaders: PendingOperationHeaders lists what PendingOperations
// lists, in the same order, with the fields the sweeper needs (the group
// an operation matched among them) and without the documents; a finished
// operation leaves the list.
func testPendingHeaders(t *testing.T, f Factory) {
	s := f.New(t)
	base := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	big := json.RawMessage(`{"blob":"` + strings.Repeat("p", 90_000) + `"}`)
	for i, o := range []dps.Operation{
		{ID: "ph-group", RegistrationID: "Dev-Group", EnrollmentGroupID: "Line-7"},
		{ID: "ph-individual", RegistrationID: "dev-ind"},
		{ID: "ph-final", RegistrationID: "dev-final", EnrollmentGroupID: "line-7", Status: dps.StatusFailed,
			Result: &dps.Registration{RegistrationID: "dev-final", Status: dps.StatusFailed, ErrorCode: dps.CodeCustomAllocationFailed}},
		{ID: "ph-leased", RegistrationID: "dev-leased", EnrollmentGroupID: "line-8"},
	} {
		o.Proof, o.Payload = dps.Proof{Type: dps.AttestationSymmetricKey}, big
		o.Created = base.Add(time.Duration(3-i) * time.Second) // newest first: the listing sorts
		o.Updated = o.Created
		if o.Status == "" {
			o.Status = dps.StatusAssigning
		} else {
			o.Payload = nil
		}
		if _, err := s.CreateOperation(ctx(), o); err != nil {
			t.Fatal(err)
		}
	}
	// Another node's lease: listed by both, or by neither (PostgreSQL).
	if ok, err := s.ClaimOperation(ctx(), "ph-leased", "node-b", time.Now().Add(time.Hour)); err != nil || !ok {
		t.Fatalf("claim = %v, %v", ok, err)
	}
	ids := func(ops []dps.Operation) []string {
		var out []string
		for _, o := range ops {
			out = append(out, o.ID)
		}
		return out
	}
	full, err := s.PendingOperations(ctx())
	if err != nil {
		t.Fatal(err)
	}
	heads, err := s.PendingOperationHeaders(ctx())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(heads), ids(full)) {
		t.Fatalf("headers %v, want what PendingOperations lists: %v", ids(heads), ids(full))
	}
	if got := ids(heads); !slices.Contains(got, "ph-group") || !slices.Contains(got, "ph-individual") || slices.Contains(got, "ph-final") ||
		slices.Index(got, "ph-individual") > slices.Index(got, "ph-group") {
		t.Fatalf("headers %v, want ph-individual, ph-group (oldest first), never ph-final", got)
	}
	want := map[string]dps.Operation{}
	for _, o := range full {
		want[o.ID] = o
	}
	for _, h := range heads {
		w := want[h.ID]
		if dps.FoldID(h.RegistrationID) != dps.FoldID(w.RegistrationID) || h.EnrollmentGroupID != w.EnrollmentGroupID ||
			h.Status != dps.StatusAssigning || !h.Created.Equal(w.Created) {
			t.Errorf("header %+v, want the fields of %s: %q, group %q, created %s", h, w.ID, w.RegistrationID, w.EnrollmentGroupID, w.Created)
		}
		if h.Payload != nil || h.Result != nil || h.Proof.TPM != nil || h.Proof.X509 != nil {
			t.Errorf("header %s carries more than its header: %+v", h.ID, h)
		}
	}
	done := op("ph-group", "Dev-Group")
	done.EnrollmentGroupID, done.Status = "Line-7", dps.StatusAssigned
	done.Result = &dps.Registration{RegistrationID: "Dev-Group", AssignedHub: "h1", DeviceID: "Dev-Group", Status: dps.StatusAssigned, EnrollmentGroupID: "Line-7"}
	if _, err := s.CompleteOperation(ctx(), done); err != nil {
		t.Fatal(err)
	}
	if heads, err := s.PendingOperationHeaders(ctx()); err != nil || slices.Contains(ids(heads), "ph-group") {
		t.Errorf("after completion: headers %v, %v", ids(heads), err)
	}
}

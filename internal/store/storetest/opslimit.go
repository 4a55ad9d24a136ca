package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// testTrim: TrimOperations keeps a registration ID's newest finished
// operations (the ID compared case-insensitively), never its unfinished
// ones, and never another device's.
func testTrim(t *testing.T, f Factory) {
	s := f.New(t)
	base := time.Now().UTC().Add(-time.Hour)
	for i := range 6 {
		o := op(fmt.Sprintf("trim-%d", i), "Dev-Trim")
		o.Created = base.Add(time.Duration(i) * time.Second)
		o.Status = dps.StatusFailed
		if i == 1 {
			o.Status = dps.StatusAssigning // an old unfinished one stays
		}
		if _, err := s.CreateOperation(ctx(), o); err != nil {
			t.Fatal(err)
		}
	}
	other := op("trim-other", "dev-other")
	other.Status = dps.StatusDisabled
	other.Created = base
	if _, err := s.CreateOperation(ctx(), other); err != nil {
		t.Fatal(err)
	}
	n, err := s.TrimOperations(ctx(), "dev-TRIM", 2)
	if err != nil || n != 3 {
		t.Fatalf("trimmed %d, %v; want 3", n, err)
	}
	for i, want := range []bool{false, true, false, false, true, true} {
		_, err := s.Operation(ctx(), fmt.Sprintf("trim-%d", i))
		if got := err == nil; got != want {
			t.Errorf("trim-%d kept = %v (%v), want %v", i, got, err, want)
		}
	}
	if _, err := s.Operation(ctx(), "trim-other"); err != nil {
		t.Errorf("another device's operation was trimmed: %v", err)
	}
	if n, err := s.TrimOperations(ctx(), "dev-trim", 2); err != nil || n != 0 {
		t.Errorf("second trim deleted %d, %v; want 0", n, err)
	}
}

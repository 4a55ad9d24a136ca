package registration_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/allocation"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/hub/builtin"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/sas"
)

// TestRefusalCostDoesNotGrowWithGroups: refusing an unknown device tries
// every symmetric-key group's keys, and with 1,000 groups on a real SQLite
// store that costs fewer allocations than there are groups: nothing is
// read, decoded or allocated per group (decoding them per request made a
// flood of bogus registers slow for everyone: about 38 allocations a group).
func TestRefusalCostDoesNotGrowWithGroups(t *testing.T) {
	db := dpstest.NewSQLite(t)
	const groups = 1000
	for i := range groups {
		dpstest.MustPutGroup(t, db, dpstest.SymmetricKeyGroup(fmt.Sprintf("group-%04d", i)))
	}
	s := registration.New(registration.Options{IDScope: scope, LinkedHubs: hubs, Store: db, Attestors: attestors(db, mechanisms{}), Hubs: &builtin.Connector{Store: db},
		SingleNode: true, RecordDevicesWithOperations: true,
		Allocators: map[dps.AllocationPolicy]registration.Allocator{dps.AllocationHashed: allocation.Hashed{}}, SweepInterval: time.Hour})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	bogus, _ := base64.StdEncoding.DecodeString(dpstest.Key(32))
	c := dps.Credential{SAS: sas.New(scope+"/registrations/intruder-0001", bogus, "registration", time.Now().Add(time.Hour))}
	refuse := func() {
		if err := s.Authenticate(context.Background(), scope, "intruder-0001", c); dps.KindOf(err) != dps.KindUnauthorized {
			t.Fatalf("Authenticate = %v, want unauthorized", err)
		}
	}
	refuse() // the groups are prepared once
	if n := testing.AllocsPerRun(20, refuse); n >= groups {
		t.Errorf("refusing an unknown device against %d groups: %.0f allocations, want fewer than one per group", groups, n)
	} else {
		t.Logf("%.0f allocations per refusal against %d groups", n, groups)
	}
}

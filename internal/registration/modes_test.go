package registration_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/hub/builtin"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/store/sqlite"
)

// modeStore is a SQLite store that counts operation claims. It also has the
// method by which a store once turned leases off by itself; the engine must
// not look for it.
type modeStore struct {
	*sqlite.DB
	claims atomic.Int32
}

func (m *modeStore) ClaimOperation(ctx context.Context, id, owner string, until time.Time) (bool, error) {
	m.claims.Add(1)
	return m.DB.ClaimOperation(ctx, id, owner, until)
}

func (m *modeStore) SingleNode() bool { return true }

// modeHub is the built-in connector on a modeStore, counting Provision
// calls. It also has the method by which a connector once made the engine
// write device records itself; the engine must not look for it.
type modeHub struct {
	builtin.Connector
	store      *modeStore
	provisions atomic.Int32
}

func (h *modeHub) Provision(ctx context.Context, d dps.HubDevice) error {
	h.provisions.Add(1)
	return h.Connector.Provision(ctx, d)
}

func (h *modeHub) RecordsIn() any { return h.store }

// TestModesAreOptions: leases and where device records are written follow
// Options.SingleNode and Options.RecordDevicesWithOperations alone, not
// methods the store or the connector happen to have. An asynchronous
// (custom allocation) registration is claimed unless SingleNode; the hub
// connector is called unless RecordDevicesWithOperations, and either way
// the device ends up on its hub.
func TestModesAreOptions(t *testing.T) {
	for _, tc := range []struct{ singleNode, recordDevices bool }{
		{false, false}, {true, false}, {false, true}, {true, true},
	} {
		t.Run(fmt.Sprintf("singleNode=%v/recordDevices=%v", tc.singleNode, tc.recordDevices), func(t *testing.T) {
			ctx := context.Background()
			db := dpstest.NewSQLite(t)
			st := &modeStore{DB: db}
			hub := &modeHub{Connector: builtin.Connector{Store: db}, store: st}
			e := dpstest.SymmetricKeyEnrollment("dev-mode")
			e.AllocationPolicy = dps.AllocationCustom
			e.CustomAllocation = &dps.CustomAllocation{WebhookURL: "https://hook.example/alloc", APIVersion: "2021-10-01"}
			e = dpstest.MustPutEnrollment(t, db, e)
			alloc := allocatorFunc(func(_ context.Context, r dps.AllocationRequest) (dps.Assignment, error) {
				return dps.Assignment{Hub: r.Candidates[0].HostName}, nil
			})
			s := registration.New(registration.Options{IDScope: scope, LinkedHubs: hubs, Store: st, Attestors: attestors(st, mechanisms{}), Hubs: hub,
				Allocators:    map[dps.AllocationPolicy]registration.Allocator{dps.AllocationCustom: alloc},
				SweepInterval: time.Hour, SingleNode: tc.singleNode, RecordDevicesWithOperations: tc.recordDevices})
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })

			op := register(t, s, "dev-mode", cred(t, "dev-mode", string(e.Attestation.SymmetricKey.PrimaryKey)), "")
			if op.Status != dps.StatusAssigned || op.Result == nil {
				t.Fatalf("operation = %+v", op)
			}
			if n := st.claims.Load(); (n > 0) == tc.singleNode {
				t.Errorf("%d operation claims, want claims only without SingleNode", n)
			}
			if n := hub.provisions.Load(); (n > 0) == tc.recordDevices {
				t.Errorf("%d Provision calls, want calls only without RecordDevicesWithOperations", n)
			}
			if _, err := db.HubDevice(ctx, op.Result.AssignedHub, op.Result.DeviceID); err != nil {
				t.Errorf("device on its hub: %v", err)
			}
		})
	}
}

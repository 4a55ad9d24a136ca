package registration_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/allocation"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/hub/builtin"
	"github.com/opendps/dps/internal/pgtest"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/store/postgres"
	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/tpmattest"
)

// TestGroupChangesReachEveryNode: two engines (two nodes) on two handles of
// one database; each keeps the symmetric-key groups prepared in memory. A
// group deleted or re-keyed through one handle is honoured by the other
// engine on its next request.
func TestGroupChangesReachEveryNode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dps.db")
	dbA := dpstest.OpenSQLite(t, path)
	dbB, err := sqlite.OpenWith(context.Background(), path, sqlite.Options{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dbB.Close() })
	nodeB := newService(t, dbB, nil)
	for i := range 50 {
		dpstest.MustPutGroup(t, dbA, dpstest.SymmetricKeyGroup(fmt.Sprintf("filler-%02d", i)))
	}
	g := dpstest.MustPutGroup(t, dbA, dpstest.SymmetricKeyGroup("line-7"))
	deviceKey := func(groupKey dps.Key, id string) string {
		raw, _ := base64.StdEncoding.DecodeString(string(groupKey))
		return base64.StdEncoding.EncodeToString(sas.DeriveKey(raw, id))
	}
	auth := func(id string, key string) error {
		return nodeB.Authenticate(context.Background(), scope, id, cred(t, id, key))
	}
	oldKey := deviceKey(g.Attestation.SymmetricKey.PrimaryKey, "Sensor-01") // mixed case: derived from the ID as sent
	if err := auth("Sensor-01", oldKey); err != nil {
		t.Fatalf("device of line-7 on node B: %v", err)
	}
	if err := auth("sensor-02", deviceKey(g.Attestation.SymmetricKey.SecondaryKey, "sensor-02")); err != nil {
		t.Fatalf("secondary key on node B: %v", err)
	}

	// Re-keyed through node A's handle: node B takes the new key only.
	rekeyed := dpstest.SymmetricKeyGroup("line-7")
	rekeyed = dpstest.MustPutGroup(t, dbA, rekeyed)
	if err := auth("Sensor-01", oldKey); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("old key after re-keying through node A: %v, want unauthorized", err)
	}
	if err := auth("Sensor-01", deviceKey(rekeyed.Attestation.SymmetricKey.PrimaryKey, "Sensor-01")); err != nil {
		t.Errorf("new key on node B: %v", err)
	}

	// Deleted through node A's handle: node B refuses at once.
	if err := dbA.DeleteGroup(context.Background(), "line-7", ""); err != nil {
		t.Fatal(err)
	}
	if err := auth("Sensor-01", deviceKey(rekeyed.Attestation.SymmetricKey.PrimaryKey, "Sensor-01")); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("device of a group deleted through node A: %v, want unauthorized", err)
	}
}

// scanStore is what the group-scan benchmark needs from a store.
type scanStore interface {
	registration.Store
	builtin.Store
	tpmattest.Store
	dpstest.Store
}

// BenchmarkRefuseUnknownDevice is an unauthenticated register against
// 1,000 symmetric-key groups: the device is in none of them, so every
// group's keys are tried before the 401.
func BenchmarkRefuseUnknownDevice(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchRefusal(b, dpstest.NewSQLite(b)) })
	b.Run("postgres", func(b *testing.B) {
		c, err := pgtest.Start()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(c.Stop)
		db, err := postgres.Open(context.Background(), c.DSN, postgres.Options{Schema: pgtest.Schema("refusal")})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.DropSchema(context.Background()); db.Close() })
		benchRefusal(b, db)
	})
}

func benchRefusal(b *testing.B, db scanStore) {
	for i := range 1000 {
		dpstest.MustPutGroup(b, db, dpstest.SymmetricKeyGroup(fmt.Sprintf("group-%04d", i)))
	}
	s := registration.New(registration.Options{IDScope: scope, LinkedHubs: hubs, Store: db, Attestors: attestors(db, mechanisms{}), Hubs: &builtin.Connector{Store: db}, RecordDevicesWithOperations: true,
		Allocators: map[dps.AllocationPolicy]registration.Allocator{dps.AllocationHashed: allocation.Hashed{}}, SweepInterval: time.Hour})
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	bogus, _ := base64.StdEncoding.DecodeString(dpstest.Key(32))
	c := dps.Credential{SAS: sas.New(scope+"/registrations/intruder-0001", bogus, "registration", time.Now().Add(time.Hour))}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Authenticate(ctx, scope, "intruder-0001", c); dps.KindOf(err) != dps.KindUnauthorized {
			b.Fatalf("Authenticate = %v, want unauthorized", err)
		}
	}
}

package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
)

func symmetricEnrollment(id string) dps.Enrollment {
	return dps.Enrollment{RegistrationID: id, Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeS1rZXktMTIzNDU2", SecondaryKey: "c2Vjb25kYXJ5LWtleS0xMjM0"}},
		ProvisioningStatus: dps.ProvisioningEnabled,
	}}
}

// TestFullDiskIsUnavailable fills the database to a real SQLITE_FULL (a
// page limit on the writer's connection stands in for the disk): writes
// fail as KindUnavailable (503 with Retry-After, not 500), concurrent writes
// in one group commit fail cleanly, the readiness check fails although an
// in-place heartbeat would still fit, and once there is room again writes
// succeed without a restart.
func TestFullDiskIsUnavailable(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "dps.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.health.Memory = 200 * time.Millisecond
	if err := db.CheckWrite(ctx, "node-a"); err != nil {
		t.Fatalf("CheckWrite on an empty database: %v", err)
	}
	var pages int
	if err := db.write.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.write.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages+4)); err != nil {
		t.Fatal(err)
	}

	var full error
	for i := 0; i < 10000 && full == nil; i++ {
		_, full = db.PutEnrollment(ctx, symmetricEnrollment(fmt.Sprintf("fill-%05d", i)), "")
	}
	if dps.KindOf(full) != dps.KindUnavailable {
		t.Fatalf("write on a full database: %v (kind %v), want unavailable", full, dps.KindOf(full))
	}
	t.Logf("full: %v", full)

	// Many writers at once share transactions: each fails alone or with
	// its batch, always as unavailable, and nothing is left half-open.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			_, err := db.PutEnrollment(ctx, symmetricEnrollment(fmt.Sprintf("burst-%02d", i)), "")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && dps.KindOf(err) != dps.KindUnavailable {
			t.Errorf("concurrent write on a full database: %v (kind %v), want unavailable", err, dps.KindOf(err))
		}
	}
	if err := db.CheckWrite(ctx, "node-a"); dps.KindOf(err) != dps.KindUnavailable {
		t.Errorf("CheckWrite on a full database = %v, want unavailable", err)
	}

	// Room again: writes succeed on the same handle, and readiness returns.
	if _, err := db.write.ExecContext(ctx, `PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PutEnrollment(ctx, symmetricEnrollment("after"), ""); err != nil {
		t.Fatalf("write after the disk has room: %v", err)
	}
	if _, err := db.Enrollment(ctx, "after"); err != nil {
		t.Fatalf("read back: %v", err)
	}
	time.Sleep(db.health.Memory)
	if err := db.CheckWrite(ctx, "node-a"); err != nil {
		t.Errorf("CheckWrite after the disk has room: %v", err)
	}
}

// Package dpstest holds test fixtures: a throwaway SQLite store, enrollment
// builders and keys. It is imported only by _test.go files.
package dpstest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"path/filepath"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/sqlite"
)

// NewSQLite opens a fresh SQLite store in a temporary directory.
func NewSQLite(tb testing.TB) *sqlite.DB {
	tb.Helper()
	return OpenSQLite(tb, filepath.Join(tb.TempDir(), "dps.db"))
}

// OpenSQLite opens the SQLite store at path and closes it at cleanup.
func OpenSQLite(tb testing.TB, path string) *sqlite.DB {
	tb.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// Key returns a random base64 key of n bytes.
func Key(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// SymmetricKeyEnrollment returns an enabled individual enrollment with two random keys.
func SymmetricKeyEnrollment(id string) dps.Enrollment {
	return dps.Enrollment{RegistrationID: id, Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: dps.Key(Key(32)), SecondaryKey: dps.Key(Key(32))}},
		ProvisioningStatus: dps.ProvisioningEnabled,
	}}
}

// SymmetricKeyGroup returns an enabled symmetric-key group with two random 64-byte keys.
func SymmetricKeyGroup(id string) dps.Group {
	return dps.Group{ID: id, Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: dps.Key(Key(64)), SecondaryKey: dps.Key(Key(64))}},
		ProvisioningStatus: dps.ProvisioningEnabled,
	}}
}

// Store is what the fixtures write to.
type Store interface {
	PutEnrollment(ctx context.Context, e dps.Enrollment, ifMatch string) (dps.Enrollment, error)
	PutGroup(ctx context.Context, g dps.Group, ifMatch string) (dps.Group, error)
}

// MustPutEnrollment stores e (create or replace).
func MustPutEnrollment(tb testing.TB, s Store, e dps.Enrollment) dps.Enrollment {
	tb.Helper()
	out, err := s.PutEnrollment(context.Background(), e, "*")
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// MustPutGroup stores g (create or replace).
func MustPutGroup(tb testing.TB, s Store, g dps.Group) dps.Group {
	tb.Helper()
	out, err := s.PutGroup(context.Background(), g, "*")
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

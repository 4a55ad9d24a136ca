package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/store/sqlite"
)

// TestOneHandlePerDatabase: while a handle has the database open, opening
// it again fails with ErrInUse and a message that says what to do; once it
// is closed, the database opens again. (Another process is refused the
// same way: cmd/dpsd runs two dpsd processes on one file.)
func TestOneHandlePerDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dps.db")
	first, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Open(ctx, path); !errors.Is(err, sqlite.ErrInUse) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "PostgreSQL") {
		t.Fatalf("second Open = %v, want ErrInUse naming the file and the alternative", err)
	}
	// A shared handle (tests of two nodes) does not need the lock.
	shared, err := sqlite.OpenWith(ctx, path, sqlite.Options{Shared: true})
	if err != nil {
		t.Fatalf("shared Open: %v", err)
	}
	shared.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	again, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	defer again.Close()
	if _, err := again.Meta(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
}

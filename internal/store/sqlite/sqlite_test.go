package sqlite_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/store/storetest"
)

func open(t *testing.T, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	var paths sync.Map // storetest.Store → path
	storetest.Run(t, storetest.Factory{
		New: func(t *testing.T) storetest.Store {
			p := filepath.Join(t.TempDir(), "dps.db")
			db := open(t, p)
			paths.Store(db, p)
			return db
		},
		Reopen: func(t *testing.T, s storetest.Store) storetest.Store {
			// The first handle holds the database's lock; a second one
			// (another node, for the suite) opens it shared.
			p, _ := paths.Load(s)
			db, err := sqlite.OpenWith(context.Background(), p.(string), sqlite.Options{Shared: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
		Doc: func(t *testing.T, s storetest.Store, table string, key ...string) []byte {
			doc, err := s.(*sqlite.DB).RawDoc(context.Background(), table, key...)
			if err != nil {
				t.Fatal(err)
			}
			return doc
		},
		SetDoc: func(t *testing.T, s storetest.Store, table string, doc []byte, key ...string) {
			if err := s.(*sqlite.DB).SetRawDoc(context.Background(), table, doc, key...); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestPruneBatch: Options.PruneBatch bounds each DeleteOperationsBefore,
// DeleteMessagesBefore and TrimMessages.
func TestPruneBatch(t *testing.T) {
	db, err := sqlite.OpenWith(context.Background(), filepath.Join(t.TempDir(), "dps.db"), sqlite.Options{PruneBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	storetest.CheckPruneBatch(t, db)
	storetest.CheckMessagePruneBatch(t, db)
}

func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, func(b *testing.B) storetest.Store {
		db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "dps.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		return db
	})
}

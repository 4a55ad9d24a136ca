package postgres_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/pgtest"
	"github.com/opendps/dps/internal/store/postgres"
	"github.com/opendps/dps/internal/store/storetest"
)

var dsn string

func TestMain(m *testing.M) {
	c, err := pgtest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dsn = c.DSN
	code := m.Run()
	c.Stop()
	os.Exit(code)
}

var schemas atomic.Int64

func open(t *testing.T, schema string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), dsn, postgres.Options{Schema: schema, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	var names sync.Map // storetest.Store → schema
	storetest.Run(t, storetest.Factory{
		New: func(t *testing.T) storetest.Store {
			schema := fmt.Sprintf("conf_%d_%d", os.Getpid(), schemas.Add(1))
			db := open(t, schema)
			t.Cleanup(func() { db.DropSchema(context.Background()) })
			names.Store(db, schema)
			return db
		},
		Reopen: func(t *testing.T, s storetest.Store) storetest.Store {
			schema, _ := names.Load(s)
			return open(t, schema.(string))
		},
		Doc: func(t *testing.T, s storetest.Store, table string, key ...string) []byte {
			doc, err := s.(*postgres.DB).RawDoc(context.Background(), table, key...)
			if err != nil {
				t.Fatal(err)
			}
			return doc
		},
		SetDoc: func(t *testing.T, s storetest.Store, table string, doc []byte, key ...string) {
			if err := s.(*postgres.DB).SetRawDoc(context.Background(), table, doc, key...); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestUnreachableIsUnavailable: a database that does not answer is
// KindUnavailable (503 to clients), not an internal error.
func TestUnreachableIsUnavailable(t *testing.T) {
	db := open(t, fmt.Sprintf("down_%d", os.Getpid()))
	defer db.DropSchema(context.Background())
	_, err := postgres.Open(context.Background(), "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=1", postgres.Options{})
	if err == nil {
		t.Fatal("Open of an unreachable database succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.Enrollment(ctx, "x"); dps.KindOf(err) == dps.KindNotFound {
		t.Errorf("a canceled request reported not found")
	}
}

// TestPruneBatch: Options.PruneBatch bounds each DeleteOperationsBefore,
// DeleteMessagesBefore and TrimMessages.
func TestPruneBatch(t *testing.T) {
	db, err := postgres.Open(context.Background(), dsn, postgres.Options{Schema: fmt.Sprintf("prune_%d", os.Getpid()), MaxConns: 4, PruneBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer db.DropSchema(context.Background())
	storetest.CheckPruneBatch(t, db)
	storetest.CheckMessagePruneBatch(t, db)
}

func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, func(b *testing.B) storetest.Store {
		db, err := postgres.Open(context.Background(), dsn, postgres.Options{Schema: fmt.Sprintf("bench_%d_%d", os.Getpid(), schemas.Add(1)), MaxConns: 16})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.DropSchema(context.Background()); db.Close() })
		return db
	})
}

// TestGivingUpKeepsReady: a caller that gives up mid-transaction (a device
// that hangs up, a probe that times out) interrupts the connection, and
// pgx reports that as retryable; readiness must not fail for it, or the
// load balancer drains a healthy node whenever clients disconnect.
func TestGivingUpKeepsReady(t *testing.T) {
	db := open(t, fmt.Sprintf("giveup_%d", os.Getpid()))
	defer db.DropSchema(context.Background())
	ctx := context.Background()
	if err := db.CheckWrite(ctx, "n1"); err != nil {
		t.Fatalf("CheckWrite before: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	err := db.Tx(cctx, func(tx pgx.Tx) error {
		cancel()
		_, err := tx.Exec(cctx, "SELECT 1")
		return err
	})
	if err == nil {
		t.Fatal("a statement on a cancelled context succeeded")
	}
	if dps.KindOf(err) == dps.KindUnavailable {
		t.Errorf("a cancelled request is reported as the database being unavailable: %v", err)
	}
	if err := db.CheckWrite(ctx, "n1"); err != nil {
		t.Errorf("CheckWrite after a caller gave up: %v", err)
	}
}

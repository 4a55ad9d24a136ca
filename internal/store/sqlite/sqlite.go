// Package sqlite is the embedded store: SQLite through the pure-Go
// modernc.org/sqlite driver, in WAL mode with synchronous=FULL, embedded
// versioned migrations, and group commit: concurrent writes are batched into
// one transaction (one fsync) without giving up durability — a write returns
// only after the transaction holding it has committed.
//
// The store persists and translates driver errors into dps errors; it holds
// no business rules.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
	"github.com/opendps/dps/internal/store/groupcache"
	"github.com/opendps/dps/internal/store/health"
	_ "modernc.org/sqlite" // the database/sql driver "sqlite"
)

//go:embed migrations/*.sql
var migrations embed.FS

// maxBatch caps how many writes share one transaction.
const maxBatch = 256

// DB is the SQLite store. It is safe for concurrent use.
type DB struct {
	read  *sql.DB
	write *sql.DB

	reqs   chan *writeReq
	done   chan struct{}
	closed chan struct{}
	once   sync.Once

	stmts sync.Map             // query → *sql.Stmt on read
	hot   map[string]*sql.Stmt // the registration path's writes, prepared once on the writer
	// insertMessages are the hot INSERTs of 2^k hub messages at index k
	// (insertMessagesQueries).
	insertMessages []string
	docBuf         []byte // the writer's: the documents of the messages an INSERT writes
	groups         groupcache.Cache
	health         health.Writes
	lockFile       *os.File // the exclusive lock (nil for a Shared handle)

	pruneBatch int // operations per DeleteOperationsBefore, messages per DeleteMessagesBefore and TrimMessages
}

// ErrInUse is returned by Open when another process holds the database.
var ErrInUse = errors.New("database locked")

// Options configure OpenWith.
type Options struct {
	// Shared opens the database without taking its exclusive lock, next to
	// a handle of this process that holds it: tests of what a second handle
	// sees. dpsd never sets it; dpsd runs the registration engine without
	// operation leases on SQLite (registration.Options.SingleNode), as one
	// process holds the database.
	Shared bool
	// PruneBatch bounds how many operations one DeleteOperationsBefore
	// deletes, and how many messages one DeleteMessagesBefore or
	// TrimMessages does (default docs.DefaultPruneBatch).
	PruneBatch int
}

// stmt returns a prepared statement for a read query, preparing it once.
func (db *DB) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := db.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := db.read.PrepareContext(ctx, query)
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: prepare: %w", err))
	}
	if prev, loaded := db.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

type writeReq struct {
	ctx context.Context
	fn  func(tx *sql.Tx) error
	err chan error
	// app is set on an AppendMessages call (whose fn writes it alone):
	// the writer writes the appends next to each other in its batch
	// together (see commit).
	app *appendReq
}

// Open opens (creating if needed) the database at path for this process
// alone and applies pending migrations. It fails with ErrInUse while another
// process (or another handle of this one) has it open: two dpsd processes on
// one file would each trust what they hold in memory.
func Open(ctx context.Context, path string) (*DB, error) {
	return OpenWith(ctx, path, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, path string, o Options) (_ *DB, err error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sqlite: create directory: %w", err)
		}
	}
	var lf *os.File
	if !o.Shared {
		if lf, err = lock(path); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil && lf != nil {
				lf.Close()
			}
		}()
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	dsn := "file:" + path + "?" + q.Encode()
	write, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	write.SetMaxOpenConns(1)
	read, err := sql.Open("sqlite", dsn)
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	read.SetMaxOpenConns(8)
	read.SetMaxIdleConns(8)
	db := &DB{read: read, write: write, reqs: make(chan *writeReq, 1024), done: make(chan struct{}), closed: make(chan struct{}), lockFile: lf, pruneBatch: o.PruneBatch}
	if db.pruneBatch <= 0 {
		db.pruneBatch = docs.DefaultPruneBatch
	}
	if err := db.migrate(ctx); err != nil {
		read.Close()
		write.Close()
		return nil, translate(err)
	}
	if err := db.prepareHot(ctx); err != nil {
		read.Close()
		write.Close()
		return nil, translate(err)
	}
	go db.writer()
	return db, nil
}

// The statements every registration (and every append to a hub's event
// log) runs in the writer. Prepared once:
// preparing (parsing and planning) costs about as much as running them.
const (
	qInsertOperation    = `INSERT INTO operations (id, registration_id, status, created, doc) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	qOperationStatus    = `SELECT status, doc FROM operations WHERE id = ?`
	qCompleteOperation  = `UPDATE operations SET status = ?, doc = ?, owner = '', lease_until = 0 WHERE id = ?`
	qInsertRegistration = `INSERT INTO registrations (id, group_id, etag, doc) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	qUpdateRegistration = `UPDATE registrations SET group_id = ?, etag = ?, doc = ? WHERE id = ? AND etag = ?`
	qPutHubDevice       = `INSERT INTO hub_devices (hub, device_id, doc) VALUES (?, ?, ?) ON CONFLICT (hub, device_id) DO UPDATE SET doc = excluded.doc`
	qDeleteHubDevice    = `DELETE FROM hub_devices WHERE hub = ? AND device_id = ?`
	qAdvanceMessageSeq  = `INSERT INTO hub_message_seqs (hub, last) VALUES (?, ?) ON CONFLICT (hub) DO UPDATE SET last = last + excluded.last RETURNING last`
	qSavepoint          = `SAVEPOINT w`
	qRelease            = `RELEASE w`
	qRollbackTo         = `ROLLBACK TO w`
)

// prepareHot prepares the hot statements on the writer's one connection
// (before the writer starts: preparing needs the connection a transaction
// would hold).
func (db *DB) prepareHot(ctx context.Context) error {
	db.hot = map[string]*sql.Stmt{}
	hot := []string{qInsertOperation, qOperationStatus, qCompleteOperation, qInsertRegistration, qUpdateRegistration, qPutHubDevice, qDeleteHubDevice, qAdvanceMessageSeq, qSavepoint, qRelease, qRollbackTo}
	db.insertMessages = insertMessagesQueries()
	for _, q := range append(hot, db.insertMessages...) {
		st, err := db.write.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("sqlite: prepare %q: %w", q, err)
		}
		db.hot[q] = st
	}
	return nil
}

// txExec runs q in tx, as the statement prepared on the writer's connection
// when q is a hot one.
func (db *DB) txExec(tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	if st := db.hot[q]; st != nil {
		return tx.Stmt(st).Exec(args...)
	}
	return tx.Exec(q, args...)
}

// txQueryRow is txExec for a query returning one row.
func (db *DB) txQueryRow(tx *sql.Tx, q string, args ...any) *sql.Row {
	if st := db.hot[q]; st != nil {
		return tx.Stmt(st).QueryRow(args...)
	}
	return tx.QueryRow(q, args...)
}

// Close stops the writer, closes the database and then releases its lock.
// Calls after the first return nil.
func (db *DB) Close() error {
	first := false
	db.once.Do(func() { first = true; close(db.done) })
	<-db.closed
	if !first {
		return nil
	}
	db.stmts.Range(func(_, st any) bool {
		st.(*sql.Stmt).Close()
		return true
	})
	for _, st := range db.hot {
		st.Close()
	}
	err := errors.Join(db.read.Close(), db.write.Close())
	if db.lockFile != nil {
		err = errors.Join(err, db.lockFile.Close())
	}
	return err
}

// Ping checks the database answers.
func (db *DB) Ping(ctx context.Context) error { return translate(db.read.PingContext(ctx)) }

// migrate applies the migrations this database has not had, in version
// order, each in its own transaction: the embedded .sql file, then the Go
// step of the same version if there is one (see goStep).
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		return fmt.Errorf("sqlite: migrations table: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	seen := map[int]string{}
	for _, name := range names {
		base := filepath.Base(name)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("sqlite: migration %s: bad version", base)
		}
		if other, dup := seen[v]; dup {
			return fmt.Errorf("sqlite: migrations %s and %s have the same version", other, base)
		}
		seen[v] = base
		if done, err := applied(ctx, db.write, v); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", base, err)
		} else if done {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		if err := db.migrateOne(ctx, v, string(body)); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", base, err)
		}
	}
	return nil
}

// rowQuerier is a *sql.DB or a *sql.Tx.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// applied reports whether migration version is recorded.
func applied(ctx context.Context, q rowQuerier, version int) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n)
	return n > 0, err
}

// migrateOne applies one migration. BEGIN IMMEDIATE takes the write lock
// before it looks again: of several handles opening the database at once,
// one applies it and the others find it recorded.
func (db *DB) migrateOne(ctx context.Context, version int, body string) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if done, err := applied(ctx, tx, version); err != nil || done {
		return err
	}
	if _, err := tx.ExecContext(ctx, body); err != nil {
		return err
	}
	if step := goStep(version); step != nil {
		if err := step(ctx, tx); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, version); err != nil {
		return err
	}
	return tx.Commit()
}

// exec queues fn to run inside a shared write transaction and waits until
// that transaction has committed. fn runs inside a savepoint: if it returns
// an error only its own changes are rolled back. A write the database
// cannot take now (full disk, I/O error…) fails with KindUnavailable and is
// reported to the readiness check.
func (db *DB) exec(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return db.health.Observe(translate(db.queue(ctx, &writeReq{ctx: ctx, fn: fn, err: make(chan error, 1)})))
}

func (db *DB) queue(ctx context.Context, r *writeReq) error {
	select {
	case db.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-db.done:
		return dps.Errorf(dps.KindUnavailable, "store is closed")
	}
	select {
	case err := <-r.err:
		return err
	case <-db.done:
		// The writer drains queued requests before it exits.
		return <-r.err
	}
}

func (db *DB) writer() {
	defer close(db.closed)
	batch := make([]*writeReq, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-db.reqs:
			batch = append(batch, r)
		case <-db.done:
			// Fail whatever is still queued.
			for {
				select {
				case r := <-db.reqs:
					r.err <- dps.Errorf(dps.KindUnavailable, "store is closed")
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-db.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		db.commit(batch)
	}
}

func (db *DB) commit(batch []*writeReq) {
	ctx := context.Background()
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		for _, r := range batch {
			r.err <- fmt.Errorf("sqlite: begin: %w", err)
		}
		return
	}
	errs := make([]error, len(batch))
	if len(batch) == 1 {
		// Alone in its transaction: a failure rolls the transaction back.
		r := batch[0]
		err := r.ctx.Err()
		if err == nil {
			err = r.fn(tx)
		}
		if err != nil {
			tx.Rollback()
			r.err <- err
			return
		}
		if err := tx.Commit(); err != nil {
			r.err <- fmt.Errorf("sqlite: commit: %w", err)
			return
		}
		r.err <- nil
		return
	}
	run := make([]int, 0, len(batch))
	for i := 0; i < len(batch); i++ {
		r := batch[i]
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if r.app != nil {
			// The appends from here to the next other write (those whose
			// context is done fail as such): written together, in order.
			// When that fails, each is written again alone, so a bad one
			// fails alone.
			run = append(run[:0], i)
			for ; i+1 < len(batch) && batch[i+1].app != nil; i++ {
				if err := batch[i+1].ctx.Err(); err != nil {
					errs[i+1] = err
				} else {
					run = append(run, i+1)
				}
			}
			if len(run) > 1 {
				apps := make([]*appendReq, len(run))
				for k, j := range run {
					apps[k] = batch[j].app
				}
				rolledBack, err := db.savepoint(tx, func(tx *sql.Tx) error { return db.writeAppends(tx, apps) })
				if rolledBack {
					db.failBatch(tx, batch, run, err)
					return
				}
				if err == nil {
					continue
				}
			}
			for _, j := range run {
				var rolledBack bool
				if rolledBack, errs[j] = db.savepoint(tx, batch[j].fn); rolledBack {
					db.failBatch(tx, batch, []int{j}, errs[j])
					return
				}
			}
			continue
		}
		var rolledBack bool
		if rolledBack, errs[i] = db.savepoint(tx, r.fn); rolledBack {
			db.failBatch(tx, batch, []int{i}, errs[i])
			return
		}
	}
	if err := tx.Commit(); err != nil {
		for _, r := range batch {
			r.err <- fmt.Errorf("sqlite: commit: %w", err)
		}
		return
	}
	for i, r := range batch {
		r.err <- errs[i]
	}
}

// savepoint runs fn in tx inside a savepoint: when fn fails, only its own
// changes are rolled back, and its error returned. rolledBack reports that
// SQLite rolled the whole transaction back itself (it may, on a full disk
// or an I/O error): the writes before this one are gone too, and a
// SAVEPOINT now would open a new transaction outside tx.
func (db *DB) savepoint(tx *sql.Tx, fn func(tx *sql.Tx) error) (rolledBack bool, err error) {
	if _, err := db.txExec(tx, qSavepoint); err != nil {
		return false, err
	}
	if err = fn(tx); err != nil {
		if _, rbErr := db.txExec(tx, qRollbackTo); rbErr != nil {
			return true, err
		}
	}
	if _, relErr := db.txExec(tx, qRelease); relErr != nil && err == nil {
		err = relErr
	}
	return false, err
}

// failBatch rolls tx back after SQLite rolled it back itself while it ran
// the writes of batch at failed (with err): those fail with err, the
// others with an error saying so.
func (db *DB) failBatch(tx *sql.Tx, batch []*writeReq, failed []int, err error) {
	tx.Rollback()
	for j, r := range batch {
		if slices.Contains(failed, j) {
			r.err <- err
		} else {
			r.err <- fmt.Errorf("sqlite: the transaction was rolled back: %w", err)
		}
	}
}

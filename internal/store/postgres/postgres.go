// Package postgres is the scale-out store: PostgreSQL through pgx, with
// embedded versioned migrations, a bounded connection pool and statement
// timeouts. Several dpsd nodes share one database; operations are owned by
// one node at a time through leases. Driver errors become dps errors: an
// unreachable database is KindUnavailable (503 to clients).
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
	"github.com/opendps/dps/internal/store/groupcache"
	"github.com/opendps/dps/internal/store/health"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options configure Open.
type Options struct {
	// Schema, when set, isolates the store in that schema (created if needed).
	Schema string
	// MaxConns bounds the pool (default 16).
	MaxConns int32
	// StatementTimeout bounds each statement (default 5s).
	StatementTimeout time.Duration
	// PruneBatch bounds how many operations one DeleteOperationsBefore
	// deletes, and how many messages one DeleteMessagesBefore or
	// TrimMessages does (default docs.DefaultPruneBatch).
	PruneBatch int
}

// DB is the PostgreSQL store. It is safe for concurrent use.
type DB struct {
	pool   *pgxpool.Pool
	schema string
	groups groupcache.Cache
	health health.Writes

	pruneBatch int // operations per DeleteOperationsBefore, messages per DeleteMessagesBefore and TrimMessages
}

// Open connects, creates the schema if asked, and applies migrations.
func Open(ctx context.Context, dsn string, o Options) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: bad DSN: %w", err)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 16
	}
	if o.StatementTimeout <= 0 {
		o.StatementTimeout = 5 * time.Second
	}
	if o.PruneBatch <= 0 {
		o.PruneBatch = docs.DefaultPruneBatch
	}
	cfg.MaxConns = o.MaxConns
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(o.StatementTimeout.Milliseconds(), 10)
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	if o.Schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = o.Schema
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	db := &DB{pool: pool, schema: o.Schema, pruneBatch: o.PruneBatch}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the pool.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// Ping checks the database answers.
func (db *DB) Ping(ctx context.Context) error { return translate(db.pool.Ping(ctx)) }

// DropSchema drops the store's schema (tests).
func (db *DB) DropSchema(ctx context.Context) error {
	if db.schema == "" {
		return nil
	}
	_, err := db.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{db.schema}.Sanitize()+" CASCADE")
	return err
}

func (db *DB) migrate(ctx context.Context) error {
	return db.tx(ctx, func(tx pgx.Tx) error {
		// Migrations rewrite whole tables and other nodes wait here for the
		// one migrating: neither is bounded by the pool's statement timeout
		// (a large database would never open). The caller's context still is.
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
			return err
		}
		// One node migrates at a time.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7363847201)`); err != nil {
			return err
		}
		if db.schema != "" {
			if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{db.schema}.Sanitize()); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
			return err
		}
		names, err := fs.Glob(migrations, "migrations/*.sql")
		if err != nil {
			return err
		}
		sort.Strings(names)
		seen := map[int]string{}
		for _, name := range names {
			v, err := strconv.Atoi(strings.SplitN(filepath.Base(name), "_", 2)[0])
			if err != nil {
				return fmt.Errorf("postgres: migration %s: bad version", name)
			}
			if other, dup := seen[v]; dup {
				return fmt.Errorf("postgres: migrations %s and %s have the same version", other, name)
			}
			seen[v] = name
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, v).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			body, err := migrations.ReadFile(name)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return fmt.Errorf("postgres: migration %s: %w", name, err)
			}
			// The Go part of a migration runs after its .sql file, in the
			// same transaction and under the same lock.
			if step := goStep(v); step != nil {
				if err := step(ctx, tx); err != nil {
					return fmt.Errorf("postgres: migration %s: %w", name, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// translate turns driver errors into dps errors: unique violation →
// KindConflict; a database that cannot serve now → KindUnavailable (503
// with Retry-After): unreachable or shutting down, out of resources (class
// 53: disk full, out of memory, too many connections), or read-only (a
// primary that became a standby).
func translate(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*dps.Error](err); ok {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505":
			return &dps.Error{Kind: dps.KindConflict, Message: "already exists", Err: err}
		case strings.HasPrefix(pgErr.Code, "08"), pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03":
			return &dps.Error{Kind: dps.KindUnavailable, Message: "the database is unavailable; retry later", Err: err}
		case strings.HasPrefix(pgErr.Code, "53"):
			return &dps.Error{Kind: dps.KindUnavailable, Message: "the database is out of resources (" + pgErr.Code + "); retry later", Err: err}
		case pgErr.Code == "25006":
			return &dps.Error{Kind: dps.KindUnavailable, Message: "the database is read-only; retry later", Err: err}
		case pgErr.Code == "57014":
			return &dps.Error{Kind: dps.KindUnavailable, Message: "the database did not answer in time; retry later", Err: err}
		}
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err // the caller gave up; nothing is known about the database
	}
	var netErr net.Error
	if errors.As(err, &netErr) || pgconn.SafeToRetry(err) || errors.Is(err, context.DeadlineExceeded) {
		return &dps.Error{Kind: dps.KindUnavailable, Message: "the database is unavailable; retry later", Err: err}
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return &dps.Error{Kind: dps.KindUnavailable, Message: "the database is unavailable; retry later", Err: err}
	}
	return err
}

func (db *DB) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return db.observe(ctx, translate(err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return db.observe(ctx, translate(err))
	}
	return db.observe(ctx, translate(tx.Commit(ctx)))
}

// observe passes a write's outcome to the readiness check, unless the
// caller gave up (a device that hung up, a probe that timed out): pgx then
// reports the interrupted connection as a network error, which says
// nothing about the database, and must not make /readyz fail.
func (db *DB) observe(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return err
	}
	return db.health.Observe(err)
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// getDoc reads one document and decodes it with decode (one of docs.Decode…).
func getDoc[T any](ctx context.Context, q querier, decode func([]byte) (T, error), query, what, id string, args ...any) (T, error) {
	var v T
	var doc []byte
	if err := q.QueryRow(ctx, query, args...).Scan(&doc); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return v, docs.NotFound(what, id)
		}
		return v, translate(err)
	}
	v, err := decode(doc)
	if err != nil {
		return v, fmt.Errorf("postgres: decode %s: %w", what, err)
	}
	return v, nil
}

func listDocs[T any](ctx context.Context, q querier, decode func([]byte) (T, error), what, query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, translate(err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&doc); err != nil {
			return nil, translate(err)
		}
		v, err := decode(doc)
		if err != nil {
			return nil, fmt.Errorf("postgres: decode %s: %w", what, err)
		}
		out = append(out, v)
	}
	return out, translate(rows.Err())
}

// lockRow reads a row's etag for update; exists is false when it is absent.
func lockRow(ctx context.Context, tx pgx.Tx, table, id string) (etag string, doc []byte, exists bool, err error) {
	err = tx.QueryRow(ctx, `SELECT etag, doc FROM `+table+` WHERE id = $1 FOR UPDATE`, id).Scan(&etag, &doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil, false, nil
	}
	return etag, doc, err == nil, err
}

// putDoc writes a document under the ETag rules (docs.CheckPut). created
// returns the creation time of the stored document, to keep it; write
// receives the new ETag, the creation time (now for a new record) and now,
// and writes the row.
func putDoc(ctx context.Context, db *DB, table, what, name, ifMatch string, created func(old []byte) (time.Time, error), write func(tx pgx.Tx, id, etag string, created, now time.Time) error) error {
	id := dps.FoldID(name)
	return db.tx(ctx, func(tx pgx.Tx) error {
		etag, doc, exists, err := lockRow(ctx, tx, table, id)
		if err != nil {
			return err
		}
		if err := docs.CheckPut(exists, etag, what, name, ifMatch); err != nil {
			return err
		}
		now := time.Now().UTC()
		c := now
		if exists {
			if c, err = created(doc); err != nil {
				return err
			}
		}
		return write(tx, id, docs.NewETag(), c, now)
	})
}

func deleteRow(ctx context.Context, db *DB, table, what, id, ifMatch string) error {
	return db.tx(ctx, func(tx pgx.Tx) error {
		etag, _, exists, err := lockRow(ctx, tx, table, id)
		if err != nil {
			return err
		}
		if !exists {
			return docs.NotFound(what, id)
		}
		if err := docs.CheckDelete(etag, what, id, ifMatch); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM `+table+` WHERE id = $1`, id)
		return err
	})
}

func page[T any](ctx context.Context, db *DB, decode func([]byte) (T, error), table, groupID, continuation string, limit int, key func(T) string) ([]T, string, error) {
	after, err := docs.DecodeCursor(continuation)
	if err != nil {
		return nil, "", err
	}
	limit = docs.PageSize(limit)
	q := `SELECT doc FROM ` + table + ` WHERE id > $1`
	args := []any{after}
	if table == "registrations" && groupID != "" {
		q += ` AND group_id = $2`
		args = append(args, dps.FoldID(groupID))
	}
	q += fmt.Sprintf(` ORDER BY id LIMIT %d`, limit+1)
	items, err := listDocs(ctx, db.pool, decode, table, q, args...)
	if err != nil {
		return nil, "", err
	}
	items, next := docs.Page(items, limit, key)
	return items, next, nil
}

// createdOf returns the creation time of a stored document, for putDoc.
func createdOf[T any](decode func([]byte) (T, error), get func(T) time.Time) func([]byte) (time.Time, error) {
	return func(doc []byte) (time.Time, error) {
		v, err := decode(doc)
		return get(v), err
	}
}

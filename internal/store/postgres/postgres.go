// Package postgres is the scale-out store: PostgreSQL through pgx, with
// embedded versioned migrations, a bounded connection pool and statement
// timeouts. Several dpsd nodes share one database; operations are owned by
// one node at a time through leases. Driver errors become dps errors: an
// unreachable database is KindUnavailable (503 to clients).
package postgres

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"encoding/json"
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
}

// DB is the PostgreSQL store. It is safe for concurrent use.
type DB struct {
	pool   *pgxpool.Pool
	schema string
	groups groupcache.Cache
	health health.Writes
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
	db := &DB{pool: pool, schema: o.Schema}
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
		for _, name := range names {
			v, err := strconv.Atoi(strings.SplitN(filepath.Base(name), "_", 2)[0])
			if err != nil {
				return fmt.Errorf("postgres: migration %s: bad version", name)
			}
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

func newETag() string { return `"` + rand.Text() + `"` }

func trimETag(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

func notFound(what, id string) error {
	return &dps.Error{Kind: dps.KindNotFound, Message: fmt.Sprintf("%s %q not found", what, id)}
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func getDoc[T any](ctx context.Context, q querier, query, what, id string, args ...any) (T, error) {
	var v T
	var doc []byte
	if err := q.QueryRow(ctx, query, args...).Scan(&doc); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return v, notFound(what, id)
		}
		return v, translate(err)
	}
	if err := json.Unmarshal(doc, &v); err != nil {
		return v, fmt.Errorf("postgres: decode %s: %w", what, err)
	}
	return v, nil
}

func listDocs[T any](ctx context.Context, q querier, what, query string, args ...any) ([]T, error) {
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
		var v T
		if err := json.Unmarshal(doc, &v); err != nil {
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

// checkPut enforces the ETag rules: "" creates, "*" creates or replaces,
// anything else must equal the stored ETag.
func checkPut(exists bool, etag, what, id, ifMatch string) error {
	switch {
	case !exists && ifMatch != "" && ifMatch != "*":
		return &dps.Error{Kind: dps.KindPrecondition, Message: fmt.Sprintf("%s %q does not exist; If-Match cannot match", what, id)}
	case exists && ifMatch == "":
		return &dps.Error{Kind: dps.KindConflict, Message: fmt.Sprintf("%s %q already exists; send If-Match with its etag (or *) to update it", what, id)}
	case exists && ifMatch != "*" && trimETag(ifMatch) != trimETag(etag):
		return &dps.Error{Kind: dps.KindPrecondition, Message: fmt.Sprintf("%s %q has a different etag", what, id)}
	}
	return nil
}

// putDoc writes a document under the ETag rules. set receives the new
// ETag, the creation time to keep (zero when new) and now, and returns the
// document to store plus extra column values.
func putDoc(ctx context.Context, db *DB, table, what, name, ifMatch string, created func(old []byte) time.Time, write func(tx pgx.Tx, id, etag string, created, now time.Time) error) error {
	id := dps.FoldID(name)
	return db.tx(ctx, func(tx pgx.Tx) error {
		etag, doc, exists, err := lockRow(ctx, tx, table, id)
		if err != nil {
			return err
		}
		if err := checkPut(exists, etag, what, name, ifMatch); err != nil {
			return err
		}
		now := time.Now().UTC()
		c := now
		if exists {
			c = created(doc)
		}
		return write(tx, id, newETag(), c, now)
	})
}

func deleteRow(ctx context.Context, db *DB, table, what, id, ifMatch string) error {
	return db.tx(ctx, func(tx pgx.Tx) error {
		etag, _, exists, err := lockRow(ctx, tx, table, id)
		if err != nil {
			return err
		}
		if !exists {
			return notFound(what, id)
		}
		if ifMatch != "" && ifMatch != "*" && trimETag(ifMatch) != trimETag(etag) {
			return &dps.Error{Kind: dps.KindPrecondition, Message: fmt.Sprintf("%s %q has a different etag", what, id)}
		}
		_, err = tx.Exec(ctx, `DELETE FROM `+table+` WHERE id = $1`, id)
		return err
	})
}

func encodeCursor(lastID string) string { return base64.RawURLEncoding.EncodeToString([]byte(lastID)) }

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: 400004, Message: "invalid continuation token"}
	}
	return string(b), nil
}

func page[T any](ctx context.Context, db *DB, table, groupID, continuation string, limit int, key func(T) string) ([]T, string, error) {
	after, err := decodeCursor(continuation)
	if err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		limit = 1000
	}
	q := `SELECT doc FROM ` + table + ` WHERE id > $1`
	args := []any{after}
	if table == "registrations" && groupID != "" {
		q += ` AND group_id = $2`
		args = append(args, dps.FoldID(groupID))
	}
	q += fmt.Sprintf(` ORDER BY id LIMIT %d`, limit+1)
	items, err := listDocs[T](ctx, db.pool, table, q, args...)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(items) > limit {
		items = items[:limit]
		next = encodeCursor(key(items[limit-1]))
	}
	return items, next, nil
}

func createdOf[T any](get func(T) time.Time) func([]byte) time.Time {
	return func(doc []byte) time.Time {
		var v T
		json.Unmarshal(doc, &v)
		return get(v)
	}
}

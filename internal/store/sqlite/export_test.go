package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"

	"github.com/opendps/dps/internal/store/docs"
)

// keyWhere is the WHERE clause selecting a row of table by its key.
func keyWhere(table string) (string, error) {
	for _, t := range docs.Tables() {
		if t.Name == table {
			return strings.Join(t.Key, " = ? AND ") + " = ?", nil
		}
	}
	return "", fmt.Errorf("no document table %q", table)
}

// RawDoc returns the document of a row as stored (tests).
func (db *DB) RawDoc(ctx context.Context, table string, key ...string) ([]byte, error) {
	where, err := keyWhere(table)
	if err != nil {
		return nil, err
	}
	var doc []byte
	err = db.read.QueryRowContext(ctx, `SELECT doc FROM `+table+` WHERE `+where, anys(key)...).Scan(&doc)
	return doc, err
}

// SetRawDoc replaces the document of a row, bypassing the encoding (tests).
func (db *DB) SetRawDoc(ctx context.Context, table string, doc []byte, key ...string) error {
	where, err := keyWhere(table)
	if err != nil {
		return err
	}
	return db.exec(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE `+table+` SET doc = ? WHERE `+where, append([]any{doc}, anys(key)...)...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%s %v: %d rows", table, key, n)
		}
		return nil
	})
}

// OldDocs counts the documents not in the current format (tests), in the
// tables that may hold any (docs.Table.Legacy).
func (db *DB) OldDocs(ctx context.Context) (int, error) { return oldDocs(ctx, db.read) }

func oldDocs(ctx context.Context, q rowQuerier) (int, error) {
	total := 0
	for _, t := range docs.Tables() {
		if !t.Legacy {
			continue
		}
		var n int
		if err := q.QueryRowContext(ctx, `SELECT count(*) FROM `+t.Name+` WHERE CAST(doc AS TEXT) NOT LIKE ?`, fmt.Sprintf(`{"v":%d,%%`, docs.Version)).Scan(&n); err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// Migrations returns the versions recorded in schema_migrations (tests).
func (db *DB) Migrations(ctx context.Context) ([]int, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func anys(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// UpgradeDocuments runs the document rewrite of migration 0008 alone on
// the database at path, reading batch documents at a time, and returns how
// many documents are still in the previous format after it (tests).
func UpgradeDocuments(ctx context.Context, path string, batch int) (int, error) {
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return 0, err
	}
	defer raw.Close()
	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	for _, t := range docs.Tables() {
		if !t.Legacy {
			continue
		}
		if err := upgradeTable(ctx, tx, t, batch); err != nil {
			return 0, err
		}
	}
	left, err := oldDocs(ctx, tx)
	if err != nil {
		return 0, err
	}
	return left, tx.Commit()
}

// HoldWriter makes the writer wait, inside a write of its own, until the
// returned release is called, and returns once it waits: the writes
// queued meanwhile make up its next batch, in the order queued (tests).
// release returns once the held write has committed.
func (db *DB) HoldWriter() (release func()) {
	started, hold := make(chan struct{}), make(chan struct{})
	r := &writeReq{ctx: context.Background(), fn: func(*sql.Tx) error { close(started); <-hold; return nil }, err: make(chan error, 1)}
	db.reqs <- r
	<-started
	var once sync.Once
	return func() {
		once.Do(func() {
			close(hold)
			<-r.err
		})
	}
}

// Queued reports how many writes wait for the writer (tests).
func (db *DB) Queued() int { return len(db.reqs) }

// ExecSQL runs statements in a write of their own (tests).
func (db *DB) ExecSQL(ctx context.Context, query string) error {
	return db.exec(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(query)
		return err
	})
}

// QueryRowForTest runs a query on the read connections (tests).
func (db *DB) QueryRowForTest(ctx context.Context, query string, args ...any) *sql.Row {
	return db.read.QueryRowContext(ctx, query, args...)
}

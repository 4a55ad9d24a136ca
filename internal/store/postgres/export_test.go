package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps/internal/store/docs"
)

// Tx runs fn in one of the store's transactions, for tests.
func (db *DB) Tx(ctx context.Context, fn func(pgx.Tx) error) error { return db.tx(ctx, fn) }

// keyWhere is the WHERE clause selecting a row of table by its key, its
// parameters numbered from first.
func keyWhere(table string, first int) (string, error) {
	for _, t := range docs.Tables() {
		if t.Name == table {
			var w []string
			for i, k := range t.Key {
				w = append(w, fmt.Sprintf("%s = $%d", k, first+i))
			}
			return strings.Join(w, " AND "), nil
		}
	}
	return "", fmt.Errorf("no document table %q", table)
}

// RawDoc returns the document of a row as stored (tests).
func (db *DB) RawDoc(ctx context.Context, table string, key ...string) ([]byte, error) {
	where, err := keyWhere(table, 1)
	if err != nil {
		return nil, err
	}
	var doc []byte
	err = db.pool.QueryRow(ctx, `SELECT doc FROM `+table+` WHERE `+where, anys(key)...).Scan(&doc)
	return doc, err
}

// SetRawDoc replaces the document of a row, bypassing the encoding (tests).
func (db *DB) SetRawDoc(ctx context.Context, table string, doc []byte, key ...string) error {
	where, err := keyWhere(table, 2)
	if err != nil {
		return err
	}
	tag, err := db.pool.Exec(ctx, `UPDATE `+table+` SET doc = $1 WHERE `+where, append([]any{doc}, anys(key)...)...)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("%s %v: %d rows", table, key, tag.RowsAffected())
	}
	return err
}

// OldDocs counts the documents not in the current format (tests), in the
// tables that may hold any (docs.Table.Legacy).
func (db *DB) OldDocs(ctx context.Context) (int, error) { return oldDocs(ctx, db.pool) }

func oldDocs(ctx context.Context, q querier) (int, error) {
	total := 0
	for _, t := range docs.Tables() {
		if !t.Legacy {
			continue
		}
		var n int
		if err := q.QueryRow(ctx, `SELECT count(*) FROM `+t.Name+` WHERE doc::text NOT LIKE $1`, fmt.Sprintf(`{"v":%d,%%`, docs.Version)).Scan(&n); err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// Migrations returns the versions recorded in schema_migrations (tests).
func (db *DB) Migrations(ctx context.Context) ([]int, error) {
	rows, err := db.pool.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

func anys(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// UpgradeDocuments runs the document rewrite of migration 0005 alone on
// the database of dsn, reading batch documents at a time, and returns how
// many documents are still in the previous format after it (tests).
func UpgradeDocuments(ctx context.Context, dsn string, batch int) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
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
	return left, tx.Commit(ctx)
}

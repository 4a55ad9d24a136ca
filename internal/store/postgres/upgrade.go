package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps/internal/store/docs"
)

// goStep returns the Go part of a migration, run in the migration
// transaction after its .sql file, or nil.
func goStep(version int) func(context.Context, pgx.Tx) error {
	switch version {
	case 5:
		return upgradeDocuments
	}
	return nil
}

// upgradeBatch is how many documents upgradeDocuments reads at a time.
const upgradeBatch = 500

// upgradeDocuments rewrites every document written by an earlier release
// in the current format (migration 0005; see docs.Upgrade), under the
// migration lock: no node serves from this database meanwhile. Each table
// is read in key order, a batch at a time.
func upgradeDocuments(ctx context.Context, tx pgx.Tx) error {
	for _, t := range docs.Tables() {
		if !t.Legacy {
			continue // created by a later migration, in the current format
		}
		if err := upgradeTable(ctx, tx, t, upgradeBatch); err != nil {
			return fmt.Errorf("upgrade %s documents: %w", t.Name, err)
		}
	}
	return nil
}

func upgradeTable(ctx context.Context, tx pgx.Tx, t docs.Table, batch int) error {
	cols := strings.Join(t.Key, ", ")
	marks := func(from int) string {
		m := make([]string, len(t.Key))
		for i := range m {
			m[i] = fmt.Sprintf("$%d", from+i)
		}
		return strings.Join(m, ", ")
	}
	first := `SELECT ` + cols + `, doc FROM ` + t.Name + ` ORDER BY ` + cols + fmt.Sprintf(` LIMIT %d`, batch)
	next := `SELECT ` + cols + `, doc FROM ` + t.Name + ` WHERE (` + cols + `) > (` + marks(1) + `) ORDER BY ` + cols + fmt.Sprintf(` LIMIT %d`, batch)
	update := `UPDATE ` + t.Name + ` SET doc = $1 WHERE (` + cols + `) = (` + marks(2) + `)`
	type row struct {
		key []any
		doc []byte
	}
	var after []any
	for {
		q := first
		if after != nil {
			q = next
		}
		rows, err := tx.Query(ctx, q, after...)
		if err != nil {
			return err
		}
		var read []row
		for rows.Next() {
			key := make([]string, len(t.Key))
			dest := make([]any, 0, len(key)+1)
			for i := range key {
				dest = append(dest, &key[i])
			}
			var doc []byte
			if err := rows.Scan(append(dest, &doc)...); err != nil {
				rows.Close()
				return err
			}
			r := row{doc: doc}
			for _, k := range key {
				r.key = append(r.key, k)
			}
			read = append(read, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range read {
			doc, changed, err := docs.Upgrade(t.Kind, r.doc)
			if err != nil {
				return fmt.Errorf("row %v: %w", r.key, err)
			}
			if !changed {
				continue
			}
			if _, err := tx.Exec(ctx, update, append([]any{doc}, r.key...)...); err != nil {
				return err
			}
		}
		if len(read) < batch {
			return nil
		}
		after = read[len(read)-1].key
	}
}

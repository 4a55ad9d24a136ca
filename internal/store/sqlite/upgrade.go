package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/opendps/dps/internal/store/docs"
)

// goStep returns the Go part of a migration, run in its transaction after
// its .sql file, or nil.
func goStep(version int) func(context.Context, *sql.Tx) error {
	switch version {
	case 8:
		return upgradeDocuments
	}
	return nil
}

// upgradeBatch is how many documents upgradeDocuments reads at a time.
const upgradeBatch = 500

// upgradeDocuments rewrites every document written by an earlier release
// in the current format (migration 0008; see docs.Upgrade). Documents are
// read in rowid order, a batch at a time, and updated in place: the rowid
// of a row does not change when its doc does. Only the tables that existed
// before format 1 are read (docs.Table.Legacy): the later ones do not
// exist yet when this migration runs.
func upgradeDocuments(ctx context.Context, tx *sql.Tx) error {
	for _, t := range docs.Tables() {
		if !t.Legacy {
			continue
		}
		if err := upgradeTable(ctx, tx, t, upgradeBatch); err != nil {
			return fmt.Errorf("upgrade %s documents: %w", t.Name, err)
		}
	}
	return nil
}

func upgradeTable(ctx context.Context, tx *sql.Tx, t docs.Table, batch int) error {
	type row struct {
		rowid int64
		doc   []byte
	}
	for after := int64(-1 << 63); ; {
		rows, err := tx.QueryContext(ctx, `SELECT rowid, doc FROM `+t.Name+` WHERE rowid > ? ORDER BY rowid LIMIT ?`, after, batch)
		if err != nil {
			return err
		}
		var read []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.rowid, &r.doc); err != nil {
				rows.Close()
				return err
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
				return fmt.Errorf("row %d: %w", r.rowid, err)
			}
			if !changed {
				continue
			}
			if _, err := tx.ExecContext(ctx, `UPDATE `+t.Name+` SET doc = ? WHERE rowid = ?`, doc, r.rowid); err != nil {
				return err
			}
		}
		if len(read) < batch {
			return nil
		}
		after = read[len(read)-1].rowid
	}
}

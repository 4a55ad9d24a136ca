package sqlite

import (
	"context"
	"database/sql"
	"time"
)

// CheckWrite reports whether the store takes writes, for readiness: it
// fails for a few seconds after a write failed as unavailable (a full disk
// still rewrites a row in place while inserts fail), and otherwise rewrites
// node's heartbeat row, at most every two seconds. It never holds up
// registrations: the heartbeat is one small write in a group commit.
func (db *DB) CheckWrite(ctx context.Context, node string) error {
	return db.health.Check(ctx, func(ctx context.Context) error {
		return db.exec(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`INSERT INTO heartbeats (node, at) VALUES (?, ?) ON CONFLICT (node) DO UPDATE SET at = excluded.at`, node, time.Now().UnixNano())
			return err
		})
	})
}

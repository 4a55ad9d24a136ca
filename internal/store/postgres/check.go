package postgres

import (
	"context"
	"time"
)

// CheckWrite reports whether the store takes writes, for readiness: it
// fails for a few seconds after a write failed as unavailable (a full disk,
// a primary turned standby, a lost connection), and otherwise rewrites
// node's heartbeat row, at most every two seconds.
func (db *DB) CheckWrite(ctx context.Context, node string) error {
	return db.health.Check(ctx, func(ctx context.Context) error {
		_, err := db.pool.Exec(ctx, `INSERT INTO heartbeats (node, at) VALUES ($1, $2) ON CONFLICT (node) DO UPDATE SET at = excluded.at`, node, time.Now().UnixNano())
		return db.observe(ctx, translate(err))
	})
}

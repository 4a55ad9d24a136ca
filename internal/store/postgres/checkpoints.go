package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// EventCheckpoint returns the checkpoint of a named consumer of a hub's
// event log (hub in any case): the last sequence number it is done with;
// ok is false when it has none.
func (db *DB) EventCheckpoint(ctx context.Context, hub, consumer string) (seq int64, ok bool, err error) {
	err = db.pool.QueryRow(ctx, `SELECT seq FROM hub_event_checkpoints WHERE hub = $1 AND consumer = $2`, dps.FoldID(hub), consumer).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, translate(err)
	}
	return seq, true, nil
}

// SetEventCheckpoint stores a consumer's checkpoint (forward or back).
func (db *DB) SetEventCheckpoint(ctx context.Context, hub, consumer string, seq int64, now time.Time) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO hub_event_checkpoints (hub, consumer, seq, updated) VALUES ($1, $2, $3, $4)
		ON CONFLICT (hub, consumer) DO UPDATE SET seq = excluded.seq, updated = excluded.updated`,
		dps.FoldID(hub), consumer, seq, docs.Nanos(now))
	return translate(err)
}

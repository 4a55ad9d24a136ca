package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// EventCheckpoint returns the checkpoint of a named consumer of a hub's
// event log (hub in any case): the last sequence number it is done with;
// ok is false when it has none.
func (db *DB) EventCheckpoint(ctx context.Context, hub, consumer string) (seq int64, ok bool, err error) {
	st, err := db.stmt(ctx, `SELECT seq FROM hub_event_checkpoints WHERE hub = ? AND consumer = ?`)
	if err != nil {
		return 0, false, err
	}
	err = st.QueryRowContext(ctx, dps.FoldID(hub), consumer).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, translate(err)
	}
	return seq, true, nil
}

// SetEventCheckpoint stores a consumer's checkpoint (forward or back).
func (db *DB) SetEventCheckpoint(ctx context.Context, hub, consumer string, seq int64, now time.Time) error {
	return db.exec(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO hub_event_checkpoints (hub, consumer, seq, updated) VALUES (?, ?, ?, ?)
			ON CONFLICT (hub, consumer) DO UPDATE SET seq = excluded.seq, updated = excluded.updated`,
			dps.FoldID(hub), consumer, seq, docs.Nanos(now))
		return err
	})
}

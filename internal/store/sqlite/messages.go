package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// AppendMessages appends messages to their hubs' event logs (several hubs
// in one call allowed) and returns them as stored: each with the next Seq
// of its hub, in the order given, and its Enqueued time in UTC (the time
// of the append when it was not set). The messages are durable when it
// returns, all of them or (on an error) none. A message without a hub or
// a device is refused (KindInvalid) before anything is written.
func (db *DB) AppendMessages(ctx context.Context, msgs []dps.Message) ([]dps.Message, error) {
	hubs, err := docs.MessageHubs(msgs)
	if err != nil || len(msgs) == 0 {
		return nil, err
	}
	var out []dps.Message
	err = db.exec(ctx, func(tx *sql.Tx) error {
		last := make(map[string]int64, len(hubs))
		for _, h := range hubs {
			var l int64
			if err := db.txQueryRow(tx, qAdvanceMessageSeq, h.Hub, h.N).Scan(&l); err != nil {
				return err
			}
			last[h.Hub] = l
		}
		seq := docs.Sequence(msgs, last, hubs, time.Now().UTC())
		for _, m := range seq {
			doc, err := docs.EncodeMessage(m)
			if err != nil {
				return err
			}
			if _, err := db.txExec(tx, qInsertMessage, dps.FoldID(m.Hub), m.Seq, m.Enqueued.UnixNano(), doc); err != nil {
				return err
			}
		}
		out = seq
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Messages returns up to limit messages of a hub's event log (hub in any
// case) with a Seq greater than after, in order; limit ≤ 0 means
// docs.DefaultPageSize.
func (db *DB) Messages(ctx context.Context, hub string, after int64, limit int) ([]dps.Message, error) {
	return listDocs(ctx, db, docs.DecodeMessage, "hub messages", `SELECT doc FROM hub_messages WHERE hub = ? AND seq > ? ORDER BY seq LIMIT ?`,
		dps.FoldID(hub), after, docs.PageSize(limit))
}

// LastMessageSeq returns the last Seq given to a message of a hub (0 when
// it never had one), whether or not that message was deleted since.
func (db *DB) LastMessageSeq(ctx context.Context, hub string) (int64, error) {
	st, err := db.stmt(ctx, `SELECT last FROM hub_message_seqs WHERE hub = ?`)
	if err != nil {
		return 0, err
	}
	var last int64
	if err := st.QueryRowContext(ctx, dps.FoldID(hub)).Scan(&last); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, translate(fmt.Errorf("sqlite: read the last message seq: %w", err))
	}
	return last, nil
}

// DeleteMessagesBefore deletes messages from the start of a hub's log (hub
// in any case): those enqueued before t, in Seq order, up to the first one
// enqueued at t or later, at most Options.PruneBatch (by default
// docs.DefaultPruneBatch) of them, and reports how many it deleted; the
// caller calls it again while it deletes a full batch. Only a prefix of
// the log goes, so a reader never finds a gap after the first message it
// reads: a message enqueued before t that follows a later one (appended
// concurrently on a clock behind) stays until that one goes.
func (db *DB) DeleteMessagesBefore(ctx context.Context, hub string, t time.Time) (int64, error) {
	return db.deleteMessages(ctx, `WITH head AS (SELECT seq, enqueued FROM hub_messages WHERE hub = ?1 ORDER BY seq LIMIT ?3)
		DELETE FROM hub_messages WHERE hub = ?1 AND seq IN (
			SELECT seq FROM head WHERE seq < COALESCE((SELECT MIN(seq) FROM head WHERE enqueued >= ?2), 9223372036854775807))`,
		dps.FoldID(hub), t.UnixNano(), db.pruneBatch)
}

// TrimMessages deletes the oldest messages of a hub's log beyond its
// newest keep positions (the messages with a Seq up to LastMessageSeq −
// keep), up to Options.PruneBatch of them, oldest first, and reports how
// many it deleted; the caller calls it again while it deletes a full
// batch.
func (db *DB) TrimMessages(ctx context.Context, hub string, keep int64) (int64, error) {
	h := dps.FoldID(hub)
	return db.deleteMessages(ctx, `DELETE FROM hub_messages WHERE rowid IN (
		SELECT rowid FROM hub_messages WHERE hub = ? AND seq <= (SELECT last FROM hub_message_seqs WHERE hub = ?) - ? ORDER BY seq LIMIT ?)`,
		h, h, max(keep, 0), db.pruneBatch)
}

func (db *DB) deleteMessages(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := db.exec(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

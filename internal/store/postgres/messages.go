package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// AppendMessages appends messages to their hubs' event logs (several hubs
// in one call allowed) and returns them as stored: each with the next Seq
// of its hub, in the order given, and its Enqueued time in UTC (the time
// of the append when it was not set). The messages are durable when it
// returns, all of them or (on an error) none. A message without a hub or
// a device is refused (KindInvalid) before anything is written.
//
// A hub's counter row stays locked by the appending transaction until it
// commits: appends to one hub from any number of nodes commit one after
// the other in Seq order, so a reader that has read up to Seq n never
// later finds a message with a smaller Seq. The hubs are taken in the
// order of their names, so appends to several hubs cannot deadlock.
func (db *DB) AppendMessages(ctx context.Context, msgs []dps.Message) ([]dps.Message, error) {
	hubs, err := docs.MessageHubs(msgs)
	if err != nil || len(msgs) == 0 {
		return nil, err
	}
	var out []dps.Message
	err = db.tx(ctx, func(tx pgx.Tx) error {
		last := make(map[string]int64, len(hubs))
		for _, h := range hubs {
			var l int64
			if err := tx.QueryRow(ctx, `INSERT INTO hub_message_seqs (hub, last) VALUES ($1, $2)
				ON CONFLICT (hub) DO UPDATE SET last = hub_message_seqs.last + excluded.last RETURNING last`, h.Hub, h.N).Scan(&l); err != nil {
				return err
			}
			last[h.Hub] = l
		}
		seq := docs.Sequence(msgs, last, hubs, time.Now().UTC())
		hub, pos, enqueued, doc := make([]string, len(seq)), make([]int64, len(seq)), make([]int64, len(seq)), make([]string, len(seq))
		for i, m := range seq {
			b, err := docs.EncodeMessage(m)
			if err != nil {
				return err
			}
			hub[i], pos[i], enqueued[i], doc[i] = dps.FoldID(m.Hub), m.Seq, m.Enqueued.UnixNano(), string(b)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO hub_messages (hub, seq, enqueued, doc)
			SELECT h, s, e, d::json FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS m (h, s, e, d)`, hub, pos, enqueued, doc); err != nil {
			return err
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
	return listDocs(ctx, db.pool, docs.DecodeMessage, "hub messages", `SELECT doc FROM hub_messages WHERE hub = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
		dps.FoldID(hub), after, docs.PageSize(limit))
}

// LastMessageSeq returns the last Seq given to a message of a hub (0 when
// it never had one), whether or not that message was deleted since.
func (db *DB) LastMessageSeq(ctx context.Context, hub string) (int64, error) {
	var last int64
	err := db.pool.QueryRow(ctx, `SELECT last FROM hub_message_seqs WHERE hub = $1`, dps.FoldID(hub)).Scan(&last)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, translate(err)
	}
	return last, nil
}

// DeleteMessagesBefore deletes messages from the start of a hub's log (hub
// in any case): those enqueued before t, in Seq order, up to the first one
// enqueued at t or later, at most Options.PruneBatch (by default
// docs.DefaultPruneBatch) of them, and reports how many it deleted; the
// caller calls it again while it deletes a full batch. Only a prefix of
// the log goes, so a reader never finds a gap after the first message it
// reads: a message enqueued before t that follows a later one (appended on
// a node whose clock is behind) stays until that one goes.
func (db *DB) DeleteMessagesBefore(ctx context.Context, hub string, t time.Time) (int64, error) {
	tag, err := db.pool.Exec(ctx, `WITH head AS (SELECT seq, enqueued FROM hub_messages WHERE hub = $1 ORDER BY seq LIMIT $3)
		DELETE FROM hub_messages WHERE hub = $1 AND seq IN (
			SELECT seq FROM head WHERE seq < COALESCE((SELECT MIN(seq) FROM head WHERE enqueued >= $2), 9223372036854775807))`,
		dps.FoldID(hub), t.UnixNano(), db.pruneBatch)
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}

// TrimMessages deletes the oldest messages of a hub's log beyond its
// newest keep positions (the messages with a Seq up to LastMessageSeq −
// keep), up to Options.PruneBatch of them, oldest first, and reports how
// many it deleted; the caller calls it again while it deletes a full
// batch.
func (db *DB) TrimMessages(ctx context.Context, hub string, keep int64) (int64, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM hub_messages WHERE hub = $1 AND seq IN (
		SELECT seq FROM hub_messages WHERE hub = $1 AND seq <= (SELECT last FROM hub_message_seqs WHERE hub = $1) - $2 ORDER BY seq LIMIT $3)`,
		dps.FoldID(hub), max(keep, 0), db.pruneBatch)
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}

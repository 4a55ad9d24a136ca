package postgres

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// The registration-events feed (migration 0012), shared by every node on
// the database.

// AppendRegistrationEvents appends events to the feed and returns them as
// stored: each with the next Seq, in the order given, and its Time in UTC
// (the time of the append when it was not set). All are durable when it
// returns, or (on an error) none.
//
// The counter row (registration_event_seq) stays locked by the appending
// transaction until it commits: appends from any number of nodes commit
// one after the other in Seq order, so a reader that has read up to Seq n
// never later finds an event with a smaller Seq.
func (db *DB) AppendRegistrationEvents(ctx context.Context, events []dps.RegistrationEvent) ([]dps.RegistrationEvent, error) {
	if len(events) == 0 {
		return nil, nil
	}
	var out []dps.RegistrationEvent
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var last int64
		if err := tx.QueryRow(ctx, `UPDATE registration_event_seq SET last = last + $1 WHERE id = 1 RETURNING last`, len(events)).Scan(&last); err != nil {
			return err
		}
		seq := docs.SequenceEvents(events, last-int64(len(events)), time.Now().UTC())
		n := len(seq)
		pos, at, kind, reg, group, doc := make([]int64, n), make([]int64, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		for i, e := range seq {
			b, err := docs.EncodeRegistrationEvent(e)
			if err != nil {
				return err
			}
			pos[i], at[i], kind[i], reg[i], group[i], doc[i] = e.Seq, e.Time.UnixNano(), string(e.Kind), dps.FoldID(e.RegistrationID), dps.FoldID(e.EnrollmentGroup), string(b)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO registration_events (seq, time, kind, registration_id, group_id, doc)
			SELECT s, t, k, r, g, d::json FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) AS e (s, t, k, r, g, d)`,
			pos, at, kind, reg, group, doc); err != nil {
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

// RegistrationEvents returns up to limit events of the feed with a Seq
// greater than after that match f, in Seq order; limit ≤ 0 means
// docs.DefaultPageSize.
func (db *DB) RegistrationEvents(ctx context.Context, after int64, limit int, f dps.RegistrationEventFilter) ([]dps.RegistrationEvent, error) {
	q, args := docs.RegistrationEventsQuery(after, limit, f, func(n int) string { return "$" + strconv.Itoa(n) })
	return listDocs(ctx, db.pool, docs.DecodeRegistrationEvent, "registration events", q, args...)
}

// LatestRegistrationEvents returns up to limit events of the feed with a
// Seq less than before (≤ 0: from the newest) that match f, newest first;
// limit ≤ 0 means docs.DefaultPageSize.
func (db *DB) LatestRegistrationEvents(ctx context.Context, before int64, limit int, f dps.RegistrationEventFilter) ([]dps.RegistrationEvent, error) {
	q, args := docs.LatestRegistrationEventsQuery(before, limit, f, func(n int) string { return "$" + strconv.Itoa(n) })
	return listDocs(ctx, db.pool, docs.DecodeRegistrationEvent, "registration events", q, args...)
}

// DeleteRegistrationEventsBefore deletes events of the feed that happened
// before t, oldest first, at most Options.PruneBatch of them, and reports
// how many it deleted; the caller calls it again while it deletes a full
// batch.
func (db *DB) DeleteRegistrationEventsBefore(ctx context.Context, t time.Time) (int64, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM registration_events WHERE seq IN (
		SELECT seq FROM registration_events WHERE time < $1 ORDER BY seq LIMIT $2)`, t.UnixNano(), db.pruneBatch)
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}

// TrimRegistrationEvents deletes the oldest events of the feed beyond its
// newest keep positions (a Seq up to the last one given − keep), at most
// Options.PruneBatch of them, and reports how many it deleted; the caller
// calls it again while it deletes a full batch.
func (db *DB) TrimRegistrationEvents(ctx context.Context, keep int64) (int64, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM registration_events WHERE seq IN (
		SELECT seq FROM registration_events WHERE seq <= (SELECT last FROM registration_event_seq WHERE id = 1) - $1 ORDER BY seq LIMIT $2)`,
		max(keep, 0), db.pruneBatch)
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}

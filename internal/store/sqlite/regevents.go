package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// The registration-events feed (migration 0014). SQLite has one writer:
// events are appended, and so become visible, in Seq order.

// AppendRegistrationEvents appends events to the feed and returns them as
// stored: each with the next Seq, in the order given, and its Time in UTC
// (the time of the append when it was not set). All are durable when it
// returns, or (on an error) none.
func (db *DB) AppendRegistrationEvents(ctx context.Context, events []dps.RegistrationEvent) ([]dps.RegistrationEvent, error) {
	if len(events) == 0 {
		return nil, nil
	}
	var out []dps.RegistrationEvent
	err := db.exec(ctx, func(tx *sql.Tx) error {
		var last int64
		if err := tx.QueryRow(`SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'registration_events'), 0)`).Scan(&last); err != nil {
			return err
		}
		seq := docs.SequenceEvents(events, last, time.Now().UTC())
		for _, e := range seq {
			doc, err := docs.EncodeRegistrationEvent(e)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO registration_events (seq, time, kind, registration_id, group_id, doc) VALUES (?, ?, ?, ?, ?, ?)`,
				e.Seq, e.Time.UnixNano(), string(e.Kind), dps.FoldID(e.RegistrationID), dps.FoldID(e.EnrollmentGroup), doc); err != nil {
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

// RegistrationEvents returns up to limit events of the feed with a Seq
// greater than after that match f, in Seq order; limit ≤ 0 means
// docs.DefaultPageSize.
func (db *DB) RegistrationEvents(ctx context.Context, after int64, limit int, f dps.RegistrationEventFilter) ([]dps.RegistrationEvent, error) {
	q, args := docs.RegistrationEventsQuery(after, limit, f, func(int) string { return "?" })
	return listDocs(ctx, db, docs.DecodeRegistrationEvent, "registration events", q, args...)
}

// LatestRegistrationEvents returns up to limit events of the feed with a
// Seq less than before (≤ 0: from the newest) that match f, newest first;
// limit ≤ 0 means docs.DefaultPageSize.
func (db *DB) LatestRegistrationEvents(ctx context.Context, before int64, limit int, f dps.RegistrationEventFilter) ([]dps.RegistrationEvent, error) {
	q, args := docs.LatestRegistrationEventsQuery(before, limit, f, func(int) string { return "?" })
	return listDocs(ctx, db, docs.DecodeRegistrationEvent, "registration events", q, args...)
}

// DeleteRegistrationEventsBefore deletes events of the feed that happened
// before t, oldest first, at most Options.PruneBatch of them, and reports
// how many it deleted; the caller calls it again while it deletes a full
// batch.
func (db *DB) DeleteRegistrationEventsBefore(ctx context.Context, t time.Time) (int64, error) {
	return db.deleteMessages(ctx, `DELETE FROM registration_events WHERE seq IN (
		SELECT seq FROM registration_events WHERE time < ? ORDER BY seq LIMIT ?)`, t.UnixNano(), db.pruneBatch)
}

// TrimRegistrationEvents deletes the oldest events of the feed beyond its
// newest keep positions (a Seq up to the last one given − keep), at most
// Options.PruneBatch of them, and reports how many it deleted; the caller
// calls it again while it deletes a full batch.
func (db *DB) TrimRegistrationEvents(ctx context.Context, keep int64) (int64, error) {
	return db.deleteMessages(ctx, `DELETE FROM registration_events WHERE seq IN (
		SELECT seq FROM registration_events WHERE seq <= (SELECT seq FROM sqlite_sequence WHERE name = 'registration_events') - ? ORDER BY seq LIMIT ?)`,
		max(keep, 0), db.pruneBatch)
}

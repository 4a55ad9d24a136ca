package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// Message routes (internal/routing): checkpoints, leases, dead letters.
// Every change is a write through the writer; a checkpoint moves only in
// a transaction that finds the caller's lease current.

// ClaimRoute takes or renews node's lease on a hub's route until until,
// when the route is free, its lease ended by now, or node holds it
// already, and returns the route's state; ok is false (and the state the
// holder's) when another node holds a current lease. A route seen for the
// first time starts at the end of the hub's log: its checkpoint is the
// hub's LastMessageSeq then.
func (db *DB) ClaimRoute(ctx context.Context, hub, route, node string, now, until time.Time) (st dps.RouteState, ok bool, err error) {
	h, n := dps.FoldID(hub), docs.Nanos(now)
	err = db.exec(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO hub_routes (hub, route, checkpoint, updated)
			VALUES (?1, ?2, COALESCE((SELECT last FROM hub_message_seqs WHERE hub = ?1), 0), ?3) ON CONFLICT DO NOTHING`, h, route, n); err != nil {
			return err
		}
		res, err := tx.Exec(`UPDATE hub_routes SET owner = ?, lease_until = ? WHERE hub = ? AND route = ? AND (owner = ? OR lease_until <= ?)`,
			node, docs.Nanos(until), h, route, node, n)
		if err != nil {
			return err
		}
		c, err := res.RowsAffected()
		if err != nil {
			return err
		}
		ok = c == 1
		st, err = scanRoute(tx.QueryRow(routeColumns+` WHERE hub = ? AND route = ?`, h, route))
		return err
	})
	if err != nil {
		return dps.RouteState{}, false, err
	}
	return st, ok, nil
}

// AdvanceRoute moves a route's checkpoint on to checkpoint (never back)
// under node's lease current at now, and records lastError ("": the
// delivery succeeded; Updated becomes now). Without that lease it changes
// nothing: KindPrecondition.
func (db *DB) AdvanceRoute(ctx context.Context, hub, route, node string, checkpoint int64, lastError string, now time.Time) error {
	return db.exec(ctx, func(tx *sql.Tx) error {
		return advanceRoute(tx, dps.FoldID(hub), route, node, checkpoint, lastError, docs.Nanos(now))
	})
}

func advanceRoute(tx *sql.Tx, hub, route, node string, checkpoint int64, lastError string, now int64) error {
	q := `UPDATE hub_routes SET checkpoint = MAX(checkpoint, ?), updated = ? WHERE hub = ? AND route = ? AND owner = ? AND lease_until > ?`
	args := []any{checkpoint, now, hub, route, node, now}
	if lastError != "" {
		q = `UPDATE hub_routes SET checkpoint = MAX(checkpoint, ?), last_error = ?, last_error_at = ? WHERE hub = ? AND route = ? AND owner = ? AND lease_until > ?`
		args = []any{checkpoint, lastError, now, hub, route, node, now}
	}
	res, err := tx.Exec(q, args...)
	if err != nil {
		return err
	}
	if c, err := res.RowsAffected(); err != nil {
		return err
	} else if c != 1 {
		return docs.RouteLeaseLost(hub, route, node)
	}
	return nil
}

// ReleaseRoute ends node's lease on a route (a node stopping), so that
// another node takes it over at once; without that lease it does nothing.
func (db *DB) ReleaseRoute(ctx context.Context, hub, route, node string) error {
	return db.exec(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE hub_routes SET owner = '', lease_until = 0 WHERE hub = ? AND route = ? AND owner = ?`, dps.FoldID(hub), route, node)
		return err
	})
}

// Routes returns the state of every route of a hub the store knows, by
// name.
func (db *DB) Routes(ctx context.Context, hub string) ([]dps.RouteState, error) {
	rows, err := db.read.QueryContext(ctx, routeColumns+` WHERE hub = ? ORDER BY route`, dps.FoldID(hub))
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: list routes: %w", err))
	}
	defer rows.Close()
	var out []dps.RouteState
	for rows.Next() {
		st, err := scanRoute(rows)
		if err != nil {
			return nil, translate(fmt.Errorf("sqlite: list routes: %w", err))
		}
		out = append(out, st)
	}
	return out, translate(rows.Err())
}

// DeadLetterMessages records msgs (of one hub, in Seq order) as given up
// by a route for reason at now and moves its checkpoint on to the last of
// them, in one transaction under node's lease (else KindPrecondition and
// nothing written). A message dead-lettered again keeps its first record.
func (db *DB) DeadLetterMessages(ctx context.Context, hub, route, node string, msgs []dps.Message, reason string, now time.Time) error {
	if len(msgs) == 0 {
		return nil
	}
	h, n := dps.FoldID(hub), docs.Nanos(now)
	return db.exec(ctx, func(tx *sql.Tx) error {
		if err := advanceRoute(tx, h, route, node, msgs[len(msgs)-1].Seq, "", n); err != nil {
			return err
		}
		for _, m := range msgs {
			doc, err := docs.EncodeMessage(m)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO hub_route_dead_letters (hub, route, seq, at, reason, doc) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
				h, route, m.Seq, n, reason, doc); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeadLetters returns up to limit dead letters of a hub's route with a
// Seq greater than after, in Seq order; limit ≤ 0 means
// docs.DefaultPageSize.
func (db *DB) DeadLetters(ctx context.Context, hub, route string, after int64, limit int) ([]dps.DeadLetter, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT at, reason, doc FROM hub_route_dead_letters WHERE hub = ? AND route = ? AND seq > ? ORDER BY seq LIMIT ?`,
		dps.FoldID(hub), route, after, docs.PageSize(limit))
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: list dead letters: %w", err))
	}
	defer rows.Close()
	var out []dps.DeadLetter
	for rows.Next() {
		var at int64
		var doc []byte
		d := dps.DeadLetter{Route: route}
		if err := rows.Scan(&at, &d.Reason, &doc); err != nil {
			return nil, translate(fmt.Errorf("sqlite: list dead letters: %w", err))
		}
		if d.Message, err = docs.DecodeMessage(doc); err != nil {
			return nil, fmt.Errorf("sqlite: decode dead letter: %w", err)
		}
		d.At = docs.FromNanos(at)
		out = append(out, d)
	}
	return out, translate(rows.Err())
}

// DeleteDeadLettersBefore deletes up to Options.PruneBatch dead letters
// recorded before t and reports how many it deleted.
func (db *DB) DeleteDeadLettersBefore(ctx context.Context, t time.Time) (int64, error) {
	return db.deleteMessages(ctx, `DELETE FROM hub_route_dead_letters WHERE rowid IN (SELECT rowid FROM hub_route_dead_letters WHERE at < ? LIMIT ?)`,
		docs.Nanos(t), db.pruneBatch)
}

// TrimDeadLetters deletes a hub's route's oldest dead letters (lowest Seq)
// beyond its newest keep, up to Options.PruneBatch of them, and reports how
// many it deleted; the caller calls it again while it deletes a full batch.
// keep ≤ 0 keeps none.
func (db *DB) TrimDeadLetters(ctx context.Context, hub, route string, keep int) (int64, error) {
	return db.deleteMessages(ctx, `DELETE FROM hub_route_dead_letters WHERE hub = ?1 AND route = ?2 AND seq IN (
		SELECT seq FROM hub_route_dead_letters WHERE hub = ?1 AND route = ?2 AND seq <= (
			SELECT seq FROM hub_route_dead_letters WHERE hub = ?1 AND route = ?2 ORDER BY seq DESC LIMIT 1 OFFSET ?3)
		ORDER BY seq LIMIT ?4)`, dps.FoldID(hub), route, max(keep, 0), db.pruneBatch)
}

// DeleteRoutedMessagesBefore is DeleteMessagesBefore that keeps every
// message after through (the slowest route's checkpoint): it deletes only
// messages with a Seq up to through.
func (db *DB) DeleteRoutedMessagesBefore(ctx context.Context, hub string, t time.Time, through int64) (int64, error) {
	return db.deleteMessages(ctx, `WITH head AS (SELECT seq, enqueued FROM hub_messages WHERE hub = ?1 AND seq <= ?4 ORDER BY seq LIMIT ?3)
		DELETE FROM hub_messages WHERE hub = ?1 AND seq IN (
			SELECT seq FROM head WHERE seq < COALESCE((SELECT MIN(seq) FROM head WHERE enqueued >= ?2), 9223372036854775807))`,
		dps.FoldID(hub), t.UnixNano(), db.pruneBatch, through)
}

const routeColumns = `SELECT hub, route, checkpoint, owner, lease_until, last_error, last_error_at, updated FROM hub_routes`

type scanner interface{ Scan(dest ...any) error }

func scanRoute(r scanner) (dps.RouteState, error) {
	var st dps.RouteState
	var until, errAt, updated int64
	if err := r.Scan(&st.Hub, &st.Route, &st.Checkpoint, &st.Owner, &until, &st.LastError, &errAt, &updated); err != nil {
		return dps.RouteState{}, err
	}
	st.LeaseUntil, st.LastErrorAt, st.Updated = docs.FromNanos(until), docs.FromNanos(errAt), docs.FromNanos(updated)
	return st, nil
}

package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// The built-in hubs' cloud-to-device queues (hub_c2d_messages). An enqueue
// holds a transaction-scoped advisory lock on its device while it counts
// and inserts, so the depth limit holds for concurrent sends from any
// number of nodes; a receive locks its row (FOR UPDATE SKIP LOCKED), so two
// concurrent receives never get the same message.

// lockQueue takes the advisory lock of a device's queue in tx.
func lockQueue(ctx context.Context, tx pgx.Tx, hub, dev string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('c2d/' || $1 || '/' || $2, 0))`, hub, dev)
	return err
}

// EnqueueCloudMessage appends m to its device's queue and returns it as
// stored, with its Seq. m.Enqueued is the time of the send (the time the
// depth is counted at); messages of the device that expired by then are
// dead-lettered first. When max messages that have not expired are
// queued already, nothing is written: KindForbidden with
// dps.CodeQueueDepthExceeded.
func (db *DB) EnqueueCloudMessage(ctx context.Context, m dps.CloudMessage, max int) (dps.CloudMessage, error) {
	props, err := docs.EncodeCloudProperties(m.Properties)
	if err != nil {
		return m, err
	}
	hub, dev, now := dps.FoldID(m.Hub), dps.FoldID(m.DeviceID), docs.Nanos(m.Enqueued)
	m.LockToken, m.LockedUntil, m.DeliveryCount = "", time.Time{}, 0
	var pprops *string
	if props != nil {
		s := string(props)
		pprops = &s
	}
	err = db.tx(ctx, func(tx pgx.Tx) error {
		if err := lockQueue(ctx, tx, hub, dev); err != nil {
			return err
		}
		if _, err := deadLetter(ctx, tx, `hub = $1 AND device_id = $2 AND expiry <= $3`, dps.FeedbackExpired, now, hub, dev, now); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM hub_c2d_messages WHERE hub = $1 AND device_id = $2`, hub, dev).Scan(&n); err != nil {
			return err
		}
		if n >= max {
			return docs.QueueFull(m.DeviceID, max)
		}
		return tx.QueryRow(ctx, `INSERT INTO hub_c2d_messages (hub, device_id, enqueued, expiry, message_id, correlation_id, user_id, ack,
			content_type, content_encoding, properties, body, device_name, generation_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING seq`,
			hub, dev, now, docs.Nanos(m.Expiry), m.MessageID, m.CorrelationID, m.UserID, m.Ack, m.ContentType, m.ContentEncoding,
			pprops, m.Body, m.DeviceID, m.GenerationID).Scan(&m.Seq)
	})
	if err != nil {
		return dps.CloudMessage{}, err
	}
	return m, nil
}

// ReceiveCloudMessage locks the oldest message of a device's queue that
// is deliverable at now (not expired, not locked) with lockToken until
// lockUntil, and returns it; ok is false when there is none. The device's
// messages that expired by now are dead-lettered first: an expired
// message is never delivered.
func (db *DB) ReceiveCloudMessage(ctx context.Context, hub, deviceID, lockToken string, now, lockUntil time.Time) (m dps.CloudMessage, ok bool, err error) {
	h, dev, n := dps.FoldID(hub), dps.FoldID(deviceID), docs.Nanos(now)
	err = db.tx(ctx, func(tx pgx.Tx) error {
		if _, err := deadLetter(ctx, tx, `hub = $1 AND device_id = $2 AND expiry <= $3`, dps.FeedbackExpired, n, h, dev, n); err != nil {
			return err
		}
		var enq, exp, until int64
		var props *string
		err := tx.QueryRow(ctx, `UPDATE hub_c2d_messages SET lock_token = $1, locked_until = $2 WHERE seq = (
			SELECT seq FROM hub_c2d_messages WHERE hub = $3 AND device_id = $4 AND locked_until <= $5 AND expiry > $5
			ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
			RETURNING seq, enqueued, expiry, lock_token, locked_until, delivery_count, message_id, correlation_id, user_id, ack,
			content_type, content_encoding, properties, body, generation_id`,
			lockToken, docs.Nanos(lockUntil), h, dev, n).Scan(&m.Seq, &enq, &exp, &m.LockToken, &until, &m.DeliveryCount,
			&m.MessageID, &m.CorrelationID, &m.UserID, &m.Ack, &m.ContentType, &m.ContentEncoding, &props, &m.Body, &m.GenerationID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if props != nil {
			if m.Properties, err = docs.DecodeCloudProperties([]byte(*props)); err != nil {
				return err
			}
		}
		m.Hub, m.DeviceID, m.Enqueued, m.Expiry, m.LockedUntil = hub, deviceID, docs.FromNanos(enq), docs.FromNanos(exp), docs.FromNanos(until)
		ok = true
		return nil
	})
	if err != nil || !ok {
		return dps.CloudMessage{}, false, err
	}
	return m, true, nil
}

// SettleCloudMessage ends the delivery of the device's message locked
// with lockToken, as how says (dps.Settlement); an abandon that reaches
// maxDeliveries dead-letters the message. A lock token that is not the
// current lock of one of the device's messages, or whose lock ended
// before now, is KindPrecondition with dps.CodeMessageLockLost.
func (db *DB) SettleCloudMessage(ctx context.Context, hub, deviceID, lockToken string, how dps.Settlement, now time.Time, maxDeliveries int) error {
	h, dev, n := dps.FoldID(hub), dps.FoldID(deviceID), docs.Nanos(now)
	return db.tx(ctx, func(tx pgx.Tx) error {
		var seq int64
		var count int
		err := tx.QueryRow(ctx, `SELECT seq, delivery_count FROM hub_c2d_messages
			WHERE hub = $1 AND device_id = $2 AND lock_token = $3 AND lock_token <> '' AND locked_until > $4 FOR UPDATE`,
			h, dev, lockToken, n).Scan(&seq, &count)
		if errors.Is(err, pgx.ErrNoRows) {
			return docs.LockLost()
		}
		if err != nil {
			return err
		}
		var outcome dps.FeedbackStatus
		switch how {
		case dps.SettleAbandon:
			if count+1 < maxDeliveries {
				_, err = tx.Exec(ctx, `UPDATE hub_c2d_messages SET lock_token = '', locked_until = 0, delivery_count = delivery_count + 1 WHERE seq = $1`, seq)
				return err
			}
			outcome = dps.FeedbackDeliveryCountExceeded
		case dps.SettleRelease:
			_, err = tx.Exec(ctx, `UPDATE hub_c2d_messages SET lock_token = '', locked_until = 0 WHERE seq = $1`, seq)
			return err
		case dps.SettleComplete:
			outcome = dps.FeedbackSuccess
		case dps.SettleReject:
			outcome = dps.FeedbackRejected
		default:
			return dps.Errorf(dps.KindInvalid, "unknown settlement %v", how)
		}
		_, err = deadLetter(ctx, tx, `seq = $1`, outcome, n, seq)
		return err
	})
}

// PurgeCloudMessages deletes every message of a device's queue and
// reports how many there were; those whose sender asked for negative
// feedback get a Purged record at now.
func (db *DB) PurgeCloudMessages(ctx context.Context, hub, deviceID string, now time.Time) (int, error) {
	var n int
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var err error
		n, err = deadLetter(ctx, tx, `hub = $1 AND device_id = $2`, dps.FeedbackPurged, docs.Nanos(now), dps.FoldID(hub), dps.FoldID(deviceID))
		return err
	})
	return n, err
}

// CloudQueueDepth counts the messages of a device's queue that have not
// expired at now, locked ones included.
func (db *DB) CloudQueueDepth(ctx context.Context, hub, deviceID string, now time.Time) (int, error) {
	var n int
	err := db.pool.QueryRow(ctx, `SELECT count(*) FROM hub_c2d_messages WHERE hub = $1 AND device_id = $2 AND expiry > $3`,
		dps.FoldID(hub), dps.FoldID(deviceID), docs.Nanos(now)).Scan(&n)
	return n, translate(err)
}

// deleteCloudQueue deletes a device's queue in tx, with its identity.
func deleteCloudQueue(ctx context.Context, tx pgx.Tx, hub, deviceID string) error {
	_, err := tx.Exec(ctx, `DELETE FROM hub_c2d_messages WHERE hub = $1 AND device_id = $2`, dps.FoldID(hub), dps.FoldID(deviceID))
	return err
}

// deadLetter removes the queued messages matching where (its parameters
// $1… are args) with the outcome status at now (Unix nanoseconds) and
// reports how many: those whose sender asked for that feedback
// (iothub-ack) leave a feedback record. One statement, so that two
// transactions removing the same message record its feedback once.
func deadLetter(ctx context.Context, tx pgx.Tx, where string, status dps.FeedbackStatus, now int64, args ...any) (int, error) {
	acks := dps.FeedbackAcks(status)
	k := len(args)
	fargs := append(append([]any{}, args...), now, string(status), status.Description(), acks[0], acks[1])
	var n int
	err := tx.QueryRow(ctx, fmt.Sprintf(`WITH gone AS (
			DELETE FROM hub_c2d_messages WHERE %s RETURNING seq, hub, message_id, ack, device_id, device_name, generation_id),
		fb AS (INSERT INTO hub_c2d_feedback (hub, original_message_id, enqueued, status, description, device_id, generation_id)
			SELECT hub, message_id, $%d, $%d, $%d, CASE WHEN device_name = '' THEN device_id ELSE device_name END, generation_id
			FROM gone WHERE ack IN ($%d, $%d) ORDER BY seq)
		SELECT count(*) FROM gone`, where, k+1, k+2, k+3, k+4, k+5), fargs...).Scan(&n)
	return n, err
}

// ExpireCloudMessages dead-letters up to limit messages, of any queue,
// that expired by now (their Expired feedback included) and reports how
// many: the sweep that gives a device that never asks for its messages
// the feedback of their expiry. Messages another transaction holds are
// left to the next sweep.
func (db *DB) ExpireCloudMessages(ctx context.Context, now time.Time, limit int) (int, error) {
	var n int
	err := db.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT seq FROM hub_c2d_messages WHERE expiry <= $1 ORDER BY expiry LIMIT $2 FOR UPDATE SKIP LOCKED`, docs.Nanos(now), limit)
		if err != nil {
			return err
		}
		seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		n, err = deadLetter(ctx, tx, `seq = ANY($1)`, dps.FeedbackExpired, docs.Nanos(now), seqs)
		return err
	})
	return n, err
}

// ReceiveCloudFeedback locks up to max of the hub's feedback records that
// are not locked at now with lockToken until lockUntil and returns them,
// oldest first (none: an empty batch).
func (db *DB) ReceiveCloudFeedback(ctx context.Context, hub, lockToken string, now, lockUntil time.Time, max int) ([]dps.CloudFeedback, error) {
	var out []dps.CloudFeedback
	err := db.tx(ctx, func(tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, `UPDATE hub_c2d_feedback SET lock_token = $1, locked_until = $2 WHERE seq IN (
			SELECT seq FROM hub_c2d_feedback WHERE hub = $3 AND locked_until <= $4 ORDER BY seq LIMIT $5 FOR UPDATE SKIP LOCKED)
			RETURNING seq, original_message_id, enqueued, status, description, device_id, generation_id`,
			lockToken, docs.Nanos(lockUntil), dps.FoldID(hub), docs.Nanos(now), max)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			f := dps.CloudFeedback{Hub: hub}
			var enq int64
			var status string
			if err := rows.Scan(&f.Seq, &f.OriginalMessageID, &enq, &status, &f.Description, &f.DeviceID, &f.GenerationID); err != nil {
				return err
			}
			f.Enqueued, f.Status = docs.FromNanos(enq), dps.FeedbackStatus(status)
			out = append(out, f)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b dps.CloudFeedback) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// SettleCloudFeedback ends the lock of a batch of the hub's feedback:
// complete deletes its records, otherwise (abandon) they may be received
// again at once. A lock token that locks no record at now is
// KindPrecondition with dps.CodeMessageLockLost.
func (db *DB) SettleCloudFeedback(ctx context.Context, hub, lockToken string, complete bool, now time.Time) error {
	return db.tx(ctx, func(tx pgx.Tx) error {
		q := `UPDATE hub_c2d_feedback SET lock_token = '', locked_until = 0`
		if complete {
			q = `DELETE FROM hub_c2d_feedback`
		}
		tag, err := tx.Exec(ctx, q+` WHERE hub = $1 AND lock_token = $2 AND lock_token <> '' AND locked_until > $3`, dps.FoldID(hub), lockToken, docs.Nanos(now))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return docs.LockLost()
		}
		return nil
	})
}

// DeleteCloudFeedbackBefore deletes the feedback records of every hub
// whose outcome happened before t (nobody read them in time) and reports
// how many went.
func (db *DB) DeleteCloudFeedbackBefore(ctx context.Context, t time.Time) (int64, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM hub_c2d_feedback WHERE enqueued < $1`, docs.Nanos(t))
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}

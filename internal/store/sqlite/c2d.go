package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// The built-in hubs' cloud-to-device queues (hub_c2d_messages). Every
// operation that changes a queue is a write through the writer, so the
// depth limit and the locks need no more than its transaction.

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
	err = db.exec(ctx, func(tx *sql.Tx) error {
		if err := deadLetter(tx, `hub = ? AND device_id = ? AND expiry <= ?`, dps.FeedbackExpired, now, hub, dev, now); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM hub_c2d_messages WHERE hub = ? AND device_id = ?`, hub, dev).Scan(&n); err != nil {
			return err
		}
		if n >= max {
			return docs.QueueFull(m.DeviceID, max)
		}
		return tx.QueryRow(`INSERT INTO hub_c2d_messages (hub, device_id, enqueued, expiry, message_id, correlation_id, user_id, ack,
			content_type, content_encoding, properties, body, device_name, generation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
			hub, dev, now, docs.Nanos(m.Expiry), m.MessageID, m.CorrelationID, m.UserID, m.Ack, m.ContentType, m.ContentEncoding,
			props, m.Body, m.DeviceID, m.GenerationID).Scan(&m.Seq)
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
	err = db.exec(ctx, func(tx *sql.Tx) error {
		if err := deadLetter(tx, `hub = ? AND device_id = ? AND expiry <= ?`, dps.FeedbackExpired, n, h, dev, n); err != nil {
			return err
		}
		var enq, exp, until int64
		var props []byte
		err := tx.QueryRow(`UPDATE hub_c2d_messages SET lock_token = ?, locked_until = ? WHERE seq = (
			SELECT seq FROM hub_c2d_messages WHERE hub = ? AND device_id = ? AND locked_until <= ? ORDER BY seq LIMIT 1)
			RETURNING seq, enqueued, expiry, lock_token, locked_until, delivery_count, message_id, correlation_id, user_id, ack,
			content_type, content_encoding, properties, body, generation_id`,
			lockToken, docs.Nanos(lockUntil), h, dev, n).Scan(&m.Seq, &enq, &exp, &m.LockToken, &until, &m.DeliveryCount,
			&m.MessageID, &m.CorrelationID, &m.UserID, &m.Ack, &m.ContentType, &m.ContentEncoding, &props, &m.Body, &m.GenerationID)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if m.Properties, err = docs.DecodeCloudProperties(props); err != nil {
			return err
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
	return db.exec(ctx, func(tx *sql.Tx) error {
		var seq int64
		var count int
		err := tx.QueryRow(`SELECT seq, delivery_count FROM hub_c2d_messages WHERE hub = ? AND device_id = ? AND lock_token = ? AND lock_token <> '' AND locked_until > ?`,
			h, dev, lockToken, n).Scan(&seq, &count)
		if errors.Is(err, sql.ErrNoRows) {
			return docs.LockLost()
		}
		if err != nil {
			return err
		}
		var outcome dps.FeedbackStatus
		switch how {
		case dps.SettleAbandon:
			if count+1 < maxDeliveries {
				_, err = tx.Exec(`UPDATE hub_c2d_messages SET lock_token = '', locked_until = 0, delivery_count = delivery_count + 1 WHERE seq = ?`, seq)
				return err
			}
			outcome = dps.FeedbackDeliveryCountExceeded
		case dps.SettleRelease:
			_, err = tx.Exec(`UPDATE hub_c2d_messages SET lock_token = '', locked_until = 0 WHERE seq = ?`, seq)
			return err
		case dps.SettleComplete:
			outcome = dps.FeedbackSuccess
		case dps.SettleReject:
			outcome = dps.FeedbackRejected
		default:
			return dps.Errorf(dps.KindInvalid, "unknown settlement %v", how)
		}
		return deadLetter(tx, `seq = ?`, outcome, n, seq)
	})
}

// PurgeCloudMessages deletes every message of a device's queue and
// reports how many there were; those whose sender asked for negative
// feedback get a Purged record at now.
func (db *DB) PurgeCloudMessages(ctx context.Context, hub, deviceID string, now time.Time) (int, error) {
	var n int64
	err := db.exec(ctx, func(tx *sql.Tx) error {
		h, dev := dps.FoldID(hub), dps.FoldID(deviceID)
		if err := tx.QueryRow(`SELECT count(*) FROM hub_c2d_messages WHERE hub = ? AND device_id = ?`, h, dev).Scan(&n); err != nil {
			return err
		}
		return deadLetter(tx, `hub = ? AND device_id = ?`, dps.FeedbackPurged, docs.Nanos(now), h, dev)
	})
	return int(n), err
}

// CloudQueueDepth counts the messages of a device's queue that have not
// expired at now, locked ones included.
func (db *DB) CloudQueueDepth(ctx context.Context, hub, deviceID string, now time.Time) (int, error) {
	st, err := db.stmt(ctx, `SELECT count(*) FROM hub_c2d_messages WHERE hub = ? AND device_id = ? AND expiry > ?`)
	if err != nil {
		return 0, err
	}
	var n int
	if err := st.QueryRowContext(ctx, dps.FoldID(hub), dps.FoldID(deviceID), docs.Nanos(now)).Scan(&n); err != nil {
		return 0, translate(err)
	}
	return n, nil
}

// deleteCloudQueue deletes a device's queue in tx, with its identity.
func deleteCloudQueue(tx *sql.Tx, hub, deviceID string) error {
	_, err := tx.Exec(`DELETE FROM hub_c2d_messages WHERE hub = ? AND device_id = ?`, dps.FoldID(hub), dps.FoldID(deviceID))
	return err
}

// deadLetter removes the queued messages matching where (args its
// parameters) with the outcome status at now (Unix nanoseconds): those
// whose sender asked for that feedback (iothub-ack) leave a feedback
// record.
func deadLetter(tx *sql.Tx, where string, status dps.FeedbackStatus, now int64, args ...any) error {
	acks := dps.FeedbackAcks(status)
	fargs := append([]any{now, string(status), status.Description()}, args...)
	if _, err := tx.Exec(`INSERT INTO hub_c2d_feedback (hub, original_message_id, enqueued, status, description, device_id, generation_id)
		SELECT hub, message_id, ?, ?, ?, CASE WHEN device_name = '' THEN device_id ELSE device_name END, generation_id
		FROM hub_c2d_messages WHERE `+where+` AND ack IN (?, ?) ORDER BY seq`, append(fargs, acks[0], acks[1])...); err != nil {
		return err
	}
	_, err := tx.Exec(`DELETE FROM hub_c2d_messages WHERE `+where, args...)
	return err
}

// ExpireCloudMessages dead-letters up to limit messages, of any queue,
// that expired by now (their Expired feedback included) and reports how
// many: the sweep that gives a device that never asks for its messages
// the feedback of their expiry.
func (db *DB) ExpireCloudMessages(ctx context.Context, now time.Time, limit int) (int, error) {
	var n int
	err := db.exec(ctx, func(tx *sql.Tx) error {
		n = 0
		rows, err := tx.Query(`SELECT seq FROM hub_c2d_messages WHERE expiry <= ? ORDER BY expiry LIMIT ?`, docs.Nanos(now), limit)
		if err != nil {
			return err
		}
		var seqs []int64
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				rows.Close()
				return err
			}
			seqs = append(seqs, seq)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, seq := range seqs {
			if err := deadLetter(tx, `seq = ?`, dps.FeedbackExpired, docs.Nanos(now), seq); err != nil {
				return err
			}
		}
		n = len(seqs)
		return nil
	})
	return n, err
}

// ReceiveCloudFeedback locks up to max of the hub's feedback records that
// are not locked at now with lockToken until lockUntil and returns them,
// oldest first (none: an empty batch).
func (db *DB) ReceiveCloudFeedback(ctx context.Context, hub, lockToken string, now, lockUntil time.Time, max int) ([]dps.CloudFeedback, error) {
	var out []dps.CloudFeedback
	err := db.exec(ctx, func(tx *sql.Tx) error {
		out = nil
		rows, err := tx.Query(`UPDATE hub_c2d_feedback SET lock_token = ?, locked_until = ? WHERE seq IN (
			SELECT seq FROM hub_c2d_feedback WHERE hub = ? AND locked_until <= ? ORDER BY seq LIMIT ?)
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
	return db.exec(ctx, func(tx *sql.Tx) error {
		q := `UPDATE hub_c2d_feedback SET lock_token = '', locked_until = 0`
		if complete {
			q = `DELETE FROM hub_c2d_feedback`
		}
		res, err := tx.Exec(q+` WHERE hub = ? AND lock_token = ? AND lock_token <> '' AND locked_until > ?`, dps.FoldID(hub), lockToken, docs.Nanos(now))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err != nil {
				return err
			}
			return docs.LockLost()
		}
		return nil
	})
}

// DeleteCloudFeedbackBefore deletes the feedback records of every hub
// whose outcome happened before t (nobody read them in time) and reports
// how many went.
func (db *DB) DeleteCloudFeedbackBefore(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := db.exec(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM hub_c2d_feedback WHERE enqueued < ?`, docs.Nanos(t))
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	return n, err
}

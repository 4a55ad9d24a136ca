package postgres

import (
	"context"
	"errors"
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
		if _, err := tx.Exec(ctx, `DELETE FROM hub_c2d_messages WHERE hub = $1 AND device_id = $2 AND expiry <= $3`, hub, dev, now); err != nil {
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
			content_type, content_encoding, properties, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING seq`,
			hub, dev, now, docs.Nanos(m.Expiry), m.MessageID, m.CorrelationID, m.UserID, m.Ack, m.ContentType, m.ContentEncoding,
			pprops, m.Body).Scan(&m.Seq)
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
		if _, err := tx.Exec(ctx, `DELETE FROM hub_c2d_messages WHERE hub = $1 AND device_id = $2 AND expiry <= $3`, h, dev, n); err != nil {
			return err
		}
		var enq, exp, until int64
		var props *string
		err := tx.QueryRow(ctx, `UPDATE hub_c2d_messages SET lock_token = $1, locked_until = $2 WHERE seq = (
			SELECT seq FROM hub_c2d_messages WHERE hub = $3 AND device_id = $4 AND locked_until <= $5 AND expiry > $5
			ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
			RETURNING seq, enqueued, expiry, lock_token, locked_until, delivery_count, message_id, correlation_id, user_id, ack,
			content_type, content_encoding, properties, body`,
			lockToken, docs.Nanos(lockUntil), h, dev, n).Scan(&m.Seq, &enq, &exp, &m.LockToken, &until, &m.DeliveryCount,
			&m.MessageID, &m.CorrelationID, &m.UserID, &m.Ack, &m.ContentType, &m.ContentEncoding, &props, &m.Body)
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
		switch how {
		case dps.SettleAbandon:
			if count+1 < maxDeliveries {
				_, err = tx.Exec(ctx, `UPDATE hub_c2d_messages SET lock_token = '', locked_until = 0, delivery_count = delivery_count + 1 WHERE seq = $1`, seq)
				return err
			}
		case dps.SettleRelease:
			_, err = tx.Exec(ctx, `UPDATE hub_c2d_messages SET lock_token = '', locked_until = 0 WHERE seq = $1`, seq)
			return err
		case dps.SettleComplete, dps.SettleReject:
		default:
			return dps.Errorf(dps.KindInvalid, "unknown settlement %v", how)
		}
		_, err = tx.Exec(ctx, `DELETE FROM hub_c2d_messages WHERE seq = $1`, seq)
		return err
	})
}

// PurgeCloudMessages deletes every message of a device's queue and
// reports how many there were.
func (db *DB) PurgeCloudMessages(ctx context.Context, hub, deviceID string) (int, error) {
	var n int64
	err := db.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM hub_c2d_messages WHERE hub = $1 AND device_id = $2`, dps.FoldID(hub), dps.FoldID(deviceID))
		n = tag.RowsAffected()
		return err
	})
	return int(n), err
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

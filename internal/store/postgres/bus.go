package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps"
)

// HubBus carries the built-in hubs' messages between the nodes that share
// this database, with LISTEN/NOTIFY, and records which node holds each
// connected device's connection (iothub.Cluster). A message larger than a
// NOTIFY payload goes through the hub_bus table.
type HubBus struct {
	db      *DB
	channel string
}

// maxNotify is the largest message sent in a NOTIFY payload itself
// (PostgreSQL's limit is 8000 bytes).
const maxNotify = 7000

// busRetention is how long a large message stays in hub_bus.
const busRetention = 5 * time.Minute

// HubBus returns the database's hub bus. Its channel is the store's own:
// stores in other schemas of the same database do not hear each other.
func (db *DB) HubBus() *HubBus {
	ch := "dps_hub"
	if db.schema != "" {
		sum := sha256.Sum256([]byte(db.schema))
		ch += "_" + hex.EncodeToString(sum[:8])
	}
	return &HubBus{db: db, channel: ch}
}

// Publish sends msg to every node listening, this one included.
func (b *HubBus) Publish(ctx context.Context, msg []byte) error {
	if len(msg) <= maxNotify && utf8.Valid(msg) && !strings.HasPrefix(string(msg), "@") {
		_, err := b.db.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, b.channel, string(msg))
		return translate(err)
	}
	err := b.db.tx(ctx, func(tx pgx.Tx) error {
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO hub_bus (doc) VALUES ($1) RETURNING id`, msg).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM hub_bus WHERE at < now() - $1::interval`, busRetention.String()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, b.channel, "@"+strconv.FormatInt(id, 10))
		return err
	})
	return translate(err)
}

// Listen calls fn with every message published, in order, until ctx ends.
// When the listening connection breaks it connects again (messages
// published meanwhile are lost, which the hub tolerates: a device misses a
// desired-property notification, a method call times out).
func (b *HubBus) Listen(ctx context.Context, log *slog.Logger, fn func([]byte)) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := b.listen(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		log.WarnContext(ctx, "hub bus: listening failed; connecting again", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (b *HubBus) listen(ctx context.Context, fn func([]byte)) error {
	conn, err := b.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection is dedicated to notifications: taken out of the pool
	// and closed when listening ends.
	pc := conn.Hijack()
	defer pc.Close(context.WithoutCancel(ctx))
	if _, err := pc.Exec(ctx, "LISTEN "+pgx.Identifier{b.channel}.Sanitize()); err != nil {
		return err
	}
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		msg := []byte(n.Payload)
		if id, ok := strings.CutPrefix(n.Payload, "@"); ok {
			if err := b.db.pool.QueryRow(ctx, `SELECT doc FROM hub_bus WHERE id = $1`, id).Scan(&msg); err != nil {
				if errors.Is(err, pgx.ErrNoRows) {
					continue // older than busRetention
				}
				return err
			}
		}
		fn(msg)
	}
}

// Claim records node as the holder of the device's connection and
// returns the node that held it before ("" when none) and the claim's
// epoch, larger than any earlier claim's.
func (b *HubBus) Claim(ctx context.Context, hub, deviceID, node string) (prev string, epoch int64, err error) {
	err = b.db.tx(ctx, func(tx pgx.Tx) error {
		// Claims of one device are serialised, also when it has no row yet
		// (FOR UPDATE locks only rows that exist): two nodes claiming at
		// once must not both see no previous holder.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('presence/' || $1 || '/' || $2, 0))`, dps.FoldID(hub), dps.FoldID(deviceID)); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT node FROM hub_presence WHERE hub = $1 AND device_id = $2 FOR UPDATE`, dps.FoldID(hub), dps.FoldID(deviceID)).Scan(&prev)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO hub_presence (hub, device_id, node, epoch) VALUES ($1, $2, $3, nextval('hub_presence_epoch'))
			ON CONFLICT (hub, device_id) DO UPDATE SET node = excluded.node, epoch = excluded.epoch RETURNING epoch`,
			dps.FoldID(hub), dps.FoldID(deviceID), node).Scan(&epoch)
	})
	return prev, epoch, translate(err)
}

// Release forgets the claim of that epoch; a later claim is kept.
func (b *HubBus) Release(ctx context.Context, hub, deviceID string, epoch int64) error {
	_, err := b.db.pool.Exec(ctx, `DELETE FROM hub_presence WHERE hub = $1 AND device_id = $2 AND epoch = $3`, dps.FoldID(hub), dps.FoldID(deviceID), epoch)
	return translate(err)
}

// Holder returns the node holding the device's connection, "" when none.
func (b *HubBus) Holder(ctx context.Context, hub, deviceID string) (string, error) {
	var node string
	err := b.db.pool.QueryRow(ctx, `SELECT node FROM hub_presence WHERE hub = $1 AND device_id = $2`, dps.FoldID(hub), dps.FoldID(deviceID)).Scan(&node)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return node, translate(err)
}

// Forget drops every claim of node (a node starting again under the same
// ID holds no connection yet).
func (b *HubBus) Forget(ctx context.Context, node string) error {
	_, err := b.db.pool.Exec(ctx, `DELETE FROM hub_presence WHERE node = $1`, node)
	return translate(err)
}

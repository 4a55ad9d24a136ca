package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"strings"
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
//
// The documents are encoded here, but for the Seq and the append's time;
// the writer writes the appends of its batch together (writeAppends).
func (db *DB) AppendMessages(ctx context.Context, msgs []dps.Message) ([]dps.Message, error) {
	hubs, err := docs.MessageHubs(msgs)
	if err != nil || len(msgs) == 0 {
		return nil, err
	}
	a := &appendReq{msgs: msgs, hubs: hubs, drafts: make([]docs.MessageDraft, len(msgs)), folded: make([]string, len(msgs))}
	for i, m := range msgs {
		if a.drafts[i], err = docs.DraftMessage(m); err != nil {
			return nil, err
		}
		a.folded[i] = dps.FoldID(m.Hub)
	}
	r := &writeReq{ctx: ctx, fn: func(tx *sql.Tx) error { return db.writeAppends(tx, []*appendReq{a}) }, err: make(chan error, 1), app: a}
	if err := db.health.Observe(translate(db.queue(ctx, r))); err != nil {
		return nil, err
	}
	return a.out, nil
}

// appendReq is an AppendMessages call for the writer: its messages, checked,
// with their hubs (as MessageHubs counts them and folded, one per message)
// and drafted documents; out is set to the messages as stored.
type appendReq struct {
	msgs   []dps.Message
	hubs   []docs.HubCount
	drafts []docs.MessageDraft
	folded []string
	out    []dps.Message
}

// writeAppends writes appends in tx as one: their messages in the order of
// the appends, each append's in its order, each hub's counter advanced
// once by all of their messages for it, and the rows inserted by
// statements of up to maxInsertRows rows. An error leaves tx with part of
// them written: the caller rolls back to before it.
func (db *DB) writeAppends(tx *sql.Tx, apps []*appendReq) error {
	var total []docs.HubCount // usually one hub
	for _, a := range apps {
	next:
		for _, h := range a.hubs {
			for k := range total {
				if total[k].Hub == h.Hub {
					total[k].N += h.N
					continue next
				}
			}
			total = append(total, h)
		}
	}
	next := make(map[string]int64, len(total)) // each hub's next Seq
	for _, h := range total {
		var last int64
		if err := db.txQueryRow(tx, qAdvanceMessageSeq, h.Hub, h.N).Scan(&last); err != nil {
			return err
		}
		next[h.Hub] = last - h.N + 1
	}
	now := time.Now().UTC()
	rows := 0
	for _, a := range apps {
		rows += len(a.msgs)
	}
	ins := messageInserter{db: db, tx: tx, left: rows, buf: db.docBuf[:0]}
	defer func() {
		if cap(ins.buf) <= maxDocBuf {
			db.docBuf = ins.buf[:0]
		}
	}()
	for _, a := range apps {
		last := make(map[string]int64, len(a.hubs))
		for _, h := range a.hubs {
			last[h.Hub] = next[h.Hub] + h.N - 1
			next[h.Hub] += h.N
		}
		a.out = docs.Sequence(a.msgs, last, a.hubs, now)
		for i, m := range a.out {
			if err := ins.add(a.folded[i], m.Seq, m.Enqueued.UnixNano(), a.drafts[i], now); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxDocBuf bounds the buffer the writer keeps for the next INSERTs'
// documents (a larger one, for large messages, is let go).
const maxDocBuf = 1 << 20

// maxInsertRows bounds the rows of one INSERT of messages; the statements
// of 1, 2, 4, … maxInsertRows rows are prepared once (insertMessagesQueries).
const maxInsertRows = 64

// insertMessagesQueries are the INSERTs of 1, 2, 4, … maxInsertRows
// messages, the one of 2^k rows at index k.
func insertMessagesQueries() []string {
	var qs []string
	for n := 1; n <= maxInsertRows; n *= 2 {
		qs = append(qs, insertMessagesQuery(n))
	}
	return qs
}

func insertMessagesQuery(n int) string {
	return `INSERT INTO hub_messages (hub, seq, enqueued, doc) VALUES (?, ?, ?, ?)` + strings.Repeat(`, (?, ?, ?, ?)`, n-1)
}

// messageInserter inserts left rows of hub_messages, added one at a time,
// by as few statements as it can: maxInsertRows rows at a time, then the
// rest by the largest prepared statements that fit.
type messageInserter struct {
	db   *DB
	tx   *sql.Tx
	left int   // rows still to add
	args []any // the rows of the next statement
	buf  []byte
	docs [][2]int // each pending row's document in buf
}

func (w *messageInserter) add(hub string, seq, enqueued int64, d docs.MessageDraft, now time.Time) error {
	start := len(w.buf)
	buf, err := d.Complete(w.buf, seq, now)
	if err != nil {
		return err
	}
	w.buf = buf
	w.docs = append(w.docs, [2]int{start, len(buf)})
	w.args = append(w.args, hub, seq, enqueued, nil)
	w.left--
	if len(w.docs) == maxInsertRows || w.left == 0 {
		return w.flush()
	}
	return nil
}

func (w *messageInserter) flush() error {
	for n := len(w.docs); n > 0; n = len(w.docs) {
		k := 1 // the largest prepared statement that fits
		for k*2 <= n {
			k *= 2
		}
		for i, d := range w.docs[:k] {
			w.args[4*i+3] = w.buf[d[0]:d[1]]
		}
		if _, err := w.db.txExec(w.tx, w.db.insertMessages[bits.TrailingZeros(uint(k))], w.args[:4*k]...); err != nil {
			return err
		}
		w.docs = append(w.docs[:0], w.docs[k:]...)
		w.args = append(w.args[:0], w.args[4*k:]...)
	}
	w.buf = w.buf[:0]
	return nil
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

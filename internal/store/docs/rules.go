package docs

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opendps/dps"
)

// DefaultPruneBatch is how many finished operations one
// DeleteOperationsBefore call deletes at most, and how many hub messages
// one DeleteMessagesBefore or TrimMessages call does, unless a store is
// configured otherwise: one huge delete would hold the database (and every
// registration or message waiting on it) for its whole duration.
const DefaultPruneBatch = 5000

// DefaultPageSize is the page size of a listing that asks for none.
const DefaultPageSize = 1000

// NewETag returns a quoted opaque ETag, in the shape Azure uses.
func NewETag() string { return `"` + rand.Text() + `"` }

// NewRegistrationETag returns the ETag of a new registration record: base64
// of a quoted one, as Azure's registration states carry.
func NewRegistrationETag() string { return base64.StdEncoding.EncodeToString([]byte(NewETag())) }

// SameETag compares an If-Match value with a stored ETag, ignoring a W/
// prefix and one level of surrounding quotes on either side.
func SameETag(ifMatch, stored string) bool { return trimETag(ifMatch) == trimETag(stored) }

func trimETag(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

// CheckPut enforces the ETag rules of a conditional write of the record
// what named name, given whether it exists and its stored ETag: ifMatch ""
// means create only, "*" create or replace, anything else must equal the
// stored ETag.
func CheckPut(exists bool, stored, what, name, ifMatch string) error {
	switch {
	case !exists && ifMatch != "" && ifMatch != "*":
		return &dps.Error{Kind: dps.KindPrecondition, Message: fmt.Sprintf("%s %q does not exist; If-Match cannot match", what, name)}
	case exists && ifMatch == "":
		return &dps.Error{Kind: dps.KindConflict, Message: fmt.Sprintf("%s %q already exists; send If-Match with its etag (or *) to update it", what, name)}
	case exists && ifMatch != "*" && !SameETag(ifMatch, stored):
		return &dps.Error{Kind: dps.KindPrecondition, Message: fmt.Sprintf("%s %q has a different etag", what, name)}
	}
	return nil
}

// CheckDelete enforces the ETag rule of a delete of an existing record:
// ifMatch "" or "*" is unconditional.
func CheckDelete(stored, what, id, ifMatch string) error {
	if ifMatch != "" && ifMatch != "*" && !SameETag(ifMatch, stored) {
		return &dps.Error{Kind: dps.KindPrecondition, Message: fmt.Sprintf("%s %q has a different etag", what, id)}
	}
	return nil
}

// NotFound is the error of an absent record.
func NotFound(what, id string) error {
	return &dps.Error{Kind: dps.KindNotFound, Message: fmt.Sprintf("%s %q not found", what, id)}
}

// EncodeCursor returns the opaque continuation token of a page ending at
// the record with storage key lastID.
func EncodeCursor(lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastID))
}

// DecodeCursor returns the storage key a continuation token continues
// after ("" for the first page).
func DecodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "invalid continuation token"}
	}
	return string(b), nil
}

// PageSize is the number of records a page of limit holds.
func PageSize(limit int) int {
	if limit <= 0 {
		return DefaultPageSize
	}
	return limit
}

// Page cuts the records a store read for a page (up to size+1, ordered by
// storage key) to size and returns the continuation token of the next
// page, "" when this is the last one.
func Page[T any](items []T, size int, key func(T) string) ([]T, string) {
	if len(items) <= size {
		return items, ""
	}
	items = items[:size]
	return items, EncodeCursor(key(items[size-1]))
}

// HubCount is how many messages of a batch go to one hub's log.
type HubCount struct {
	Hub string // folded
	N   int64
}

// MessageHubs checks a batch of messages to append (each names its hub
// and its device: KindInvalid otherwise, before anything is written) and
// returns the hubs it goes to with how many messages each, in the order
// of their folded names: the order in which an append takes the hubs'
// counters, so that two appends never wait for each other's.
func MessageHubs(msgs []dps.Message) ([]HubCount, error) {
	n := map[string]int64{}
	for i, m := range msgs {
		switch {
		case m.Hub == "":
			return nil, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: fmt.Sprintf("message %d of the batch names no hub", i)}
		case m.DeviceID == "":
			return nil, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: fmt.Sprintf("message %d of the batch names no device", i)}
		}
		n[dps.FoldID(m.Hub)]++
	}
	hubs := make([]HubCount, 0, len(n))
	for h, c := range n {
		hubs = append(hubs, HubCount{h, c})
	}
	slices.SortFunc(hubs, func(a, b HubCount) int { return strings.Compare(a.Hub, b.Hub) })
	return hubs, nil
}

// Sequence returns the messages of a batch as appended: copies with their
// Seq, given last, each hub's last Seq once its counter was advanced by
// the batch's messages for it (the batch's messages of a hub take the
// Seqs up to it, in the order given), and their Enqueued time in UTC
// (now when it was not set).
func Sequence(msgs []dps.Message, last map[string]int64, counts []HubCount, now time.Time) []dps.Message {
	next := make(map[string]int64, len(counts))
	for _, c := range counts {
		next[c.Hub] = last[c.Hub] - c.N + 1
	}
	out := make([]dps.Message, len(msgs))
	for i, m := range msgs {
		h := dps.FoldID(m.Hub)
		m.Seq = next[h]
		next[h]++
		if m.Enqueued.IsZero() {
			m.Enqueued = now
		}
		m.Enqueued = m.Enqueued.UTC()
		out[i] = m
	}
	return out
}

// DeviceChanged is the error of an operation's transaction whose hub
// device record changed (or went) since the operation was computed from
// it: KindConflict, so the engine computes the operation again; any other
// error is returned as it is.
func DeviceChanged(err error) error {
	if dps.KindOf(err) == dps.KindNotFound || dps.KindOf(err) == dps.KindConflict {
		return &dps.Error{Kind: dps.KindConflict, Message: "the device's hub record changed concurrently"}
	}
	return err
}

// CheckReplaces decides a hub device write's precondition (d.Replaces,
// not "") from the device's current record as the store read it in the
// write's transaction: cur its document, found false when there is none.
func CheckReplaces(d dps.HubDevice, cur []byte, found bool) error {
	switch {
	case d.Replaces == dps.ReplacesNothing && found:
		return dps.Errorf(dps.KindConflict, "hub device %s/%s exists", d.Hub, d.DeviceID)
	case d.Replaces == dps.ReplacesNothing:
		return nil
	case !found:
		return dps.Errorf(dps.KindNotFound, "hub device %s/%s not found", d.Hub, d.DeviceID)
	}
	old, err := DecodeHubDevice(cur)
	if err != nil {
		return err
	}
	if !SameETag(d.Replaces, old.ETag) {
		return dps.Errorf(dps.KindConflict, "hub device %s/%s changed meanwhile", d.Hub, d.DeviceID)
	}
	return nil
}

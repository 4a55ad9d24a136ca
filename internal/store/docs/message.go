package docs

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/opendps/dps"
)

// The hub message document is written by hand rather than through
// reflection: every device-to-cloud message is encoded once on the append
// path. The bytes are exactly those of marshal(FromMessage(m)) (the tests
// compare the two on generated messages): the members in the struct's
// order, the omitted ones omitted, map keys sorted, strings escaped as
// encoding/json escapes them without HTML escaping.

// appendMessage appends m's document to dst.
func appendMessage(dst []byte, m dps.Message) ([]byte, error) {
	dst = slices.Grow(dst, 64+len(m.Hub)+len(m.DeviceID)+len(m.ModuleID)+messageTailSize(m))
	dst = appendMessageHead(dst, m)
	dst = strconv.AppendInt(dst, m.Seq, 10)
	var err error
	if !m.Enqueued.IsZero() {
		if dst, err = appendEnqueued(dst, m.Enqueued); err != nil {
			return nil, err
		}
	}
	return appendMessageTail(dst, m), nil
}

// appendMessageHead appends the document's members before the Seq's value:
// {"v":1,"hub":…,"deviceId":…[,"moduleId":…],"seq":
func appendMessageHead(dst []byte, m dps.Message) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, Version, 10)
	dst = appendMember(dst, `,"hub":`, m.Hub)
	dst = appendMember(dst, `,"deviceId":`, m.DeviceID)
	if m.ModuleID != "" {
		dst = appendMember(dst, `,"moduleId":`, m.ModuleID)
	}
	return append(dst, `,"seq":`...)
}

// appendEnqueued appends the enqueued member (of a time that is not zero).
func appendEnqueued(dst []byte, t time.Time) ([]byte, error) {
	dst = append(dst, `,"enqueued":"`...)
	// time.Time's MarshalJSON is its MarshalText quoted: RFC 3339 with
	// nanoseconds, refused outside years 0–9999.
	dst, err := t.AppendText(dst)
	if err != nil {
		return nil, fmt.Errorf("hub message document: enqueued time: %w", err)
	}
	return append(dst, '"'), nil
}

// appendMessageTail appends the document's members after the enqueued
// time, to the closing brace.
func appendMessageTail(dst []byte, m dps.Message) []byte {
	for _, s := range [...]struct{ name, v string }{
		{`,"messageId":`, m.MessageID}, {`,"correlationId":`, m.CorrelationID}, {`,"userId":`, m.UserID},
		{`,"contentType":`, m.ContentType}, {`,"contentEncoding":`, m.ContentEncoding},
	} {
		if s.v != "" {
			dst = appendMember(dst, s.name, s.v)
		}
	}
	if m.Properties != nil {
		dst = appendStringMap(append(dst, `,"properties":`...), m.Properties)
	}
	if m.System != nil {
		dst = appendStringMap(append(dst, `,"system":`...), m.System)
	}
	dst = append(dst, `,"body":`...)
	if m.Body == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, m.Body)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

func appendMember(dst []byte, name, v string) []byte {
	return appendString(append(dst, name...), v)
}

func appendStringMap(dst []byte, m map[string]string) []byte {
	dst = append(dst, '{')
	if len(m) == 1 {
		for k, v := range m {
			dst = appendString(dst, k)
			dst = appendString(append(dst, ':'), v)
		}
		return append(dst, '}')
	}
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = appendString(append(dst, ':'), m[k])
	}
	return append(dst, '}')
}

// appendString appends s as a JSON string, escaped as encoding/json
// escapes it with HTML escaping off: " and \ and the control characters
// escaped (\b \f \n \r \t by name, the others as \u00XX), invalid UTF-8
// as \ufffd, U+2028 and U+2029 as \u2028 and \u2029, everything else as
// it is.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// MessageDraft is a hub message's document encoded ahead of its append,
// but for what only the appending transaction knows: the Seq, and the
// Enqueued time when the message has none. Complete appends it with them.
type MessageDraft struct {
	head  []byte // through `"seq":`
	tail  []byte // after the Seq: the enqueued member when the message has its time, the rest
	stamp bool   // the message has no Enqueued time: Complete writes the append's
}

// DraftMessage encodes a message about to be appended, as Sequence will
// return it: its Enqueued time (when set) in UTC. It fails, as
// EncodeMessage would, on an Enqueued time outside years 0–9999.
func DraftMessage(m dps.Message) (MessageDraft, error) {
	head := appendMessageHead(make([]byte, 0, 64+len(m.Hub)+len(m.DeviceID)+len(m.ModuleID)), m)
	tail := make([]byte, 0, messageTailSize(m))
	d := MessageDraft{head: head, stamp: m.Enqueued.IsZero()}
	if !d.stamp {
		var err error
		if tail, err = appendEnqueued(tail, m.Enqueued.UTC()); err != nil {
			return MessageDraft{}, err
		}
	}
	d.tail = appendMessageTail(tail, m)
	return d, nil
}

// Size is an upper bound of the length of the completed document.
func (d MessageDraft) Size() int { return len(d.head) + len(d.tail) + 20 + 48 }

// Complete appends the message's document to dst, with its Seq and, when
// the message had no Enqueued time, now (in UTC, as Sequence sets it):
// the bytes EncodeMessage writes for the message Sequence returns.
func (d MessageDraft) Complete(dst []byte, seq int64, now time.Time) ([]byte, error) {
	dst = append(dst, d.head...)
	dst = strconv.AppendInt(dst, seq, 10)
	if d.stamp {
		var err error
		if dst, err = appendEnqueued(dst, now.UTC()); err != nil {
			return nil, err
		}
	}
	return append(dst, d.tail...), nil
}

// messageTailSize is about the length of the members after the Seq.
func messageTailSize(m dps.Message) int {
	n := 192 + len(m.MessageID) + len(m.CorrelationID) + len(m.UserID) + len(m.ContentType) + len(m.ContentEncoding) +
		base64.StdEncoding.EncodedLen(len(m.Body))
	for k, v := range m.Properties {
		n += len(k) + len(v) + 6
	}
	for k, v := range m.System {
		n += len(k) + len(v) + 6
	}
	return n
}

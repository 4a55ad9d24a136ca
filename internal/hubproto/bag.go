package hubproto

import (
	"strings"
	"unicode/utf8"
)

// System property keys as they appear in a decoded property bag. On the
// wire the SDKs send them as %24.mid (Node, Python, C#, C) or as a literal
// $.mid (docs, hand-made clients); both decode to these keys.
const (
	PropMessageID       = "$.mid"
	PropCorrelationID   = "$.cid"
	PropUserID          = "$.uid"
	PropTo              = "$.to"
	PropContentType     = "$.ct"
	PropContentEncoding = "$.ce"
	PropExpiry          = "$.exp"
	PropInterfaceID     = "$.ifid"
	PropSubject         = "$.sub"
)

// PropAck is the C2D property that asks for delivery feedback
// (none, positive, negative or full).
const PropAck = "iothub-ack"

// Property is one member of a property bag. Key and Value are decoded.
type Property struct {
	Key   string
	Value string
	// Null is true for a bare key (no '='); Value is then empty. "k=" is
	// an empty string, not null.
	Null bool
}

// IsSystemKey reports whether a decoded key is one of the system
// properties a device may set ($.mid $.cid $.uid $.to $.ct $.ce $.exp
// $.ifid $.sub). Any other key, $.-prefixed or not, is an application
// property.
func IsSystemKey(key string) bool {
	switch key {
	case PropMessageID, PropCorrelationID, PropUserID, PropTo, PropContentType,
		PropContentEncoding, PropExpiry, PropInterfaceID, PropSubject:
		return true
	}
	return false
}

// DecodeBag decodes a property bag: the string is split on '&' (never on
// '/': the C SDK sends values such as application/json unencoded), each
// member on its first '='. A member without '=' is a null property; empty
// members are skipped. Keys and values are percent-decoded leniently: an
// escape that is not '%' and two hex digits is kept as is, and '+' stays
// '+' (the SDKs encode a space as %20). Decoded bytes are returned as they
// are, even when they are not valid UTF-8.
func DecodeBag(bag string) []Property {
	if bag == "" {
		return nil
	}
	props := make([]Property, 0, strings.Count(bag, "&")+1)
	for bag != "" {
		var member string
		member, bag, _ = strings.Cut(bag, "&")
		if member == "" {
			continue
		}
		k, v, ok := strings.Cut(member, "=")
		props = append(props, Property{Key: unescape(k), Value: unescape(v), Null: !ok})
	}
	return props
}

// EncodeBag encodes props in the given order, the way the hub sends a C2D
// property bag: every key and value percent-encoded with only the RFC 3986
// unreserved characters (A-Z a-z 0-9 - . _ ~) kept, upper-case hex, so that
// a system key $.mid goes out as %24.mid and no '/', '&', '=', '+' or '%'
// ever reaches a device raw (Node splits the topic on '/' and runs
// decodeURIComponent on both sides of every member; a stray '%' throws in
// the device). Invalid UTF-8 is replaced with U+FFFD first (one per run
// of invalid bytes), for the same reason. A Null property is written as
// its bare key; note that Node then reads the value as the string
// "undefined".
//
// For C2D the hub's order is $.mid, $.to, $.cid, $.uid, $.ct, $.ce, $.exp
// (only those set), iothub-ack, then the application properties; the
// caller lists them so.
func EncodeBag(props []Property) string {
	var b strings.Builder
	for i, p := range props {
		if i > 0 {
			b.WriteByte('&')
		}
		escape(&b, p.Key)
		if !p.Null {
			b.WriteByte('=')
			escape(&b, p.Value)
		}
	}
	return b.String()
}

// Get returns the value of the first property named key (decoded) and
// whether there is one; a null property counts as present with "".
func Get(props []Property, key string) (string, bool) {
	for _, p := range props {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// SystemProperties are the system properties of a telemetry bag; "" when
// absent, null or empty.
type SystemProperties struct {
	MessageID       string // $.mid; no $.mid means no message id (the hub assigns none on MQTT)
	CorrelationID   string // $.cid
	UserID          string // $.uid
	To              string // $.to
	ContentType     string // $.ct
	ContentEncoding string // $.ce
	Expiry          string // $.exp, absolute time as sent (ISO 8601)
	InterfaceID     string // $.ifid
	Subject         string // $.sub, the component name (Node's dt-subject)
}

// SplitProperties separates the system properties of a telemetry bag from
// its application properties, keeping the order of the latter. When a
// system key occurs more than once, the first wins and the others are
// dropped.
func SplitProperties(props []Property) (SystemProperties, []Property) {
	var sys SystemProperties
	var seen uint16
	var app []Property
	for _, p := range props {
		var dst *string
		var bit uint16
		switch p.Key {
		case PropMessageID:
			dst, bit = &sys.MessageID, 1<<0
		case PropCorrelationID:
			dst, bit = &sys.CorrelationID, 1<<1
		case PropUserID:
			dst, bit = &sys.UserID, 1<<2
		case PropTo:
			dst, bit = &sys.To, 1<<3
		case PropContentType:
			dst, bit = &sys.ContentType, 1<<4
		case PropContentEncoding:
			dst, bit = &sys.ContentEncoding, 1<<5
		case PropExpiry:
			dst, bit = &sys.Expiry, 1<<6
		case PropInterfaceID:
			dst, bit = &sys.InterfaceID, 1<<7
		case PropSubject:
			dst, bit = &sys.Subject, 1<<8
		default:
			app = append(app, p)
			continue
		}
		if seen&bit == 0 {
			seen |= bit
			*dst = p.Value
		}
	}
	return sys, app
}

// unescape percent-decodes s leniently: a '%' not followed by two hex
// digits is kept, '+' is not a space.
func unescape(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

const upperHex = "0123456789ABCDEF"

// escape writes s with every byte but the RFC 3986 unreserved characters
// percent-encoded (upper-case hex); invalid UTF-8 becomes U+FFFD.
func escape(b *strings.Builder, s string) {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&15])
	}
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

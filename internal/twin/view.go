package twin

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"unicode/utf8"
)

// TimeFormat is how Azure writes the times of $metadata (Json.NET's
// default): UTC, up to 7 fractional digits, trailing zeros dropped.
const TimeFormat = "2006-01-02T15:04:05.9999999Z"

// DeviceDoc is the body of the answer to a device's twin GET:
// {"desired":{…,"$version":n},"reported":{…,"$version":m}}, without tags
// and $metadata, which devices never see.
func (t Twin) DeviceDoc() []byte {
	b := append(make([]byte, 0, 64), `{"desired":`...)
	b = appendSection(b, t.desired.props, nil, t.desired.version)
	b = append(b, `,"reported":`...)
	b = appendSection(b, t.reported.props, nil, t.reported.version)
	return append(b, '}')
}

// Service is the twin's part of the service API's Twin JSON; the service
// adds the identity members (deviceId, etag, status, …) around it. Its
// members encode in Azure's order: version, tags, properties.
type Service struct {
	Version    int64             `json:"version"`
	Tags       json.RawMessage   `json:"tags,omitempty"` // nil when there are no tags
	Properties ServiceProperties `json:"properties"`
}

// ServiceProperties holds each section with $metadata and $version:
// {…,"$metadata":{"$lastUpdated":…,…},"$version":n}.
type ServiceProperties struct {
	Desired  json.RawMessage `json:"desired"`
	Reported json.RawMessage `json:"reported"`
}

// Service returns the twin as the service API shows it.
func (t Twin) Service() Service {
	s := Service{
		Version: t.version,
		Properties: ServiceProperties{
			Desired:  appendSection(nil, t.desired.props, t.desired.meta, t.desired.version),
			Reported: appendSection(nil, t.reported.props, t.reported.meta, t.reported.version),
		},
	}
	if len(t.tags) > 0 {
		s.Tags = appendObject(nil, t.tags)
	}
	return s
}

// appendSection writes props, then "$metadata" when m is not nil, then
// "$version", as Azure orders them.
func appendSection(b []byte, props map[string]any, m *meta, version int64) []byte {
	b = appendMembers(append(b, '{'), props)
	if len(props) > 0 {
		b = append(b, ',')
	}
	if m != nil {
		b = appendAzureMeta(append(b, `"$metadata":`...), m)
		b = append(b, ',')
	}
	b = append(b, `"$version":`...)
	b = strconv.AppendInt(b, version, 10)
	return append(b, '}')
}

// appendAzureMeta writes a metadata node as Azure does:
// {"$lastUpdated":…[,"$lastUpdatedVersion":n][,member:{…}…]}.
func appendAzureMeta(b []byte, m *meta) []byte {
	b = append(b, `{"$lastUpdated":"`...)
	b = m.at.UTC().AppendFormat(b, TimeFormat)
	b = append(b, '"')
	if m.ver > 0 {
		b = append(b, `,"$lastUpdatedVersion":`...)
		b = strconv.AppendInt(b, m.ver, 10)
	}
	for _, k := range slices.Sorted(maps.Keys(m.kids)) {
		b = appendString(append(b, ','), k)
		b = appendAzureMeta(append(b, ':'), m.kids[k])
	}
	return append(b, '}')
}

// appendObject writes an object with its members in key order.
func appendObject(b []byte, m map[string]any) []byte {
	return append(appendMembers(append(b, '{'), m), '}')
}

func appendMembers(b []byte, m map[string]any) []byte {
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = appendValue(append(b, ':'), m[k])
	}
	return b
}

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case string:
		return appendString(b, v)
	case json.Number:
		return append(b, v...)
	case map[string]any:
		return appendObject(b, v)
	case []any:
		b = append(b, '[')
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, x)
		}
		return append(b, ']')
	}
	panic("twin: unexpected value type") // values only come from decode
}

// appendString writes s as encoding/json does without HTML escaping.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Initial is the twin in DPS's initial-twin form,
// {"tags":{…},"properties":{"desired":{…}}}, without versions and
// metadata: what a provisioning that migrates the device's data carries to
// its next identity (New of it gives a twin with the same tags and desired
// properties).
func (t Twin) Initial() []byte {
	b := append(make([]byte, 0, 64), `{"tags":`...)
	b = appendObject(b, t.tags)
	b = append(b, `,"properties":{"desired":`...)
	b = appendObject(b, t.desired.props)
	return append(b, "}}"...)
}

// DesiredDoc is the twin's desired properties as a device's notification
// carries a full replacement of them: {…,"$version":n}.
func (t Twin) DesiredDoc() []byte {
	return appendSection(nil, t.desired.props, nil, t.desired.version)
}

package twin

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/opendps/dps"
)

// storedTime is how the stored form writes times: fixed 7 digits, so that
// every stored time has one spelling.
const storedTime = "2006-01-02T15:04:05.0000000Z"

// MarshalJSON encodes the twin for storage. The form is dps's own, stable
// and lossless:
//
//	{"version":n,"tags":{…},
//	 "desired":{"version":n,"properties":{…},"metadata":M},
//	 "reported":{"version":n,"properties":{…},"metadata":M}}
//
// where M is {"lastUpdated":"…","lastUpdatedVersion":n,"members":{key:M,…}}
// (lastUpdatedVersion only in desired, members only for non-empty objects).
// Members are in key order, so equal twins encode to equal bytes.
func (t Twin) MarshalJSON() ([]byte, error) {
	if t.desired.meta == nil || t.reported.meta == nil {
		return nil, errors.New("twin: encoding an invalid twin (use New)")
	}
	b := append(make([]byte, 0, 256), `{"version":`...)
	b = strconv.AppendInt(b, t.version, 10)
	b = appendObject(append(b, `,"tags":`...), t.tags)
	b = appendStoredSection(append(b, `,"desired":`...), t.desired)
	b = appendStoredSection(append(b, `,"reported":`...), t.reported)
	return append(b, '}'), nil
}

func appendStoredSection(b []byte, s section) []byte {
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, s.version, 10)
	b = appendObject(append(b, `,"properties":`...), s.props)
	b = appendStoredMeta(append(b, `,"metadata":`...), s.meta)
	return append(b, '}')
}

func appendStoredMeta(b []byte, m *meta) []byte {
	b = append(b, `{"lastUpdated":"`...)
	b = m.at.UTC().AppendFormat(b, storedTime)
	b = append(b, '"')
	if m.ver > 0 {
		b = append(b, `,"lastUpdatedVersion":`...)
		b = strconv.AppendInt(b, m.ver, 10)
	}
	if len(m.kids) > 0 {
		b = append(b, `,"members":{`...)
		for i, k := range slices.Sorted(maps.Keys(m.kids)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = appendStoredMeta(append(b, ':'), m.kids[k])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

type storedTwin struct {
	Version  *int64          `json:"version"`
	Tags     json.RawMessage `json:"tags"`
	Desired  *storedSection  `json:"desired"`
	Reported *storedSection  `json:"reported"`
}

type storedSection struct {
	Version    int64           `json:"version"`
	Properties json.RawMessage `json:"properties"`
	Metadata   *storedMeta     `json:"metadata"`
}

type storedMeta struct {
	LastUpdated        time.Time              `json:"lastUpdated"`
	LastUpdatedVersion int64                  `json:"lastUpdatedVersion"`
	Members            map[string]*storedMeta `json:"members"`
}

// UnmarshalJSON decodes the stored form MarshalJSON writes. It refuses a
// document whose metadata does not mirror its properties.
func (t *Twin) UnmarshalJSON(b []byte) error {
	var s storedTwin
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	if s.Version == nil || s.Desired == nil || s.Reported == nil {
		return errors.New("twin: version, desired or reported missing")
	}
	var out Twin
	out.version = *s.Version
	var err error
	if out.tags, err = storedObject("tags", s.Tags); err != nil {
		return err
	}
	if out.desired, err = s.Desired.section("desired"); err != nil {
		return err
	}
	if out.reported, err = s.Reported.section("reported"); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	*t = out
	return nil
}

func storedObject(what string, raw json.RawMessage) (map[string]any, error) {
	v, err := decode(what, raw)
	if err != nil {
		return nil, fmt.Errorf("twin: %s: %w", what, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("twin: %s is not an object", what)
	}
	return m, nil
}

func (s *storedSection) section(what string) (section, error) {
	props, err := storedObject(what+" properties", s.Properties)
	if err != nil {
		return section{}, err
	}
	if s.Metadata == nil {
		return section{}, fmt.Errorf("twin: %s metadata missing", what)
	}
	return section{version: s.Version, props: props, meta: s.Metadata.meta()}, nil
}

func (m *storedMeta) meta() *meta {
	out := &meta{at: m.LastUpdated.UTC(), ver: m.LastUpdatedVersion}
	if len(m.Members) > 0 {
		out.kids = make(map[string]*meta, len(m.Members))
		for k, c := range m.Members {
			if c != nil {
				out.kids[k] = c.meta()
			}
		}
	}
	return out
}

// check verifies a twin's invariants: positive versions, no null member,
// and metadata for every object and leaf of both sections and nothing
// else.
func (t *Twin) check() error {
	if t.version < 1 || t.desired.version < 1 || t.reported.version < 1 {
		return errors.New("twin: versions must be positive")
	}
	if t.tags == nil || t.desired.props == nil || t.reported.props == nil || t.desired.meta == nil || t.reported.meta == nil {
		return errors.New("twin: a section is missing")
	}
	if hasNull(t.tags) {
		return errors.New("twin: tags hold a null member")
	}
	for _, s := range []struct {
		name string
		sec  section
	}{{"desired", t.desired}, {"reported", t.reported}} {
		if err := mirrors(s.sec.props, s.sec.meta); err != nil {
			return fmt.Errorf("twin: %s: %w", s.name, err)
		}
	}
	return nil
}

func hasNull(m map[string]any) bool {
	for _, v := range m {
		switch v := v.(type) {
		case nil:
			return true
		case map[string]any:
			if hasNull(v) {
				return true
			}
		}
	}
	return false
}

func mirrors(props map[string]any, m *meta) error {
	if len(m.kids) != len(props) {
		return fmt.Errorf("metadata has %d members for %d properties", len(m.kids), len(props))
	}
	for k, v := range props {
		km, ok := m.kids[k]
		if !ok {
			return fmt.Errorf("no metadata for %s", quote(k))
		}
		switch v := v.(type) {
		case nil:
			return fmt.Errorf("%s is null", quote(k))
		case map[string]any:
			if err := mirrors(v, km); err != nil {
				return err
			}
		default:
			if len(km.kids) > 0 {
				return fmt.Errorf("metadata of leaf %s has members", quote(k))
			}
		}
	}
	return nil
}

// Of returns the live twin of a hub device record (its LiveTwin); a
// record written before the hub kept twins gets one from its initial
// twin. A stored twin that does not decode is a *dps.Error.
func Of(d dps.HubDevice) (Twin, error) {
	if len(d.LiveTwin) == 0 {
		return New(d.Twin, d.Updated)
	}
	var t Twin
	if err := t.UnmarshalJSON(d.LiveTwin); err != nil {
		return Twin{}, dps.AsError(err)
	}
	return t, nil
}

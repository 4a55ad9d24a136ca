package webhookalloc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// MaxPayloadDepth is how deeply the webhook's payload for the device may
// nest. The embedded C SDK (azure-sdk-for-c) reads the whole response with
// az_json_reader, whose nesting stack is a uint64 bitmask: it refuses a 65th
// level (AZ_ERROR_JSON_NESTING_OVERFLOW, _az_MAX_JSON_STACK_SIZE = 64), and
// then rejects the whole response. The payload sits at the third level of
// {"registrationState":{"payload":…}}, so it may hold 62 levels itself.
const MaxPayloadDepth = 62

// checkPayload checks that a webhook's payload for the device is a JSON
// object the SDKs can read. data is valid JSON.
func checkPayload(data json.RawMessage) error {
	if k := kind(data); k != "an object" {
		return fmt.Errorf("a payload that is %s, not a JSON object", k)
	}
	if d := depth(data); d > MaxPayloadDepth {
		return fmt.Errorf("a payload nested %d levels deep (devices read at most %d)", d, MaxPayloadDepth)
	}
	return nil
}

// cleanTwin checks that a webhook's initialTwin has the shape of a device
// twin as DPS sends it to a hub, {"tags":{…},"properties":{"desired":{…}}}
// (every part optional, null meaning absent), and returns it with only those
// parts: provisioning sets tags and desired properties, nothing else. Only a
// wrong JSON type of the twin, tags, properties or desired fails. Other
// members are dropped and their names returned in dropped: webhooks built on
// the Azure SDK's TwinState send properties.reported (usually empty), and
// some send more of a twin (deviceId, etag, version…). data is valid JSON.
func cleanTwin(data json.RawMessage) (twin json.RawMessage, dropped []string, err error) {
	top, err := members(data, "initialTwin")
	if err != nil {
		return nil, nil, err
	}
	var tags, desired json.RawMessage
	for _, name := range sortedKeys(top) {
		v := top[name]
		switch name {
		case "tags":
			if tags, err = object(v, "tags"); err != nil {
				return nil, nil, err
			}
		case "properties":
			props, err := members(v, "initialTwin.properties")
			if err != nil {
				return nil, nil, err
			}
			for _, pname := range sortedKeys(props) {
				if pname != "desired" {
					dropped = append(dropped, "properties."+pname)
					continue
				}
				if desired, err = object(props[pname], "properties.desired"); err != nil {
					return nil, nil, err
				}
			}
		default:
			dropped = append(dropped, name)
		}
	}
	// Rebuilt even when nothing was dropped, the values kept byte for byte:
	// one member per name (the last, as decoded) and no nulls reach the hub.
	var b bytes.Buffer
	b.WriteByte('{')
	if tags != nil {
		b.WriteString(`"tags":`)
		b.Write(tags)
	}
	if desired != nil {
		if tags != nil {
			b.WriteByte(',')
		}
		b.WriteString(`"properties":{"desired":`)
		b.Write(desired)
		b.WriteByte('}')
	}
	b.WriteByte('}')
	return b.Bytes(), dropped, nil
}

// object returns a twin part that must be an object: nil when it is null.
func object(v json.RawMessage, what string) (json.RawMessage, error) {
	switch k := kind(v); k {
	case "an object":
		return bytes.TrimSpace(v), nil
	case "null":
		return nil, nil
	default:
		return nil, fmt.Errorf("an initialTwin whose %s is %s, not an object", what, k)
	}
}

// sortedKeys returns m's keys in order (deterministic messages and output).
func sortedKeys(m map[string]json.RawMessage) []string {
	return slices.Sorted(maps.Keys(m))
}

// members decodes a JSON object (null counts as empty).
func members(data json.RawMessage, what string) (map[string]json.RawMessage, error) {
	if k := kind(data); k != "an object" && k != "null" {
		return nil, fmt.Errorf("an %s that is %s, not an object", what, k)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("an %s that is not valid JSON", what)
	}
	return m, nil
}

// kind names the type of a JSON value from its first byte.
func kind(data []byte) string {
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 {
		return "empty"
	}
	switch data[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// depth returns how many objects and arrays of valid JSON data nest at the
// deepest point (0 for a scalar, 1 for {} or [1]).
func depth(data []byte) int {
	d, deepest, inString := 0, 0, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case inString && c == '\\':
			i++ // the escaped byte cannot end the string
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			d++
			deepest = max(deepest, d)
		case c == '}' || c == ']':
			d--
		}
	}
	return deepest
}

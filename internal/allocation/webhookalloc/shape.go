package webhookalloc

import (
	"bytes"
	"encoding/json"
	"fmt"
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

// checkTwin checks that a webhook's initialTwin has the shape of a device
// twin as DPS sends it to a hub: {"tags":{…},"properties":{"desired":{…}}},
// either member optional. data is valid JSON.
func checkTwin(data json.RawMessage) error {
	twin, err := members(data, "initialTwin")
	if err != nil {
		return err
	}
	for name, v := range twin {
		switch name {
		case "tags":
			if k := kind(v); k != "an object" && k != "null" {
				return fmt.Errorf("an initialTwin whose tags is %s, not an object", k)
			}
		case "properties":
			props, err := members(v, "initialTwin.properties")
			if err != nil {
				return err
			}
			for pname, pv := range props {
				if pname != "desired" {
					return fmt.Errorf("an initialTwin with properties.%s (only properties.desired is set by provisioning)", pname)
				}
				if k := kind(pv); k != "an object" && k != "null" {
					return fmt.Errorf("an initialTwin whose properties.desired is %s, not an object", k)
				}
			}
		default:
			return fmt.Errorf("an initialTwin with member %q (only tags and properties.desired are allowed)", name)
		}
	}
	return nil
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

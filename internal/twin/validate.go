package twin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/opendps/dps"
)

// invalid is a rule violation (IoT Hub's ArgumentInvalid).
func invalid(format string, args ...any) *dps.Error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// malformed is a body that is not JSON (IoT Hub's IotHubFormatError).
func malformed(what string, cause error) *dps.Error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeFormatError, Message: what + " is not valid JSON", Err: cause}
}

// decode parses one JSON value, keeping numbers as written.
func decode(what string, b []byte) (any, error) {
	if !utf8.Valid(b) {
		return nil, malformed(what, errors.New("invalid UTF-8"))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, malformed(what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, malformed(what, errors.New("data after the JSON value"))
	}
	return v, nil
}

// decodeObject parses a patch or document that must be a JSON object.
func decodeObject(what string, b []byte) (map[string]any, error) {
	v, err := decode(what, b)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("%s must be a JSON object", what)
	}
	return m, nil
}

// memberObject returns the object member of a service body: nil when it
// is absent or null.
func memberObject(parent map[string]any, name, what string) (map[string]any, error) {
	v, ok := parent[name]
	if !ok || v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("%s must be a JSON object", what)
	}
	return m, nil
}

// serviceDesired drops the read-only members a service may send back in
// desired properties it read ($version, $metadata) and validates the rest.
func serviceDesired(m map[string]any) (map[string]any, error) {
	if _, v := m["$version"]; v {
		m = without(m, "$version")
	}
	if _, md := m["$metadata"]; md {
		m = without(m, "$metadata")
	}
	return m, validate("desired properties", m)
}

func without(m map[string]any, key string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}

// validate checks a patch or document of a section against IoT Hub's key
// and value rules and its depth limit.
func validate(what string, m map[string]any) error {
	for k, v := range m {
		if err := checkKey(what, k); err != nil {
			return err
		}
		if err := checkValue(what, k, v, 1, false); err != nil {
			return err
		}
	}
	return nil
}

// checkValue checks the value of member name at level (a section's
// members are at level 1).
func checkValue(what, name string, v any, level int, inArray bool) error {
	switch v := v.(type) {
	case nil:
		if inArray {
			return invalid("%s: %s: an array cannot contain null, nor an object with a null member", what, quote(name))
		}
	case bool:
	case string:
		if len(v) > MaxStringLength {
			return invalid("%s: %s: string value longer than %d bytes", what, quote(name), MaxStringLength)
		}
	case json.Number:
		return checkNumber(what, name, string(v))
	case map[string]any:
		if level > MaxDepth {
			return invalid("%s: %s: nested deeper than %d levels", what, quote(name), MaxDepth)
		}
		for k, x := range v {
			if err := checkKey(what, k); err != nil {
				return err
			}
			if err := checkValue(what, k, x, level+1, inArray); err != nil {
				return err
			}
		}
	case []any:
		if level > MaxDepth {
			return invalid("%s: %s: nested deeper than %d levels", what, quote(name), MaxDepth)
		}
		for _, x := range v {
			if err := checkValue(what, name, x, level+1, true); err != nil {
				return err
			}
		}
	default:
		return invalid("%s: %s: unsupported value", what, quote(name))
	}
	return nil
}

func checkNumber(what, name, s string) error {
	if !strings.ContainsAny(s, ".eE") {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < MinInteger || n > MaxInteger {
			return invalid("%s: %s: integer out of range [%d, %d]", what, quote(name), MinInteger, MaxInteger)
		}
		return nil
	}
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return invalid("%s: %s: number out of range", what, quote(name))
	}
	return nil
}

// checkKey applies IoT Hub's key rules: at most MaxKeyLength bytes, no
// '.', '$', space or C0/C1 control character.
func checkKey(what, k string) error {
	if len(k) > MaxKeyLength {
		return invalid("%s: property name %s is longer than %d bytes", what, quote(k), MaxKeyLength)
	}
	for _, r := range k {
		if r == '.' || r == '$' || r == ' ' || isControl(r) {
			return invalid("%s: property name %s contains %q: names cannot contain '.', '$', spaces or control characters", what, quote(k), r)
		}
	}
	return nil
}

// isControl reports a C0 or C1 control character (Unicode category Cc).
func isControl(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f }

// quote shortens a client's key for an error message.
func quote(s string) string {
	const max = 40
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// sizeOf is IoT Hub's twin size of a value: keys and strings count their
// UTF-8 bytes except control characters, numbers 8, booleans 4, objects
// and arrays the sum of their members.
func sizeOf(v any) int {
	switch v := v.(type) {
	case string:
		return strSize(v)
	case json.Number:
		return 8
	case bool:
		return 4
	case map[string]any:
		n := 0
		for k, x := range v {
			n += strSize(k) + sizeOf(x)
		}
		return n
	case []any:
		n := 0
		for _, x := range v {
			n += sizeOf(x)
		}
		return n
	}
	return 0
}

func strSize(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			n--
		} else if c == 0xc2 && i+1 < len(s) && s[i+1] >= 0x80 && s[i+1] <= 0x9f {
			n -= 2 // U+0080…U+009F
			i++
		}
	}
	return n
}

// checkSize refuses a section that an operation would grow past its limit
// ("IoT Hub rejects … all operations that would increase the size … above
// the limit").
func checkSize(what string, props map[string]any, oldSize, limit int) error {
	if n := sizeOf(props); n > limit && n > oldSize {
		return invalid("%s would be %d bytes, over the limit of %d", what, n, limit)
	}
	return nil
}

package twin

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/opendps/dps"
)

// FuzzPatch applies any bytes as a reported patch, a desired patch, a
// service update and a service replace. None panics; a refused operation
// changes nothing (neither the twin nor a copy sharing its maps); an
// accepted one leaves a twin within IoT Hub's limits whose encoding
// decodes to the same value and whose views are JSON.
func FuzzPatch(f *testing.F) {
	for _, s := range []string{
		`{}`, ``, ` `, `null`, `[]`, `{"a":1}`, `{"a":null}`, `{"fw":{"major":1,"minor":null}}`,
		`{"nested":{"a":null,"b":{"c":[1,"x",{"d":true}]}}}`, `{"$version":3}`, `{"a.b":1}`, `{"a":[null]}`,
		`{"tags":{"t":1},"properties":{"desired":{"d":{"e":null},"$version":1,"$metadata":{}}}}`,
		`{"n":4503599627370496}`, `{"n":1.5e308,"m":-0.0}`, `{"s":"\u2028<&>\u0000"}`, `{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":{"k":1}}}}}}}}}}}`,
		`{"k":"` + strings.Repeat("x", 4097) + `"}`, "{\"\xff\":1}", `{"a":1}{"b":2}`,
	} {
		f.Add([]byte(s))
	}
	base := mustNew(f, `{"tags":{"model":"hp"},"properties":{"desired":{"interval":10,"nested":{"a":1}}}}`)
	if _, err := base.PatchReported([]byte(`{"fw":"1.0","nested":{"a":{"b":2}},"list":[1,2]}`), t0); err != nil {
		f.Fatal(err)
	}
	baseBytes := encode(f, base)
	f.Fuzz(func(t *testing.T, data []byte) {
		ops := []struct {
			name string
			run  func(*Twin) ([]byte, error)
		}{
			{"PatchReported", func(tw *Twin) ([]byte, error) { _, err := tw.PatchReported(data, t1); return nil, err }},
			{"PatchDesired", func(tw *Twin) ([]byte, error) { return tw.PatchDesired(data, t1) }},
			{"PatchTags", func(tw *Twin) ([]byte, error) { return nil, tw.PatchTags(data) }},
			{"Update", func(tw *Twin) ([]byte, error) { return tw.Update(data, t1) }},
			{"Replace", func(tw *Twin) ([]byte, error) { return tw.Replace(data, t1) }},
			{"New", func(tw *Twin) ([]byte, error) {
				n, err := New(data, t1)
				if err == nil {
					*tw = n
				}
				return nil, err
			}},
		}
		for _, op := range ops {
			tw := base
			note, err := op.run(&tw)
			if !bytes.Equal(encode(t, base), baseBytes) {
				t.Fatalf("%s changed a copy of the twin it was given", op.name)
			}
			if err != nil {
				if e, ok := errors.AsType[*dps.Error](err); !ok || e.Kind != dps.KindInvalid || (e.Code != dps.CodeInvalid && e.Code != dps.CodeFormatError) {
					t.Fatalf("%s: error %v is not an invalid *dps.Error", op.name, err)
				}
				if !bytes.Equal(encode(t, tw), baseBytes) {
					t.Fatalf("%s: refused, yet the twin changed", op.name)
				}
				continue
			}
			checkLimits(t, op.name, tw)
			enc := encode(t, tw)
			var back Twin
			if err := json.Unmarshal(enc, &back); err != nil {
				t.Fatalf("%s: decoding %s: %v", op.name, enc, err)
			}
			if !reflect.DeepEqual(back, tw) {
				t.Fatalf("%s: decoded twin differs from the encoded one: %s", op.name, enc)
			}
			if again := encode(t, back); !bytes.Equal(again, enc) {
				t.Fatalf("%s: re-encoding differs:\n%s\n%s", op.name, enc, again)
			}
			s := tw.Service()
			for _, b := range [][]byte{tw.DeviceDoc(), s.Tags, s.Properties.Desired, s.Properties.Reported} {
				if b != nil && !json.Valid(b) {
					t.Fatalf("%s: a view is not JSON: %s", op.name, b)
				}
			}
			if note != nil {
				var n map[string]any
				if err := json.Unmarshal(note, &n); err != nil || n["$version"] == nil {
					t.Fatalf("%s: notification %s is not an object with $version", op.name, note)
				}
			}
		}
	})
}

// checkLimits checks a twin against IoT Hub's rules independently of the
// operation that built it.
func checkLimits(t *testing.T, op string, tw Twin) {
	t.Helper()
	if err := tw.check(); err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	for _, s := range []struct {
		name  string
		props map[string]any
		limit int
	}{{"tags", tw.tags, MaxTagsSize}, {"desired", tw.desired.props, MaxDesiredSize}, {"reported", tw.reported.props, MaxReportedSize}} {
		if n := sizeOf(s.props); n > s.limit {
			t.Fatalf("%s: %s is %d bytes, over %d", op, s.name, n, s.limit)
		}
		if err := validate(s.name, s.props); err != nil {
			t.Fatalf("%s: %s breaks a rule: %v", op, s.name, err)
		}
		if d := depth(s.props) - 1; d > MaxDepth { // the root is not a level
			t.Fatalf("%s: %s is %d levels deep", op, s.name, d)
		}
	}
}

// depth counts the levels of objects and arrays below v.
func depth(v any) int {
	d := 0
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			if c := depth(x); c > d {
				d = c
			}
		}
		return d + 1
	case []any:
		for _, x := range v {
			if c := depth(x); c > d {
				d = c
			}
		}
		return d + 1
	}
	return 0
}

// FuzzAppendString: appendString writes what encoding/json writes without
// HTML escaping.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", "\"\\/\b\f\n\r\t\x00\x1f\x7f", "<&>", "\u2028\u2029é€𝄞", "\xff\xfe", "a\xc3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); string(got) != strings.TrimSuffix(want.String(), "\n") {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want.String())
		}
	})
}

func BenchmarkPatchReported(b *testing.B) {
	tw := mustNew(b, `{"properties":{"desired":{"interval":10}}}`)
	var init strings.Builder
	init.WriteString(`{"fw":"1.0.3","model":"hp-2000","serial":"A1B2C3","wifi":{"ssid":"plant-7","rssi":-61,"channel":11},`)
	for i := range 20 {
		if i > 0 {
			init.WriteByte(',')
		}
		init.WriteString(`"sensor` + string(rune('a'+i)) + `":{"value":21.5,"unit":"C","ok":true}`)
	}
	init.WriteString(`}`)
	if _, err := tw.PatchReported([]byte(init.String()), t0); err != nil {
		b.Fatal(err)
	}
	patch := []byte(`{"sensora":{"value":22.25},"wifi":{"rssi":-58},"uptime":123456}`)
	b.ReportAllocs()
	for b.Loop() {
		t := tw
		if _, err := t.PatchReported(patch, t1); err != nil {
			b.Fatal(err)
		}
	}
}

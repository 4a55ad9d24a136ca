package hubproto_test

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/opendps/dps/internal/hubproto"
)

func prop(k, v string) hubproto.Property { return hubproto.Property{Key: k, Value: v} }
func null(k string) hubproto.Property    { return hubproto.Property{Key: k, Null: true} }

func TestDecodeBag(t *testing.T) {
	tests := []struct {
		name, bag string
		want      []hubproto.Property
	}{
		{"empty", "", nil},
		// Node: querystring.stringify for system properties, then
		// encodeURIComponent(k)=encodeURIComponent(v) (generated with Node).
		{"node", "%24.mid=m1&%24.cid=c%2F1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.exp=2023-11-14T22%3A13%3A20.000Z&a=x%2Fy%26z%3D1&%C3%BC=%25",
			[]hubproto.Property{prop("$.mid", "m1"), prop("$.cid", "c/1"), prop("$.ct", "application/json"), prop("$.ce", "utf-8"),
				prop("$.exp", "2023-11-14T22:13:20.000Z"), prop("a", "x/y&z=1"), prop("ü", "%")}},
		// The C SDK without auto_url_encode_decode: values raw, '/' included.
		{"c-raw", "%24.ct=application/json&%24.ce=utf-8&temp=20",
			[]hubproto.Property{prop("$.ct", "application/json"), prop("$.ce", "utf-8"), prop("temp", "20")}},
		{"literal-dollar", "$.mid=1&$.ct=text/plain;charset=utf-8",
			[]hubproto.Property{prop("$.mid", "1"), prop("$.ct", "text/plain;charset=utf-8")}},
		{"null-and-empty", "a&b=&c=1", []hubproto.Property{null("a"), prop("b", ""), prop("c", "1")}},
		{"plus-is-not-space", "a=1+2&b+c=%20", []hubproto.Property{prop("a", "1+2"), prop("b+c", " ")}},
		{"bad-escapes-kept", "a=%zz&b=%4&c=%&d=%4g%41&%=%%", []hubproto.Property{prop("a", "%zz"), prop("b", "%4"), prop("c", "%"), prop("d", "%4gA"), prop("%", "%%")}},
		{"lower-hex", "to=%2fdevices%2fd%2a", []hubproto.Property{prop("to", "/devices/d*")}},
		{"empty-members-skipped", "&&a=1&", []hubproto.Property{prop("a", "1")}},
		{"first-equals", "a==b&=v", []hubproto.Property{prop("a", "=b"), prop("", "v")}},
		{"invalid-utf8-kept", "a=%FF", []hubproto.Property{prop("a", "\xff")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hubproto.DecodeBag(tt.bag)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeBag(%q) =\n %#v\nwant\n %#v", tt.bag, got, tt.want)
			}
		})
	}
}

func TestEncodeBag(t *testing.T) {
	tests := []struct {
		name  string
		props []hubproto.Property
		want  string
	}{
		{"empty", nil, ""},
		// Captured from a real hub (az CLI send).
		{"capture-cli", []hubproto.Property{prop("$.mid", "2c2db32a-9c41-4073-baa4-db584e021573"), prop("$.to", "/devices/pubsub/messages/devicebound"),
			prop("$.ce", "utf-8"), prop("iothub-ack", "none")},
			"%24.mid=2c2db32a-9c41-4073-baa4-db584e021573&%24.to=%2Fdevices%2Fpubsub%2Fmessages%2Fdevicebound&%24.ce=utf-8&iothub-ack=none"},
		{"reserved", []hubproto.Property{prop("a", "x/y&z=1"), prop("ü", "%"), prop("sp ace", "1+1"), prop("~._-", "~._-AZaz09"), prop("k", "!'()*;:@,?#[]$")},
			"a=x%2Fy%26z%3D1&%C3%BC=%25&sp%20ace=1%2B1&~._-=~._-AZaz09&k=%21%27%28%29%2A%3B%3A%40%2C%3F%23%5B%5D%24"},
		{"null", []hubproto.Property{null("flag"), prop("e", "")}, "flag&e="},
		{"invalid-utf8", []hubproto.Property{prop("a\xff", "b\xc3")}, "a%EF%BF%BD=b%EF%BF%BD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hubproto.EncodeBag(tt.props); got != tt.want {
				t.Errorf("EncodeBag = %q\nwant       %q", got, tt.want)
			}
		})
	}
}

func TestGetAndSplitProperties(t *testing.T) {
	props := hubproto.DecodeBag("%24.mid=m1&a=1&$.mid=m2&%24.cid=c&%24.uid=u&%24.to=t&%24.ct=application%2Fjson&%24.ce=utf-8" +
		"&%24.exp=2030-01-01T00%3A00%3A00Z&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1&%24.sub=thermostat1&%24.on=out&b")
	if v, ok := hubproto.Get(props, "a"); !ok || v != "1" {
		t.Errorf("Get(a) = %q, %v", v, ok)
	}
	if v, ok := hubproto.Get(props, "b"); !ok || v != "" {
		t.Errorf("Get(b) = %q, %v; a null property is present", v, ok)
	}
	if _, ok := hubproto.Get(props, "nope"); ok {
		t.Error("Get(nope) found something")
	}
	sys, app := hubproto.SplitProperties(props)
	want := hubproto.SystemProperties{MessageID: "m1", CorrelationID: "c", UserID: "u", To: "t", ContentType: "application/json",
		ContentEncoding: "utf-8", Expiry: "2030-01-01T00:00:00Z", InterfaceID: "urn:azureiot:Security:SecurityAgent:1", Subject: "thermostat1"}
	if sys != want {
		t.Errorf("system = %+v\nwant %+v", sys, want)
	}
	if wantApp := []hubproto.Property{prop("a", "1"), prop("$.on", "out"), null("b")}; !reflect.DeepEqual(app, wantApp) {
		t.Errorf("app = %#v, want %#v", app, wantApp)
	}
	for _, k := range []string{"$.mid", "$.cid", "$.uid", "$.to", "$.ct", "$.ce", "$.exp", "$.ifid", "$.sub"} {
		if !hubproto.IsSystemKey(k) {
			t.Errorf("IsSystemKey(%q) = false", k)
		}
	}
	for _, k := range []string{"%24.mid", "$.on", "$.ctime", "mid", "iothub-ack", ""} {
		if hubproto.IsSystemKey(k) {
			t.Errorf("IsSystemKey(%q) = true", k)
		}
	}
}

// nodeDecode does what the Node device SDK does with a C2D topic:
// topic.split('/')[4], then decodeURIComponent on both sides of every
// member (which throws on a bad escape or invalid UTF-8).
func nodeDecode(t *testing.T, topic string) map[string]string {
	t.Helper()
	parts := strings.Split(topic, "/")
	if len(parts) < 5 {
		t.Fatalf("topic %q has no bag for Node", topic)
	}
	got := map[string]string{}
	if parts[4] == "" {
		return got
	}
	for _, kv := range strings.Split(parts[4], "&") {
		k, v, _ := strings.Cut(kv, "=")
		dk, err1 := url.PathUnescape(k)
		dv, err2 := url.PathUnescape(v)
		if err1 != nil || err2 != nil || !utf8.ValidString(dk) || !utf8.ValidString(dv) {
			t.Fatalf("decodeURIComponent would throw on %q", kv)
		}
		got[dk] = dv
	}
	return got
}

func TestEncodeBagSurvivesNode(t *testing.T) {
	props := []hubproto.Property{prop("$.mid", "id/1%"), prop("$.to", "/devices/d/messages/devicebound"), prop("iothub-ack", "full"),
		prop("path", "a/b/c"), prop("q", "a&b=c"), prop("pct", "100%"), prop("sp", "a b+c"), prop("bad", "\xff\xfe"), prop("emoji", "🙂")}
	topic := hubproto.DeviceboundTopic("d", props)
	got := nodeDecode(t, topic)
	want := map[string]string{"$.mid": "id/1%", "$.to": "/devices/d/messages/devicebound", "iothub-ack": "full",
		"path": "a/b/c", "q": "a&b=c", "pct": "100%", "sp": "a b+c", "bad": "\uFFFD", "emoji": "🙂"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Node reads %q\nwant %q", got, want)
	}
}

// sanitize is what a decode → encode → decode round trip keeps of props:
// invalid UTF-8 becomes U+FFFD, and a null property with an empty key is
// an empty member, which decoding skips.
func sanitize(props []hubproto.Property) []hubproto.Property {
	var out []hubproto.Property
	for _, p := range props {
		if p.Key == "" && p.Null {
			continue
		}
		p.Key = strings.ToValidUTF8(p.Key, "\uFFFD")
		p.Value = strings.ToValidUTF8(p.Value, "\uFFFD")
		out = append(out, p)
	}
	return out
}

func checkEncoded(t *testing.T, enc string) {
	t.Helper()
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-._~&=", c) >= 0:
		case c == '%' && i+2 < len(enc) && strings.IndexByte("0123456789ABCDEF", enc[i+1]) >= 0 && strings.IndexByte("0123456789ABCDEF", enc[i+2]) >= 0:
			i += 2
		default:
			t.Fatalf("EncodeBag wrote %q at %d in %q", c, i, enc)
		}
	}
}

func FuzzPropertyBag(f *testing.F) {
	for _, s := range []string{"", "%24.mid=m1&%24.ct=application%2Fjson&a=x%2Fy", "%24.ct=application/json&x", "a&b=&=c&&", "%zz=%4&%",
		"$.mid=1", "a=1+2", "%C3%BC=%25", "%FF%FE=\xff", "?a=b"} {
		f.Add(s, "k", "v")
	}
	f.Add("", "", "")
	f.Add("x", "a/b&c=d%", "\xc3")
	f.Fuzz(func(t *testing.T, bag, k, v string) {
		props := hubproto.DecodeBag(bag)
		for _, p := range props {
			if p.Null && p.Value != "" {
				t.Fatalf("null property %q has a value", p.Key)
			}
		}
		props = append(props, hubproto.Property{Key: k, Value: v}, hubproto.Property{Key: v, Null: true})
		enc := hubproto.EncodeBag(props)
		checkEncoded(t, enc)
		got := hubproto.DecodeBag(enc)
		if want := sanitize(props); !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip of %q:\n got %#v\nwant %#v", enc, got, want)
		}
		// A device that decodes strictly (Node's decodeURIComponent) reads
		// the same.
		for _, member := range strings.Split(enc, "&") {
			mk, mv, _ := strings.Cut(member, "=")
			for _, s := range []string{mk, mv} {
				d, err := url.PathUnescape(s)
				if err != nil || !utf8.ValidString(d) {
					t.Fatalf("strict decoding fails on %q", member)
				}
			}
		}
	})
}

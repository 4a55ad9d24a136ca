package hubproto_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/hubproto"
)

func TestC2DBag(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    hubproto.C2DProperties
		want string
	}{
		{"nothing set: the ack only", hubproto.C2DProperties{}, "iothub-ack=none"},
		// The az CLI capture of §2.3.
		{"az CLI send", hubproto.C2DProperties{MessageID: "2c2db32a-9c41-4073-baa4-db584e021573", To: "/devices/pubsub/messages/devicebound", ContentEncoding: "utf-8", Ack: "none"},
			"%24.mid=2c2db32a-9c41-4073-baa4-db584e021573&%24.to=%2Fdevices%2Fpubsub%2Fmessages%2Fdevicebound&%24.ce=utf-8&iothub-ack=none"},
		{"every system property, in order, then the app properties by name",
			hubproto.C2DProperties{MessageID: "m 1", To: "/devices/d/messages/devicebound", CorrelationID: "c&1", UserID: "u=1",
				ContentType: "application/json; charset=utf-8", ContentEncoding: "utf-8", Expiry: "2026-12-03T13:00:00.000Z", Ack: "full",
				Properties: map[string]string{"windSpeed": "30", "temperature": "45", "path": "a/b", "pct": "100%+"}},
			"%24.mid=m%201&%24.to=%2Fdevices%2Fd%2Fmessages%2Fdevicebound&%24.cid=c%261&%24.uid=u%3D1" +
				"&%24.ct=application%2Fjson%3B%20charset%3Dutf-8&%24.ce=utf-8&%24.exp=2026-12-03T13%3A00%3A00.000Z&iothub-ack=full" +
				"&path=a%2Fb&pct=100%25%2B&temperature=45&windSpeed=30"},
		{"app properties that would pass for the hub's are left out",
			hubproto.C2DProperties{Ack: "positive", Properties: map[string]string{"$.mid": "fake", "iothub-ack": "full", "": "x", "ok": "1"}},
			"iothub-ack=positive&ok=1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := hubproto.C2DBag(tt.p); got != tt.want {
				t.Errorf("C2DBag =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	if got := hubproto.C2DTopic("dev-1", hubproto.C2DProperties{Ack: "none"}); got != "devices/dev-1/messages/devicebound/iothub-ack=none" {
		t.Errorf("C2DTopic = %q", got)
	}
}

// FuzzC2DBag: whatever the properties, the bag stays in the unreserved
// alphabet, every SDK's split on '/' finds the whole bag in the fifth
// segment, and decoding it gives back the system properties set, the ack
// and the application properties (valid UTF-8 as sent).
func FuzzC2DBag(f *testing.F) {
	f.Add("m1", "/devices/d/messages/devicebound", "c", "", "application/json", "utf-8", "2026-12-03T13:00:00Z", "full", "k", "v")
	f.Add("", "", "", "", "", "", "", "", "", "")
	f.Add("a/b&c=d%", "\xff", "$.mid", "+", " ", "%zz", "?", "none", "$.cid", "x")
	f.Fuzz(func(t *testing.T, mid, to, cid, uid, ct, ce, exp, ack, k, v string) {
		p := hubproto.C2DProperties{MessageID: mid, To: to, CorrelationID: cid, UserID: uid, ContentType: ct, ContentEncoding: ce,
			Expiry: exp, Ack: ack, Properties: map[string]string{k: v}}
		bag := hubproto.C2DBag(p)
		checkEncoded(t, bag)
		topic := hubproto.C2DTopic("dev", p)
		if parts := strings.Split(topic, "/"); len(parts) != 5 || parts[4] != bag {
			t.Fatalf("topic %q does not split into 5 segments with the bag last", topic)
		}
		got := map[string]string{}
		for _, pr := range hubproto.DecodeBag(bag) {
			if _, dup := got[pr.Key]; dup {
				t.Fatalf("key %q twice in %q", pr.Key, bag)
			}
			got[pr.Key] = pr.Value
		}
		valid := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
		want := map[string]string{}
		for _, kv := range [...][2]string{{"$.mid", mid}, {"$.to", to}, {"$.cid", cid}, {"$.uid", uid}, {"$.ct", ct}, {"$.ce", ce}, {"$.exp", exp}} {
			if kv[1] != "" {
				want[kv[0]] = valid(kv[1])
			}
		}
		want["iothub-ack"] = valid(ack)
		if ack == "" {
			want["iothub-ack"] = "none"
		}
		if k != "" && k != "iothub-ack" && !hubproto.IsSystemKey(k) {
			if _, taken := want[valid(k)]; !taken {
				want[valid(k)] = valid(v)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("bag %q decodes to\n%q\nwant\n%q", bag, got, want)
		}
	})
}

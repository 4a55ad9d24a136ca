package hubproto_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/hubproto"
)

func TestParseTopic(t *testing.T) {
	tests := []struct {
		name, topic string
		want        hubproto.Publish
	}{
		{"node-telemetry", "devices/dev1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&a=x%2Fy%26z%3D1&%C3%BC=%25",
			hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "dev1", Properties: []hubproto.Property{
				prop("$.mid", "m1"), prop("$.ct", "application/json"), prop("$.ce", "utf-8"), prop("a", "x/y&z=1"), prop("ü", "%")}}},
		{"node-no-bag", "devices/dev1/messages/events/", hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "dev1"}},
		{"no-trailing-part", "devices/dev1/messages/events", hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "dev1"}},
		// C# appends a '/' after the bag.
		{"csharp-trailing-slash", "devices/dev1/messages/events/%24.mid=1&a=b/",
			hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "dev1", Properties: []hubproto.Property{prop("$.mid", "1"), prop("a", "b")}}},
		// The C SDK sends values raw: never split the bag on '/'.
		{"c-raw-values", "devices/dev1/messages/events/%24.ct=application/json&%24.ce=utf-8&path=a/b",
			hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "dev1", Properties: []hubproto.Property{
				prop("$.ct", "application/json"), prop("$.ce", "utf-8"), prop("path", "a/b")}}},
		{"literal-dollar", "devices/dev1/messages/events/$.mid=7&$.cid=8",
			hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "dev1", Properties: []hubproto.Property{prop("$.mid", "7"), prop("$.cid", "8")}}},
		{"module", "devices/dev1/modules/m1/messages/events/a=1/",
			hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "dev1", ModuleID: "m1", Properties: []hubproto.Property{prop("a", "1")}}},
		{"module-no-bag", "devices/dev1/modules/m1/messages/events",
			hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "dev1", ModuleID: "m1"}},
		{"device-named-modules", "devices/modules/messages/events/", hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "modules"}},
		{"raw-id", "devices/a-.%_*?!(),=@$'/messages/events/", hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "a-.%_*?!(),=@$'"}},
		// A leading '?' is part of the first key, as on Azure.
		{"leading-question-mark", "devices/d/messages/events/?a=b",
			hubproto.Publish{Kind: hubproto.KindTelemetry, DeviceID: "d", Properties: []hubproto.Property{prop("?a", "b")}}},

		{"twin-get-node", "$iothub/twin/GET/?$rid=0b4c1f8e-7a57-4b58-9c59-5d2b1e9a8c11",
			hubproto.Publish{Kind: hubproto.KindTwinGet, RequestID: "0b4c1f8e-7a57-4b58-9c59-5d2b1e9a8c11",
				Properties: []hubproto.Property{prop("$rid", "0b4c1f8e-7a57-4b58-9c59-5d2b1e9a8c11")}}},
		{"twin-get-c", "$iothub/twin/GET/?$rid=2", hubproto.Publish{Kind: hubproto.KindTwinGet, RequestID: "2", Properties: []hubproto.Property{prop("$rid", "2")}}},
		{"twin-get-embedded-c", "$iothub/twin/GET/?$rid=get_twin",
			hubproto.Publish{Kind: hubproto.KindTwinGet, RequestID: "get_twin", Properties: []hubproto.Property{prop("$rid", "get_twin")}}},
		{"twin-get-rid-raw", "$iothub/twin/GET/?$rid=a%20b",
			hubproto.Publish{Kind: hubproto.KindTwinGet, RequestID: "a%20b", Properties: []hubproto.Property{prop("$rid", "a b")}}},
		{"twin-get-encoded-key", "$iothub/twin/GET/?%24rid=9", hubproto.Publish{Kind: hubproto.KindTwinGet, RequestID: "9", Properties: []hubproto.Property{prop("$rid", "9")}}},
		{"reported", "$iothub/twin/PATCH/properties/reported/?$rid=reported_prop",
			hubproto.Publish{Kind: hubproto.KindReportedPatch, RequestID: "reported_prop", Properties: []hubproto.Property{prop("$rid", "reported_prop")}}},
		{"reported-version", "$iothub/twin/PATCH/properties/reported/?$rid=3&$version=5",
			hubproto.Publish{Kind: hubproto.KindReportedPatch, RequestID: "3", Properties: []hubproto.Property{prop("$rid", "3"), prop("$version", "5")}}},
		{"reported-version-first", "$iothub/twin/PATCH/properties/reported/?$version=5&$rid=3",
			hubproto.Publish{Kind: hubproto.KindReportedPatch, RequestID: "3", Properties: []hubproto.Property{prop("$version", "5"), prop("$rid", "3")}}},
		{"method-response", "$iothub/methods/res/200/?$rid=1",
			hubproto.Publish{Kind: hubproto.KindMethodResponse, Status: 200, RequestID: "1", Properties: []hubproto.Property{prop("$rid", "1")}}},
		{"method-response-negative", "$iothub/methods/res/-1/?$rid=ab",
			hubproto.Publish{Kind: hubproto.KindMethodResponse, Status: -1, RequestID: "ab", Properties: []hubproto.Property{prop("$rid", "ab")}}},
		{"method-response-empty-rid", "$iothub/methods/res/404/?$rid=",
			hubproto.Publish{Kind: hubproto.KindMethodResponse, Status: 404, Properties: []hubproto.Property{prop("$rid", "")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := hubproto.ParseTopic(tt.topic)
			if err != nil {
				t.Fatalf("ParseTopic(%q): %v", tt.topic, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseTopic(%q) =\n %+v\nwant\n %+v", tt.topic, got, tt.want)
			}
		})
	}
}

func TestParseTopicErrors(t *testing.T) {
	for _, topic := range []string{
		"", "devices/", "devices/d", "devices/d/", "devices//messages/events/", "devices/+/messages/events/", "devices/d#/messages/events",
		"devices/d/messages/events2", "devices/d/messages/eventsx/a=1", "devices/d/messages/devicebound/a=1", "devices/d/modules//messages/events",
		"devices/d/modules/m", "devices/d/modules/m/inputs/x", "Devices/d/messages/events/",
		"$iothub/twin/GET/", "$iothub/twin/GET", "$iothub/twin/GET/?x=1", "$iothub/twin/GET/?$rid", "$iothub/twin/get/?$rid=1",
		"$iothub/twin/PATCH/properties/reported/", "$iothub/twin/PATCH/properties/desired/?$version=1",
		"$iothub/twin/res/200/?$rid=1", "$iothub/methods/POST/m/?$rid=1",
		"$iothub/methods/res/abc/?$rid=1", "$iothub/methods/res/200?$rid=1", "$iothub/methods/res//?$rid=1", "$iothub/methods/res/+200/?$rid=1",
		"$iothub/methods/res/99999999999/?$rid=1", "$iothub/methods/res/200/x/?$rid=1", "$iothub/methods/res/200/?rid=1",
		"$dps/registrations/PUT/iotdps-register/?$rid=1",
	} {
		if got, err := hubproto.ParseTopic(topic); !errors.Is(err, hubproto.ErrTopic) {
			t.Errorf("ParseTopic(%q) = %+v, %v; want ErrTopic", topic, got, err)
		}
	}
}

func TestParseFilter(t *testing.T) {
	tests := []struct {
		filter string
		want   hubproto.Filter
		topic  string // f.Topic("dev1")
	}{
		{"devices/dev1/messages/devicebound/#", hubproto.Filter{Kind: hubproto.FilterC2D, DeviceID: "dev1"}, "devices/dev1/messages/devicebound/#"},
		{"devices/other/messages/devicebound/#", hubproto.Filter{Kind: hubproto.FilterC2D, DeviceID: "other"}, "devices/dev1/messages/devicebound/#"},
		// Embedded C.
		{"devices/+/messages/devicebound/#", hubproto.Filter{Kind: hubproto.FilterC2D}, "devices/dev1/messages/devicebound/#"},
		{"$iothub/methods/POST/#", hubproto.Filter{Kind: hubproto.FilterMethods}, "$iothub/methods/POST/#"},
		{"$iothub/twin/res/#", hubproto.Filter{Kind: hubproto.FilterTwinResponses}, "$iothub/twin/res/#"},
		{"$iothub/twin/PATCH/properties/desired/#", hubproto.Filter{Kind: hubproto.FilterDesired}, "$iothub/twin/PATCH/properties/desired/#"},
	}
	for _, tt := range tests {
		got, err := hubproto.ParseFilter(tt.filter)
		if err != nil || got != tt.want {
			t.Errorf("ParseFilter(%q) = %+v, %v; want %+v", tt.filter, got, err, tt.want)
			continue
		}
		if topic := got.Topic("dev1"); topic != tt.topic {
			t.Errorf("%+v.Topic(dev1) = %q, want %q", got, topic, tt.topic)
		}
	}
	for _, filter := range []string{
		"", "#", "+", "$iothub/#", "$iothub/twin/#", "devices/#", "devices/+/#", "devices/dev1/#", "devices/dev1/messages/#",
		"devices/dev1/messages/devicebound/+", "devices/dev1/messages/devicebound", "devices/dev1/messages/devicebound/",
		"devices//messages/devicebound/#", "devices/a+/messages/devicebound/#", "devices/#/messages/devicebound/#",
		"devices/dev1/modules/m1/#", "devices/dev1/modules/m1/messages/devicebound/#", "devices/dev1/messages/deviceBound/#",
		"$iothub/twin/PATCH/properties/desired", "$iothub/twin/PATCH/properties/desired/+", "$iothub/twin/PATCH/properties/#",
		"$iothub/twin/res/200", "$iothub/twin/res/+", "$iothub/methods/POST/reboot", "$iothub/methods/POST/+", "$iothub/methods/res/#",
		"devices/dev1/messages/events/#",
	} {
		if got, err := hubproto.ParseFilter(filter); !errors.Is(err, hubproto.ErrFilter) {
			t.Errorf("ParseFilter(%q) = %+v, %v; want ErrFilter", filter, got, err)
		}
	}
}

func TestHubTopics(t *testing.T) {
	tests := []struct{ got, want string }{
		// Captured from a real hub (C SDK trace) and the docs.
		{hubproto.TwinResponseTopic(200, "1"), "$iothub/twin/res/200/?$rid=1"},
		{hubproto.TwinResponseTopic(429, "0b4c1f8e-7a57"), "$iothub/twin/res/429/?$rid=0b4c1f8e-7a57"},
		{hubproto.ReportedResponseTopic("2", 5), "$iothub/twin/res/204/?$rid=2&$version=5"},
		{hubproto.DesiredPatchTopic(2), "$iothub/twin/PATCH/properties/desired/?$version=2"},
		{hubproto.MethodRequestTopic("getMaxMinReport", "1"), "$iothub/methods/POST/getMaxMinReport/?$rid=1"},
		{hubproto.DeviceboundTopic("pubsub", []hubproto.Property{prop("$.mid", "2c2db32a-9c41-4073-baa4-db584e021573"),
			prop("$.to", "/devices/pubsub/messages/devicebound"), prop("$.ce", "utf-8"), prop("iothub-ack", "none")}),
			"devices/pubsub/messages/devicebound/%24.mid=2c2db32a-9c41-4073-baa4-db584e021573&%24.to=%2Fdevices%2Fpubsub%2Fmessages%2Fdevicebound&%24.ce=utf-8&iothub-ack=none"},
		{hubproto.DeviceboundTopic("my-device-1", []hubproto.Property{prop("$.mid", "aaefb161-9f06-4d34-8c72-90a10cbebabe"),
			prop("$.to", "/devices/my-device-1/messages/deviceBound"), prop("iothub-ack", "full"), prop("temperature", "45"), prop("windSpeed", "30")}),
			"devices/my-device-1/messages/devicebound/%24.mid=aaefb161-9f06-4d34-8c72-90a10cbebabe&%24.to=%2Fdevices%2Fmy-device-1%2Fmessages%2FdeviceBound&iothub-ack=full&temperature=45&windSpeed=30"},
		// No properties: the '/' after devicebound stays (Node's matcher needs it).
		{hubproto.DeviceboundTopic("d", nil), "devices/d/messages/devicebound/"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got  %q\nwant %q", tt.got, tt.want)
		}
	}
	// How the C SDK reads a twin response: the 5th '/'-token starts with
	// ?$rid= and the rid runs to the next '&'.
	tok := strings.Split(hubproto.ReportedResponseTopic("17", 3), "/")
	if len(tok) != 5 || !strings.HasPrefix(tok[4], "?$rid=17&") {
		t.Errorf("C SDK tokens %q", tok)
	}
}

func TestValidMethodName(t *testing.T) {
	for _, n := range []string{"reboot", "getMaxMinReport", "a-b_c.d~e!f*g'h%i&j|k^l`m", "thermostat1*getMaxMinReport"} {
		if !hubproto.ValidMethodName(n) {
			t.Errorf("ValidMethodName(%q) = false", n)
		}
	}
	for _, n := range []string{"", "a/b", "a?b", "a b", "a\tb", "a$b", "a(b", "a=b", "a{b}", "a;b", "a:b", "a\"b", `a\b`, "a+b", "a#b", "ü", "a\x7fb"} {
		if hubproto.ValidMethodName(n) {
			t.Errorf("ValidMethodName(%q) = true", n)
		}
	}
}

func TestKindStrings(t *testing.T) {
	if hubproto.KindTelemetry.String() != "telemetry" || hubproto.Kind(0).String() != "Kind(0)" ||
		hubproto.FilterDesired.String() != "desired properties" || hubproto.FilterKind(9).String() != "FilterKind(9)" {
		t.Error("String")
	}
}

func FuzzTopic(f *testing.F) {
	for _, s := range []string{
		"devices/dev1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&a=x%2Fy", "devices/dev1/messages/events",
		"devices/dev1/messages/events/a=b/", "devices/dev1/modules/m1/messages/events/", "devices/d/messages/events/%24.ct=application/json",
		"$iothub/twin/GET/?$rid=1", "$iothub/twin/PATCH/properties/reported/?$rid=3&$version=5", "$iothub/methods/res/200/?$rid=1",
		"devices/+/messages/devicebound/#", "devices/d/messages/devicebound/#", "$iothub/twin/PATCH/properties/desired/#",
		"$iothub/methods/POST/#", "$iothub/twin/res/#",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		p, err := hubproto.ParseTopic(topic)
		switch {
		case err != nil:
			if !errors.Is(err, hubproto.ErrTopic) {
				t.Fatalf("error %v is not ErrTopic", err)
			}
		case p.Kind == hubproto.KindTelemetry:
			if p.DeviceID == "" || strings.ContainsAny(p.DeviceID, "/+#") || strings.ContainsAny(p.ModuleID, "/+#") || p.RequestID != "" {
				t.Fatalf("ParseTopic(%q) = %+v", topic, p)
			}
			// Rebuilt with an encoded bag, the topic parses to the same
			// ids and (sanitised) properties.
			base := "devices/" + p.DeviceID + "/"
			if p.ModuleID != "" {
				base += "modules/" + p.ModuleID + "/"
			}
			rebuilt := base + "messages/events/" + hubproto.EncodeBag(p.Properties)
			q, err := hubproto.ParseTopic(rebuilt)
			if err != nil {
				t.Fatalf("ParseTopic(%q): %v", rebuilt, err)
			}
			if q.DeviceID != p.DeviceID || q.ModuleID != p.ModuleID || !reflect.DeepEqual(q.Properties, sanitize(p.Properties)) {
				t.Fatalf("ParseTopic(%q) = %+v\nParseTopic(%q) = %+v", topic, p, rebuilt, q)
			}
		case p.Kind == hubproto.KindTwinGet, p.Kind == hubproto.KindReportedPatch, p.Kind == hubproto.KindMethodResponse:
			if strings.Contains(p.RequestID, "&") || !strings.Contains(topic, "="+p.RequestID) {
				t.Fatalf("ParseTopic(%q): RequestID %q", topic, p.RequestID)
			}
			if _, ok := hubproto.Get(p.Properties, "$rid"); !ok {
				t.Fatalf("ParseTopic(%q): no $rid in %#v", topic, p.Properties)
			}
		default:
			t.Fatalf("ParseTopic(%q) = %+v", topic, p)
		}

		fl, err := hubproto.ParseFilter(topic)
		if err != nil {
			if !errors.Is(err, hubproto.ErrFilter) {
				t.Fatalf("error %v is not ErrFilter", err)
			}
			return
		}
		id := fl.DeviceID
		if id == "" {
			id = "dev1"
		}
		back, err := hubproto.ParseFilter(fl.Topic(id))
		if err != nil || back.Kind != fl.Kind || fl.Kind == hubproto.FilterC2D && back.DeviceID != id {
			t.Fatalf("ParseFilter(%q) = %+v; its Topic %q parses to %+v, %v", topic, fl, fl.Topic(id), back, err)
		}
	})
}

func BenchmarkParseTopicTelemetry(b *testing.B) {
	topic := "devices/sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6/messages/events/%24.mid=0b4c1f8e-7a57-4b58-9c59-5d2b1e9a8c11" +
		"&%24.ct=application%2Fjson&%24.ce=utf-8&temperatureAlert=true&site=b12"
	b.ReportAllocs()
	for b.Loop() {
		p, err := hubproto.ParseTopic(topic)
		if err != nil || len(p.Properties) != 5 {
			b.Fatal(p, err)
		}
	}
}

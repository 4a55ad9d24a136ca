package docs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// awkward are strings encoding/json escapes in every way it has.
var awkward = []string{"", "a", "plain-ASCII 0123 ~", `"quoted"`, `back\slash`, "<html & stuff>", "tab\there", "nl\ncr\r",
	"\x00\x01\x1f\x7f", "\b\f", "Ä-ö-ß", "emoji 🛰", "bad \xff utf-8 \xc3", "\u2028 and \u2029", "\ufffd", "ends in \\"}

func randString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return awkward[r.IntN(len(awkward))]
	}
	b := make([]byte, r.IntN(12))
	for i := range b {
		b[i] = byte(r.IntN(256))
		if r.IntN(4) > 0 {
			b[i] = byte(' ' + r.IntN(95))
		}
	}
	return string(b)
}

func randMap(r *rand.Rand) map[string]string {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return map[string]string{}
	}
	m := map[string]string{}
	for range r.IntN(24) + 1 { // past the sort's buffer of 16 keys too
		m[randString(r)] = randString(r)
	}
	return m
}

func randMessage(r *rand.Rand) dps.Message {
	m := dps.Message{Hub: randString(r), DeviceID: randString(r), ModuleID: randString(r), Seq: r.Int64N(1<<62) - 1<<61,
		MessageID: randString(r), CorrelationID: randString(r), UserID: randString(r), ContentType: randString(r), ContentEncoding: randString(r),
		Properties: randMap(r), System: randMap(r)}
	switch r.IntN(4) {
	case 0:
	case 1:
		m.Enqueued = time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).UTC()
	case 2:
		m.Enqueued = time.Unix(r.Int64N(1<<34), 0).In(time.FixedZone("X", (r.IntN(48)-24)*1800))
	case 3:
		m.Enqueued = time.Date(2025, 6, 1, 10, 0, 0, r.IntN(1e9), time.UTC)
	}
	switch r.IntN(3) {
	case 0:
	case 1:
		m.Body = []byte{}
	case 2:
		m.Body = make([]byte, r.IntN(3000))
		for i := range m.Body {
			m.Body[i] = byte(r.IntN(256))
		}
	}
	return m
}

// TestEncodeMessageAsReflection: the hand-written encoding writes exactly
// the bytes encoding/json writes for the document struct, and they decode
// back to the message.
func TestEncodeMessageAsReflection(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		m := randMessage(r)
		checkEncodeMessage(t, fmt.Sprint("message ", i), m)
	}
	for _, s := range awkward {
		m := dps.Message{Hub: s, DeviceID: s, ModuleID: s, MessageID: s, CorrelationID: s, UserID: s, ContentType: s, ContentEncoding: s,
			Properties: map[string]string{s: s, s + "x": s}, System: map[string]string{s: s}, Body: []byte(s)}
		checkEncodeMessage(t, fmt.Sprintf("%q everywhere", s), m)
	}
	for _, y := range []int{-1, 10000} {
		m := dps.Message{Hub: "h", DeviceID: "d", Enqueued: time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)}
		if _, err := EncodeMessage(m); err == nil {
			t.Errorf("year %d: encoded", y)
		}
		if _, err := marshal(FromMessage(m)); err == nil {
			t.Errorf("year %d: encoding/json encoded it", y)
		}
		if _, err := DraftMessage(m); err == nil {
			t.Errorf("year %d: drafted", y)
		}
	}
}

func checkEncodeMessage(t *testing.T, what string, m dps.Message) {
	t.Helper()
	got, err := EncodeMessage(m)
	want, werr := marshal(FromMessage(m))
	if err != nil || werr != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %s (%v)\nwant %s (%v)", what, got, err, want, werr)
	}
	back, err := DecodeMessage(got)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	// Invalid UTF-8 reads back as U+FFFD, which encodes as itself: what
	// was read encodes the same both ways too.
	again, err := EncodeMessage(back)
	if want, _ := marshal(FromMessage(back)); err != nil || !bytes.Equal(again, want) {
		t.Fatalf("%s: decoded and encoded again\n%s (%v)\nwant\n%s", what, again, err, want)
	}
}

// TestDraftMessage: a draft completed with a Seq and the append's time is
// the document EncodeMessage writes for the message Sequence returns.
func TestDraftMessage(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	now := time.Date(2026, 12, 5, 8, 0, 0, 123456789, time.FixedZone("CET", 3600))
	for i := range 3000 {
		m := randMessage(r)
		m.Hub, m.Seq = "h.example.net", 0
		d, err := DraftMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		seq := r.Int64N(1 << 40)
		got, err := d.Complete([]byte("prefix"), seq, now)
		if err != nil {
			t.Fatal(err)
		}
		stored := Sequence([]dps.Message{m}, map[string]int64{"h.example.net": seq}, []HubCount{{"h.example.net", 1}}, now.UTC())[0]
		want, err := EncodeMessage(stored)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("message %d:\n got %s\nwant prefix%s", i, got, want)
		}
		if len(want) > d.Size() {
			t.Fatalf("message %d: %d bytes, over the draft's size %d", i, len(want), d.Size())
		}
	}
}

func FuzzEncodeMessage(f *testing.F) {
	f.Add("h", "d", "m", "k", "v", []byte("body"), int64(1), int64(0))
	f.Add("\xff", "\u2028", "<&>", "\x00", `"\`, []byte(nil), int64(-5), int64(1700000000123456789))
	f.Fuzz(func(t *testing.T, hub, dev, id, k, v string, body []byte, seq, enq int64) {
		m := dps.Message{Hub: hub, DeviceID: dev, MessageID: id, Seq: seq, Properties: map[string]string{k: v, v: k}, System: map[string]string{k: id}, Body: body}
		if enq != 0 {
			m.Enqueued = time.Unix(0, enq)
		}
		checkEncodeMessage(t, "fuzzed", m)
	})
}

func BenchmarkEncodeMessage(b *testing.B) {
	m := dps.Message{Hub: "bench.example.net", DeviceID: "dev-1", MessageID: "m-1", ContentType: "application/json", ContentEncoding: "utf-8",
		Enqueued: time.Now().UTC(), Seq: 12345, Properties: map[string]string{"n": "1"},
		System: map[string]string{"iothub-connection-device-id": "dev-1", "iothub-connection-auth-generation-id": "638000000000000000",
			"iothub-connection-auth-method": `{"scope":"device","type":"sas","issuer":"iothub"}`, "iothub-message-source": "Telemetry"},
		Body: bytes.Repeat([]byte("x"), 1024)}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := EncodeMessage(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := marshal(FromMessage(m)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

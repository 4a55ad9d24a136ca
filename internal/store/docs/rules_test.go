package docs_test

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

func TestETags(t *testing.T) {
	e := docs.NewETag()
	if len(e) < 3 || e[0] != '"' || e[len(e)-1] != '"' || e == docs.NewETag() {
		t.Errorf("NewETag = %q: want a fresh quoted value", e)
	}
	r, err := base64.StdEncoding.DecodeString(docs.NewRegistrationETag())
	if err != nil || r[0] != '"' || r[len(r)-1] != '"' {
		t.Errorf("NewRegistrationETag = base64 of %q, %v: want base64 of a quoted value", r, err)
	}
	for _, tt := range []struct {
		ifMatch, stored string
		same            bool
	}{
		{`"abc"`, `"abc"`, true},
		{`abc`, `"abc"`, true},
		{`W/"abc"`, `"abc"`, true},
		{` "abc" `, `abc`, true},
		{`"abd"`, `"abc"`, false},
		{`""abc""`, `"abc"`, false}, // one level of quotes only
		{`*`, `"abc"`, false},       // * is the callers' rule, not a match
	} {
		if got := docs.SameETag(tt.ifMatch, tt.stored); got != tt.same {
			t.Errorf("SameETag(%q, %q) = %v, want %v", tt.ifMatch, tt.stored, got, tt.same)
		}
	}
}

func TestCheckPutAndDelete(t *testing.T) {
	for _, tt := range []struct {
		exists  bool
		ifMatch string
		fails   bool
		kind    dps.Kind
	}{
		{false, "", false, 0},
		{false, "*", false, 0},
		{false, `"x"`, true, dps.KindPrecondition},
		{true, "", true, dps.KindConflict},
		{true, "*", false, 0},
		{true, `"e1"`, false, 0},
		{true, `W/"e1"`, false, 0},
		{true, `"e2"`, true, dps.KindPrecondition},
	} {
		err := docs.CheckPut(tt.exists, `"e1"`, "enrollment", "Dev-1", tt.ifMatch)
		if (err != nil) != tt.fails || err != nil && dps.KindOf(err) != tt.kind {
			t.Errorf("CheckPut(exists %v, If-Match %q) = %v, want kind %v", tt.exists, tt.ifMatch, err, tt.kind)
		}
		if err != nil && !strings.Contains(err.Error(), `enrollment "Dev-1"`) {
			t.Errorf("CheckPut error %q does not name the record", err)
		}
	}
	for _, ifMatch := range []string{"", "*", `"e1"`} {
		if err := docs.CheckDelete(`"e1"`, "group", "g", ifMatch); err != nil {
			t.Errorf("CheckDelete(If-Match %q) = %v", ifMatch, err)
		}
	}
	if err := docs.CheckDelete(`"e1"`, "group", "g", `"e2"`); dps.KindOf(err) != dps.KindPrecondition {
		t.Errorf("CheckDelete with another etag = %v, want precondition", err)
	}
	if err := docs.NotFound("operation", "op-1"); dps.KindOf(err) != dps.KindNotFound || !strings.Contains(err.Error(), `operation "op-1" not found`) {
		t.Errorf("NotFound = %v", err)
	}
}

func TestCursorsAndPages(t *testing.T) {
	for _, id := range []string{"dev-1", "a/b?c=d&e", "ü"} {
		if got, err := docs.DecodeCursor(docs.EncodeCursor(id)); err != nil || got != id {
			t.Errorf("cursor of %q decodes to %q, %v", id, got, err)
		}
	}
	if got, err := docs.DecodeCursor(""); err != nil || got != "" {
		t.Errorf(`DecodeCursor("") = %q, %v`, got, err)
	}
	if _, err := docs.DecodeCursor("%%%not-a-token"); dps.KindOf(err) != dps.KindInvalid || dps.AsError(err).Code != 400004 {
		t.Errorf("bad token: %v, want invalid 400004", err)
	}
	if docs.PageSize(0) != docs.DefaultPageSize || docs.PageSize(-1) != docs.DefaultPageSize || docs.PageSize(5) != 5 {
		t.Errorf("PageSize: 0→%d -1→%d 5→%d", docs.PageSize(0), docs.PageSize(-1), docs.PageSize(5))
	}
	key := func(s string) string { return s }
	items, next := docs.Page([]string{"a", "b", "c"}, 2, key)
	if !slices.Equal(items, []string{"a", "b"}) || next != docs.EncodeCursor("b") {
		t.Errorf("Page of 3 by 2 = %v, %q", items, next)
	}
	if items, next := docs.Page([]string{"a", "b"}, 2, key); len(items) != 2 || next != "" {
		t.Errorf("last page = %v, %q", items, next)
	}
}

func TestMessageHubsAndSequence(t *testing.T) {
	for _, bad := range [][]dps.Message{
		{{Hub: "h", DeviceID: "d"}, {DeviceID: "d"}},
		{{Hub: "h"}},
	} {
		if _, err := docs.MessageHubs(bad); dps.KindOf(err) != dps.KindInvalid {
			t.Errorf("MessageHubs(%+v) = %v, want KindInvalid", bad, err)
		}
	}
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.FixedZone("x", 3600))
	msgs := []dps.Message{
		{Hub: "Hub-B", DeviceID: "d1", MessageID: "b1"},
		{Hub: "hub-a", DeviceID: "d2", MessageID: "a1", Enqueued: at},
		{Hub: "HUB-B", DeviceID: "d3", MessageID: "b2"},
		{Hub: "hub-b", DeviceID: "d4", MessageID: "b3"},
	}
	hubs, err := docs.MessageHubs(msgs)
	if err != nil || !slices.Equal(hubs, []docs.HubCount{{"hub-a", 1}, {"hub-b", 3}}) {
		t.Fatalf("MessageHubs = %v, %v; want the folded hubs in order with their counts", hubs, err)
	}
	now := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)
	out := docs.Sequence(msgs, map[string]int64{"hub-a": 7, "hub-b": 3}, hubs, now)
	var got []string
	for _, m := range out {
		got = append(got, fmt.Sprintf("%s:%d", m.MessageID, m.Seq))
	}
	if want := []string{"b1:1", "a1:7", "b2:2", "b3:3"}; !slices.Equal(got, want) {
		t.Errorf("sequenced %v, want %v", got, want)
	}
	if !out[1].Enqueued.Equal(at) || out[1].Enqueued.Location() != time.UTC || !out[0].Enqueued.Equal(now) {
		t.Errorf("enqueued times %v, %v: want the given one in UTC and now for an unset one", out[1].Enqueued, out[0].Enqueued)
	}
	if msgs[0].Seq != 0 || !msgs[0].Enqueued.IsZero() {
		t.Error("Sequence changed its input")
	}
}

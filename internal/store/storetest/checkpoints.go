package storetest

import (
	"testing"
	"time"
)

// testEventCheckpoints: a named consumer's checkpoint of a hub's event
// log is stored, read back (the hub in any case, the consumer as given),
// moved forward and back; other hubs and consumers have their own.
func testEventCheckpoints(t *testing.T, f Factory) {
	s := f.New(t)
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	check := func(hub, consumer string, want int64, wantOK bool) {
		t.Helper()
		seq, ok, err := s.EventCheckpoint(ctx(), hub, consumer)
		if err != nil || seq != want || ok != wantOK {
			t.Errorf("EventCheckpoint(%s, %s) = %d, %v, %v; want %d, %v", hub, consumer, seq, ok, err, want, wantOK)
		}
	}
	check("hub-a.example.net", "dashboard", 0, false)
	for _, c := range []struct {
		hub, consumer string
		seq           int64
	}{
		{"Hub-A.example.net", "dashboard", 41},
		{"hub-a.example.net", "Dashboard", 7},
		{"hub-b.example.net", "dashboard", 1000},
		{"HUB-A.example.net", "dashboard", 42},
	} {
		if err := s.SetEventCheckpoint(ctx(), c.hub, c.consumer, c.seq, t0); err != nil {
			t.Fatalf("SetEventCheckpoint(%v): %v", c, err)
		}
	}
	check("hub-a.example.net", "dashboard", 42, true)
	check("hub-a.example.net", "Dashboard", 7, true)
	check("Hub-B.example.net", "dashboard", 1000, true)
	check("hub-c.example.net", "dashboard", 0, false)
	// Back to the start (a replay), and to 0.
	if err := s.SetEventCheckpoint(ctx(), "hub-a.example.net", "dashboard", 0, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	check("hub-a.example.net", "dashboard", 0, true)
}

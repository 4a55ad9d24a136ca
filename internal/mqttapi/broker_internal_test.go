package mqttapi

import (
	"math"
	"testing"
	"time"
)

// A recurring event is logged the first time, then at most once per
// logInterval with the number of events not logged in between.
func TestThrottledLog(t *testing.T) {
	var l throttledLog
	t0 := time.Unix(1_700_000_000, 0)
	steps := []struct {
		at         time.Duration
		ok         bool
		suppressed int64
	}{
		{0, true, 0},
		{time.Second, false, 0},
		{5 * time.Second, false, 0},
		{9 * time.Second, false, 0},
		{10 * time.Second, true, 3},
		{10*time.Second + time.Millisecond, false, 0},
		{25 * time.Second, true, 1},
		{36 * time.Second, true, 0},
	}
	for _, s := range steps {
		n, ok := l.event(t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Errorf("event at +%s = %d, %v; want %d, %v", s.at, n, ok, s.suppressed, s.ok)
		}
	}
}

// The default connection limit leaves a quarter of the descriptors to the
// rest of the process, and is at most 100000.
func TestConnectionLimitOfDescriptors(t *testing.T) {
	for _, tt := range []struct {
		nofile uint64
		want   int64
	}{
		{0, 1},
		{1, 1},
		{128, 96},
		{1024, 768},
		{20000, 15000},
		{133333, 100000},
		{1 << 20, 100000},
		{math.MaxUint64, 100000}, // RLIM_INFINITY
	} {
		if got := connectionLimit(tt.nofile); got != tt.want {
			t.Errorf("connectionLimit(%d) = %d, want %d", tt.nofile, got, tt.want)
		}
	}
}

package mqttapi

import (
	"testing"
	"time"
)

// A hub connection may be silent one and a half times its keep-alive, at
// most 1767 s (IoT Hub's cap), and without keep-alive it has no deadline:
// the DPS idle limit does not apply to it.
func TestHubDeadline(t *testing.T) {
	st := newConnState(time.Minute)
	st.hub.Store(&hubConn{})
	for _, tt := range []struct {
		k    uint32
		want time.Duration // 0: no deadline
	}{
		{0, 0},
		{1, 1500 * time.Millisecond},
		{180, 270 * time.Second},
		{240, 360 * time.Second}, // the C SDK: over the DPS idle limit
		{1178, 1767 * time.Second},
		{3600, 1767 * time.Second},
		{65535, 1767 * time.Second},
	} {
		st.keepalive.Store(tt.k)
		start := time.Now()
		got := st.deadline(start.Add(time.Second))
		switch {
		case tt.want == 0 && !got.IsZero():
			t.Errorf("keep-alive %d: deadline in %s, want none", tt.k, got.Sub(start))
		case tt.want != 0 && (got.Sub(start) < tt.want || got.Sub(start) > tt.want+time.Second):
			t.Errorf("keep-alive %d: deadline in %s, want %s", tt.k, got.Sub(start), tt.want)
		}
	}
}

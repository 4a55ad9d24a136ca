package walkthrough

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestWaitFor: waiting for a server block's line is bounded: it ends when
// the line comes, when the block ends, or at the timeout (a changed banner
// fails the walkthrough instead of hanging it).
func TestWaitFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out lockedBuffer
		running := make(chan struct{})
		go func() {
			time.Sleep(time.Second)
			out.Write([]byte("dpsd is ready.\nLinked hubs: localhost\n"))
		}()
		if err := waitFor(&out, "Linked hubs:", running, time.Minute); err != nil {
			t.Errorf("the line came: %v", err)
		}
		start := time.Now()
		if err := waitFor(&out, "Hubs linked:", running, 30*time.Second); err == nil || !strings.Contains(err.Error(), "within 30s") || time.Since(start) != 30*time.Second {
			t.Errorf("a line that never comes: %v after %s", err, time.Since(start))
		}
		ended := make(chan struct{})
		go func() { time.Sleep(time.Second); close(ended) }()
		if err := waitFor(&out, "Hubs linked:", ended, time.Hour); err == nil || !strings.Contains(err.Error(), "ended before") {
			t.Errorf("a block that ended: %v", err)
		}
	})
}

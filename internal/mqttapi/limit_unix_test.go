//go:build unix

package mqttapi_test

import (
	"log/slog"
	"syscall"
	"testing"

	"github.com/opendps/dps/internal/mqttapi"
)

// Without a MaxConnections option the broker takes three quarters of the
// soft limit on open files, when that is below 100000, and says so at debug.
// The test lowers its own soft limit for the time of the test.
func TestDefaultMaxConnectionsFollowsRlimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	const soft = 1000
	if rl.Cur < soft {
		t.Fatalf("the soft limit on open files is %d; the test needs at least %d", rl.Cur, soft)
	}
	lowered := rl
	lowered.Cur = soft
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Errorf("restoring the limit on open files: %v", err)
		}
	})
	logs := &records{}
	b, _ := broker(t, mqttapi.BrokerOptions{Logger: slog.New(logs)})
	if got := b.MaxConnections(); got != 750 {
		t.Errorf("MaxConnections = %d under a soft limit of %d open files, want 750", got, soft)
	}
	logged := false
	for _, r := range logs.all() {
		r.Attrs(func(a slog.Attr) bool {
			logged = logged || r.Level == slog.LevelDebug && a.Key == "max_connections" && a.Value.Int64() == 750
			return true
		})
	}
	if !logged {
		t.Error("the connection limit in force was not logged at debug")
	}
}

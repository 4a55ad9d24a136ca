package health_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/health"
)

func TestCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var w health.Writes
		writes := 0
		var heartbeatErr error
		heartbeat := func(context.Context) error { writes++; return heartbeatErr }
		check := func() error { return w.Check(context.Background(), heartbeat) }

		if err := check(); err != nil || writes != 1 {
			t.Fatalf("first check = %v after %d writes, want nil after 1", err, writes)
		}
		time.Sleep(health.DefaultEvery / 2)
		if err := check(); err != nil || writes != 1 {
			t.Errorf("check within Every = %v after %d writes, want nil without writing", err, writes)
		}

		// A write that failed as unavailable fails the check at once, for Memory.
		full := &dps.Error{Kind: dps.KindUnavailable, Message: "the database disk is full"}
		if got := w.Observe(full); got != full {
			t.Errorf("Observe returned %v, want its argument", got)
		}
		if err := check(); dps.KindOf(err) != dps.KindUnavailable || !errors.Is(err, full) {
			t.Errorf("check after a full disk = %v, want unavailable wrapping it", err)
		}
		// Other failures (a conflict, a bad request) say nothing about the store.
		var other health.Writes
		other.Observe(&dps.Error{Kind: dps.KindConflict, Message: "exists"})
		other.Observe(errors.New("plain"))
		if err := other.Check(context.Background(), func(context.Context) error { return nil }); err != nil {
			t.Errorf("check after non-outage errors = %v", err)
		}

		time.Sleep(health.DefaultMemory)
		if err := check(); err != nil || writes != 2 {
			t.Errorf("check after Memory = %v after %d writes, want nil after a new heartbeat", err, writes)
		}

		// A failing heartbeat fails the check, and the next check writes again.
		time.Sleep(health.DefaultEvery)
		heartbeatErr = errors.New("disk I/O error")
		if err := check(); dps.KindOf(err) != dps.KindUnavailable {
			t.Errorf("check with a failing heartbeat = %v, want unavailable", err)
		}
		heartbeatErr = nil
		if err := check(); err != nil || writes != 4 {
			t.Errorf("check after the heartbeat recovered = %v after %d writes, want nil after 4", err, writes)
		}
	})
}

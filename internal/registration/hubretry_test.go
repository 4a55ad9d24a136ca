package registration_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/store/sqlite"
)

// scriptedHub is a hub connector whose Provision answers from a script:
// fail(n) is the error of the n-th call (0-based); nil succeeds.
type scriptedHub struct {
	fail  func(n int) error
	mu    sync.Mutex
	calls []time.Time
}

func (h *scriptedHub) Provision(ctx context.Context, d dps.HubDevice) error {
	h.mu.Lock()
	n := len(h.calls)
	h.calls = append(h.calls, time.Now())
	h.mu.Unlock()
	return h.fail(n)
}

func (h *scriptedHub) Deprovision(context.Context, string, string) error { return nil }

func (h *scriptedHub) attempts() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.calls...)
}

// hubCase registers one symmetric-key device against a service whose hub
// connector is hub, and returns the service, the operation Register
// answered and the device's credential.
func hubCase(t *testing.T, hub *scriptedHub, mods ...func(*registration.Options)) (*registration.Service, dps.Operation, dps.Credential) {
	t.Helper()
	db := dpstest.OpenSQLite(t, filepath.Join(t.TempDir(), "dps.db"))
	e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("dev-hub"))
	c := cred(t, "dev-hub", string(e.Attestation.SymmetricKey.PrimaryKey))
	s := newService(t, db, hub, append([]func(*registration.Options){func(o *registration.Options) { o.SweepInterval = 5 * time.Second }}, mods...)...)
	op, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: "dev-hub", Credential: c})
	if err != nil {
		t.Fatal(err)
	}
	return s, op, c
}

// pollUntilFinal polls once a (fake) second until the operation is final.
func pollUntilFinal(t *testing.T, s *registration.Service, op dps.Operation, c dps.Credential, limit time.Duration) dps.Operation {
	t.Helper()
	for start := time.Now(); time.Since(start) < limit; time.Sleep(time.Second) {
		got, err := s.Operation(context.Background(), scope, "dev-hub", op.ID, c)
		if err != nil {
			t.Fatalf("Operation: %v", err)
		}
		if got.Status.Final() {
			return got
		}
	}
	t.Fatalf("operation still %s after %s", op.Status, limit)
	return dps.Operation{}
}

// TestHubAlwaysTransientFails: a connector that always fails transiently
// is retried with backoff for HubRetryFor (10 minutes by default), then
// the registration ends failed with CodeHubUnavailable and a message that
// says why; it does not stay assigning.
func TestHubAlwaysTransientFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub := &scriptedHub{fail: func(int) error { return errors.New("dial tcp: connection refused") }}
		start := time.Now()
		s, op, c := hubCase(t, hub)
		if op.Status != dps.StatusAssigning {
			t.Fatalf("Register answered %s, want assigning", op.Status)
		}
		time.Sleep(9 * time.Minute)
		if got, _ := s.Operation(context.Background(), scope, "dev-hub", op.ID, c); got.Status != dps.StatusAssigning {
			t.Fatalf("after 9 minutes: %s, want still assigning", got.Status)
		}
		final := pollUntilFinal(t, s, op, c, 5*time.Minute)
		took := time.Since(start)
		r := final.Result
		if final.Status != dps.StatusFailed || r == nil || r.ErrorCode != dps.CodeHubUnavailable ||
			!strings.Contains(r.ErrorMessage, "could not create the device on hub-") || !strings.Contains(r.ErrorMessage, "attempts") {
			t.Fatalf("final %s %+v, want failed with %d and a clear message", final.Status, r, dps.CodeHubUnavailable)
		}
		if strings.Contains(r.ErrorMessage, "connection refused") {
			t.Errorf("message %q shows the connector's internal error", r.ErrorMessage)
		}
		calls := hub.attempts()
		if took < 10*time.Minute || took > 12*time.Minute {
			t.Errorf("failed after %s, want just past 10 minutes", took)
		}
		// Backoff: 1 s doubling to at most a minute — about 15 attempts in 10
		// minutes, not one per sweep (120) nor a busy loop.
		if len(calls) < 10 || len(calls) > 25 {
			t.Errorf("%d attempts in %s, want about 15", len(calls), took)
		}
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].Sub(calls[i-1]); gap < time.Second {
				t.Errorf("attempt %d came %s after the one before, want at least 1s", i, gap)
			}
		}
	})
}

// TestHubRetryBudgetIsKept: the last wait is cut to what is left of
// HubRetryFor, so a registration fails when its budget ends, not a
// backoff (or the hub's Retry-After) later: with a 6 s budget and a hub
// asking for 4 s each time, the attempts are at 0, 4–5 and 6 s, and the
// registration fails at 6 s; uncut, the third attempt came at 8–10 s.
func TestHubRetryBudgetIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub := &scriptedHub{fail: func(int) error { return fmt.Errorf("create the device: %w", throttled{4 * time.Second}) }}
		start := time.Now()
		s, op, c := hubCase(t, hub, func(o *registration.Options) { o.HubRetryFor = 6 * time.Second })
		final := pollUntilFinal(t, s, op, c, time.Minute)
		if final.Status != dps.StatusFailed || final.Result.ErrorCode != dps.CodeHubUnavailable {
			t.Fatalf("final %s %+v, want failed with %d", final.Status, final.Result, dps.CodeHubUnavailable)
		}
		calls := hub.attempts()
		if len(calls) != 3 || calls[1].Sub(start) < 4*time.Second || calls[1].Sub(start) > 5*time.Second || !calls[2].Equal(start.Add(6*time.Second)) {
			t.Fatalf("attempts at %v after the start, want 0, 4–5 s and 6 s", offsets(start, calls))
		}
		if at := final.Updated.Sub(start); at != 6*time.Second {
			t.Errorf("failed at %s, want at the end of its 6 s budget", at)
		}
	})
}

func offsets(start time.Time, ts []time.Time) []time.Duration {
	var out []time.Duration
	for _, t := range ts {
		out = append(out, t.Sub(start))
	}
	return out
}

// TestHubRetryLimit: HubRetryLimit ends the retries after that many
// attempts, however little time passed.
func TestHubRetryLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub := &scriptedHub{fail: func(int) error { return errors.New("hub down") }}
		s, op, c := hubCase(t, hub, func(o *registration.Options) { o.HubRetryLimit = 3 })
		final := pollUntilFinal(t, s, op, c, time.Minute)
		if final.Status != dps.StatusFailed || final.Result.ErrorCode != dps.CodeHubUnavailable || len(hub.attempts()) != 3 {
			t.Fatalf("final %s %+v after %d attempts, want failed with %d after 3", final.Status, final.Result, len(hub.attempts()), dps.CodeHubUnavailable)
		}
	})
}

// TestHubPermanentFailureEndsAtOnce: a *dps.HubFailure fails the
// registration at the first attempt with its code and message
// (CodeHubRejected when it has none).
func TestHubPermanentFailureEndsAtOnce(t *testing.T) {
	for _, tt := range []struct {
		failure  *dps.HubFailure
		wantCode int
		wantMsg  string
	}{
		{&dps.HubFailure{Code: dps.CodeInvalid, Message: "device ID dev-hub is reserved on this hub"}, dps.CodeInvalid, "device ID dev-hub is reserved on this hub"},
		{&dps.HubFailure{Message: "the hub refuses symmetric-key devices"}, dps.CodeHubRejected, "the hub refuses symmetric-key devices"},
		// Not a 4xxxxx refusal: reported as a rejection, with a message.
		{&dps.HubFailure{Code: dps.CodeHubUnavailable}, dps.CodeHubRejected, "The IoT hub refused to create the device on hub-"},
		{&dps.HubFailure{Code: 4002100, Message: "m"}, dps.CodeHubRejected, "m"},
	} {
		hub := &scriptedHub{fail: func(int) error { return tt.failure }}
		s, op, c := hubCase(t, hub)
		final := waitFinal(t, s, "dev-hub", op.ID, c)
		if final.Status != dps.StatusFailed || final.Result.ErrorCode != tt.wantCode || !strings.HasPrefix(final.Result.ErrorMessage, tt.wantMsg) {
			t.Errorf("%+v: final %s %+v, want failed with %d %q", tt.failure, final.Status, final.Result, tt.wantCode, tt.wantMsg)
		}
		if n := len(hub.attempts()); n != 1 {
			t.Errorf("%+v: %d attempts, want 1", tt.failure, n)
		}
	}
}

// TestHubTransientThenOK: transient failures are retried with growing
// waits (1 s, 2 s, 4 s, each plus a jitter of up to a quarter), and the registration is assigned once the hub
// answers.
func TestHubTransientThenOK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub := &scriptedHub{fail: func(n int) error {
			if n < 3 {
				return errors.New("hub busy")
			}
			return nil
		}}
		s, op, c := hubCase(t, hub)
		final := pollUntilFinal(t, s, op, c, time.Minute)
		if final.Status != dps.StatusAssigned || final.Result.AssignedHub == "" {
			t.Fatalf("final %s %+v, want assigned", final.Status, final.Result)
		}
		calls := hub.attempts()
		if len(calls) != 4 {
			t.Fatalf("%d attempts, want 4", len(calls))
		}
		for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
			if gap := calls[i+1].Sub(calls[i]); gap < want || gap > want+want/4 {
				t.Errorf("wait before attempt %d = %s, want %s plus at most a quarter", i+2, gap, want)
			}
		}
	})
}

// hiddenPending is a store whose listings of unfinished operations leave
// everything out, as PostgreSQL's do for operations under a lease (this
// node's own included) and beyond the first 10,000.
type hiddenPending struct{ *sqlite.DB }

func (hiddenPending) PendingOperations(context.Context) ([]dps.Operation, error) { return nil, nil }
func (hiddenPending) PendingOperationHeaders(context.Context) ([]dps.Operation, error) {
	return nil, nil
}

// TestHubRetriesCountWhenNotListed: an operation backing off after a hub
// failure keeps its count when the sweep's listing does not show it, so the
// retry limit is reached; forgetting it at every sweep restarted the count
// and left the device assigning forever.
func TestHubRetriesCountWhenNotListed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub := &scriptedHub{fail: func(int) error { return errors.New("dial tcp: connection refused") }}
		db := dpstest.OpenSQLite(t, filepath.Join(t.TempDir(), "dps.db"))
		e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("dev-hub"))
		c := cred(t, "dev-hub", string(e.Attestation.SymmetricKey.PrimaryKey))
		s := newService(t, db, hub, func(o *registration.Options) {
			o.Store = hiddenPending{db}
			o.SweepInterval = 2 * time.Second
			o.HubRetryLimit = 6 // attempts at 0, 1, 3, 7, 15, 31 s: several sweeps in between
		})
		op, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: "dev-hub", Credential: c})
		if err != nil {
			t.Fatal(err)
		}
		final := pollUntilFinal(t, s, op, c, 2*time.Minute)
		if final.Status != dps.StatusFailed || final.Result == nil || final.Result.ErrorCode != dps.CodeHubUnavailable {
			t.Fatalf("final %s %+v, want failed with %d", final.Status, final.Result, dps.CodeHubUnavailable)
		}
		if n := len(hub.attempts()); n != 6 {
			t.Errorf("%d attempts, want the limit of 6", n)
		}
	})
}

// throttled is a hub's 429 with Retry-After, as the remote connector
// returns it.
type throttled struct{ wait time.Duration }

func (e throttled) Error() string             { return "HTTP 429: throttled" }
func (e throttled) RetryAfter() time.Duration { return e.wait }

// perDeviceHub is a hub connector whose Provision answers from a script
// per device: fail(n) is the error of the device's n-th call (0-based).
type perDeviceHub struct {
	fail  func(n int) error
	mu    sync.Mutex
	calls map[string][]time.Time
}

func (h *perDeviceHub) Provision(ctx context.Context, d dps.HubDevice) error {
	h.mu.Lock()
	n := len(h.calls[d.DeviceID])
	h.calls[d.DeviceID] = append(h.calls[d.DeviceID], time.Now())
	h.mu.Unlock()
	return h.fail(n)
}

func (h *perDeviceHub) Deprovision(context.Context, string, string) error { return nil }

func (h *perDeviceHub) attempts(id string) []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.calls[id]...)
}

// TestHubRetryJitter: devices throttled by their hub at the same instant
// (429, Retry-After: 3) come back at different times, none before the
// hub's Retry-After, and are assigned; the backoff's jitter keeps a
// throttled fleet from returning as one.
func TestHubRetryJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub := &perDeviceHub{calls: map[string][]time.Time{}, fail: func(n int) error {
			if n == 0 {
				return fmt.Errorf("create the device: %w", throttled{3 * time.Second})
			}
			return nil
		}}
		db := dpstest.OpenSQLite(t, filepath.Join(t.TempDir(), "dps.db"))
		ids := []string{"dev-j1", "dev-j2", "dev-j3", "dev-j4"}
		creds := map[string]dps.Credential{}
		for _, id := range ids {
			e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment(id))
			creds[id] = cred(t, id, string(e.Attestation.SymmetricKey.PrimaryKey))
		}
		s := newService(t, db, hub, func(o *registration.Options) { o.SweepInterval = 5 * time.Second })
		start := time.Now()
		ops := map[string]dps.Operation{}
		for _, id := range ids {
			op, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: id, Credential: creds[id]})
			if err != nil || op.Status != dps.StatusAssigning {
				t.Fatalf("Register(%s) = %s, %v; want assigning", id, op.Status, err)
			}
			ops[id] = op
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		retried := map[time.Time]string{}
		for _, id := range ids {
			calls := hub.attempts(id)
			if len(calls) != 2 || !calls[0].Equal(start) {
				t.Fatalf("%s: attempts at %v, want one at once and one retry", id, calls)
			}
			wait := calls[1].Sub(calls[0])
			if wait < 3*time.Second || wait > 3*time.Second+750*time.Millisecond {
				t.Errorf("%s retried %s after the 429, want the Retry-After (3 s) plus at most a quarter", id, wait)
			}
			if other, dup := retried[calls[1]]; dup {
				t.Errorf("%s and %s retried at the same instant (+%s)", id, other, wait)
			}
			retried[calls[1]] = id
			op, err := s.Operation(context.Background(), scope, id, ops[id].ID, creds[id])
			if err != nil || op.Status != dps.StatusAssigned {
				t.Errorf("%s: %s, %v; want assigned", id, op.Status, err)
			}
		}
	})
}

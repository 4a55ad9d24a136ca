package registration_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/sas"
)

// These tests run the engine's own clock (time.Now, tickers) in a synctest
// bubble, on an in-memory store: real SQLite I/O never counts as durably
// blocked, so the bubble's clock would not advance over it.

// memStore is an in-memory registration store and TPM challenge store.
// The embedded Store is nil: a method the engine calls that memStore does
// not implement panics, which names it.
type memStore struct {
	registration.Store
	mu          sync.Mutex
	enrollments map[string]dps.Enrollment
	groups      []dps.Group
	cas         map[string]dps.CACertificate
	ops         map[string]dps.Operation
	regs        map[string]dps.Registration
	challenges  map[string]dps.Challenge
	lease       struct {
		owner string
		until time.Time
	}
	claims        []claimCall
	groupsVersion int64
	// failCompletes is how many CompleteOperation calls fail (unavailable).
	failCompletes int
}

type claimCall struct {
	at, until time.Time
	owner     string
	owned     bool
}

func newMemStore() *memStore {
	return &memStore{enrollments: map[string]dps.Enrollment{}, cas: map[string]dps.CACertificate{}, ops: map[string]dps.Operation{}, regs: map[string]dps.Registration{}, challenges: map[string]dps.Challenge{}}
}

func (m *memStore) Enrollment(_ context.Context, id string) (dps.Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enrollments[dps.FoldID(id)]
	if !ok {
		return e, &dps.Error{Kind: dps.KindNotFound, Message: "no enrollment"}
	}
	return e, nil
}

func (m *memStore) Groups(_ context.Context, t dps.AttestationType) ([]dps.Group, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []dps.Group
	for _, g := range m.groups {
		if g.Attestation.Type == t {
			out = append(out, g)
		}
	}
	return out, nil
}

func (m *memStore) CACertificate(_ context.Context, name string) (dps.CACertificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cas[name]
	if !ok {
		return c, &dps.Error{Kind: dps.KindNotFound, Message: "no CA certificate"}
	}
	return c, nil
}

func (m *memStore) Registration(_ context.Context, id string) (dps.Registration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.regs[dps.FoldID(id)]
	if !ok {
		return r, &dps.Error{Kind: dps.KindNotFound, Message: "no registration"}
	}
	return r, nil
}

func (m *memStore) Operation(_ context.Context, id string) (dps.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	op, ok := m.ops[id]
	if !ok {
		return op, &dps.Error{Kind: dps.KindNotFound, Message: "no operation"}
	}
	return op, nil
}

func (m *memStore) write(op dps.Operation) dps.Operation {
	m.ops[op.ID] = op
	if op.Status.Final() && op.Result != nil {
		r := *op.Result
		r.ETag = time.Now().String()
		m.regs[dps.FoldID(op.RegistrationID)] = r
	}
	return op
}

func (m *memStore) CreateOperation(_ context.Context, op dps.Operation) (dps.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.ops[op.ID]; ok {
		return op, &dps.Error{Kind: dps.KindConflict, Message: "operation exists"}
	}
	return m.write(op), nil
}

func (m *memStore) CompleteOperation(_ context.Context, op dps.Operation) (dps.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failCompletes > 0 {
		m.failCompletes--
		return op, &dps.Error{Kind: dps.KindUnavailable, Message: "store unavailable"}
	}
	return m.write(op), nil
}

func (m *memStore) PendingOperations(context.Context) ([]dps.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []dps.Operation
	for _, op := range m.ops {
		if !op.Status.Final() {
			out = append(out, op)
		}
	}
	return out, nil
}

// PendingOperationHeaders returns the unfinished operations whole: the
// engine reads only the header fields.
func (m *memStore) PendingOperationHeaders(ctx context.Context) ([]dps.Operation, error) {
	return m.PendingOperations(ctx)
}

// GroupsVersion is a new version at every call: tests change groups
// directly, so the engine prepares them again on every scan.
func (m *memStore) GroupsVersion(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.groupsVersion++
	return m.groupsVersion, nil
}

// TrimOperations and DeleteOperationsBefore keep every operation: these
// tests look at operations, not at what the store keeps of them.
func (m *memStore) TrimOperations(context.Context, string, int) (int64, error) { return 0, nil }
func (m *memStore) DeleteOperationsBefore(context.Context, time.Time) (int64, error) {
	return 0, nil
}

// ClaimOperation has the stores' lease rule: another owner's unexpired
// lease wins; a zero until gives the lease up.
func (m *memStore) ClaimOperation(_ context.Context, id, owner string, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	owned := m.lease.owner == "" || m.lease.owner == owner || !now.Before(m.lease.until)
	if owned {
		m.lease.owner, m.lease.until = owner, until
		if until.IsZero() {
			m.lease.owner = ""
		}
	}
	m.claims = append(m.claims, claimCall{at: now, until: until, owner: owner, owned: owned})
	return owned, nil
}

func (m *memStore) claimLog() []claimCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]claimCall(nil), m.claims...)
}

func (m *memStore) PutChallenge(_ context.Context, c dps.Challenge) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.challenges[dps.FoldID(c.RegistrationID)] = c
	return nil
}

func (m *memStore) Challenge(_ context.Context, id string) (dps.Challenge, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.challenges[dps.FoldID(id)]
	if !ok {
		return c, &dps.Error{Kind: dps.KindNotFound, Message: "no challenge"}
	}
	return c, nil
}

func (m *memStore) ConsumeChallenge(_ context.Context, id string, key dps.Key) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.challenges[dps.FoldID(id)]
	if !ok || c.Key != key {
		return false, nil
	}
	delete(m.challenges, dps.FoldID(id))
	return true, nil
}

// memHub records provisioned devices.
type memHub struct{}

func (memHub) Provision(context.Context, dps.HubDevice) error    { return nil }
func (memHub) Deprovision(context.Context, string, string) error { return nil }

// bubbleAlloc assigns hub-a, after waiting for release when it is set.
type bubbleAlloc struct{ release chan struct{} }

func (a bubbleAlloc) Allocate(ctx context.Context, r dps.AllocationRequest) (dps.Assignment, error) {
	if a.release != nil {
		select {
		case <-a.release:
		case <-ctx.Done():
			return dps.Assignment{}, ctx.Err()
		}
	}
	return dps.Assignment{Hub: r.Candidates[0].HostName}, nil
}

func newBubbleService(st *memStore, alloc registration.Allocator, mods ...func(*registration.Options)) *registration.Service {
	o := registration.Options{
		IDScope:    scope,
		LinkedHubs: []dps.LinkedHub{{HostName: "hub-a.example.net", ApplyAllocationPolicy: true, AllocationWeight: 1}},
		Allocators: map[dps.AllocationPolicy]registration.Allocator{dps.AllocationHashed: alloc, dps.AllocationCustom: alloc},
		Hubs:       memHub{},
		Store:      st,
		NodeID:     "node-a",
	}
	for _, m := range mods {
		m(&o)
	}
	if o.Attestors == nil {
		o.Attestors = attestors(st, mechanisms{now: o.Now})
	}
	return registration.New(o)
}

// pendingOp stores a custom-allocation enrollment and an unfinished
// operation of it, as a crash or another node leaves them.
func pendingOp(st *memStore, regID string) dps.Operation {
	e := dpstest.SymmetricKeyEnrollment(regID)
	e.AllocationPolicy = dps.AllocationCustom
	e.CustomAllocation = &dps.CustomAllocation{WebhookURL: "https://hook.example/alloc", APIVersion: "2021-10-01"}
	st.enrollments[dps.FoldID(regID)] = e
	op := dps.Operation{ID: "op-" + regID, RegistrationID: regID, Proof: dps.Proof{Type: dps.AttestationSymmetricKey}, Status: dps.StatusAssigning, Created: time.Now().UTC(), Updated: time.Now().UTC()}
	st.ops[op.ID] = op
	return op
}

// TestLeaseRenewedWhileWorking: a node holds the lease of the operation it
// works on, renews it every third of the lease while the work takes longer
// than the lease, and stops renewing once the operation is final.
func TestLeaseRenewedWhileWorking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		op := pendingOp(st, "lease-dev")
		release := make(chan struct{})
		s := newBubbleService(st, bubbleAlloc{release: release}, func(o *registration.Options) { o.Lease = 30 * time.Second })
		start := time.Now()
		if err := s.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer s.Close()

		synctest.Wait() // the operation is claimed and its allocation waits
		time.Sleep(65 * time.Second)
		synctest.Wait()
		claims := st.claimLog()
		// Claimed at 0s, renewed at 10s … 60s: each time for a full lease.
		if len(claims) != 7 {
			t.Fatalf("%d claims in 65s of work, want 7 (claim + renewals every 10s): %+v", len(claims), claims)
		}
		for i, c := range claims {
			at := start.Add(time.Duration(i) * 10 * time.Second)
			if !c.at.Equal(at) || !c.until.Equal(at.Add(30*time.Second)) || c.owner != "node-a" || !c.owned {
				t.Errorf("claim %d = %+v, want by node-a at +%ds until +%ds", i, c, i*10, i*10+30)
			}
		}
		if got, _ := st.Operation(t.Context(), op.ID); got.Status.Final() {
			t.Fatalf("operation final before its allocation returned: %v", got.Status)
		}

		close(release)
		synctest.Wait()
		if got, _ := st.Operation(t.Context(), op.ID); got.Status != dps.StatusAssigned {
			t.Fatalf("operation status = %v, want assigned", got.Status)
		}
		n := len(st.claimLog())
		time.Sleep(time.Minute) // no renewals once the work is done
		synctest.Wait()
		if claims := st.claimLog(); len(claims) != n {
			t.Errorf("%d claims after the operation finished", len(claims)-n)
		}
	})
}

// TestLeaseOfAnotherNodeWaitedOut: an operation leased by another node is
// not taken over while the lease runs; the sweeper retries it, and the
// first sweep after the lease expired completes it.
func TestLeaseOfAnotherNodeWaitedOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		op := pendingOp(st, "taken-dev")
		start := time.Now()
		st.lease.owner, st.lease.until = "node-b", start.Add(30*time.Second)
		s := newBubbleService(st, bubbleAlloc{}, func(o *registration.Options) { o.SweepInterval = 5 * time.Second })
		if err := s.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer s.Close()

		time.Sleep(29 * time.Second)
		synctest.Wait()
		if got, _ := st.Operation(t.Context(), op.ID); got.Status.Final() {
			t.Fatalf("operation completed at +29s under another node's lease: %v", got.Status)
		}
		claims := st.claimLog()
		// At start, then one per sweep (5s … 25s).
		if len(claims) != 6 {
			t.Fatalf("%d claims in 29s, want 6 (at start and at every 5s sweep): %+v", len(claims), claims)
		}
		for i, c := range claims {
			if c.owned || !c.at.Equal(start.Add(time.Duration(i)*5*time.Second)) {
				t.Errorf("claim %d = %+v, want refused at +%ds", i, c, i*5)
			}
		}

		time.Sleep(time.Second) // +30s: the sweep then finds the lease expired
		synctest.Wait()
		got, _ := st.Operation(t.Context(), op.ID)
		if got.Status != dps.StatusAssigned {
			t.Fatalf("operation status at +30s = %v, want assigned", got.Status)
		}
		claims = st.claimLog()
		if len(claims) != 7 {
			t.Fatalf("%d claims, want 7 (the last one taking the operation over)", len(claims))
		}
		if taken := claims[6]; !taken.owned || taken.owner != "node-a" || !taken.at.Equal(start.Add(30*time.Second)) || !taken.until.Equal(start.Add(60*time.Second)) {
			t.Errorf("takeover claim = %+v, want owned by node-a at +30s until +60s", taken)
		}
	})
}

// TestLeaseGivenUpAfterTransientFailure: when writing the result fails, the
// node gives its lease up at once (so any node may retry without waiting
// the lease out), and the next sweep completes the operation.
func TestLeaseGivenUpAfterTransientFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		op := pendingOp(st, "flaky-dev")
		st.failCompletes = 1
		start := time.Now()
		s := newBubbleService(st, bubbleAlloc{}, func(o *registration.Options) {
			o.SweepInterval, o.Lease = 5*time.Second, time.Hour
		})
		if err := s.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer s.Close()

		synctest.Wait()
		claims := st.claimLog()
		if len(claims) != 2 || !claims[0].owned || !claims[0].until.Equal(start.Add(time.Hour)) || !claims[1].until.IsZero() || !claims[1].at.Equal(start) {
			t.Fatalf("claims after a failed write = %+v, want a claim for the lease and its release at once", claims)
		}
		if got, _ := st.Operation(t.Context(), op.ID); got.Status.Final() {
			t.Fatalf("operation final after a failed write: %v", got.Status)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got, _ := st.Operation(t.Context(), op.ID); got.Status != dps.StatusAssigned {
			t.Fatalf("operation status after the next sweep = %v, want assigned", got.Status)
		}
		if claims := st.claimLog(); len(claims) != 3 || !claims[2].owned || !claims[2].at.Equal(start.Add(5*time.Second)) {
			t.Errorf("claims = %+v, want the retry claimed at +5s", claims)
		}
	})
}

// TestTPMChallengeLifetime: a challenge answers for ChallengeTTL after it
// was issued, on the engine's default clock, and not a moment longer.
func TestTPMChallengeLifetime(t *testing.T) {
	ek, srk := dpstest.SoftwareTPMKeys(t) // outside the bubble: RSA key generation is slow
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		st := newMemStore()
		st.enrollments[dps.FoldID("tpm-clock")] = tpmEnrollment("tpm-clock", ek)
		st.enrollments[dps.FoldID("tpm-late")] = tpmEnrollment("tpm-late", ek)
		s := newBubbleService(st, bubbleAlloc{}, func(o *registration.Options) {
			o.Attestors = attestors(st, mechanisms{challengeTTL: 2 * time.Minute})
		})
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.Close()

		ask := func(id string) []byte {
			t.Helper()
			_, err := s.Register(ctx, registration.Request{IDScope: scope, RegistrationID: id, Credential: dps.Credential{TPM: &dps.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}}})
			if _, ok := errors.AsType[*dps.TPMChallenge](err); !ok {
				t.Fatalf("Register without SAS = %v, want a TPM challenge", err)
			}
			c, err := st.Challenge(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			k, _ := base64.StdEncoding.DecodeString(string(c.Key))
			return k
		}
		answer := func(id string, key []byte) error {
			c := dps.Credential{SAS: sas.New(scope+"/registrations/"+id, key, "registration", time.Now().Add(time.Hour))}
			_, err := s.Register(ctx, registration.Request{IDScope: scope, RegistrationID: id, Credential: c})
			return err
		}

		onTime, late := ask("tpm-clock"), ask("tpm-late")
		time.Sleep(2 * time.Minute) // exactly the lifetime: still valid
		if err := answer("tpm-clock", onTime); err != nil {
			t.Fatalf("answer at the end of the challenge's lifetime: %v", err)
		}
		time.Sleep(time.Nanosecond)
		err := answer("tpm-late", late)
		if e := dps.AsError(err); err == nil || e.Kind != dps.KindUnauthorized || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("answer after the challenge's lifetime = %v, want unauthorized (expired)", err)
		}
	})
}

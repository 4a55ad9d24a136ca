package engine

import (
	"sync"
	"time"

	"github.com/opendps/dps"
)

// recentOps keeps the latest final operations in memory so polls need no
// read: a final operation never changes, so serving it from memory is
// correct on any node. It holds operations of at most maxBytes (estimated),
// dropping the oldest first, and never the device's payload (a final
// operation does not need it; the webhook's answer for the device, in
// Result, stays).
type recentOps struct {
	maxBytes int

	mu    sync.Mutex // guards the fields below
	m     map[string]recentEntry
	order []string // IDs, oldest first
	size  int
}

type recentEntry struct {
	op   dps.Operation
	size int
}

func (r *recentOps) put(op dps.Operation) {
	if !op.Status.Final() {
		return
	}
	op.Payload = nil
	n := approxSize(op)
	if n > r.maxBytes {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]recentEntry, 1024)
	}
	if _, ok := r.m[op.ID]; ok {
		return
	}
	for r.size+n > r.maxBytes && len(r.order) > 0 {
		old := r.order[0]
		r.order[0] = ""
		r.order = r.order[1:]
		r.size -= r.m[old].size
		delete(r.m, old)
	}
	r.m[op.ID] = recentEntry{op: op, size: n}
	r.order = append(r.order, op.ID)
	r.size += n
}

// get returns a final operation created after notBefore (older ones may
// have been pruned from the store).
func (r *recentOps) get(id string, notBefore time.Time) (dps.Operation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[id]
	if !ok || e.op.Created.Before(notBefore) {
		return dps.Operation{}, false
	}
	return e.op, true
}

// approxSize estimates the memory an operation holds in the cache: a fixed
// part for the structs, map entry and slice slot, plus its variable data.
func approxSize(op dps.Operation) int {
	n := 512 + 2*len(op.ID) + len(op.RegistrationID) + len(op.EnrollmentGroupID) + len(op.Payload) + len(op.CSR) + proofSize(op.Proof)
	for _, c := range op.IssuedChain {
		n += 24 + len(c)
	}
	if r := op.Result; r != nil {
		n += 384 + len(r.RegistrationID) + len(r.DeviceID) + len(r.AssignedHub) + len(r.InitialHub) + len(r.EnrollmentGroupID) +
			len(r.ErrorMessage) + len(r.ETag) + len(r.Payload) + proofSize(r.Proof)
	}
	return n
}

// proofSize estimates the memory of a proof's members.
func proofSize(p dps.Proof) int {
	n := 0
	if p.X509 != nil {
		n += 512
	}
	if t := p.TPM; t != nil {
		n += 64 + len(t.Key) + len(t.StorageRootKey) + len(t.AuthenticationKey)
	}
	return n
}

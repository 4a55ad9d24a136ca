package registration

import (
	"sync"
	"time"

	"github.com/opendps/dps"
)

// recentOps keeps the latest final operations in memory so polls need no
// read: a final operation never changes, so serving it from memory is
// correct on any node. It holds at most recentCap operations.
type recentOps struct {
	mu   sync.Mutex // guards m, ring, next
	m    map[string]dps.Operation
	ring []string
	next int
}

const recentCap = 1 << 16

func (r *recentOps) put(op dps.Operation) {
	if !op.Status.Final() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]dps.Operation, 1024)
		r.ring = make([]string, recentCap)
	}
	if _, ok := r.m[op.ID]; ok {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.m, old)
	}
	r.ring[r.next] = op.ID
	r.next = (r.next + 1) % recentCap
	r.m[op.ID] = op
}

// get returns a final operation created after notBefore (older ones may
// have been pruned from the store).
func (r *recentOps) get(id string, notBefore time.Time) (dps.Operation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	op, ok := r.m[id]
	if !ok || op.Created.Before(notBefore) {
		return dps.Operation{}, false
	}
	return op, true
}

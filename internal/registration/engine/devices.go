package engine

import (
	"context"
	"sync"
	"time"

	"github.com/opendps/dps"
)

// tracked is a device's unfinished operation and when it was recorded, or
// (id "") a reservation: a register of the device is deciding whether it
// creates one.
type tracked struct {
	id    string
	since time.Time
	// resolved is closed when the reservation is replaced by the operation
	// it created or dropped.
	resolved chan struct{}
}

// Claim returns the device's unfinished operation known to this node, if it
// has one that reusable accepts (the caller's rule: it matched the
// enrollment the device authenticated against now). Otherwise it reserves
// the device's slot and returns settle, which the caller must call once:
// with the unfinished operation it created (now the device's), or with nil
// (none: failed, or already final). A register of the device meanwhile
// waits for settle (or for its ctx), so concurrent registers of one device
// create one operation, not one each. The operation returned has no
// payload.
func (e *Engine) Claim(ctx context.Context, regID string, reusable func(dps.Operation) bool) (op dps.Operation, inFlight bool, settle func(*dps.Operation), err error) {
	k := dps.FoldID(regID)
	replace := "" // the operation ID whose entry may be taken over
	for {
		e.mu.Lock()
		t, ok := e.devices[k]
		if !ok || t.resolved == nil && t.id == replace {
			r := tracked{since: time.Now(), resolved: make(chan struct{})}
			e.devices[k] = r
			e.mu.Unlock()
			return dps.Operation{}, false, e.settler(k, r.resolved), nil
		}
		e.mu.Unlock()
		if t.resolved != nil { // another register of the device is under way
			select {
			case <-t.resolved:
				continue
			case <-ctx.Done():
				return dps.Operation{}, false, nil, ctx.Err()
			}
		}
		op, err := e.o.Store.Operation(ctx, t.id)
		switch {
		case ctx.Err() != nil:
			return dps.Operation{}, false, nil, ctx.Err()
		case dps.KindOf(err) == dps.KindUnavailable:
			return dps.Operation{}, false, nil, err // it could not be created either
		case err != nil || op.Status.Final():
			replace = t.id // gone, unreadable or done: a new registration
			continue
		case !reusable(op):
			replace = t.id // the device now matches another enrollment: a new registration
			continue
		}
		op.Payload = nil
		return op, true, nil, nil
	}
}

// settler returns the settle function of the reservation resolved of the
// folded registration ID k (see Claim).
func (e *Engine) settler(k string, resolved chan struct{}) func(*dps.Operation) {
	var once sync.Once
	return func(op *dps.Operation) {
		once.Do(func() {
			e.mu.Lock()
			if e.devices[k].resolved == resolved {
				if op != nil {
					e.devices[k] = tracked{id: op.ID, since: time.Now()}
				} else {
					delete(e.devices, k)
				}
			}
			e.mu.Unlock()
			close(resolved)
		})
	}
}

// track records a device's unfinished operation; replace false keeps one
// already recorded. A reservation is always kept: its register decides.
func (e *Engine) track(op dps.Operation, replace bool) {
	k := dps.FoldID(op.RegistrationID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if t, ok := e.devices[k]; ok && (!replace || t.resolved != nil) {
		return
	}
	e.devices[k] = tracked{id: op.ID, since: time.Now()}
}

// forget drops a device's unfinished operation opID, once it is final.
func (e *Engine) forget(regID, opID string) {
	k := dps.FoldID(regID)
	e.mu.Lock()
	if e.devices[k].id == opID {
		delete(e.devices, k)
	}
	e.mu.Unlock()
}

// untrackFinished drops the recorded operations that were recorded before
// listed and are not among the unfinished operations listed then.
func (e *Engine) untrackFinished(listed time.Time, pending []dps.Operation) {
	unfinished := make(map[string]bool, len(pending))
	for _, op := range pending {
		unfinished[op.ID] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, t := range e.devices {
		// An operation this node is still working on stays tracked even when
		// the listing leaves it out (on PostgreSQL it omits operations under
		// a lease, this node's included, and lists at most 10,000).
		if t.resolved == nil && t.since.Before(listed) && !unfinished[t.id] && !e.lanes.has(t.id) {
			delete(e.devices, k)
		}
	}
	for id, r := range e.retries {
		// An operation backing off is in no lane and, on PostgreSQL, under
		// this node's lease (the listing omits leased operations and lists
		// at most 10,000): its retry state goes only once its next attempt
		// is a lease overdue (it finished, or another node took it over),
		// or its count would restart and the retry limit never be reached.
		if r.since.Before(listed) && !unfinished[id] && !e.lanes.has(id) && time.Now().After(r.Due.Add(e.o.Lease)) {
			delete(e.retries, id)
		}
	}
}

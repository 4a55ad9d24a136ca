package registration

import (
	"sync"

	"github.com/opendps/dps"
)

// EventRecorder receives the entries of the registration-events feed
// (internal/regevents): the use case records what became of each
// register (accepted, assigned, failed or disabled); the transports record
// refusals. Record must not block.
type EventRecorder interface {
	Record(e dps.RegistrationEvent)
}

// Origin is where a register request came from, for the feed.
type Origin struct {
	Transport  string // "https", "mqtt" or "mqttws"
	Source     string // the client's address, host:port
	TrackingID string // the answer's tracking ID
}

type nopRecorder struct{}

func (nopRecorder) Record(dps.RegistrationEvent) {}

// event is the feed's entry of kind about op, from origin.
func event(kind dps.EventKind, op dps.Operation, origin Origin) dps.RegistrationEvent {
	return dps.RegistrationEvent{Kind: kind, RegistrationID: op.RegistrationID, EnrollmentGroup: op.EnrollmentGroupID, OperationID: op.ID,
		Attestation: op.Proof.Type, Transport: origin.Transport, Source: origin.Source, TrackingID: origin.TrackingID}
}

// outcome is the feed's entry of a final operation: assigned (the hub,
// the device ID and the payload returned to the device) or failed (its
// code and message; disabled too).
func outcome(op dps.Operation, origin Origin) dps.RegistrationEvent {
	r := op.Result
	if r == nil {
		r = &dps.Registration{}
	}
	if op.Status == dps.StatusAssigned {
		e := event(dps.EventAssigned, op, origin)
		e.Hub, e.DeviceID, e.Payload = r.AssignedHub, r.DeviceID, r.Payload
		return e
	}
	e := event(dps.EventFailed, op, origin)
	if op.Status == dps.StatusDisabled {
		e.Reason, e.Cause = "The enrollment is disabled.", dps.CauseDisabled
		return e
	}
	e.Code, e.Reason, e.Cause = r.ErrorCode, r.ErrorMessage, dps.FailureCause(r.ErrorCode)
	return e
}

// origins remembers where the operations this node accepted came from,
// until they finish, so that an operation completed in the background
// (custom allocation, a retried hub) is recorded with its request's
// transport and source. At most originsKept are kept: the oldest goes
// first (an operation another node completed is never taken back).
type origins struct {
	mu   sync.Mutex
	m    map[string]Origin
	ring []string
	next int
}

const originsKept = 16384

func (o *origins) put(opID string, origin Origin) {
	if origin == (Origin{}) {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m, o.ring = map[string]Origin{}, make([]string, originsKept)
	}
	if old := o.ring[o.next]; old != "" {
		delete(o.m, old)
	}
	o.ring[o.next], o.next = opID, (o.next+1)%originsKept
	o.m[opID] = origin
}

// take returns and forgets the origin of an operation (zero when unknown).
func (o *origins) take(opID string) Origin {
	o.mu.Lock()
	defer o.mu.Unlock()
	origin := o.m[opID]
	delete(o.m, opID)
	return origin
}

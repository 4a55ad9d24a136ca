package registration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opendps/dps"
)

// hubEffects are what a registration does to device identities besides
// calling the hub connector before it commits: the device records the
// store writes with the operation (the built-in hub connector), and the
// identity the device left on a hub the store does not record (a remote
// hub), deleted only once the operation committed.
type hubEffects struct {
	put    *dps.HubDevice
	remove *dps.HubDevice // hub and device ID, and Replaces (DeviceRemover)
	// leave is the identity on a hub the store does not record: hub,
	// device ID and Replaces, its ETag before the move (DeviceRemover; ""
	// when the connector cannot tell). leaveErr says that it could not be
	// read then: it is kept, and logged, not deleted unguarded.
	leave    *dps.HubDevice
	leaveErr error
}

// any reports whether fx holds a device record to write or remove.
func (fx *hubEffects) any() bool { return fx != nil && (fx.put != nil || fx.remove != nil) }

// putOrNone is the record to put, or the zero HubDevice (no Hub: the store
// puts nothing) when the device's new identity is on a remote hub.
func (fx *hubEffects) putOrNone() dps.HubDevice {
	if fx.put == nil {
		return dps.HubDevice{}
	}
	return *fx.put
}

// effects returns the empty hubEffects of one computation of an
// operation. Device records are written with operations for the hubs
// records says (Options.RecordDevicesWithOperations or RecordsDevices:
// the built-in connector records devices in this same store, and the
// store writes both in one transaction); for the others complete calls
// the hub connector.
func (s *Service) effects() *hubEffects { return &hubEffects{} }

// records reports whether the store writes the device records of hub
// with the operations.
func (s *Service) records(hub string) bool {
	if s.o.RecordsDevices != nil {
		return s.o.RecordsDevices(hub)
	}
	return s.o.RecordDevicesWithOperations
}

// complete computes an operation's final state. It returns an error only for
// transient failures that should be retried.
//
// It allocates a hub, decides what becomes of the device's previous
// assignment (decideReprovision), applies the hub effects and builds the
// result; a permanent failure at any step ends the operation failed.
func (s *Service) complete(ctx context.Context, op dps.Operation, known *dps.Attested, fx *hubEffects) (dps.Operation, error) {
	now := s.o.Now().UTC()
	m := known
	if m == nil {
		rm, err := s.rematch(ctx, op)
		if err != nil {
			if dps.KindOf(err) == dps.KindNotFound {
				prev, err := s.previous(ctx, op.RegistrationID)
				if err != nil {
					return op, err
				}
				return s.fail(op, prev, now, dps.CodeNotFound, "the enrollment this registration matched no longer exists"), nil
			}
			return op, err
		}
		m = &rm
	}
	set := m.Settings()
	if !set.Enabled() {
		op.Status = dps.StatusDisabled
		op.Result = &dps.Registration{RegistrationID: op.RegistrationID, Status: dps.StatusDisabled, EnrollmentGroupID: op.EnrollmentGroupID, Proof: dps.Proof{Type: op.Proof.Type}, Updated: now}
		return op, nil
	}
	prev, err := s.previous(ctx, op.RegistrationID)
	if err != nil {
		return op, err
	}
	deviceID := op.RegistrationID
	if m.Enrollment != nil && m.Enrollment.DeviceID != "" {
		deviceID = m.Enrollment.DeviceID
	}

	asg, f, err := s.allocate(ctx, op, m, set, prev)
	if err != nil {
		return op, err
	}
	if f != nil {
		return s.fail(op, prev, now, f.code, f.msg), nil
	}
	d := decideReprovision(prev, set.Reprovision(), asg.Hub, deviceID, len(asg.InitialTwin) > 0)
	var removal *dps.HubDevice
	var unread error
	switch {
	case !d.DeprovisionOld:
	case s.records(prev.AssignedHub):
		// The record the device leaves, read before its twin is (migration):
		// removed only if unchanged since.
		if removal, err = s.removal(ctx, prev); err != nil {
			return op, err
		}
	default:
		// The identity the device leaves on a hub the store does not
		// record, read likewise: deleted after the commit only if
		// unchanged since (a device that moves back meanwhile keeps it).
		if removal, unread = s.leaving(ctx, prev); unread != nil && ctx.Err() != nil {
			return op, unread // shutting down
		}
	}
	hd, proof, f := s.hubDevice(ctx, op, m, set, prev, asg, deviceID, d, now)
	if f != nil {
		return s.fail(op, prev, now, f.code, f.msg), nil
	}
	if len(op.CSR) > 0 {
		// The device asked for an operational certificate: it authenticates
		// to its hub with it, whatever its attestation (iothub accepts the
		// certificates issued to the identity, renewals included).
		chain, f, err := s.issue(ctx, op, set, asg.Hub, deviceID)
		if err != nil {
			return op, err
		}
		if f != nil {
			return s.fail(op, prev, now, f.code, f.msg), nil
		}
		hd.Auth = dps.HubAuth{Type: dps.HubAuthCA}
		op.IssuedChain = chain
	}
	if what, err := s.applyHubEffects(ctx, hd, prev, d, fx, removal, unread); err != nil {
		return s.hubFailed(ctx, op, prev, now, what, err)
	}
	return assignedOp(op, prev, asg, deviceID, d, proof, now), nil
}

// failure is a permanent failure: the operation ends failed with this DPS
// error code and message.
type failure struct {
	code int
	msg  string
}

// allocate chooses the device's hub. A device that has a hub and whose
// enrollment never re-provisions stays on it; otherwise the allocation
// policy chooses among the candidate hubs. The error is a transient failure.
func (s *Service) allocate(ctx context.Context, op dps.Operation, m *dps.Attested, set *dps.Settings, prev *dps.Registration) (dps.Assignment, *failure, error) {
	reassigning := prev != nil && prev.AssignedHub != ""
	if reassigning && !set.Reprovision().UpdateHubAssignment {
		return dps.Assignment{Hub: prev.AssignedHub}, nil, nil // never re-provision: the device stays
	}
	policy := set.AllocationPolicy
	if policy == "" {
		policy = s.o.DefaultPolicy
	}
	alloc, ok := s.o.Allocators[policy]
	if !ok {
		return dps.Assignment{}, &failure{dps.CodeInvalid, fmt.Sprintf("allocation policy %q is not available on this instance", policy)}, nil
	}
	cands, err := s.candidates(set)
	if err != nil {
		return dps.Assignment{}, &failure{dps.CodeInvalid, err.Error()}, nil
	}
	req := dps.AllocationRequest{
		RegistrationID: op.RegistrationID,
		OperationID:    op.ID,
		Candidates:     cands,
		Enrollment:     m.Enrollment,
		Group:          m.Group,
		Attestation:    op.Proof.Type,
		Payload:        op.Payload,
	}
	if reassigning {
		req.CurrentHub, req.CurrentDeviceID = prev.AssignedHub, prev.DeviceID
	}
	asg, err := alloc.Allocate(ctx, req)
	if err != nil {
		if f, ok := errors.AsType[*dps.AllocationFailure](err); ok {
			return dps.Assignment{}, &failure{f.Code, f.Message}, nil
		}
		if ctx.Err() != nil {
			return dps.Assignment{}, nil, err
		}
		return dps.Assignment{}, &failure{dps.CodeInternal, "allocation failed: " + dps.AsError(err).Message}, nil
	}
	if !containsHub(cands, asg.Hub) {
		return dps.Assignment{}, &failure{dps.CodeCustomAllocationFailed, fmt.Sprintf("allocation chose %q, which is not a candidate hub", asg.Hub)}, nil
	}
	asg.Hub = canonicalHub(cands, asg.Hub)
	return asg, nil, nil
}

// issue issues the certificate of an operation with a CSR, once per
// operation (Issuer.Issue is idempotent: a completion computed again, or
// resumed after a crash, gets the chain issued first). A refusal is a
// permanent failure; any other error is transient.
func (s *Service) issue(ctx context.Context, op dps.Operation, set *dps.Settings, hub, deviceID string) ([][]byte, *failure, error) {
	if s.o.Issuer == nil {
		return nil, &failure{dps.CodeIssuanceNotEnabled, "certificate issuance is not enabled on this instance"}, nil
	}
	chain, err := s.o.Issuer.Issue(ctx, dps.IssueRequest{OperationID: op.ID, RegistrationID: op.RegistrationID, Hub: hub, DeviceID: deviceID, Settings: set, CSR: op.CSR})
	if err != nil {
		if e, ok := errors.AsType[*dps.Error](err); ok && e.Kind == dps.KindInvalid {
			code := e.Code
			if code == 0 {
				code = dps.CodeIssuanceFailed
			}
			return nil, &failure{code, e.Message}, nil
		}
		return nil, nil, err
	}
	return chain, nil, nil
}

// twin returns the new identity's twin from the source d names.
func (s *Service) twin(ctx context.Context, d reprovisionDecision, set *dps.Settings, asg dps.Assignment, prev *dps.Registration) json.RawMessage {
	switch d.Twin {
	case twinFromWebhook:
		return asg.InitialTwin
	case twinKeepCurrent, twinMigrate:
		if t, ok := s.readTwin(ctx, prev.AssignedHub, prev.DeviceID); ok {
			return t
		}
	}
	return set.InitialTwin
}

// hubDevice is the device identity the registration creates on its hub,
// its authentication worked out by the mechanism that attested the device,
// and the proof the registration record keeps.
func (s *Service) hubDevice(ctx context.Context, op dps.Operation, m *dps.Attested, set *dps.Settings, prev *dps.Registration, asg dps.Assignment, deviceID string, d reprovisionDecision, now time.Time) (dps.HubDevice, dps.Proof, *failure) {
	a, ok := s.o.Attestors[op.Proof.Type]
	if !ok {
		return dps.HubDevice{}, dps.Proof{}, &failure{dps.CodeInvalid, fmt.Sprintf("%s attestation is not enabled", op.Proof.Type)}
	}
	auth, proof, err := a.Hub(ctx, op, *m)
	if err != nil {
		return dps.HubDevice{}, dps.Proof{}, &failure{dps.CodeInvalid, err.Error()}
	}
	return dps.HubDevice{
		Hub:       asg.Hub,
		DeviceID:  deviceID,
		Auth:      auth,
		IoTEdge:   set.IoTEdge,
		Twin:      s.twin(ctx, d, set, asg, prev),
		TwinWrite: twinWrite(prev, d),
		Updated:   now,
	}, proof, nil
}

// twinWrite says what the registration does to the twin of an identity
// that exists on the hub already (a new identity always gets a twin from
// the registration's): a device that moved to the hub gets a new twin;
// one that stays keeps its twin, except that the tags and desired
// properties a custom allocation webhook returned replace its own; an
// identity that DPS did not assign to the device (its registration record
// was deleted, or it had none) keeps its reported properties under the
// registration's tags and desired properties.
func twinWrite(prev *dps.Registration, d reprovisionDecision) dps.TwinWrite {
	switch {
	case d.Moved:
		return dps.TwinReplace
	case prev == nil || prev.AssignedHub == "" || d.Twin == twinFromWebhook:
		return dps.TwinApply
	}
	return dps.TwinKeep
}

// applyHubEffects creates hd, recorded in fx when the store writes it
// with the operation, otherwise through the hub connector, and records in
// fx what becomes of the identity the device left, removal (see
// removal): removed with the operation, or, on a hub the store does not
// record, deleted once the operation committed (leave), so that a device
// whose operation is computed again or fails keeps it; unread is the
// failure to read that identity (it is then kept). On a connector error
// it also returns what failed, for hubFailed.
func (s *Service) applyHubEffects(ctx context.Context, hd dps.HubDevice, prev *dps.Registration, d reprovisionDecision, fx *hubEffects, removal *dps.HubDevice, unread error) (string, error) {
	if s.records(hd.Hub) {
		// The store writes the device record with the operation.
		if rec, ok := s.o.Hubs.(DeviceRecorder); ok {
			r, err := rec.Record(ctx, hd)
			if err != nil {
				return "create the device on " + hd.Hub, err
			}
			hd = r
		}
		fx.put = &hd
	} else if err := s.o.Hubs.Provision(ctx, hd); err != nil {
		return "create the device on " + hd.Hub, err
	}
	switch {
	case !d.DeprovisionOld:
	case s.records(prev.AssignedHub):
		fx.remove = removal
	case unread != nil:
		fx.leave, fx.leaveErr = &dps.HubDevice{Hub: prev.AssignedHub, DeviceID: prev.DeviceID}, unread
	default:
		fx.leave = removal // nil: the device has no identity there
	}
	return "", nil
}

// removal is the identity prev names that an operation removes: guarded
// by its current ETag when the connector can tell it (DeviceRemover; nil
// when there is none), else unguarded. Its error is the store's, or the
// hub's (leaving).
func (s *Service) removal(ctx context.Context, prev *dps.Registration) (*dps.HubDevice, error) {
	if r, ok := s.o.Hubs.(DeviceRemover); ok {
		return r.Removal(ctx, prev.AssignedHub, prev.DeviceID)
	}
	return &dps.HubDevice{Hub: prev.AssignedHub, DeviceID: prev.DeviceID}, nil
}

// assignedOp is op, assigned as d decided.
func assignedOp(op dps.Operation, prev *dps.Registration, asg dps.Assignment, deviceID string, d reprovisionDecision, proof dps.Proof, now time.Time) dps.Operation {
	created := now
	if prev != nil {
		created = prev.Created
	}
	op.Status = dps.StatusAssigned
	op.Result = &dps.Registration{
		RegistrationID:    op.RegistrationID,
		DeviceID:          deviceID,
		AssignedHub:       asg.Hub,
		InitialHub:        d.InitialHub,
		Status:            dps.StatusAssigned,
		Substatus:         d.Substatus,
		Payload:           asg.Payload,
		EnrollmentGroupID: op.EnrollmentGroupID,
		Proof:             proof,
		Created:           created,
		Updated:           now,
	}
	if prev != nil {
		// The record this result replaces: the store writes the result only
		// if the record did not change meanwhile (another operation of the
		// same device, perhaps on another node); otherwise the operation is
		// computed again.
		op.Result.ETag = prev.ETag
	}
	return op
}

func (s *Service) readTwin(ctx context.Context, hub, deviceID string) (json.RawMessage, bool) {
	tr, ok := s.o.Hubs.(TwinReader)
	if !ok {
		return nil, false
	}
	t, err := tr.Twin(ctx, hub, deviceID)
	if err != nil || len(t) == 0 {
		return nil, false
	}
	return t, true
}

// fail ends op as failed with a DPS error code. The registration record
// keeps the previous assignment so a later re-registration still knows the
// device's current hub.
func (s *Service) fail(op dps.Operation, prev *dps.Registration, now time.Time, code int, msg string) dps.Operation {
	r := &dps.Registration{
		RegistrationID:    op.RegistrationID,
		Status:            dps.StatusFailed,
		ErrorCode:         code,
		ErrorMessage:      msg,
		EnrollmentGroupID: op.EnrollmentGroupID,
		Proof:             dps.Proof{Type: op.Proof.Type},
		Created:           now,
		Updated:           now,
	}
	if prev != nil {
		r.Created, r.ETag = prev.Created, prev.ETag // ETag: see complete
		r.AssignedHub, r.DeviceID, r.InitialHub, r.Substatus = prev.AssignedHub, prev.DeviceID, prev.InitialHub, prev.Substatus
	}
	op.Status = dps.StatusFailed
	op.Result = r
	return op
}

// rematch reloads the enrollment an operation matched at register time:
// what the device attested as, for an operation completed in the
// background.
func (s *Service) rematch(ctx context.Context, op dps.Operation) (dps.Attested, error) {
	if op.EnrollmentGroupID != "" {
		g, err := s.o.Store.Group(ctx, op.EnrollmentGroupID)
		if err != nil {
			return dps.Attested{}, err
		}
		return dps.Attested{Group: &g, Proof: op.Proof}, nil
	}
	e, err := s.o.Store.Enrollment(ctx, op.RegistrationID)
	if err != nil {
		return dps.Attested{}, err
	}
	return dps.Attested{Enrollment: &e, Proof: op.Proof}, nil
}

// candidates returns the hubs a device of this enrollment may be assigned
// to: the enrollment's iotHubs (or legacy iotHubHostName) that are linked, or
// else every linked hub that participates in allocation.
func (s *Service) candidates(set *dps.Settings) ([]dps.LinkedHub, error) {
	names := set.IoTHubs
	if len(names) == 0 && set.IoTHubHostName != "" {
		names = []string{set.IoTHubHostName}
	}
	var out []dps.LinkedHub
	if len(names) == 0 {
		for _, h := range s.o.LinkedHubs {
			if h.ApplyAllocationPolicy {
				out = append(out, h)
			}
		}
		if len(out) == 0 {
			return nil, errors.New("no linked IoT hub participates in allocation")
		}
		return out, nil
	}
	for _, n := range names {
		for _, h := range s.o.LinkedHubs {
			if strings.EqualFold(h.HostName, n) {
				out = append(out, h)
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("none of the enrollment's IoT hubs (%s) is linked to this instance", strings.Join(names, ", "))
	}
	return out, nil
}

func containsHub(hs []dps.LinkedHub, name string) bool {
	for _, h := range hs {
		if strings.EqualFold(h.HostName, name) {
			return true
		}
	}
	return false
}

func canonicalHub(hs []dps.LinkedHub, name string) string {
	for _, h := range hs {
		if strings.EqualFold(h.HostName, name) {
			return h.HostName
		}
	}
	return name
}

// previous returns the device's registration record, nil when it has none.
func (s *Service) previous(ctx context.Context, regID string) (*dps.Registration, error) {
	r, err := s.o.Store.Registration(ctx, regID)
	switch {
	case err == nil:
		return &r, nil
	case dps.KindOf(err) == dps.KindNotFound:
		return nil, nil
	}
	return nil, err
}

// Package ceiling is the benchmark ceiling: a registration engine that does
// no authentication, storage or allocation. Served by the real HTTPS and
// MQTT adapters (`dpsd --ceiling`), it measures what TLS, HTTP/MQTT and JSON
// cost on a machine, so dps's throughput can be reported as a ratio to it.
// HubStore (hub.go) is the same for the built-in hub's telemetry: a store
// that knows every device and keeps no message.
package ceiling

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/registration"
)

// Registrar answers every request at once: register → assigning, poll →
// assigned.
type Registrar struct {
	n atomic.Int64
}

// Authenticate accepts everyone.
func (r *Registrar) Authenticate(context.Context, string, string, dps.Credential) error {
	return nil
}

// Register returns a new operation in the assigning state.
func (r *Registrar) Register(_ context.Context, req registration.Request) (dps.Operation, error) {
	now := time.Now().UTC()
	return dps.Operation{ID: "1.ceiling." + strconv.FormatInt(r.n.Add(1), 10), RegistrationID: req.RegistrationID,
		Status: dps.StatusAssigning, Created: now, Updated: now}, nil
}

// Operation reports the operation assigned.
func (r *Registrar) Operation(_ context.Context, _, regID, opID string, _ dps.Credential) (dps.Operation, error) {
	now := time.Now().UTC()
	return dps.Operation{ID: opID, RegistrationID: regID, Status: dps.StatusAssigned, Result: &dps.Registration{
		RegistrationID: regID, DeviceID: regID, AssignedHub: "ceiling.example.net", Status: dps.StatusAssigned,
		Substatus: dps.SubstatusInitialAssignment, Proof: dps.Proof{Type: dps.AttestationSymmetricKey}, Created: now, Updated: now, ETag: "Y2VpbGluZw=="}}, nil
}

// Lookup reports an assigned registration.
func (r *Registrar) Lookup(_ context.Context, _, regID string, _ dps.Credential) (dps.Registration, error) {
	now := time.Now().UTC()
	return dps.Registration{RegistrationID: regID, DeviceID: regID, AssignedHub: "ceiling.example.net", Status: dps.StatusAssigned, Created: now, Updated: now}, nil
}

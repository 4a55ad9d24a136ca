// Package registration is the device registration use case: authenticate a
// device against its enrollment, accept an asynchronous operation durably,
// and complete it in the background (allocate a hub, hand the device to the
// hub connector, write the registration record).
//
// It declares the interfaces it consumes (Store, Allocator, HubConnector)
// and imports only the domain and leaf packages.
package registration

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"time"

	"github.com/opendps/dps"
)

// Store is the persistence registration needs.
type Store interface {
	Enrollment(ctx context.Context, registrationID string) (dps.Enrollment, error)
	Group(ctx context.Context, id string) (dps.Group, error)
	Groups(ctx context.Context, t dps.AttestationType) ([]dps.Group, error)
	Registration(ctx context.Context, registrationID string) (dps.Registration, error)
	// CreateOperation persists a new operation; a final one (completed
	// before it was accepted) also writes its registration record.
	CreateOperation(ctx context.Context, op dps.Operation) (dps.Operation, error)
	Operation(ctx context.Context, id string) (dps.Operation, error)
	CompleteOperation(ctx context.Context, op dps.Operation) (dps.Operation, error)
	PendingOperations(ctx context.Context) ([]dps.Operation, error)
	// ClaimOperation leases an unfinished operation to owner until until;
	// false when another owner holds an unexpired lease (another node).
	ClaimOperation(ctx context.Context, id, owner string, until time.Time) (bool, error)
	CACertificate(ctx context.Context, name string) (dps.CACertificate, error)
}

// Allocator picks the linked hub for a device. It returns a
// *dps.AllocationFailure to end the registration as failed with a DPS code.
type Allocator interface {
	Allocate(ctx context.Context, req dps.AllocationRequest) (dps.Assignment, error)
}

// HubConnector creates device identities on IoT hubs. Both calls are
// idempotent: the engine may repeat them after a crash. An error is
// transient (retried with backoff, until Options.HubRetryFor or
// HubRetryLimit, then the registration fails with dps.CodeHubUnavailable)
// unless it is a *dps.HubFailure, which fails the registration at once with
// its code.
type HubConnector interface {
	// Provision creates or updates the device identity d on d.Hub.
	Provision(ctx context.Context, d dps.HubDevice) error
	// Deprovision removes a device identity from hub; absent is not an error.
	Deprovision(ctx context.Context, hub, deviceID string) error
}

// TwinReader is an optional HubConnector ability: reading a device's twin
// so it can be migrated to another hub.
type TwinReader interface {
	Twin(ctx context.Context, hub, deviceID string) (json.RawMessage, error)
}

// Observer receives registration metrics. A nil Observer is allowed.
type Observer interface {
	// Completed is called once per finished operation with its outcome
	// ("assigned", "failed", "disabled") and its register→final latency.
	Completed(outcome dps.Status, latency time.Duration)
	// Rejected is called when a request is refused before an operation exists.
	Rejected(kind dps.Kind)
	// InFlight adds delta to the number of operations being processed.
	InFlight(delta int)
}

// ChallengeStore keeps the latest TPM challenge per registration ID.
type ChallengeStore interface {
	PutChallenge(ctx context.Context, c dps.Challenge) error
	Challenge(ctx context.Context, registrationID string) (dps.Challenge, error)
	ConsumeChallenge(ctx context.Context, registrationID string, key dps.Key) (bool, error)
}

// Credential is what a device presented, still unverified.
type Credential struct {
	// SAS is the Authorization header or MQTT password ("" if none).
	SAS string
	// Certificates is the TLS client chain, leaf first (nil if none).
	Certificates []*x509.Certificate
}

// Request is one register call.
type Request struct {
	IDScope        string
	RegistrationID string
	Credential     Credential
	// Payload is the device's "payload" member, as sent (nil if absent).
	Payload json.RawMessage
	// Force asks for a new allocation (forceRegistration).
	Force bool
	// TPM is the tpm member of the body (TPM devices), nil otherwise.
	TPM *TPMRequest
}

// TPMRequest is what a TPM device sends about its TPM (base64 TPM2B_PUBLIC).
type TPMRequest struct {
	EndorsementKey string
	StorageRootKey string
}

// OperationTrimmer is an optional Store ability: delete a registration ID's
// finished operations but its keep newest, reporting how many it deleted.
type OperationTrimmer interface {
	TrimOperations(ctx context.Context, registrationID string, keep int) (int64, error)
}

// PendingHeaderLister is an optional Store ability: the operations
// PendingOperations returns, without their documents (the device's payload
// may be 96 KB): only ID, RegistrationID (possibly folded, dps.FoldID),
// EnrollmentGroupID, Status and Created are set. The sweeper lists
// unfinished operations every few seconds, so a backlog costs little memory;
// an operation is read whole only when it runs.
type PendingHeaderLister interface {
	PendingOperationHeaders(ctx context.Context) ([]dps.Operation, error)
}

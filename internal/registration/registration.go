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

// Store is the persistence registration needs, by job: looking up what a
// device is enrolled as, and running its operations. Both stores (SQLite
// and PostgreSQL) provide all of it; nothing in it is optional.
//
// Error contract, for every method: a missing item is a *dps.Error of
// dps.KindNotFound (only where a method says so); a lost race is
// dps.KindConflict (where a method says so); a store that cannot answer
// now is dps.KindUnavailable, or any other error, which the engine treats
// as transient and retries. IDs are matched in any case (dps.FoldID).
type Store interface {
	EnrollmentLookup
	Operations
}

// EnrollmentLookup is the read side of the enrollments: what a device is
// enrolled as and what its credential is checked against. Values returned
// may share memory with the store's cache (a group's attestation, the
// groups slice): callers must not modify them.
type EnrollmentLookup interface {
	// Enrollment returns an individual enrollment; KindNotFound if none.
	Enrollment(ctx context.Context, registrationID string) (dps.Enrollment, error)
	// Group returns an enrollment group; KindNotFound if none.
	Group(ctx context.Context, id string) (dps.Group, error)
	// Groups returns every group of attestation type t, ordered by ID
	// (none is an empty result, not an error). The slice is shared.
	Groups(ctx context.Context, t dps.AttestationType) ([]dps.Group, error)
	// GroupsVersion returns a number that changes whenever any enrollment
	// group changes, through any node sharing the store, so prepared group
	// keys are reused while it stays the same.
	GroupsVersion(ctx context.Context) (int64, error)
	// CACertificate returns a CA certificate held by the instance;
	// KindNotFound if none.
	CACertificate(ctx context.Context, name string) (dps.CACertificate, error)
}

// Operations is the persistence of registration operations and the
// registration records they produce.
//
// A final operation's result (assigned or failed) is written only over the
// registration record it was computed from: its Result.ETag on entry is
// that record's ETag ("" when there was none). If the record changed
// meanwhile (another operation of the device won), nothing is written and
// the error is KindConflict; the engine computes the operation again. On
// success the returned operation carries the record's new ETag.
type Operations interface {
	// Registration returns a device's registration record; KindNotFound
	// if it has none.
	Registration(ctx context.Context, registrationID string) (dps.Registration, error)
	// CreateOperation persists a new operation; a final one (completed
	// before it was accepted) also writes its registration record.
	// KindConflict if the ID exists or the record changed.
	CreateOperation(ctx context.Context, op dps.Operation) (dps.Operation, error)
	// CreateOperationWithDevice is CreateOperation that also writes the hub
	// device records the operation produced (put, and remove when the
	// device moved between hubs), in the same transaction.
	CreateOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error)
	// Operation returns an operation by ID; KindNotFound if none (never
	// created, or pruned).
	Operation(ctx context.Context, id string) (dps.Operation, error)
	// CompleteOperation records an unfinished operation's final state and
	// its registration record in one transaction. Completing an operation
	// that is already final writes nothing and returns it as stored (a
	// retried completion is harmless). KindNotFound if the operation does
	// not exist; KindConflict if the record changed.
	CompleteOperation(ctx context.Context, op dps.Operation) (dps.Operation, error)
	// CompleteOperationWithDevice is CompleteOperation that also writes the
	// hub device records (put, and remove when the device moved), in the
	// same transaction: after a KindConflict no device record is written.
	CompleteOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error)
	// PendingOperations returns the unfinished operations, oldest first.
	PendingOperations(ctx context.Context) ([]dps.Operation, error)
	// PendingOperationHeaders returns what PendingOperations returns
	// without the documents (the device's payload may be 96 KB): only ID,
	// RegistrationID (possibly folded, dps.FoldID), EnrollmentGroupID,
	// Status and Created are set. The sweeper lists unfinished operations
	// every few seconds, so a backlog costs little memory; an operation is
	// read whole only when it runs.
	PendingOperationHeaders(ctx context.Context) ([]dps.Operation, error)
	// ClaimOperation leases an unfinished operation to owner until until
	// (a zero until gives the lease up); false, and no error, when another
	// owner holds an unexpired lease (another node) or the operation is
	// final or absent. Unused when Options.SingleNode is set.
	ClaimOperation(ctx context.Context, id, owner string, until time.Time) (bool, error)
	// TrimOperations deletes a registration ID's finished operations but
	// its keep newest, reporting how many it deleted. Unfinished
	// operations are never deleted.
	TrimOperations(ctx context.Context, registrationID string, keep int) (int64, error)
	// DeleteOperationsBefore deletes a bounded batch of final operations
	// created before t and reports how many it deleted; the caller calls
	// it again while a batch comes back full (5,000).
	DeleteOperationsBefore(ctx context.Context, t time.Time) (int64, error)
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

// TwinReader is the one optional HubConnector ability: reading the twin a
// device has on its hub, so a registration to the same hub keeps it and a
// move with data migration carries it over. A connector to a remote hub
// may not offer it; without it (or when the read fails or the twin is
// empty) the device gets its enrollment's initial twin.
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

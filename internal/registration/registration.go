// Package registration is the device registration use case: authenticate a
// device against its enrollment, accept an asynchronous operation durably,
// and complete it in the background (allocate a hub, hand the device to the
// hub connector, write the registration record).
//
// It declares the interfaces it consumes (Store, Attestor, Allocator,
// HubConnector) and imports only the domain and leaf packages: the
// attestation mechanisms are plugged in by cmd/dpsd (Options.Attestors).
package registration

import (
	"context"
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
	// device moved between hubs), in the same transaction. A put without
	// Hub writes no record (the device's new identity is on a remote hub).
	// Both honour their Replaces (dps.HubDevice): a record that changed
	// meanwhile is KindConflict, and nothing is written.
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
	// same transaction, honouring their Replaces: after a KindConflict no
	// device record is written.
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

// DeviceRecorder is the optional HubConnector ability that
// Options.RecordDevicesWithOperations needs: working out the device record
// a registration writes with its operation (the device's current record
// updated, Replaces set to its ETag, so that the store writes it only over
// the record it was computed from; KindConflict otherwise, and the
// operation is computed again). A connector without it has its records
// written as the registration computed them.
type DeviceRecorder interface {
	Record(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error)
}

// DeviceRemover is the optional HubConnector ability that guards the
// removal of the identity a device leaves when it moves to another hub:
// Removal returns the identity with Replaces set to its current ETag,
// read before the move commits (and before the twin a migration
// carries); nil when the device has no identity there. The identity is
// then removed only if it did not change since: on a hub whose records
// the store writes, by the store, with the operation (KindConflict
// otherwise, and the operation is computed again: what a migration
// carries over is what is removed); on any other hub once the move
// committed, in the background, by DeviceDeleter.Remove. A connector
// without it has the identity removed whatever it became.
type DeviceRemover interface {
	Removal(ctx context.Context, hub, deviceID string) (*dps.HubDevice, error)
}

// DeviceDeleter is the optional HubConnector ability that deletes an
// identity a device left on a hub the store does not record only if it
// did not change since DeviceRemover.Removal read it (d.Replaces, its
// ETag; "" deletes whatever it is): KindConflict (dps.KindOf) when it
// changed — the device was provisioned there again — and it stays;
// absent is not an error; other errors are Deprovision's. A connector
// without it has the identity deleted with Deprovision.
type DeviceDeleter interface {
	Remove(ctx context.Context, d dps.HubDevice) error
}

// HubEvents is told of the device records a registration wrote with its
// operation (Options.RecordDevicesWithOperations), after the transaction
// committed: put as written, removed (hub and device ID) when the device
// left an identity. The built-in hub uses it to act on its live
// connections. It must not block.
type HubEvents interface {
	Provisioned(ctx context.Context, put dps.HubDevice, removed *dps.HubDevice)
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

// Attestor is one attestation mechanism (symmetric key, X.509, TPM): how a
// device of its type proves who it is, and which identity it gets on its
// hub. Options.Attestors holds one per dps.AttestationType; a device whose
// enrollment's type has none is refused (401). Attestors are used by many
// goroutines at once.
//
// Errors: a credential that proves nothing is a *dps.Error of
// dps.KindUnauthorized (dps.Unauthenticated); any other error is the
// store's, and the request fails with it.
type Attestor interface {
	// Accepts reports whether cred is this mechanism's kind of credential
	// (a SAS token, a client certificate chain, TPM keys): only then may
	// it check an enrollment of its type, or look for a group.
	Accepts(cred dps.Credential) bool
	// Attest checks cred of the device regID in ID scope scope (already
	// checked to be the instance's) against e, its individual enrollment,
	// of this mechanism's type; when e is nil (the device has none) it
	// looks for an enrollment group of this type that cred authenticates
	// against. It returns what matched and the proof the operation keeps.
	Attest(ctx context.Context, scope, regID string, cred dps.Credential, e *dps.Enrollment) (dps.Attested, error)
	// Poll checks the credential of a poll of op, an operation whose proof
	// is of this mechanism's type.
	Poll(ctx context.Context, scope, regID string, cred dps.Credential, op dps.Operation) error
	// Hub returns, once a registration is assigned, the device's
	// authentication on its hub and the proof its registration record
	// keeps. at is what the device attested as: from its register request,
	// or (an operation completed in the background) its operation's
	// enrollment read again, with op.Proof and no Hub. An error fails the
	// registration.
	Hub(ctx context.Context, op dps.Operation, at dps.Attested) (dps.HubAuth, dps.Proof, error)
}

// Screener is the optional ability of a mechanism to refuse a credential
// from its shape alone, without the store: a malformed or expired token, a
// certificate for another registration ID. The engine screens a credential
// before it reads the device's enrollment, so a credential that can prove
// nothing is refused (401) even while the store is unavailable, and costs
// no read.
type Screener interface {
	// Screen returns dps.Unauthenticated when cred cannot authenticate
	// regID in scope whatever the enrollment; nil otherwise.
	Screen(scope, regID string, cred dps.Credential) error
}

// Challenger is the optional ability of a mechanism whose devices first
// ask for a challenge (TPM): a register request that presents no token or
// certificate, only what Accepts accepts, is answered by Challenge, and an
// answered challenge starts one registration only.
type Challenger interface {
	// Challenge answers such a request: with a *dps.TPMChallenge error to
	// send the device, or its refusal.
	Challenge(ctx context.Context, scope, regID string, cred dps.Credential) error
	// Consume spends the challenge at answered, as it starts a new
	// registration; false when it was superseded meanwhile.
	Consume(ctx context.Context, regID string, at dps.Attested) (bool, error)
}

// Issuer issues operational certificates to devices that send a CSR
// (certificate issuance; internal/issuance). Without one, a register
// request with a CSR is refused.
type Issuer interface {
	// Check checks a register request's csr (base64 DER) against the
	// registration ID and the policy of the enrollment the device matched
	// and returns it as DER; its *dps.Error (KindInvalid) is the device's
	// 400.
	Check(ctx context.Context, set *dps.Settings, registrationID, csr string) ([]byte, error)
	// Issue issues the certificate of an operation, once per operation
	// (asked again, it returns the same chain): its chain, DER, leaf
	// first. A *dps.Error of KindInvalid fails the registration with its
	// code; any other error is transient.
	Issue(ctx context.Context, r dps.IssueRequest) ([][]byte, error)
}

// Request is one register call.
type Request struct {
	IDScope        string
	RegistrationID string
	// Credential is what the device presented (for TPM devices, the tpm
	// member of the body is its TPM member).
	Credential dps.Credential
	// Payload is the device's "payload" member, as sent (nil if absent).
	Payload json.RawMessage
	// Force asks for a new allocation (forceRegistration).
	Force bool
	// Origin is where the request came from (the events feed).
	Origin Origin
	// CSR is the device's csr member as sent (base64 DER PKCS #10), ""
	// if none.
	CSR string
	// CSRRefused, when not nil, is the transport's refusal of the CSR (an
	// api-version that has none: wire.CheckCSRVersion): Register returns
	// it once the device is authenticated (an unauthenticated request
	// gets its 401 first).
	CSRRefused error
}

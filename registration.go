package dps

import (
	"encoding/json"
	"time"
)

// Status is the state of a registration or a registration operation.
type Status string

const (
	StatusUnassigned Status = "unassigned"
	StatusAssigning  Status = "assigning"
	StatusAssigned   Status = "assigned"
	StatusFailed     Status = "failed"
	StatusDisabled   Status = "disabled"
)

// Final reports whether s ends an operation.
func (s Status) Final() bool {
	return s == StatusAssigned || s == StatusFailed || s == StatusDisabled
}

// Substatus qualifies an assigned registration.
type Substatus string

const (
	SubstatusInitialAssignment                Substatus = "initialAssignment"
	SubstatusDeviceDataMigrated               Substatus = "deviceDataMigrated"
	SubstatusDeviceDataReset                  Substatus = "deviceDataReset"
	SubstatusReprovisionedToInitialAssignment Substatus = "reprovisionedToInitialAssignment"
)

// Registration is the record of a device's latest registration: what the
// service API calls DeviceRegistrationState.
type Registration struct {
	RegistrationID    string
	DeviceID          string
	AssignedHub       string
	InitialHub        string // the hub of the first assignment, for substatus
	Status            Status
	Substatus         Substatus
	ErrorCode         int
	ErrorMessage      string
	Payload           json.RawMessage // the webhook's payload for the device
	EnrollmentGroupID string          // set when the device matched a group
	Attestation       AttestationType
	X509              *X509Proof // X.509 devices: the certificates that authenticated
	// TPMAuthenticationKey is, for TPM devices, the activation blob (base64)
	// wrapping the device's hub key for its TPM.
	TPMAuthenticationKey string
	Created              time.Time
	Updated              time.Time
	ETag                 string
}

// Operation is one asynchronous registration request.
type Operation struct {
	ID                string
	RegistrationID    string
	EnrollmentGroupID string // empty: an individual enrollment
	Attestation       AttestationType
	X509              *X509Proof // X.509 devices
	// TPM devices: the challenge key K1 that authenticated the request (and
	// authenticates its polls) and the storage root key to wrap the hub key for.
	TPMKey            Key
	TPMStorageRootKey string
	Status            Status // assigning until the worker finishes
	Payload           json.RawMessage
	// Result is the registration state the operation produced; set once
	// Status is final.
	Result  *Registration
	Created time.Time
	Updated time.Time
}

// HubDevice is a device identity as a hub connector creates it on a hub.
type HubDevice struct {
	Hub          string
	DeviceID     string
	AuthKind     AttestationType
	PrimaryKey   Key // symmetric-key devices: the device's key(s)
	SecondaryKey Key
	// X.509 devices: the leaf's SHA-256 thumbprint (individual enrollments,
	// thumbprint authentication on a hub), or CASigned for group devices.
	X509Thumbprint string
	X509CASigned   bool
	IoTEdge        bool
	Twin           json.RawMessage // {"tags":{…},"properties":{"desired":{…}}}
	Updated        time.Time
}

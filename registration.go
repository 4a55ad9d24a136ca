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
	// Proof is what the device's attestation showed, as far as its record
	// keeps it: the type, and for an assigned device the X.509 certificates
	// that authenticated or the TPM activation blob of its hub key.
	Proof   Proof
	Created time.Time
	Updated time.Time
	ETag    string
}

// Operation is one asynchronous registration request.
type Operation struct {
	ID                string
	RegistrationID    string
	EnrollmentGroupID string // empty: an individual enrollment
	// Proof is what the device's attestation showed when it registered:
	// its type, and what its mechanism needs to authenticate the
	// operation's polls and to complete it.
	Proof   Proof
	Status  Status // assigning until the worker finishes
	Payload json.RawMessage
	// Result is the registration state the operation produced; set once
	// Status is final.
	Result  *Registration
	Created time.Time
	Updated time.Time
}

// HubDevice is a device identity as a hub connector creates it on a hub.
type HubDevice struct {
	Hub      string
	DeviceID string
	Auth     HubAuth // how the device authenticates to the hub
	IoTEdge  bool
	Twin     json.RawMessage // {"tags":{…},"properties":{"desired":{…}}}
	Updated  time.Time
}

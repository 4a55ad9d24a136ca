package dps

import (
	"encoding/json"
	"strconv"
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
	// CSR is the DER certificate signing request the device sent (nil if
	// none), kept until the operation is final.
	CSR []byte
	// IssuedChain is the operational certificate issued for CSR, DER,
	// leaf first and ending with the root: what the device gets as
	// registrationState.issuedCertificateChain.
	IssuedChain [][]byte
	// Result is the registration state the operation produced; set once
	// Status is final.
	Result  *Registration
	Created time.Time
	Updated time.Time
}

// HubDevice is a device identity on a hub: what a hub connector creates when
// it provisions a device, and, on a built-in hub, the hub's own record of
// the device (its status, generation, ETag and live twin).
type HubDevice struct {
	Hub      string
	DeviceID string
	Auth     HubAuth // how the device authenticates to the hub
	IoTEdge  bool
	// Twin is the twin a provisioning asks for, in DPS's form:
	// {"tags":{…},"properties":{"desired":{…}}}.
	Twin json.RawMessage
	// TwinWrite says what a provisioning does with Twin when the device
	// already exists on the hub. It is part of the request, never stored.
	TwinWrite TwinWrite

	// Status is whether the device may connect ("" reads as enabled);
	// StatusReason is the operator's note about it.
	Status       DeviceStatus
	StatusReason string
	// GenerationID tells apart identities that had the same device ID: a
	// device deleted and created again gets a new one.
	GenerationID string
	// ETag changes with every write of the record.
	ETag string
	// LiveTwin is a built-in hub's twin of the device, in the stored form
	// of internal/twin (versions and $metadata included); nil until the
	// hub made it.
	LiveTwin json.RawMessage
	// Replaces is a write's precondition: the ETag of the record the write
	// replaces. A store writes the record only if the device's current
	// record has that ETag (KindConflict otherwise, KindNotFound when it is
	// gone); "" writes unconditionally; ReplacesNothing creates the record
	// (KindConflict when the device has one). Never stored.
	Replaces string
	Updated  time.Time
}

// ReplacesNothing, as HubDevice.Replaces, makes a write create the
// device's record: it fails with KindConflict when there is one.
const ReplacesNothing = "\x00nothing"

// Enabled reports whether the device may connect to its hub.
func (d HubDevice) Enabled() bool { return d.Status != DeviceDisabled }

// DeviceStatus is whether a hub device may connect (IoT Hub's device
// status).
type DeviceStatus string

const (
	DeviceEnabled  DeviceStatus = "enabled"
	DeviceDisabled DeviceStatus = "disabled"
)

// TwinWrite is what a provisioning does to the twin of a device that
// already exists on its hub. A device that does not exist yet always gets a
// new twin from HubDevice.Twin.
type TwinWrite uint8

const (
	// TwinReplace gives the device a new twin from Twin: its reported
	// properties are dropped and its versions start again (a device that
	// moved to the hub, with its data migrated or reset).
	TwinReplace TwinWrite = iota
	// TwinKeep leaves the device's twin as it is (a device registering
	// again to the hub it is on).
	TwinKeep
	// TwinApply replaces the device's tags and desired properties with
	// Twin's and keeps its reported properties (a custom allocation
	// webhook returned an initial twin for a device that stays).
	TwinApply
)

// NewGenerationID returns a hub device's generation ID as IoT Hub writes
// them: its creation time in .NET ticks (100 ns since 0001-01-01), 18
// digits.
func NewGenerationID(now time.Time) string {
	const unixEpochTicks = 621355968000000000
	return strconv.FormatInt(now.UnixNano()/100+unixEpochTicks, 10)
}

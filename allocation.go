package dps

import (
	"encoding/json"
	"strings"
)

// AllocationPolicy chooses a hub for a device.
type AllocationPolicy string

const (
	AllocationHashed     AllocationPolicy = "hashed"
	AllocationGeoLatency AllocationPolicy = "geoLatency"
	AllocationStatic     AllocationPolicy = "static"
	AllocationCustom     AllocationPolicy = "custom"
)

// ParseAllocationPolicy accepts a policy name in any case ("geolatency" is
// what the Azure CLI writes).
func ParseAllocationPolicy(s string) (AllocationPolicy, error) {
	for _, p := range []AllocationPolicy{AllocationHashed, AllocationGeoLatency, AllocationStatic, AllocationCustom} {
		if strings.EqualFold(s, string(p)) {
			return p, nil
		}
	}
	return "", &Error{Kind: KindInvalid, Code: CodeInvalid, Message: "allocationPolicy must be one of hashed, geoLatency, static, custom"}
}

// LinkedHub is an IoT hub this instance may assign devices to.
type LinkedHub struct {
	HostName              string
	AllocationWeight      int // 1..1000
	ApplyAllocationPolicy bool
	Location              string
}

// AllocationRequest is what an allocation policy decides on.
type AllocationRequest struct {
	RegistrationID string
	// OperationID is the registration operation being completed (for the
	// registration-events feed).
	OperationID string
	// Candidates are the hubs the device may be assigned to, in a stable order.
	Candidates []LinkedHub
	// Enrollment or Group is the enrollment the device matched.
	Enrollment *Enrollment
	Group      *Group
	// Attestation is how the device authenticated.
	Attestation AttestationType
	// Payload is the device's registration payload, as sent.
	Payload json.RawMessage
	// CurrentHub and CurrentDeviceID are set on a re-registration.
	CurrentHub      string
	CurrentDeviceID string
}

// Settings returns the settings of the matched enrollment or group.
func (r *AllocationRequest) Settings() *Settings {
	if r.Enrollment != nil {
		return &r.Enrollment.Settings
	}
	if r.Group != nil {
		return &r.Group.Settings
	}
	return nil
}

// Assignment is an allocation policy's decision.
type Assignment struct {
	Hub string
	// InitialTwin, when set, overrides the enrollment's initial twin.
	InitialTwin json.RawMessage
	// Payload, when set, is returned to the device.
	Payload json.RawMessage
}

// AllocationFailure ends a registration as failed with a DPS error code (for
// example 400207) rather than failing the request.
type AllocationFailure struct {
	Code    int
	Message string
}

func (f *AllocationFailure) Error() string { return f.Message }

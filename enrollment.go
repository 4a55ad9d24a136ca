package dps

import (
	"encoding/json"
	"time"
)

// ProvisioningStatus says whether an enrollment may provision devices.
type ProvisioningStatus string

const (
	ProvisioningEnabled  ProvisioningStatus = "enabled"
	ProvisioningDisabled ProvisioningStatus = "disabled"
)

// ReprovisionPolicy says what happens when an already-assigned device
// registers again.
type ReprovisionPolicy struct {
	// UpdateHubAssignment re-evaluates the hub assignment; false keeps the
	// device on its current hub.
	UpdateHubAssignment bool
	// MigrateDeviceData moves the device's twin to the new hub; false resets
	// it to the enrollment's initial twin.
	MigrateDeviceData bool
}

// DefaultReprovisionPolicy is what Azure applies when an enrollment has none.
var DefaultReprovisionPolicy = ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}

// Settings are the fields individual enrollments and groups share.
type Settings struct {
	Attestation        Attestation
	IoTEdge            bool
	IoTHubHostName     string   // legacy single-hub field
	IoTHubs            []string // candidate hubs; empty means every linked hub
	InitialTwin        json.RawMessage
	ProvisioningStatus ProvisioningStatus
	ReprovisionPolicy  *ReprovisionPolicy // nil: DefaultReprovisionPolicy
	AllocationPolicy   AllocationPolicy   // empty: the instance default
	CustomAllocation   *CustomAllocation
	// CertificateAuthorityName and CertificatePolicyName name the issuing
	// CA and the credential policy that issue operational certificates to
	// the devices that send a CSR (the 2026-11-01 service API's names; the
	// policy is credentialPolicyName in 2026-04-01). The policy names its
	// CA: when both are set they must agree. No policy: a CSR is refused.
	CertificateAuthorityName string
	CertificatePolicyName    string
	// Extra holds members this version does not model (for example newer
	// API fields), round-tripped as received.
	Extra   map[string]json.RawMessage
	ETag    string
	Created time.Time
	Updated time.Time
}

// Enabled reports whether the enrollment may provision devices.
func (s *Settings) Enabled() bool { return s.ProvisioningStatus != ProvisioningDisabled }

// Reprovision returns the effective reprovision policy.
func (s *Settings) Reprovision() ReprovisionPolicy {
	if s.ReprovisionPolicy == nil {
		return DefaultReprovisionPolicy
	}
	return *s.ReprovisionPolicy
}

// Enrollment is an individual enrollment: one device.
type Enrollment struct {
	RegistrationID            string
	DeviceID                  string // empty: the registration ID
	OptionalDeviceInformation json.RawMessage
	Settings
}

// Group is an enrollment group: many devices sharing an attestation root.
type Group struct {
	ID string
	Settings
}

// CustomAllocation points at a custom allocation webhook.
type CustomAllocation struct {
	WebhookURL string
	APIVersion string
	// SigningSecret, when set, signs this enrollment's webhook requests
	// instead of the instance's secret (a dps extension; never returned).
	SigningSecret Key
}

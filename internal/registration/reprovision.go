package registration

import (
	"strings"

	"github.com/opendps/dps"
)

// twinSource is where a registration's device twin comes from.
type twinSource int

const (
	// twinFromEnrollment is the enrollment's initialTwin.
	twinFromEnrollment twinSource = iota
	// twinFromWebhook is the initial twin the custom allocation webhook returned.
	twinFromWebhook
	// twinKeepCurrent reads the twin of the device's current identity, which it
	// keeps; the enrollment's initialTwin if it cannot be read.
	twinKeepCurrent
	// twinMigrate reads the twin of the identity the device leaves, to carry it
	// to the new one; the enrollment's initialTwin if it cannot be read.
	twinMigrate
)

// reprovisionDecision is what a registration does with the device's
// previous assignment.
type reprovisionDecision struct {
	// Moved reports that the device gets another identity: another hub or
	// another device ID than its previous assignment.
	Moved bool
	// Substatus is the result's substatus.
	Substatus dps.Substatus
	// InitialHub is the hub of the device's first assignment.
	InitialHub string
	// Twin says where the new identity's twin comes from.
	Twin twinSource
	// DeprovisionOld reports that the previous identity (prev.AssignedHub,
	// prev.DeviceID) is removed.
	DeprovisionOld bool
}

// decideReprovision decides, without I/O, how a registration relates to the
// device's previous registration record prev (nil when it has none): hub and
// deviceID are the new assignment (allocation already kept the current hub
// when the policy does not update hub assignments), webhookTwin reports that
// the allocation webhook returned an initial twin. The initial hub is prev's,
// or hub for a device that has never had one.
func decideReprovision(prev *dps.Registration, policy dps.ReprovisionPolicy, hub, deviceID string, webhookTwin bool) reprovisionDecision {
	// A record without a hub (a registration that failed before it was ever
	// assigned) counts as none, except for its initial hub.
	reassigning := prev != nil && prev.AssignedHub != ""
	d := reprovisionDecision{
		Moved:      reassigning && (!strings.EqualFold(prev.AssignedHub, hub) || !strings.EqualFold(prev.DeviceID, deviceID)),
		Substatus:  dps.SubstatusInitialAssignment,
		InitialHub: hub,
	}
	d.DeprovisionOld = d.Moved
	if prev != nil && prev.InitialHub != "" {
		d.InitialHub = prev.InitialHub
	}
	switch {
	case webhookTwin:
		d.Twin = twinFromWebhook // the webhook's twin overrides migration settings
	case reassigning && !d.Moved:
		d.Twin = twinKeepCurrent
	case d.Moved && policy.MigrateDeviceData:
		d.Twin = twinMigrate
	}
	switch {
	case reassigning && !d.Moved:
		if prev.Substatus != "" {
			d.Substatus = prev.Substatus
		}
	case d.Moved && strings.EqualFold(hub, d.InitialHub) && !strings.EqualFold(prev.AssignedHub, d.InitialHub):
		d.Substatus = dps.SubstatusReprovisionedToInitialAssignment
	case d.Moved && policy.MigrateDeviceData:
		d.Substatus = dps.SubstatusDeviceDataMigrated
	case d.Moved:
		d.Substatus = dps.SubstatusDeviceDataReset
	}
	return d
}

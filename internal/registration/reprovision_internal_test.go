package registration

import (
	"testing"

	"github.com/opendps/dps"
)

func TestDecideReprovision(t *testing.T) {
	const hubA, hubB = "a.azure-devices.net", "b.azure-devices.net"
	var (
		migrate  = dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}
		reset    = dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false}
		never    = dps.ReprovisionPolicy{UpdateHubAssignment: false, MigrateDeviceData: true}
		neverRst = dps.ReprovisionPolicy{UpdateHubAssignment: false, MigrateDeviceData: false}
	)
	onA := &dps.Registration{AssignedHub: hubA, DeviceID: "dev", InitialHub: hubA, Substatus: dps.SubstatusInitialAssignment}
	onBFromA := &dps.Registration{AssignedHub: hubB, DeviceID: "dev", InitialHub: hubA, Substatus: dps.SubstatusDeviceDataMigrated}

	tests := []struct {
		name        string
		prev        *dps.Registration
		policy      dps.ReprovisionPolicy
		hub, device string
		webhookTwin bool
		want        reprovisionDecision
	}{
		{
			name: "initial assignment", prev: nil, policy: migrate, hub: hubA, device: "dev",
			want: reprovisionDecision{Substatus: dps.SubstatusInitialAssignment, InitialHub: hubA, Twin: twinFromEnrollment},
		},
		{
			name: "initial assignment with a webhook twin", prev: nil, policy: migrate, hub: hubA, device: "dev", webhookTwin: true,
			want: reprovisionDecision{Substatus: dps.SubstatusInitialAssignment, InitialHub: hubA, Twin: twinFromWebhook},
		},
		{
			// A registration that failed before it was ever assigned leaves a
			// record without a hub: the next one is an initial assignment.
			name: "record without a hub", prev: &dps.Registration{DeviceID: "dev"}, policy: reset, hub: hubB, device: "dev",
			want: reprovisionDecision{Substatus: dps.SubstatusInitialAssignment, InitialHub: hubB, Twin: twinFromEnrollment},
		},
		{
			name: "record without a hub keeps its initial hub", prev: &dps.Registration{InitialHub: hubA}, policy: migrate, hub: hubB, device: "dev",
			want: reprovisionDecision{Substatus: dps.SubstatusInitialAssignment, InitialHub: hubA, Twin: twinFromEnrollment},
		},
		{
			name: "re-register on the same hub", prev: onA, policy: migrate, hub: hubA, device: "dev",
			want: reprovisionDecision{Substatus: dps.SubstatusInitialAssignment, InitialHub: hubA, Twin: twinKeepCurrent},
		},
		{
			name: "re-register on the same hub, names differ in case", prev: onA, policy: reset, hub: "A.azure-devices.net", device: "DEV",
			want: reprovisionDecision{Substatus: dps.SubstatusInitialAssignment, InitialHub: hubA, Twin: twinKeepCurrent},
		},
		{
			name: "re-register on the same hub keeps the substatus", prev: onBFromA, policy: reset, hub: hubB, device: "dev",
			want: reprovisionDecision{Substatus: dps.SubstatusDeviceDataMigrated, InitialHub: hubA, Twin: twinKeepCurrent},
		},
		{
			name: "re-register, record without a substatus", prev: &dps.Registration{AssignedHub: hubA, DeviceID: "dev", InitialHub: hubA}, policy: migrate, hub: hubA, device: "dev",
			want: reprovisionDecision{Substatus: dps.SubstatusInitialAssignment, InitialHub: hubA, Twin: twinKeepCurrent},
		},
		{
			name: "re-register on the same hub, webhook twin", prev: onBFromA, policy: migrate, hub: hubB, device: "dev", webhookTwin: true,
			want: reprovisionDecision{Substatus: dps.SubstatusDeviceDataMigrated, InitialHub: hubA, Twin: twinFromWebhook},
		},
		{
			// allocate keeps the current hub when the policy never re-provisions.
			name: "never re-provision", prev: onBFromA, policy: never, hub: hubB, device: "dev",
			want: reprovisionDecision{Substatus: dps.SubstatusDeviceDataMigrated, InitialHub: hubA, Twin: twinKeepCurrent},
		},
		{
			name: "never re-provision, no migration", prev: onA, policy: neverRst, hub: hubA, device: "dev",
			want: reprovisionDecision{Substatus: dps.SubstatusInitialAssignment, InitialHub: hubA, Twin: twinKeepCurrent},
		},
		{
			name: "moved, migrate device data", prev: onA, policy: migrate, hub: hubB, device: "dev",
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusDeviceDataMigrated, InitialHub: hubA, Twin: twinMigrate},
		},
		{
			name: "moved, reset device data", prev: onA, policy: reset, hub: hubB, device: "dev",
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusDeviceDataReset, InitialHub: hubA, Twin: twinFromEnrollment},
		},
		{
			name: "moved, webhook twin overrides migration", prev: onA, policy: migrate, hub: hubB, device: "dev", webhookTwin: true,
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusDeviceDataMigrated, InitialHub: hubA, Twin: twinFromWebhook},
		},
		{
			name: "moved, webhook twin with reset", prev: onA, policy: reset, hub: hubB, device: "dev", webhookTwin: true,
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusDeviceDataReset, InitialHub: hubA, Twin: twinFromWebhook},
		},
		{
			name: "moved back to the initial hub, migrate", prev: onBFromA, policy: migrate, hub: hubA, device: "dev",
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusReprovisionedToInitialAssignment, InitialHub: hubA, Twin: twinMigrate},
		},
		{
			name: "moved back to the initial hub, reset", prev: onBFromA, policy: reset, hub: "A.AZURE-DEVICES.NET", device: "dev",
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusReprovisionedToInitialAssignment, InitialHub: hubA, Twin: twinFromEnrollment},
		},
		{
			// A record written before initial hubs were kept: the new hub counts
			// as the initial one.
			name: "moved, record without an initial hub", prev: &dps.Registration{AssignedHub: hubA, DeviceID: "dev"}, policy: reset, hub: hubB, device: "dev",
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusReprovisionedToInitialAssignment, InitialHub: hubB, Twin: twinFromEnrollment},
		},
		{
			name: "device ID change on the initial hub, migrate", prev: onA, policy: migrate, hub: hubA, device: "dev2",
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusDeviceDataMigrated, InitialHub: hubA, Twin: twinMigrate},
		},
		{
			name: "device ID change on the initial hub, reset", prev: onA, policy: reset, hub: hubA, device: "dev2",
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusDeviceDataReset, InitialHub: hubA, Twin: twinFromEnrollment},
		},
		{
			name: "device ID change back on the initial hub", prev: onBFromA, policy: migrate, hub: hubA, device: "dev2",
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusReprovisionedToInitialAssignment, InitialHub: hubA, Twin: twinMigrate},
		},
		{
			// The hub stays, but the identity is a new one.
			name: "never re-provision, device ID change", prev: onBFromA, policy: neverRst, hub: hubB, device: "dev2",
			want: reprovisionDecision{Moved: true, DeprovisionOld: true, Substatus: dps.SubstatusDeviceDataReset, InitialHub: hubA, Twin: twinFromEnrollment},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decideReprovision(tt.prev, tt.policy, tt.hub, tt.device, tt.webhookTwin)
			if got != tt.want {
				t.Errorf("decideReprovision = %+v, want %+v", got, tt.want)
			}
		})
	}
}

package access_test

import (
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
)

// The IoT hub test vectors of the protocol reference (§1.1): a service
// token of the iothubowner policy and a device token (Node's %2F form)
// signed with the device's own key, both with se=1700000000.
const (
	vectorHub         = "myhub.azure-devices.net"
	vectorOwnerKey    = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	vectorOwnerToken  = "SharedAccessSignature sr=myhub.azure-devices.net&sig=x6IGj%2B8zbxYXm%2FdGlYvwrhDONy7KI9CfFroMvZtu5FY%3D&se=1700000000&skn=iothubowner"
	vectorDevice      = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	vectorDeviceKey   = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
	vectorDeviceToken = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=tPZ623IifpFm%2BRIARy2du9tPkfGB%2Fbk8pzj0ebs%2FiHo%3D&se=1700000000"
)

func TestHubPolicyRights(t *testing.T) {
	now := func() time.Time { return time.Unix(1_700_000_000-60, 0) }
	owner := access.Policy{Name: "iothubowner", PrimaryKey: vectorOwnerKey, Rights: access.HubRights()}
	c, err := access.New([]access.Policy{owner}, []string{vectorHub}, now)
	if err != nil {
		t.Fatal(err)
	}
	twinPath := "/twins/" + vectorDevice
	for _, r := range access.HubRights() {
		if err := c.Check(vectorOwnerToken, twinPath, r); err != nil {
			t.Errorf("iothubowner token, right %s: %v", r, err)
		}
	}

	// The same key in a policy of the same name without ServiceConnect:
	// the token is valid, the right is missing, and the answer names it.
	reader := access.Policy{Name: "iothubowner", PrimaryKey: vectorOwnerKey, Rights: []access.Right{access.RegistryRead}}
	c, err = access.New([]access.Policy{reader}, []string{vectorHub}, now)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check(vectorOwnerToken, twinPath, access.ServiceConnect)
	if e := dps.AsError(err); e.Kind != dps.KindForbidden || !strings.Contains(e.Message, "ServiceConnect") {
		t.Errorf("RegistryRead policy, ServiceConnect: %v, want forbidden naming ServiceConnect", err)
	}
	if err := c.Check(vectorOwnerToken, twinPath, access.RegistryRead); err != nil {
		t.Errorf("RegistryRead policy, RegistryRead: %v", err)
	}

	// Another hub's host: the token's sr does not name this service.
	c, err = access.New([]access.Policy{owner}, []string{"otherhub.azure-devices.net"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(vectorOwnerToken, twinPath, access.ServiceConnect); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("token for another hub: %v, want unauthorized", err)
	}
}

// TestHubRefusesDeviceTokens: a device's own SAS token (no skn, signed
// with the device key) is no service credential, not even for a path
// under the resource it names, and not when a policy shares the key.
func TestHubRefusesDeviceTokens(t *testing.T) {
	now := func() time.Time { return time.Unix(1_700_000_000-60, 0) }
	owner := access.Policy{Name: "iothubowner", PrimaryKey: vectorOwnerKey, Rights: access.HubRights()}
	sameKey := access.Policy{Name: vectorDevice, PrimaryKey: vectorDeviceKey, Rights: access.HubRights()}
	c, err := access.New([]access.Policy{owner, sameKey}, []string{vectorHub}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/twins/" + vectorDevice, "/devices/" + vectorDevice, "/devices/" + vectorDevice + "/messages/events"} {
		if err := c.Check(vectorDeviceToken, path, access.ServiceConnect); dps.KindOf(err) != dps.KindUnauthorized {
			t.Errorf("device token on %s: %v, want unauthorized", path, err)
		}
	}
}

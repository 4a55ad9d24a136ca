package hubproto

import (
	"fmt"
	"strings"
	"time"

	"github.com/opendps/dps/internal/sas"
)

const devicesSegment = "/devices/"

// ParseDeviceToken parses a device's hub SAS token and checks everything
// but its signature (the caller verifies tok.Valid with the identity's
// keys; the signature covers the sr bytes exactly as received, which
// sas.Token keeps):
//
//   - sr is {host}/devices/{deviceID}: the host compared case-insensitively,
//     the device id exactly (ids are case-sensitive). Both the decoded sr
//     (Node's %2F and lower-case %2a, %28 …; C#, Python, embedded C; the C
//     SDK's HTTP form with an encoded id) and the sr as received (the C
//     SDK's MQTT form, raw, for an id that holds a '%') are accepted.
//   - A module resource {host}/devices/{id}/modules/{mid} is refused with
//     an error that matches both ErrModule and sas.ErrResource.
//   - The token has not expired more than skew before now.
//   - skn is absent, or equal to the device id (the C SDK's HTTP transport
//     sends skn={deviceId}); any other key name is sas.ErrKeyName.
//
// An empty raw is sas.ErrNoToken; a malformed token sas.ErrMalformed.
func ParseDeviceToken(raw, host, deviceID string, now time.Time, skew time.Duration) (sas.Token, error) {
	if raw == "" {
		return sas.Token{}, sas.ErrNoToken
	}
	tok, err := sas.Parse(raw)
	if err != nil {
		return sas.Token{}, err
	}
	if !deviceResource(tok.Resource, host, deviceID) && !deviceResource(tok.RawResource, host, deviceID) {
		if moduleResource(tok.Resource, host, deviceID) || moduleResource(tok.RawResource, host, deviceID) {
			return sas.Token{}, fmt.Errorf("%w: %w", ErrModule, sas.ErrResource)
		}
		return sas.Token{}, sas.ErrResource
	}
	if err := tok.CheckExpiry(now, skew); err != nil {
		return sas.Token{}, err
	}
	if tok.KeyName != "" && tok.KeyName != deviceID {
		return sas.Token{}, sas.ErrKeyName
	}
	return tok, nil
}

// deviceResource reports whether res is host/devices/deviceID (host and
// "devices" in any case, the id exact).
func deviceResource(res, host, deviceID string) bool {
	id, ok := cutDevicesPrefix(res, host)
	return ok && id == deviceID
}

// moduleResource reports whether res is host/devices/deviceID/modules/….
func moduleResource(res, host, deviceID string) bool {
	rest, ok := cutDevicesPrefix(res, host)
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, deviceID)
	return ok && len(rest) > len("/modules/") && strings.EqualFold(rest[:len("/modules/")], "/modules/")
}

// cutDevicesPrefix removes host + "/devices/" (case-insensitively) from res.
func cutDevicesPrefix(res, host string) (string, bool) {
	n := len(host) + len(devicesSegment)
	if host == "" || len(res) < n || !strings.EqualFold(res[:len(host)], host) ||
		!strings.EqualFold(res[len(host):n], devicesSegment) {
		return "", false
	}
	return res[n:], true
}

package hubproto_test

import (
	"encoding/base64"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/sas"
)

// Vectors from the protocol reference §1.1 (device key = the group-derived
// key of sn-007-…, se=1700000000); the Node ones were generated with
// azure-iot-common's encodeUriComponentStrict and SharedAccessSignature.
const (
	hubHost   = "myhub.azure-devices.net"
	hubDevice = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	hubKey    = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
	rawSR     = "SharedAccessSignature sr=myhub.azure-devices.net/devices/sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=mlpQVEXnw4iqDh8PUE32phr1ABfrjaP7aTdn2E3gq98%3D&se=1700000000"
	upperSR   = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=tPZ623IifpFm%2BRIARy2du9tPkfGB%2Fbk8pzj0ebs%2FiHo%3D&se=1700000000"
	lowerSR   = "SharedAccessSignature sr=myhub.azure-devices.net%2fdevices%2fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=iAl%2Fy6W9a2RRhQlcx61OnA21%2F9c%2BR9J1K37WXAZDktE%3D&se=1700000000"
	// Node, device id "dev(1)*!'+=": !'()* as lower-case %21 %27 %28 %29 %2a.
	nodeStrict = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%281%29%2a%21%27%2B%3D&sig=gLojsbyKaXkYkte0XF%2FbyQuJYHL1w7r8u7U6N5XA5Zo%3D&se=1700000000"
	// Node, module m1 of mod-dev.
	nodeModule = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fmod-dev%2Fmodules%2Fm1&sig=2qa0Omn26dNtzlt2gYox3fY2O3HUjZZHC0RwOI2S2dQ%3D&se=1700000000"
)

var tokenTime = time.Unix(1700000000, 0)

// signRaw builds a token over sr exactly as given (the C SDK's raw forms).
func signRaw(t *testing.T, sr, extra string) string {
	t.Helper()
	sig := base64.StdEncoding.EncodeToString(sas.Sign(mustDecode(t, hubKey), sr, "1700000000"))
	return sas.Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=1700000000" + extra
}

func mustDecode(t *testing.T, k string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseDeviceToken(t *testing.T) {
	tests := []struct {
		name, token, host, device string
	}{
		{"c-sdk-raw", rawSR, hubHost, hubDevice},
		{"percent-upper", upperSR, hubHost, hubDevice},
		{"percent-lower", lowerSR, hubHost, hubDevice},
		{"host-any-case", upperSR, "MyHub.Azure-Devices.NET", hubDevice},
		{"node-strict-escapes", nodeStrict, hubHost, "dev(1)*!'+="},
		{"c-sdk-raw-special", signRaw(t, hubHost+"/devices/dev(1)*!'+=", ""), hubHost, "dev(1)*!'+="},
		// The C SDK's raw sr for an id holding '%': the sr as received names
		// the device, its decoding does not.
		{"c-sdk-raw-percent", signRaw(t, hubHost+"/devices/a%41b", ""), hubHost, "a%41b"},
		{"c-sdk-raw-percent-decoded", signRaw(t, hubHost+"/devices/a%41b", ""), hubHost, "aAb"},
		// The C SDK's HTTP transport: raw host, encoded id, skn=deviceId.
		{"c-sdk-http", signRaw(t, hubHost+"/devices/dev%281%29", "&skn=dev%281%29"), hubHost, "dev(1)"},
		{"skn-device-id", signRaw(t, hubHost+"/devices/"+hubDevice, "&skn="+hubDevice), hubHost, hubDevice},
		{"devices-any-case", signRaw(t, hubHost+"/Devices/"+hubDevice, ""), hubHost, hubDevice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := hubproto.ParseDeviceToken(tt.token, tt.host, tt.device, tokenTime, 5*time.Minute)
			if err != nil {
				t.Fatalf("ParseDeviceToken: %v", err)
			}
			if !tok.Valid(mustDecode(t, hubKey)) {
				t.Error("signature does not verify over the sr as received")
			}
		})
	}
}

func TestParseDeviceTokenErrors(t *testing.T) {
	const skew = 5 * time.Minute
	tests := []struct {
		name, token, host, device string
		now                       time.Time
		want                      error
	}{
		{"empty", "", hubHost, hubDevice, tokenTime, sas.ErrNoToken},
		{"malformed", "SharedAccessSignature sr=x", hubHost, hubDevice, tokenTime, sas.ErrMalformed},
		{"other-device", upperSR, hubHost, "sn-007", tokenTime, sas.ErrResource},
		{"id-case", upperSR, hubHost, "SN-007-888-ABC-MAC-A1-B2-C3-D4-E5-F6", tokenTime, sas.ErrResource},
		{"other-host", upperSR, "otherhub.azure-devices.net", hubDevice, tokenTime, sas.ErrResource},
		{"host-suffix", signRaw(t, hubHost+".evil.example/devices/"+hubDevice, ""), hubHost, hubDevice, tokenTime, sas.ErrResource},
		{"longer-resource", signRaw(t, hubHost+"/devices/"+hubDevice+"/x", ""), hubHost, hubDevice, tokenTime, sas.ErrResource},
		{"hub-scope", signRaw(t, hubHost+"/devices", "&skn=device"), hubHost, hubDevice, tokenTime, sas.ErrResource},
		{"dps-token", signRaw(t, "0ne00000A0A/registrations/"+hubDevice, ""), hubHost, hubDevice, tokenTime, sas.ErrResource},
		{"module", nodeModule, hubHost, "mod-dev", tokenTime, hubproto.ErrModule},
		{"module-is-resource", nodeModule, hubHost, "mod-dev", tokenTime, sas.ErrResource},
		{"module-raw", signRaw(t, hubHost+"/devices/mod-dev/Modules/m1", ""), hubHost, "mod-dev", tokenTime, hubproto.ErrModule},
		{"expired", upperSR, hubHost, hubDevice, tokenTime.Add(skew + time.Second), sas.ErrExpired},
		{"policy-key-name", signRaw(t, hubHost+"/devices/"+hubDevice, "&skn=iothubowner"), hubHost, hubDevice, tokenTime, sas.ErrKeyName},
		{"registration-key-name", signRaw(t, hubHost+"/devices/"+hubDevice, "&skn=registration"), hubHost, hubDevice, tokenTime, sas.ErrKeyName},
		{"empty-host", upperSR, "", hubDevice, tokenTime, sas.ErrResource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := hubproto.ParseDeviceToken(tt.token, tt.host, tt.device, tt.now, skew)
			if !errors.Is(err, tt.want) {
				t.Errorf("ParseDeviceToken = %v, want %v", err, tt.want)
			}
		})
	}
	// Within the skew is still good.
	if _, err := hubproto.ParseDeviceToken(upperSR, hubHost, hubDevice, tokenTime.Add(skew), skew); err != nil {
		t.Errorf("at the edge of the skew: %v", err)
	}
}

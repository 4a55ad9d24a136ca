package hubproto_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/hubproto"
)

func TestParseUsername(t *testing.T) {
	tests := []struct {
		name, username, clientID string
		host, device, module     string
		api, clientType, model   string
		rawQuery                 string
	}{
		// Node: model-id raw, DeviceClientType = encodeURIComponent(UA).
		{name: "node-pnp", clientID: "dev1",
			username: "myhub.azure-devices.net/dev1/?api-version=2021-04-12&model-id=dtmi:com:x:T;1&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v22.3.0%3B%20linux%206.8.0%3B%20x64)",
			host:     "myhub.azure-devices.net", device: "dev1", api: "2021-04-12", model: "dtmi:com:x:T;1",
			clientType: "azure-iot-device/1.18.4 (node v22.3.0; linux 6.8.0; x64)",
			rawQuery:   "api-version=2021-04-12&model-id=dtmi:com:x:T;1&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v22.3.0%3B%20linux%206.8.0%3B%20x64)"},
		{name: "node", clientID: "sn-007", username: "localhost/sn-007/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4",
			host: "localhost", device: "sn-007", api: "2021-04-12", clientType: "azure-iot-device/1.18.4",
			rawQuery: "api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4"},
		// C SDK 1.3.9 (PnP), lower-case escapes as captured.
		{name: "c-sdk", clientID: "sample-device-01",
			username: "myhub.azure-devices.net/sample-device-01/?api-version=2020-09-30&DeviceClientType=iothubclient%2f1.3.9%20(native%3b%20Linux%3b%20x86_64)&model-id=dtmi%3acom%3aexample%3aThermostat%3b1",
			host:     "myhub.azure-devices.net", device: "sample-device-01", api: "2020-09-30",
			clientType: "iothubclient/1.3.9 (native; Linux; x86_64)", model: "dtmi:com:example:Thermostat;1",
			rawQuery: "api-version=2020-09-30&DeviceClientType=iothubclient%2f1.3.9%20(native%3b%20Linux%3b%20x86_64)&model-id=dtmi%3acom%3aexample%3aThermostat%3b1"},
		// C SDK 2016: no '?'.
		{name: "c-sdk-2016", clientID: "MyDotnetDevice",
			username: "myhub.azure-devices.net/MyDotnetDevice/api-version=2016-11-14&DeviceClientType=iothubclient%2F1.1.12",
			host:     "myhub.azure-devices.net", device: "MyDotnetDevice", api: "2016-11-14", clientType: "iothubclient/1.1.12",
			rawQuery: "api-version=2016-11-14&DeviceClientType=iothubclient%2F1.1.12"},
		{name: "c-sdk-2016-raw-slash", clientID: "d",
			username: "h/d/api-version=2016-11-14&DeviceClientType=iothubclient/1.1.12",
			host:     "h", device: "d", api: "2016-11-14", clientType: "iothubclient/1.1.12",
			rawQuery: "api-version=2016-11-14&DeviceClientType=iothubclient/1.1.12"},
		{name: "embedded-c", clientID: "dev-ec",
			username: "myhub.azure-devices.net/dev-ec/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.5.0&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
			host:     "myhub.azure-devices.net", device: "dev-ec", api: "2020-09-30", clientType: "azsdk-c/1.5.0", model: "dtmi:com:example:Thermostat;1",
			rawQuery: "api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.5.0&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"},
		{name: "csharp", clientID: "dev-cs",
			username: "myhub.azure-devices.net/dev-cs/?api-version=2020-09-30&DeviceClientType=Microsoft.Azure.Devices.Client%2F1.42.0%20%28.NET%206.0.0%3B%20Ubuntu%2022.04%3B%20X64%29",
			host:     "myhub.azure-devices.net", device: "dev-cs", api: "2020-09-30",
			clientType: "Microsoft.Azure.Devices.Client/1.42.0 (.NET 6.0.0; Ubuntu 22.04; X64)",
			rawQuery:   "api-version=2020-09-30&DeviceClientType=Microsoft.Azure.Devices.Client%2F1.42.0%20%28.NET%206.0.0%3B%20Ubuntu%2022.04%3B%20X64%29"},
		{name: "python", clientID: "dev-py",
			username: "myhub.azure-devices.net/dev-py/?api-version=2019-10-01&DeviceClientType=py-azure-iot-device%2F2.13.0%28Cpython%203.11%3BLinux%206.1%3Bx86_64%29",
			host:     "myhub.azure-devices.net", device: "dev-py", api: "2019-10-01", clientType: "py-azure-iot-device/2.13.0(Cpython 3.11;Linux 6.1;x86_64)",
			rawQuery: "api-version=2019-10-01&DeviceClientType=py-azure-iot-device%2F2.13.0%28Cpython%203.11%3BLinux%206.1%3Bx86_64%29"},
		// A module (Device Update agent): reported, the caller refuses it.
		{name: "module", clientID: "dev1/DeviceUpdate",
			username: "myhub.azure-devices.net/dev1/DeviceUpdate/?api-version=2020-09-30&DeviceClientType=x",
			host:     "myhub.azure-devices.net", device: "dev1", module: "DeviceUpdate", api: "2020-09-30", clientType: "x",
			rawQuery: "api-version=2020-09-30&DeviceClientType=x"},
		{name: "module-no-query", clientID: "d/m", username: "h/d/m/", host: "h", device: "d", module: "m"},
		// Every character IoT Hub allows in a device id, raw.
		{name: "raw-id", clientID: "a-.+%_#*?!(),=@$'41",
			username: "localhost/a-.+%_#*?!(),=@$'41/?api-version=2021-04-12",
			host:     "localhost", device: "a-.+%_#*?!(),=@$'41", api: "2021-04-12", rawQuery: "api-version=2021-04-12"},
		{name: "id-starts-with-question-mark", clientID: "?x", username: "h/?x/?api-version=1", host: "h", device: "?x", api: "1", rawQuery: "api-version=1"},
		// A hub device named like DPS's path: not a DPS username here.
		{name: "registrations", clientID: "registrations", username: "localhost/registrations/?api-version=2021-04-12",
			host: "localhost", device: "registrations", api: "2021-04-12", rawQuery: "api-version=2021-04-12"},
		{name: "any-order", clientID: "d", username: "h/d/?DeviceClientType=x%20y&extra&model-id=m&API-VERSION=2018-06-30&api-version=ignored",
			host: "h", device: "d", api: "2018-06-30", clientType: "x y", model: "m",
			rawQuery: "DeviceClientType=x%20y&extra&model-id=m&API-VERSION=2018-06-30&api-version=ignored"},
		{name: "no-params", clientID: "d", username: "h/d", host: "h", device: "d"},
		{name: "no-params-slash", clientID: "d", username: "h/d/", host: "h", device: "d"},
		{name: "empty-query", clientID: "d", username: "h/d/?", host: "h", device: "d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := hubproto.ParseUsername(tt.username)
			if err != nil {
				t.Fatalf("ParseUsername(%q): %v", tt.username, err)
			}
			got := [...]string{u.Host, u.DeviceID, u.ModuleID, u.APIVersion, u.ClientType, u.ModelID, u.RawQuery}
			want := [...]string{tt.host, tt.device, tt.module, tt.api, tt.clientType, tt.model, tt.rawQuery}
			if got != want {
				t.Errorf("ParseUsername(%q) =\n %q\nwant\n %q", tt.username, got, want)
			}
			if !reflect.DeepEqual(u.Params, hubproto.DecodeBag(tt.rawQuery)) {
				t.Errorf("Params = %#v", u.Params)
			}
			if err := u.CheckClientID(tt.clientID); err != nil {
				t.Errorf("CheckClientID(%q): %v", tt.clientID, err)
			}
		})
	}
}

func TestParseUsernameErrors(t *testing.T) {
	for _, s := range []string{"", "host", "/dev/?api-version=1", "host/", "host//?api-version=1", "host/dev//?api-version=1",
		"host/dev//", "ho?st/dev/?api-version=1"} {
		if u, err := hubproto.ParseUsername(s); !errors.Is(err, hubproto.ErrUsername) {
			t.Errorf("ParseUsername(%q) = %+v, %v; want ErrUsername", s, u, err)
		}
	}
}

func TestCheckClientID(t *testing.T) {
	dev, err := hubproto.ParseUsername("h/dev1/?api-version=2021-04-12")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := hubproto.ParseUsername("h/dev1/m1/?api-version=2021-04-12")
	if err != nil {
		t.Fatal(err)
	}
	// A module username without its trailing '/' cannot be told from the
	// old form; the ClientId then refuses it.
	odd, err := hubproto.ParseUsername("h/dev1/m1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		u        hubproto.Username
		clientID string
		ok       bool
	}{
		{dev, "dev1", true},
		{dev, "Dev1", false},
		{dev, "dev1/m1", false},
		{dev, "", false},
		{mod, "dev1/m1", true},
		{mod, "dev1", false},
		{odd, "dev1/m1", false},
	}
	for _, tt := range tests {
		err := tt.u.CheckClientID(tt.clientID)
		if tt.ok != (err == nil) || err != nil && !errors.Is(err, hubproto.ErrClientID) {
			t.Errorf("%+v.CheckClientID(%q) = %v", tt.u.ClientID(), tt.clientID, err)
		}
	}
}

func FuzzUsername(f *testing.F) {
	for _, s := range []string{
		"myhub.azure-devices.net/dev1/?api-version=2021-04-12&model-id=dtmi:com:x:T;1&DeviceClientType=azure-iot-device%2F1.18.4",
		"myhub.azure-devices.net/MyDotnetDevice/api-version=2016-11-14&DeviceClientType=iothubclient%2F1.1.12",
		"h/d/m/?api-version=2020-09-30", "h/d/m/", "h/?x/?a", "h//", "h/d//?", "h/d/a/b/?c", "h/d/a/b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := hubproto.ParseUsername(s)
		if err != nil {
			if !errors.Is(err, hubproto.ErrUsername) {
				t.Fatalf("error %v is not ErrUsername", err)
			}
			return
		}
		if u.Host == "" || u.DeviceID == "" || strings.ContainsAny(u.Host, "/?") || strings.Contains(u.DeviceID, "/") ||
			strings.Contains(u.ModuleID, "/") || strings.HasPrefix(u.ModuleID, "?") {
			t.Fatalf("ParseUsername(%q) = %+v", s, u)
		}
		if err := u.CheckClientID(u.ClientID()); err != nil {
			t.Fatal(err)
		}
		// The canonical form of the same username parses the same.
		canon := u.Host + "/" + u.ClientID() + "/?" + u.RawQuery
		v, err := hubproto.ParseUsername(canon)
		if err != nil {
			t.Fatalf("ParseUsername(%q): %v", canon, err)
		}
		if !reflect.DeepEqual(u, v) {
			t.Fatalf("ParseUsername(%q) = %+v\nParseUsername(%q) = %+v", s, u, canon, v)
		}
	})
}

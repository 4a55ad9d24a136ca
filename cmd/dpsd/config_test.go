package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dpsd.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) string { return "" }

func TestDefaultConfig(t *testing.T) {
	cfg, err := loadConfig("", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen.HTTPS != ":443" || cfg.Listen.MQTT != ":8883" || cfg.Listen.Admin != "127.0.0.1:9090" {
		t.Errorf("listen = %+v", cfg.Listen)
	}
	if cfg.Storage != "sqlite:dps-data/dps.db" || cfg.RetryAfterSeconds != 2 || cfg.AllocationPolicy != "hashed" {
		t.Errorf("defaults = %+v", cfg)
	}
	if len(cfg.LinkedHubs) != 1 || cfg.LinkedHubs[0].HostName != defaultHub || *cfg.LinkedHubs[0].AllocationWeight != 1 || !*cfg.LinkedHubs[0].ApplyAllocationPolicy {
		t.Errorf("linkedHubs = %+v", cfg.LinkedHubs)
	}
	if cfg.Hub.EventRetention != 24*time.Hour || cfg.Hub.EventRetentionMessages != 1_000_000 {
		t.Errorf("hub = %+v, want a day and a million messages of retention", cfg.Hub)
	}
}

func TestFullConfig(t *testing.T) {
	p := writeConfig(t, `
idScope: "0ne00000001"
dataDir: "/tmp/dps-x"
storage: "sqlite:/tmp/dps-x/db.sqlite"
listen: { https: ":8443", mqtt: ":8884", admin: "127.0.0.1:9091" }
tls: { certFile: "/c.pem", keyFile: "/k.pem" }
serviceHostName: "10.0.0.5"
location: "westeurope"
retryAfterSeconds: 3
allocationPolicy: GeoLatency
linkedHubs:
  - { hostName: hub-a.example.net, allocationWeight: 7, applyAllocationPolicy: false, location: westeurope }
hub: { eventRetention: 168h, eventRetentionMessages: 5000 }
accessPolicies:
  - { name: provisioningserviceowner, primaryKey: "${DPSD_OWNER_KEY}", rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite] }
`)
	key := strings.Repeat("QUFB", 8) // 24 bytes
	env := map[string]string{"DPSD_OWNER_KEY": key, "DPSD_ACCESSPOLICIES_PROVISIONINGSERVICEOWNER_SECONDARYKEY": key, "HOME": "/ignored"}
	cfg, err := loadConfig(p, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AccessPolicies[0].PrimaryKey != key || cfg.AccessPolicies[0].SecondaryKey != key {
		t.Errorf("secrets from environment not applied: %+v", cfg.AccessPolicies[0])
	}
	h := cfg.LinkedHubs[0]
	if *h.AllocationWeight != 7 || *h.ApplyAllocationPolicy || h.Location != "westeurope" {
		t.Errorf("hub = %+v", h)
	}
	if cfg.Hub.EventRetention != 7*24*time.Hour || cfg.Hub.EventRetentionMessages != 5000 {
		t.Errorf("hub = %+v", cfg.Hub)
	}
	if cfg.ServiceHostName != "10.0.0.5" || cfg.Listen.MQTT != ":8884" || cfg.Storage != "sqlite:/tmp/dps-x/db.sqlite" {
		t.Errorf("cfg = %+v", cfg)
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	hub := "linkedHubs: [{hostName: h.example.net}]\n"
	tests := []struct {
		name, yaml, wantKey string
	}{
		{"idScope", "idScope: abc\n" + hub, "idScope"},
		{"unknown-key", "idScop: 0ne00000001\n" + hub, "idScop"},
		{"storage", "storage: postgres-ish\n" + hub, "storage"},
		{"listen", "listen: { https: nonsense }\n" + hub, "listen.https"},
		{"weight", "linkedHubs: [{hostName: h.example.net, allocationWeight: 1001}]\n", "linkedHubs[0].allocationWeight"},
		{"hub-without-name", "linkedHubs: [{location: x}]\n", "linkedHubs[0].hostName"},
		{"policy", "allocationPolicy: custom\n" + hub, "allocationPolicy"},
		{"retry", "retryAfterSeconds: 0\n" + hub, "retryAfterSeconds"},
		{"access-key", hub + "accessPolicies: [{name: p, primaryKey: short, rights: [EnrollmentRead]}]\n", "accessPolicies[0].primaryKey"},
		{"access-right", hub + "accessPolicies: [{name: p, primaryKey: " + strings.Repeat("QUFB", 8) + ", rights: [Everything]}]\n", "accessPolicies[0].rights"},
		{"tls-half", "tls: { certFile: /x }\n" + hub, "tls"},
		{"missing-env", "idScope: ${DPSD_NOT_SET}\n" + hub, "DPSD_NOT_SET"},
		{"wrong-type", "retryAfterSeconds: soon\n" + hub, "retryAfterSeconds"},
		{"hub-policy-right", "linkedHubs: [{hostName: h, accessPolicies: [{name: p, primaryKey: " + strings.Repeat("QUFB", 8) + ", rights: [EnrollmentRead]}]}]\n", "linkedHubs[0].accessPolicies[0].rights"},
		{"hub-policy-key", "linkedHubs: [{hostName: h, accessPolicies: [{name: p, primaryKey: short, rights: [RegistryRead]}]}]\n", "linkedHubs[0].accessPolicies[0].primaryKey"},
		{"event-retention", "hub: { eventRetention: 10s }\n" + hub, "hub.eventRetention"},
		{"event-retention-messages", "hub: { eventRetentionMessages: 0 }\n" + hub, "hub.eventRetentionMessages"},
		{"remote-hub-policy", "linkedHubs: [{hostName: h, connectionString: x, accessPolicies: [{name: p, primaryKey: " + strings.Repeat("QUFB", 8) + ", rights: [RegistryRead]}]}]\n", "linkedHubs[0].accessPolicies"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(writeConfig(t, tt.yaml), noEnv)
			if err == nil || !strings.Contains(err.Error(), tt.wantKey) {
				t.Fatalf("err = %v, want it to name %q", err, tt.wantKey)
			}
		})
	}
}

func TestOnlyDPSDVariablesAreRead(t *testing.T) {
	var asked []string
	_, err := loadConfig(writeConfig(t, "linkedHubs: [{hostName: h.example.net}]\nlocation: $HOME\n"), func(k string) string {
		asked = append(asked, k)
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range asked {
		if !strings.HasPrefix(k, "DPSD_") {
			t.Errorf("read environment variable %s", k)
		}
	}
}

func TestHubAccessPolicies(t *testing.T) {
	key := strings.Repeat("QUFB", 8)
	p := writeConfig(t, `
linkedHubs:
  - hostName: localhost
    accessPolicies:
      - { name: iothubowner, primaryKey: "`+key+`", rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect] }
      - { name: device, primaryKey: "`+key+`", rights: [DeviceConnect] }
  - { hostName: remote.example.net, connectionString: "HostName=remote.example.net;SharedAccessKeyName=iothubowner;SharedAccessKey=`+key+`" }
`)
	other := strings.Repeat("QkJC", 8)
	env := map[string]string{"DPSD_LINKEDHUBS_0_ACCESSPOLICIES_DEVICE_PRIMARYKEY": other, "DPSD_LINKEDHUBS_0_ACCESSPOLICIES_DEVICE_SECONDARYKEY": other}
	cfg, err := loadConfig(p, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.LinkedHubs[0]
	if !h.BuiltIn() || cfg.LinkedHubs[1].BuiltIn() {
		t.Errorf("built-in: %v, %v", h.BuiltIn(), cfg.LinkedHubs[1].BuiltIn())
	}
	if h.AccessPolicies[0].PrimaryKey != key || h.AccessPolicies[1].PrimaryKey != other || h.AccessPolicies[1].SecondaryKey != other {
		t.Errorf("policies = %+v", h.AccessPolicies)
	}
	if got := cfg.builtInHubs(); len(got) != 1 || got[0] != "localhost" {
		t.Errorf("builtInHubs = %v", got)
	}
}

func TestNoLinkedHubsMeansTheBuiltInLocalhost(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, "listen: { https: \":8443\" }\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.LinkedHubs) != 1 || cfg.LinkedHubs[0].HostName != defaultHub {
		t.Errorf("linkedHubs = %+v", cfg.LinkedHubs)
	}
}

func TestRedactDSN(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"postgres://app:s3cret@db:5432/dps?sslmode=require", "postgres://app:REDACTED@db:5432/dps?sslmode=require"},
		{"postgres://app@db/dps?sslmode=disable&password=s3cret", "postgres://app@db/dps?sslmode=disable&password=REDACTED"},
		{"postgres://app:p%40ss@db/dps?PASSWORD=other#x", "postgres://app:REDACTED@db/dps?PASSWORD=REDACTED#x"},
		{"postgres://db/dps", "postgres://db/dps"},
		{"sqlite:./dps-data/dps.db", "sqlite:./dps-data/dps.db"},
	} {
		if got := redactDSN(tt.in); got != tt.want {
			t.Errorf("redactDSN(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// The cause of a failed start is scrubbed too, whatever the driver put in it.
	err := storageError("postgres://app:p%40ss@db/dps?password=other", errors.New("cannot log in as app with p@ss or p%40ss\nor other"))
	if s := err.Error(); strings.Contains(s, "p@ss") || strings.Contains(s, "p%40ss") || strings.Contains(s, "other") || strings.Contains(s, "\n") {
		t.Errorf("storageError = %q", s)
	}
}

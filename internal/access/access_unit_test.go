package access_test

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/sas"
)

// newKey returns a random 32-byte base64 key.
func newKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func raw(t *testing.T, k string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewRejectsBadKeys(t *testing.T) {
	for name, p := range map[string]access.Policy{
		"primary":   {Name: "p", PrimaryKey: "not base64!"},
		"secondary": {Name: "p", PrimaryKey: newKey(), SecondaryKey: "%%%"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := access.New([]access.Policy{p}, []string{"dps.example"}, nil); err == nil || !strings.Contains(err.Error(), "p") {
				t.Fatalf("New = %v, want an error naming the policy", err)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	owner := access.Policy{Name: "provisioningserviceowner", PrimaryKey: newKey(), SecondaryKey: newKey(),
		Rights: []access.Right{access.ServiceConfig, access.EnrollmentRead, access.EnrollmentWrite, access.RegistrationStatusRead, access.RegistrationStatusWrite}}
	reader := access.Policy{Name: "reader", PrimaryKey: newKey(), Rights: []access.Right{access.EnrollmentRead, access.RegistrationStatusRead}}
	c, err := access.New([]access.Policy{owner, reader}, []string{"dps.example", "127.0.0.1", "::1"}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	ownerKey, readerKey := raw(t, owner.PrimaryKey), raw(t, reader.PrimaryKey)
	tok := func(sr string, key []byte, skn string, exp time.Time) string { return sas.New(sr, key, skn, exp) }
	hour := now.Add(time.Hour)
	const enroll = "/enrollments/dev-1"

	tests := []struct {
		name  string
		token string
		path  string
		right access.Right
		kind  dps.Kind
		code  int    // 0 when allowed
		msg   string // part of the message
	}{
		{"ok/owner", tok("dps.example", ownerKey, owner.Name, hour), enroll, access.EnrollmentWrite, 0, 0, ""},
		{"ok/secondary-key", tok("dps.example", raw(t, owner.SecondaryKey), owner.Name, hour), enroll, access.EnrollmentWrite, 0, 0, ""},
		{"ok/key-name-case", tok("dps.example", ownerKey, "ProvisioningServiceOwner", hour), enroll, access.EnrollmentWrite, 0, 0, ""},
		{"ok/host-case", tok("DPS.Example", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/host-with-port", tok("dps.example:8443", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/https-scheme", tok("https://dps.example", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/ipv4", tok("127.0.0.1:443", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/ipv6-bracketed", tok("[::1]:443", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/ipv6-bare", tok("[::1]", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/resource-path-prefix", tok("dps.example/enrollments", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/resource-path-exact", tok("dps.example/enrollments/dev-1", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/resource-path-case", tok("dps.example/Enrollments", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/resource-trailing-slash", tok("dps.example/", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/expired-within-skew", tok("dps.example", ownerKey, owner.Name, now.Add(-4*time.Minute)), enroll, access.EnrollmentRead, 0, 0, ""},
		{"ok/reader-reads", tok("dps.example", readerKey, reader.Name, hour), enroll, access.EnrollmentRead, 0, 0, ""},

		{"401/no-token", "", enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "is required"},
		{"401/malformed", "SharedAccessSignature sr=dps.example&se=1", enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "malformed"},
		{"401/bearer", "Bearer abc", enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "malformed"},
		{"401/expired", tok("dps.example", ownerKey, owner.Name, now.Add(-6*time.Minute)), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "expired"},
		{"401/other-host", tok("other.example", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "resource"},
		{"401/host-suffix", tok("evil-dps.example", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "resource"},
		{"401/host-as-subdomain", tok("dps.example.evil", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "resource"},
		{"401/path-not-segment-prefix", tok("dps.example/enroll", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "resource"},
		{"401/path-of-other-resource", tok("dps.example/registrations", ownerKey, owner.Name, hour), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "resource"},
		{"401/unknown-key-name", tok("dps.example", ownerKey, "nobody", hour), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "not valid"},
		{"401/no-key-name", tok("dps.example", ownerKey, "", hour), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "not valid"},
		{"401/wrong-key", tok("dps.example", raw(t, newKey()), owner.Name, hour), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "not valid"},
		// The key of one policy does not sign for another policy's name.
		{"401/other-policys-key", tok("dps.example", ownerKey, reader.Name, hour), enroll, access.EnrollmentRead, dps.KindUnauthorized, 401002, "not valid"},

		{"403/reader-writes", tok("dps.example", readerKey, reader.Name, hour), enroll, access.EnrollmentWrite, dps.KindForbidden, 403001, `"reader" lacks the EnrollmentWrite right`},
		{"403/reader-configures", tok("dps.example", readerKey, reader.Name, hour), "/certificates/ca", access.ServiceConfig, dps.KindForbidden, 403001, "ServiceConfig"},
		{"403/reader-deletes-registration", tok("dps.example", readerKey, reader.Name, hour), "/registrations/dev-1", access.RegistrationStatusWrite, dps.KindForbidden, 403001, "RegistrationStatusWrite"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Check(tt.token, tt.path, tt.right)
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("Check = %v, want allowed", err)
				}
				return
			}
			e := dps.AsError(err)
			if err == nil || e.Kind != tt.kind || e.Code != tt.code || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("Check = %v (kind %v, code %d), want %v %d saying %q", err, e.Kind, e.Code, tt.kind, tt.code, tt.msg)
			}
		})
	}
}

// TestCheckExpiryOnTheClock runs the default clock (time.Now) in a bubble:
// a token is accepted until five minutes (the clock skew) after its
// expiry, to the second, and refused from then on.
func TestCheckExpiryOnTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := access.Policy{Name: "owner", PrimaryKey: newKey(), Rights: []access.Right{access.EnrollmentRead}}
		c, err := access.New([]access.Policy{p}, []string{"dps.example"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok := sas.New("dps.example", raw(t, p.PrimaryKey), p.Name, time.Now().Add(time.Minute))
		check := func() error { return c.Check(tok, "/enrollments/x", access.EnrollmentRead) }
		if err := check(); err != nil {
			t.Fatalf("fresh token: %v", err)
		}
		time.Sleep(time.Minute + 5*time.Minute) // at expiry + skew: still accepted
		if err := check(); err != nil {
			t.Fatalf("token at expiry + skew: %v", err)
		}
		time.Sleep(time.Second)
		if err := check(); dps.KindOf(err) != dps.KindUnauthorized || !strings.Contains(dps.AsError(err).Message, "expired") {
			t.Fatalf("token past expiry + skew: %v, want unauthorized (expired)", err)
		}
	})
}

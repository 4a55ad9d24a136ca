package sas_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/internal/sas"
)

// Vectors from the protocol reference §2.1/§2.2.
const (
	groupKey   = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	regID      = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	deviceKey  = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
	scope      = "0ne00000A0A"
	nodeToken  = "SharedAccessSignature sr=0ne00000A0A/registrations/sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=hUOH8hSLSay%2BbfE5WjQhRmpIvWZdSog5Tlv8EyKqBg4%3D&skn=registration&se=1700000000"
	upperToken = "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=t6%2F8JHWQuQgM9mXdYf%2FuIqa3dKECOEk9Rr4WrFV19q0%3D&se=1700000000&skn=registration"
	lowerToken = "SharedAccessSignature sr=0ne00000A0A%2fregistrations%2fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=d0v1ROtrJfDl1lL%2B6Gm6mCyZUBsvFsT3HgNEOWfYmE0%3D&se=1700000000&skn=registration"
)

func mustKey(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeriveKey(t *testing.T) {
	tests := []struct{ group, id, want string }{
		{groupKey, regID, deviceKey},
		{"oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==", "breakroom499-contoso-tstrsd-007", "JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs="},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			got := base64.StdEncoding.EncodeToString(sas.DeriveKey(mustKey(t, tt.group), tt.id))
			if got != tt.want {
				t.Errorf("DeriveKey = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestVerifyKnownVectors(t *testing.T) {
	key := mustKey(t, deviceKey)
	want := scope + "/registrations/" + regID
	for name, tok := range map[string]string{"node-raw": nodeToken, "upper-percent": upperToken, "lower-percent": lowerToken} {
		t.Run("ok/"+name, func(t *testing.T) {
			p, err := sas.Parse(tok)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !strings.EqualFold(p.Resource, want) {
				t.Errorf("Resource = %q, want %q", p.Resource, want)
			}
			if p.Expiry != 1700000000 {
				t.Errorf("Expiry = %d", p.Expiry)
			}
			if !p.Valid(key) {
				t.Errorf("Valid = false, want true")
			}
			if p.Valid(mustKey(t, groupKey)) {
				t.Errorf("Valid(other key) = true")
			}
		})
	}
	// Re-encoding the resource changes the signed bytes: the raw-sr signature
	// must not verify for a token whose sr was re-encoded.
	t.Run("fail/sr-reencoded", func(t *testing.T) {
		p, _ := sas.Parse(nodeToken)
		p.RawResource = strings.ReplaceAll(p.RawResource, "/", "%2F")
		if p.Valid(key) {
			t.Fatal("signature over raw sr verified for re-encoded sr")
		}
	})
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"ok/no-skn", "SharedAccessSignature sr=a%2Fb&sig=AAAA&se=1", true},
		{"ok/any-order", "SharedAccessSignature se=1&skn=x&sig=AAAA&sr=a", true},
		{"ok/unknown-member", "SharedAccessSignature sr=a&sig=AAAA&se=1&foo=bar", true},
		{"fail/no-prefix", "sr=a&sig=AAAA&se=1", false},
		{"fail/bearer", "Bearer abc", false},
		{"fail/no-sig", "SharedAccessSignature sr=a&se=1", false},
		{"fail/no-se", "SharedAccessSignature sr=a&sig=AAAA", false},
		{"fail/no-sr", "SharedAccessSignature sig=AAAA&se=1", false},
		{"fail/bad-se", "SharedAccessSignature sr=a&sig=AAAA&se=x", false},
		{"fail/negative-se", "SharedAccessSignature sr=a&sig=AAAA&se=-5", false},
		{"fail/bad-base64", "SharedAccessSignature sr=a&sig=!!&se=1", false},
		{"fail/empty-sig", "SharedAccessSignature sr=a&sig=&se=1", false},
		{"fail/dup-sr", "SharedAccessSignature sr=a&sr=b&sig=AAAA&se=1", false},
		{"fail/member-without-equals", "SharedAccessSignature sr=a&sig=AAAA&se=1&junk", false},
		{"fail/bad-escape", "SharedAccessSignature sr=a%zz&sig=AAAA&se=1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sas.Parse(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("Parse(%q) err = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !errors.Is(err, sas.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name   string
		expiry int64
		ok     bool
	}{
		{"ok/future", now.Unix() + 60, true},
		{"ok/within-skew", now.Unix() - 299, true},
		{"fail/past-skew", now.Unix() - 301, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sas.Token{Expiry: tt.expiry}.CheckExpiry(now, 5*time.Minute)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckExpiry = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestNewRoundTrip(t *testing.T) {
	key := mustKey(t, deviceKey)
	tok := sas.New(scope+"/registrations/"+regID, key, "registration", time.Unix(1700000000, 0))
	if tok != upperToken {
		t.Errorf("New = %q\nwant %q", tok, upperToken)
	}
	p, err := sas.Parse(tok)
	if err != nil || !p.Valid(key) {
		t.Fatalf("Parse(New()) = %v, valid=%v", err, p.Valid(key))
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{nodeToken, upperToken, lowerToken, "SharedAccessSignature sr=&sig=&se=", "SharedAccessSignature sr=a&sig=AAAA&se=1"} {
		f.Add(s)
	}
	key := mustKey(f, deviceKey)
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := sas.Parse(s)
		if err != nil {
			return
		}
		again, err := sas.Parse(tok.String())
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not re-parse: %v", s, tok.String(), err)
		}
		if again.RawResource != tok.RawResource || again.RawExpiry != tok.RawExpiry || string(again.Signature) != string(tok.Signature) || again.KeyName != tok.KeyName {
			t.Fatalf("round trip changed token: %+v != %+v", again, tok)
		}
		_ = tok.Valid(key)
	})
}

func BenchmarkVerify(b *testing.B) {
	key := mustKey(b, deviceKey)
	b.ReportAllocs()
	for b.Loop() {
		p, err := sas.Parse(upperToken)
		if err != nil || !p.Valid(key) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkDeriveAndVerify(b *testing.B) {
	gk := mustKey(b, groupKey)
	b.ReportAllocs()
	for b.Loop() {
		p, err := sas.Parse(upperToken)
		if err != nil || !p.Valid(sas.DeriveKey(gk, regID)) {
			b.Fatal("invalid")
		}
	}
}

// TestParseRegistration: a device's DPS token is checked for everything
// but its signature.
func TestParseRegistration(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_700_000_000, 0)
	const scope, id = "0ne0000TEST", "Dev-1"
	res := scope + "/registrations/" + id
	for _, tt := range []struct {
		name string
		raw  string
		want error
	}{
		{"ok", sas.New(res, key, "", now.Add(time.Hour)), nil},
		{"ok/key-name-registration", sas.New(res, key, "registration", now.Add(time.Hour)), nil},
		{"ok/resource-case", sas.New(strings.ToLower(res), key, "", now.Add(time.Hour)), nil},
		{"ok/expired-within-skew", sas.New(res, key, "", now.Add(-time.Minute)), nil},
		{"fail/none", "", sas.ErrNoToken},
		{"fail/malformed", "SharedAccessSignature sr=x", sas.ErrMalformed},
		{"fail/other-device", sas.New(scope+"/registrations/dev-2", key, "", now.Add(time.Hour)), sas.ErrResource},
		{"fail/other-scope", sas.New("0ne0000OTHR/registrations/"+id, key, "", now.Add(time.Hour)), sas.ErrResource},
		{"fail/expired", sas.New(res, key, "", now.Add(-time.Hour)), sas.ErrExpired},
		{"fail/key-name", sas.New(res, key, "owner", now.Add(time.Hour)), sas.ErrKeyName},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := sas.ParseRegistration(tt.raw, scope, id, now, 5*time.Minute)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err == nil && !tok.Valid(key) {
				t.Errorf("the parsed token does not verify with its key")
			}
		})
	}
}

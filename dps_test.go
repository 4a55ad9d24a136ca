package dps_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
)

func TestValidateRegistrationID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"dev-1", true}, {"Dev.1_a:b", true}, {"a", true}, {"dev-", true}, {strings.Repeat("a", 128), true},
		{"", false}, {strings.Repeat("a", 129), false}, {"-dev", false}, {"dev.", false}, {"dev_", false},
		{"dev 1", false}, {"dév", false}, {"a/b", false}, {"a%2Fb", false},
	}
	for _, tt := range tests {
		err := dps.ValidateRegistrationID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateRegistrationID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil && dps.KindOf(err) != dps.KindInvalid {
			t.Errorf("kind = %v", dps.KindOf(err))
		}
	}
}

func TestValidateIDScope(t *testing.T) {
	for s, ok := range map[string]bool{"0ne00000001": true, "0NE0000ABCD": true, "0ne0000001": false, "1ne00000001": false, "0ne0000000!": false} {
		if err := dps.ValidateIDScope(s); (err == nil) != ok {
			t.Errorf("ValidateIDScope(%q) = %v", s, err)
		}
	}
}

func FuzzValidateRegistrationID(f *testing.F) {
	for _, s := range []string{"dev-1", "-x", "a:b.c_d", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if dps.ValidateRegistrationID(s) != nil {
			return
		}
		if len(s) == 0 || len(s) > 128 || strings.ContainsAny(s, " /%?#&=") {
			t.Fatalf("accepted %q", s)
		}
		if dps.FoldID(s) != strings.ToLower(s) {
			t.Fatalf("FoldID(%q) = %q", s, dps.FoldID(s))
		}
	})
}

func FuzzParseCertificate(f *testing.F) {
	f.Add("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	f.Add("MIIBkTCB+wIJAO")
	f.Add(base64.StdEncoding.EncodeToString([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := dps.ParseCertificate(s)
		if err == nil && c == nil {
			t.Fatal("nil certificate without error")
		}
		if err != nil && dps.KindOf(err) != dps.KindInvalid {
			t.Fatalf("error kind %v", dps.KindOf(err))
		}
	})
}

func FuzzParseTPMPublicRSA(f *testing.F) {
	f.Add("AToAAQALAAMAsgAgg3GXZ0SE")
	f.Add("AAA=")
	f.Fuzz(func(t *testing.T, s string) {
		mod, err := dps.ParseTPMPublicRSA(s)
		if err == nil && len(mod) != 256 {
			t.Fatalf("modulus of %d bytes accepted", len(mod))
		}
	})
}

func TestNewGenerationID(t *testing.T) {
	at := time.Date(2019, 11, 14, 14, 51, 33, 658001600, time.UTC) // Azure's 637093398936580016
	if got := dps.NewGenerationID(at); got != "637093398936580016" {
		t.Errorf("NewGenerationID = %s, want 637093398936580016 (.NET ticks)", got)
	}
}

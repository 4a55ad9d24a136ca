package main

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
)

// TestBadRegistrationIDOnEveryPath: a 129-character registration ID is a
// bad request (400, errorCode 400004) on register, on the operation poll and
// on the status lookup alike, though a group's derived key signs it (the
// poll answered 404 before).
func TestBadRegistrationIDOnEveryPath(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), "")
	g := dpstest.MustPutGroup(t, s.store, dpstest.SymmetricKeyGroup("badid-grp"))
	gk, _ := base64.StdEncoding.DecodeString(string(g.Attestation.SymmetricKey.PrimaryKey))
	id := strings.Repeat("a", 129)
	auth := sas.New(testScope+"/registrations/"+id, sas.DeriveKey(gk, id), "registration", time.Now().Add(time.Hour))
	base := s.endpoint() + "/" + testScope + "/registrations/" + id
	for _, r := range []struct{ name, method, path, body string }{
		{"register", "PUT", "/register", `{"registrationId":"` + id + `"}`},
		{"poll", "GET", "/operations/1.0011223344556677.00000000-0000-4000-8000-000000000000", ``},
		{"status lookup", "POST", "", `{"registrationId":"` + id + `"}`},
	} {
		got := do(t, hc, r.method, base+r.path+"?api-version=2021-06-01", auth, []byte(r.body))
		if got.status != 400 || got.body["errorCode"] != float64(400004) {
			t.Errorf("%s with a 129-character ID = %d %s, want 400 with 400004", r.name, got.status, got.raw)
		}
	}
}

package registration_test

import (
	"context"
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/store/sqlite"
)

// outageStore is a store whose enrollment reads fail as unavailable, and
// counts them.
type outageStore struct {
	*sqlite.DB
	reads atomic.Int32
}

func (o *outageStore) Enrollment(context.Context, string) (dps.Enrollment, error) {
	o.reads.Add(1)
	return dps.Enrollment{}, &dps.Error{Kind: dps.KindUnavailable, Message: "store unavailable"}
}

// TestCredentialScreenedBeforeTheStore: a credential that can prove nothing
// whatever the enrollment (malformed, expired or another device's token, a
// certificate for another registration ID) is refused with 401002 without
// a store read, also while the store is down; a well-formed one reaches the
// store and gets the outage's answer.
func TestCredentialScreenedBeforeTheStore(t *testing.T) {
	db := &outageStore{DB: dpstest.NewSQLite(t)}
	s := newService(t, db.DB, nil, func(o *registration.Options) {
		o.Store = db
		o.Attestors = attestors(db, mechanisms{})
	})
	key := []byte("0123456789abcdef0123456789abcdef")
	hour := time.Now().Add(time.Hour)
	other := dpstest.SelfSigned(t, "someone-else")
	for name, c := range map[string]dps.Credential{
		"malformed token":      {SAS: "SharedAccessSignature garbage"},
		"expired token":        {SAS: sas.New(scope+"/registrations/dev-s", key, "registration", time.Now().Add(-time.Hour))},
		"other device's token": {SAS: sas.New(scope+"/registrations/dev-other", key, "registration", hour)},
		"other device's cert":  {Certificates: []*x509.Certificate{other.Cert}},
		"nothing":              {},
	} {
		before := db.reads.Load()
		_, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: "dev-s", Credential: c})
		if e := dps.AsError(err); err == nil || e.Kind != dps.KindUnauthorized || e.Code != dps.CodeUnauthorized {
			t.Errorf("%s: err = %v, want 401002", name, err)
		}
		if n := db.reads.Load() - before; n != 0 {
			t.Errorf("%s: %d enrollment reads, want none", name, n)
		}
	}
	_, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: "dev-s",
		Credential: dps.Credential{SAS: sas.New(scope+"/registrations/dev-s", key, "registration", hour)}})
	if dps.KindOf(err) != dps.KindUnavailable || db.reads.Load() == 0 {
		t.Errorf("well-formed token: err = %v after %d reads, want the store's outage", err, db.reads.Load())
	}
}

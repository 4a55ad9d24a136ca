package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opendps/dps"
)

// TestErrorAnswersAreDomainErrors: an error answer unwraps to the
// *dps.Error it stands for, Kind rebuilt through the catalog, so callers
// compare kinds and codes, not text.
func TestErrorAnswersAreDomainErrors(t *testing.T) {
	for _, tt := range []struct {
		status int
		body   string
		kind   dps.Kind
		code   int
		msg    string
	}{
		{404, `{"errorCode":404202,"trackingId":"t","message":"no such group","timestampUtc":"x"}`, dps.KindNotFound, dps.CodeGroupNotFound, "no such group"},
		{412, ``, dps.KindPrecondition, dps.CodePrecondition, ""},
		{400, `{"errorCode":400004,"message":"bad id"}`, dps.KindInvalid, dps.CodeInvalid, "bad id"},
		{503, `{"errorCode":503001,"message":"later"}`, dps.KindUnavailable, dps.CodeUnavailable, "later"},
		{401, `{"errorCode":401777,"message":"azure says no"}`, dps.KindUnauthorized, 401777, "azure says no"},
		{502, `<html>bad gateway</html>`, dps.KindInternal, dps.CodeInternal, ""},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tt.status)
			w.Write([]byte(tt.body))
		}))
		c := &Client{Endpoint: srv.URL, HostName: "dps.example", KeyName: "owner", Key: []byte("k"), HTTP: srv.Client()}
		_, err := c.Group(context.Background(), "g1")
		srv.Close()
		if dps.KindOf(err) != tt.kind {
			t.Errorf("HTTP %d %s: kind %v, want %v (%v)", tt.status, tt.body, dps.KindOf(err), tt.kind, err)
		}
		e, ok := errors.AsType[*dps.Error](err)
		if !ok || e.Code != tt.code || e.Message != tt.msg {
			t.Errorf("HTTP %d %s: %+v, want code %d message %q", tt.status, tt.body, e, tt.code, tt.msg)
		}
		if StatusOf(err) != tt.status {
			t.Errorf("HTTP %d: StatusOf = %d", tt.status, StatusOf(err))
		}
	}
}

package webhook_test

import (
	"errors"
	"testing"
	"time"

	"github.com/opendps/dps/webhook"
)

func TestVerify(t *testing.T) {
	secret, body := []byte("secret"), []byte(`{"a":1}`)
	now := time.Unix(1_800_000_000, 0)
	good := webhook.Sign(secret, body, now)
	tests := []struct {
		name   string
		header string
		body   []byte
		at     time.Time
		want   error
	}{
		{"ok", good, body, now, nil},
		{"ok/within-tolerance", good, body, now.Add(4 * time.Minute), nil},
		{"fail/stale", good, body, now.Add(6 * time.Minute), webhook.ErrStale},
		{"fail/future", good, body, now.Add(-6 * time.Minute), webhook.ErrStale},
		{"fail/body-changed", good, []byte(`{"a":2}`), now, webhook.ErrBadSignature},
		{"fail/other-secret", webhook.Sign([]byte("other"), body, now), body, now, webhook.ErrBadSignature},
		{"fail/missing", "", body, now, webhook.ErrNoSignature},
		{"fail/garbage", "t=x,v1=zz", body, now, webhook.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := webhook.Verify(secret, tt.body, tt.header, 5*time.Minute, tt.at); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("t=1800000000,v1=abcd", []byte("{}"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		_ = webhook.Verify([]byte("k"), body, header, time.Minute, time.Unix(1_800_000_000, 0))
	})
}

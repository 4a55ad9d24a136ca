package ceiling

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"

	"github.com/opendps/dps"
)

// GroupKey is the key the ceiling hub derives every device's key from
// (as a DPS enrollment group does): `dpsctl bench hub --group-key` with it
// connects any device ID.
const GroupKey = "QUFBQUFBQUFBQUFBQUFBQUFBQUE="

// HubStore is the built-in hub's store for the hub ceiling: every device ID
// exists, enabled, with a SAS key derived from GroupKey (no read), and
// AppendMessages numbers the messages and keeps none (no event log, no
// write). Served by the real iothub.Service and MQTT broker, it measures
// what TLS, MQTT, authentication and the hub's message handling cost
// without the store.
type HubStore struct {
	key []byte

	mu  sync.Mutex
	seq map[string]int64 // last Seq by hub
}

// NewHubStore returns an empty ceiling store.
func NewHubStore() *HubStore {
	k, _ := base64.StdEncoding.DecodeString(GroupKey)
	return &HubStore{key: k, seq: map[string]int64{}}
}

var errCeiling = &dps.Error{Kind: dps.KindUnavailable, Message: "The benchmark ceiling serves only device-to-cloud telemetry."}

// HubDevice returns an enabled SAS identity with the derived key.
func (s *HubStore) HubDevice(_ context.Context, hub, deviceID string) (dps.HubDevice, error) {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(deviceID))
	key := dps.Key(base64.StdEncoding.EncodeToString(m.Sum(nil)))
	return dps.HubDevice{Hub: hub, DeviceID: deviceID, GenerationID: "ceiling", ETag: "Y2VpbGluZw==",
		Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: key}}, nil
}

// AppendMessages gives the messages their Seq and keeps nothing.
func (s *HubStore) AppendMessages(_ context.Context, msgs []dps.Message) ([]dps.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range msgs {
		s.seq[msgs[i].Hub]++
		msgs[i].Seq = s.seq[msgs[i].Hub]
	}
	return msgs, nil
}

// ListHubDevices lists nothing.
func (s *HubStore) ListHubDevices(context.Context, string, string, int) ([]dps.HubDevice, error) {
	return nil, nil
}

// PutHubDevice is not served.
func (s *HubStore) PutHubDevice(context.Context, dps.HubDevice) (dps.HubDevice, error) {
	return dps.HubDevice{}, errCeiling
}

// The cloud-to-device queues are empty and take nothing.

func (s *HubStore) EnqueueCloudMessage(context.Context, dps.CloudMessage, int) (dps.CloudMessage, error) {
	return dps.CloudMessage{}, errCeiling
}

func (s *HubStore) ReceiveCloudMessage(context.Context, string, string, string, time.Time, time.Time) (dps.CloudMessage, bool, error) {
	return dps.CloudMessage{}, false, nil
}

func (s *HubStore) SettleCloudMessage(context.Context, string, string, string, dps.Settlement, time.Time, int) error {
	return errCeiling
}

func (s *HubStore) PurgeCloudMessages(context.Context, string, string, time.Time) (int, error) {
	return 0, nil
}

func (s *HubStore) CloudQueueDepth(context.Context, string, string, time.Time) (int, error) {
	return 0, nil
}

func (s *HubStore) ExpireCloudMessages(context.Context, time.Time, int) (int, error) {
	return 0, nil
}

func (s *HubStore) DeleteCloudFeedbackBefore(context.Context, time.Time) (int64, error) {
	return 0, nil
}

func (s *HubStore) ReceiveCloudFeedback(context.Context, string, string, time.Time, time.Time, int) ([]dps.CloudFeedback, error) {
	return nil, nil
}

func (s *HubStore) SettleCloudFeedback(context.Context, string, string, bool, time.Time) error {
	return errCeiling
}

package docs

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/opendps/dps"
)

// DefaultMaxDeliveries is IoT Hub's default maximum delivery count of a
// C2D message: at its tenth abandon a message is dead-lettered.
const DefaultMaxDeliveries = 10

// EncodeCloudProperties is the stored form of a C2D message's application
// properties (the properties column): a JSON object, or nil (NULL) for
// none.
func EncodeCloudProperties(p map[string]string) ([]byte, error) {
	if p == nil {
		return nil, nil
	}
	return marshal(p)
}

// DecodeCloudProperties reads the properties column back.
func DecodeCloudProperties(b []byte) (map[string]string, error) {
	if b == nil {
		return nil, nil
	}
	var p map[string]string
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("C2D message properties: %w", err)
	}
	return p, nil
}

// Nanos is a time as the C2D queue columns keep it: Unix nanoseconds (0
// for the zero time).
func Nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// FromNanos reads a Nanos column back, in UTC.
func FromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// QueueFull is the refusal of a C2D message for a device whose queue
// already holds max messages that have not expired.
func QueueFull(deviceID string, max int) error {
	return &dps.Error{Kind: dps.KindForbidden, Code: dps.CodeQueueDepthExceeded,
		Message: fmt.Sprintf("The queue of device %q already holds %d messages, its maximum.", deviceID, max)}
}

// LockLost is the refusal of a settlement whose lock token is unknown or
// whose lock expired.
func LockLost() error {
	return &dps.Error{Kind: dps.KindPrecondition, Code: dps.CodeMessageLockLost,
		Message: "The message lock is unknown or expired: the message may have been delivered again."}
}

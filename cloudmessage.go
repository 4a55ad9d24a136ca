package dps

import "time"

// CloudMessage is one cloud-to-device (C2D) message in a device's queue on
// a built-in hub, from the service's send until the device completes it,
// rejects it, or it expires or runs out of deliveries (then it is
// dead-lettered: removed from the queue). A message is delivered under a
// lock: while the lock holds, no other receive sees it; the receiver
// settles it with its lock token (Settlement).
type CloudMessage struct {
	Hub      string // the hub's host name
	DeviceID string
	// Seq is the message's sequence number (iothub-sequencenumber): the
	// store gives each message a number greater than every earlier one;
	// a device's messages are delivered in Seq order.
	Seq int64
	// LockToken is the lock of the message's current delivery (a receive
	// gives it a new one every time); "" when it is not locked.
	LockToken string
	// LockedUntil is when that lock ends and the message may be delivered
	// again.
	LockedUntil time.Time
	// GenerationID is the device's generation ID when the message was
	// sent: its feedback records name it.
	GenerationID    string
	MessageID       string // message-id
	CorrelationID   string // correlation-id
	UserID          string // user-id
	Ack             string // iothub-ack: "" (none), none, positive, negative or full
	ContentType     string // content-type
	ContentEncoding string // content-encoding
	// Expiry is when the message expires unless it was delivered and
	// completed; the hub sets it (a default time to live) when the sender
	// did not.
	Expiry   time.Time
	Enqueued time.Time // when the hub accepted the message
	// DeliveryCount counts the deliveries the device gave up (abandons);
	// a lock that expires does not count.
	DeliveryCount int
	// Properties are the application properties, as sent.
	Properties map[string]string
	Body       []byte
}

// Settlement is how a receiver ends a delivery of a CloudMessage.
type Settlement uint8

const (
	// SettleComplete: the device took the message; it leaves the queue.
	SettleComplete Settlement = iota + 1
	// SettleAbandon: the device gave the message back; its delivery count
	// grows and it is delivered again — unless that was its last
	// delivery, then it is dead-lettered.
	SettleAbandon
	// SettleReject: the device refused the message; it is dead-lettered.
	SettleReject
	// SettleRelease: the delivery ended without an answer of the device
	// (its connection closed); the message is delivered again at once,
	// its delivery count unchanged, as when a lock expires.
	SettleRelease
)

func (s Settlement) String() string {
	switch s {
	case SettleComplete:
		return "complete"
	case SettleAbandon:
		return "abandon"
	case SettleReject:
		return "reject"
	case SettleRelease:
		return "release"
	}
	return "settlement(?)"
}

// CloudFeedback is a delivery acknowledgement of a CloudMessage, as IoT
// Hub's feedback batches carry it: recorded when a message sent with
// iothub-ack positive or full is completed, or one sent with negative or
// full is dead-lettered, and read by the service from the hub's feedback
// queue (under a lock, as C2D messages are).
type CloudFeedback struct {
	Hub string
	// Seq orders a hub's records (the store's, greater than every earlier one).
	Seq int64
	// OriginalMessageID is the message's message-id.
	OriginalMessageID string
	// Enqueued is when the outcome happened (enqueuedTimeUtc).
	Enqueued time.Time
	// Status is one of the FeedbackStatus values.
	Status       FeedbackStatus
	Description  string
	DeviceID     string
	GenerationID string // deviceGenerationId
}

// FeedbackStatus is a feedback record's statusCode.
type FeedbackStatus string

const (
	FeedbackSuccess               FeedbackStatus = "Success"
	FeedbackExpired               FeedbackStatus = "Expired"
	FeedbackDeliveryCountExceeded FeedbackStatus = "DeliveryCountExceeded"
	FeedbackRejected              FeedbackStatus = "Rejected"
	FeedbackPurged                FeedbackStatus = "Purged"
)

// Description is IoT Hub's description of a feedback status.
func (s FeedbackStatus) Description() string {
	switch s {
	case FeedbackSuccess:
		return "Success"
	case FeedbackExpired:
		return "Message expired"
	case FeedbackDeliveryCountExceeded:
		return "Message delivery count exceeded"
	case FeedbackRejected:
		return "Message rejected"
	case FeedbackPurged:
		return "Message purged"
	}
	return string(s)
}

// FeedbackAcks are the iothub-ack values that ask for a feedback record
// of an outcome: positive for a completion, negative for a dead letter.
func FeedbackAcks(s FeedbackStatus) []string {
	if s == FeedbackSuccess {
		return []string{"positive", "full"}
	}
	return []string{"negative", "full"}
}

package wire

import "github.com/opendps/dps"

// HubFeedback is one record of a built-in hub's C2D feedback batch (GET
// /messages/serviceBound/feedback), as IoT Hub's feedback messages carry
// it.
type HubFeedback struct {
	OriginalMessageID  string `json:"originalMessageId"`
	EnqueuedTimeUtc    string `json:"enqueuedTimeUtc"`
	StatusCode         string `json:"statusCode"`
	Description        string `json:"description"`
	DeviceID           string `json:"deviceId"`
	DeviceGenerationID string `json:"deviceGenerationId"`
}

// FromCloudFeedback is f on the wire.
func FromCloudFeedback(f dps.CloudFeedback) HubFeedback {
	return HubFeedback{OriginalMessageID: f.OriginalMessageID, EnqueuedTimeUtc: Time(f.Enqueued), StatusCode: string(f.Status),
		Description: f.Description, DeviceID: f.DeviceID, DeviceGenerationID: f.GenerationID}
}

// Package logkey holds the slog attribute keys every package uses, so one
// query finds every log line about a device.
package logkey

const (
	RegistrationID  = "registration_id"
	OperationID     = "operation_id"
	IDScope         = "id_scope"
	Hub             = "hub"
	DeviceID        = "device_id" // a device's ID on its hub
	Attestation     = "attestation"
	EnrollmentGroup = "enrollment_group"
	RequestID       = "request_id"
	TrackingID      = "tracking_id" // the trackingId of an error answer
	Status          = "status"
	ErrorCode       = "error_code"
	Error           = "err"
	Duration        = "duration"
	// Suppressed: how many like lines were not logged since this key's
	// previous line (a rate-limited log line, throttle.LogGate).
	Suppressed = "suppressed"
)

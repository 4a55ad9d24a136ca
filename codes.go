package dps

// The DPS error codes dps answers with: the six-digit errorCode of an error
// body and of a failed registration state. Every code is its Kind's HTTP
// status ×1000 plus a detail (internal/wire checks it against its
// Kind→status table). The codes Azure is known to use (400004, 400006, 40020x,
// 401002, 404201, 404202) keep their meaning; the others follow the same
// scheme and are specific to dps. Write codes by these names only.
const (
	CodeInvalid = 400004 // KindInvalid default; Azure's "BadRequest" (IoT Hub's ArgumentInvalid)
	// CodeFormatError: IoT Hub's IotHubFormatError, a JSON body (a twin
	// patch or document) that does not parse; content that parses but
	// breaks a rule is CodeInvalid.
	CodeFormatError = 400006
	// The custom allocation webhook failed, answered no hub, or answered
	// 401 (Azure's CustomAllocationFailed, …IotHubNotSpecified,
	// …UnauthorizedAccess; the C SDK tells 400208 and 400209 apart).
	CodeCustomAllocationFailed       = 400207
	CodeCustomAllocationNoHub        = 400208
	CodeCustomAllocationUnauthorized = 400209
	// CodeHubRejected: the hub connector refused the device for good (a
	// *HubFailure without a code of its own). In the 4002xx assignment
	// family, after Azure's custom allocation codes.
	CodeHubRejected = 400210
	// Certificate issuance (csr): dps's codes, a 4003xx family after the
	// assignment codes (Azure documents none of its own for it).
	// CodeCSRInvalid: the csr is not base64 of a DER PKCS #10 request (PEM
	// text is refused), or its signature does not verify.
	CodeCSRInvalid = 400301
	// CodeCSRSubjectMismatch: the csr's subject common name is not the
	// registration ID.
	CodeCSRSubjectMismatch = 400302
	// CodeCSRKeyNotAllowed: a weak key (RSA under 2048 bits, another curve
	// or algorithm), or a key type the credential policy does not allow.
	CodeCSRKeyNotAllowed = 400303
	// CodeIssuanceNotEnabled: a csr on an enrollment that names no
	// credential policy, on an instance without certificate issuance, or
	// with an api-version before csr existed (2025-07-01-preview).
	CodeIssuanceNotEnabled = 400304
	// CodeIssuanceFailed: the certificate could not be issued when the
	// registration completed (its policy or CA was deleted meanwhile).
	CodeIssuanceFailed = 400305
	// CodeCredentialOperationFailed is IoT Hub's answer to a certificate
	// renewal it refuses ($iothub/credentials/res/400, "Credential
	// management operation failed").
	CodeCredentialOperationFailed = 400040

	CodeUnauthorized = 401002 // KindUnauthorized default: the device or token was not authenticated
	CodeForbidden    = 403001 // KindForbidden default

	CodeNoSuchEndpoint = 404001 // no route for the request path
	// CodeNotFound is KindNotFound's default: no enrollment, registration or
	// operation for this registration ID (device API; also the service
	// API's missing individual enrollment).
	CodeNotFound                  = 404201
	CodeGroupNotFound             = 404202 // service API: enrollment group
	CodeRegistrationStateNotFound = 404203 // service API: device registration state
	CodeCANotFound                = 404204 // service API: CA certificate
	CodeCredentialPolicyNotFound  = 404205 // service API: credential policy
	CodeIssuingCANotFound         = 404206 // service API: issuing CA

	CodeMethodNotAllowed = 405001 // KindMethodNotAllowed default
	CodeConflict         = 409001 // KindConflict default
	CodePrecondition     = 412001 // KindPrecondition default: If-Match mismatch
	CodeTooLarge         = 413001 // KindTooLarge default: body over 96 KB
	CodeThrottled        = 429001 // KindThrottled default
	CodeInternal         = 500001 // KindInternal default
	CodeUnavailable      = 503001 // KindUnavailable default: a dependency is down, retry
	// CodeHubUnavailable: the hub connector kept failing transiently until
	// the retry limit; the registration failed without a device identity.
	CodeHubUnavailable = 503201
	CodeTimeout        = 504001 // KindTimeout default

	// IoT Hub's codes, answered by the built-in hub's device surface.
	CodeDeviceDisabled     = 403012 // DeviceDisabled: the identity's status is disabled
	CodeQueueDepthExceeded = 403004 // DeviceMaximumQueueDepthExceeded: the 51st queued C2D message
	CodeDeviceNotOnline    = 404103 // DeviceNotOnline: a direct method to a device that is not connected
	CodeMessageLockLost    = 412002 // DeviceMessageLockLost: a C2D settlement with an unknown or expired lock
	CodeGatewayTimeout     = 504101 // GatewayTimeout: the device did not answer a direct method in time

	// IoT Hub's registry codes, answered by the built-in hub's service
	// API. They share their numbers with dps's Kind defaults (each number
	// is in the catalog once, under that name): the hub's transport names
	// them DeviceAlreadyExists and PreconditionFailed by Kind. IoT Hub's
	// DeviceNotFound is 404001 too, which is CodeNoSuchEndpoint here: a
	// missing device carries no code (its Kind names it DeviceNotFound)
	// so that a missing route is not reported as a missing device.
	CodeDeviceAlreadyExists = CodeConflict     // 409001 DeviceAlreadyExists: a create of an existing device ID
	CodePreconditionFailed  = CodePrecondition // 412001 PreconditionFailed: If-Match names another etag
)

// CodeEntry is one code of the catalog and the Kind it belongs to.
type CodeEntry struct {
	Code int
	Kind Kind
}

var catalog = [...]CodeEntry{
	{CodeInvalid, KindInvalid},
	{CodeFormatError, KindInvalid},
	{CodeCustomAllocationFailed, KindInvalid},
	{CodeCustomAllocationNoHub, KindInvalid},
	{CodeCustomAllocationUnauthorized, KindInvalid},
	{CodeHubRejected, KindInvalid},
	{CodeCSRInvalid, KindInvalid},
	{CodeCSRSubjectMismatch, KindInvalid},
	{CodeCSRKeyNotAllowed, KindInvalid},
	{CodeIssuanceNotEnabled, KindInvalid},
	{CodeIssuanceFailed, KindInvalid},
	{CodeCredentialOperationFailed, KindInvalid},
	{CodeUnauthorized, KindUnauthorized},
	{CodeForbidden, KindForbidden},
	{CodeNoSuchEndpoint, KindNotFound},
	{CodeNotFound, KindNotFound},
	{CodeGroupNotFound, KindNotFound},
	{CodeRegistrationStateNotFound, KindNotFound},
	{CodeCANotFound, KindNotFound},
	{CodeCredentialPolicyNotFound, KindNotFound},
	{CodeIssuingCANotFound, KindNotFound},
	{CodeMethodNotAllowed, KindMethodNotAllowed},
	{CodeConflict, KindConflict},
	{CodePrecondition, KindPrecondition},
	{CodeTooLarge, KindTooLarge},
	{CodeThrottled, KindThrottled},
	{CodeInternal, KindInternal},
	{CodeUnavailable, KindUnavailable},
	{CodeHubUnavailable, KindUnavailable},
	{CodeTimeout, KindTimeout},
	{CodeDeviceDisabled, KindForbidden},
	{CodeQueueDepthExceeded, KindForbidden},
	{CodeDeviceNotOnline, KindNotFound},
	{CodeMessageLockLost, KindPrecondition},
	{CodeGatewayTimeout, KindTimeout},
}

// Codes returns the catalog: every named code with its Kind.
func Codes() []CodeEntry { return catalog[:] }

// KindOfCode returns the Kind of a catalog code; ok is false for a code
// dps does not define (an Azure service may answer others).
func KindOfCode(code int) (k Kind, ok bool) {
	for _, c := range catalog {
		if c.Code == code {
			return c.Kind, true
		}
	}
	return KindInternal, false
}

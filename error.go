package dps

import (
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller can do about it.
// Append new kinds at the end; their names appear in logs and metrics.
type Kind uint8

const (
	KindInternal         Kind = iota // unexpected: logged, never shown
	KindInvalid                      // malformed request or enrollment
	KindUnauthorized                 // credential rejected
	KindNotFound                     // enrollment, group, registration or operation absent
	KindConflict                     // already exists
	KindPrecondition                 // If-Match ETag mismatch
	KindThrottled                    // retry later
	KindUnavailable                  // a dependency (database, webhook) is down; retry later
	KindTooLarge                     // request body over the size limit
	KindForbidden                    // authenticated but lacking the right
	KindMethodNotAllowed             // the path exists, the method does not
	KindTimeout                      // a device did not answer in time (a direct method)
	numKinds
)

var kindNames = [...]string{
	KindInternal:         "internal",
	KindInvalid:          "invalid",
	KindUnauthorized:     "unauthorized",
	KindNotFound:         "not_found",
	KindConflict:         "conflict",
	KindPrecondition:     "precondition",
	KindThrottled:        "throttled",
	KindUnavailable:      "unavailable",
	KindTooLarge:         "too_large",
	KindForbidden:        "forbidden",
	KindMethodNotAllowed: "method_not_allowed",
	KindTimeout:          "timeout",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Kinds returns every defined Kind, so tables keyed by Kind can be checked for gaps.
func Kinds() []Kind {
	ks := make([]Kind, numKinds)
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

// Error is the domain error. Message is safe to show to clients; Err is the
// cause and is only logged. Code, when non-zero, is the six-digit DPS error
// code a client sees (a Code* constant of the catalog, codes.go); zero means
// the default for Kind.
type Error struct {
	Kind    Kind
	Code    int
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Kind.String() + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Kind.String() + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of kind k with a formatted client-safe message.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// KindOf reports the Kind of the first *Error in err's chain; any other
// non-nil error is KindInternal.
func KindOf(err error) Kind {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Kind
	}
	return KindInternal
}

// AsError returns the first *Error in err's chain, or an internal error that
// hides err's text from clients.
func AsError(err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	return &Error{Kind: KindInternal, Message: "internal error", Err: err}
}

// HubFailure is a hub connector's permanent refusal of a device (the hub
// will not take it, whatever the retries): the registration ends failed
// with Code (CodeHubRejected when zero) and Message, which the device sees.
// Any other connector error is transient and retried.
type HubFailure struct {
	Code    int
	Message string
}

func (f *HubFailure) Error() string { return f.Message }

// Unauthenticated is the refusal of a device that could not be
// authenticated (401002). An unknown device, a wrong key, a wrong scope and
// an expired token look the same to the device; cause says which, for the
// log.
func Unauthenticated(cause error) *Error {
	return &Error{Kind: KindUnauthorized, Code: CodeUnauthorized, Message: "Invalid certificate or SAS token: the device could not be authenticated.", Err: cause}
}

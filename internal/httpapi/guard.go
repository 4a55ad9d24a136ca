package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/throttle"
	"github.com/opendps/dps/internal/wire"
)

// The device API's throttling and fault injection (Options.Throttle,
// Options.Faults), applied before the registration service is called.

const transportHTTPS = "https"

// throttled answers 429 (with Retry-After and 429001) when regID is over
// its op limit; false lets the request go on. No store is read first.
// Every refusal is recorded in the events feed (and so counted in
// dps_device_refusals_total); only its log line is gated: at info at most
// once per 10 s per registration ID and operation, with the count of
// refusals not logged since (throttle.LogGate).
func (h *Handler) throttled(w http.ResponseWriter, r *http.Request, op throttle.Op, regID string) bool {
	wait, ok := h.o.Throttle.Allow(transportHTTPS, op, regID)
	if ok {
		return false
	}
	err := &dps.Error{Kind: dps.KindThrottled, Code: dps.CodeThrottled, Message: throttle.Message}
	h.writeErrorRetry(w, r, err, retrySeconds(wait))
	d, tracking := deviceRequest{RegID: regID}, trackingID(w)
	h.recordRefusal(r, d, dps.CodeThrottled, err.Message, dps.RefusalCause(err), tracking)
	if n, log := h.o.Throttle.LogThrottled(op, regID); log {
		h.logRefused(r, d, err, tracking, slog.Int64(logkey.Suppressed, n))
	}
	return true
}

// retrySeconds is a Retry-After value in whole seconds, at least 1.
func retrySeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int((d+time.Second-1)/time.Second)))
}

// injected applies the fault rule matching p, if any: an error answer
// (answered true), a delay, or a drop once the request is served (drop
// true: the caller serves it and then calls abort instead of answering).
func (h *Handler) injected(w http.ResponseWriter, r *http.Request, p faults.Point) (answered, drop bool) {
	f, ok := h.o.Faults.Check(r.Context(), p)
	if !ok {
		return false, false
	}
	a := f.Action
	switch {
	case a.Status != 0:
		h.recordFault(r, p, writeFault(w, a, h.o.Now()))
		return true, false
	case a.DelayMs > 0:
		if err := sleep(r.Context(), time.Duration(a.DelayMs)*time.Millisecond); err != nil {
			abort() // the client went away during the delay
		}
	case a.Drop == faults.DropBeforeResponse:
		return false, true
	}
	return false, false
}

// abort ends the request without an answer: net/http closes an HTTP/1.1
// connection, and resets an HTTP/2 stream.
func abort() { panic(http.ErrAbortHandler) }

// writeFault writes an injected fault's answer: its status, the DPS error
// JSON with its code (Status×1000+1 by default) and, when set, its
// retry-after; it returns the body.
func writeFault(w http.ResponseWriter, a faults.Action, now time.Time) wire.ErrorBody {
	status, body := FaultAnswer(a, trackingID(w), now)
	if a.RetryAfterSeconds > 0 {
		w.Header()["retry-after"] = []string{strconv.Itoa(a.RetryAfterSeconds)}
	}
	w.Header().Set("x-ms-error-code", strconv.Itoa(body.ErrorCode))
	writeJSON(w, status, body)
	return body
}

// FaultAnswer is the status and error body of an injected fault, over any
// transport.
func FaultAnswer(a faults.Action, tracking string, now time.Time) (int, wire.ErrorBody) {
	code := a.ErrorCode
	if code == 0 {
		code = a.Status*1000 + 1
	}
	msg := "Fault injected by dps (status " + strconv.Itoa(a.Status) + ")."
	if a.Status == http.StatusTooManyRequests {
		msg = throttle.Message
	}
	return a.Status, wire.ErrorBody{ErrorCode: code, TrackingID: tracking, Message: msg, TimestampUtc: wire.Time(now)}
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// held is op as answered while an assigningPolls rule holds it: still
// assigning (the operation itself is not touched).
func held(op dps.Operation) dps.Operation {
	op.Status, op.Result = dps.StatusAssigning, nil
	return op
}

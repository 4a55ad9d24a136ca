// Package webhookalloc is the custom allocation policy: it POSTs the
// enrollment (without secrets), the device's runtime context with its
// payload, and the candidate hubs to the enrollment's webhook, and turns
// the answer into an assignment (hub, initial twin, payload for the
// device) or a DPS failure code (400207, 400208, 400209).
package webhookalloc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/wire"
	"github.com/opendps/dps/webhook"
)

// Options configure an Allocator.
type Options struct {
	// Client sends the webhook calls (TLS trust and client certificates are
	// configured on it). Default: a client with the system trust store.
	Client *http.Client
	// Timeout bounds one call (default 5s).
	Timeout time.Duration
	// RetryBudget bounds the whole exchange including retries after 429 and
	// 5xx answers (default 20s).
	RetryBudget time.Duration
	// Secret, when set, signs every request (webhook.SignatureHeader)
	// whose enrollment has no signing secret of its own.
	Secret []byte
	Logger *slog.Logger
	Now    func() time.Time
	// Sleep waits between retries (default: a timer honouring ctx).
	Sleep func(ctx context.Context, d time.Duration) error
	// Events, when set, receives one registration event per call (the URL
	// without its query, the status, the latency, why it failed).
	Events EventRecorder
}

// EventRecorder receives registration events (internal/regevents); Record
// must not block.
type EventRecorder interface {
	Record(e dps.RegistrationEvent)
}

// Allocator calls custom allocation webhooks.
type Allocator struct {
	o Options
}

// New returns an Allocator.
func New(o Options) *Allocator {
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.RetryBudget <= 0 {
		o.RetryBudget = 20 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			}
		}
	}
	return &Allocator{o: o}
}

func failure(code int, format string, args ...any) error {
	return &dps.AllocationFailure{Code: code, Message: fmt.Sprintf(format, args...)}
}

// redact returns the webhook URL without query or user information, for
// messages: function keys travel in ?code=.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "the webhook"
	}
	p.RawQuery, p.User, p.Fragment = "", nil, ""
	return p.String()
}

// Body builds the request body: exactly one of individualEnrollment and
// enrollmentGroup, the device runtime context, and the candidate hubs.
// No key or key material is included.
func Body(req dps.AllocationRequest) ([]byte, error) {
	type body struct {
		IndividualEnrollment *wire.IndividualEnrollment   `json:"individualEnrollment,omitempty"`
		EnrollmentGroup      *wire.EnrollmentGroup        `json:"enrollmentGroup,omitempty"`
		DeviceRuntimeContext webhook.DeviceRuntimeContext `json:"deviceRuntimeContext"`
		LinkedHubs           []string                     `json:"linkedHubs"`
	}
	var b body
	switch {
	case req.Enrollment != nil:
		e := wire.FromEnrollment(*req.Enrollment, false)
		e.Attestation = publicAttestation(req.Enrollment.Attestation)
		e.CustomAllocationDefinition = wire.MaskCustomAllocation(e.CustomAllocationDefinition)
		b.IndividualEnrollment = &e
	case req.Group != nil:
		g := wire.FromGroup(*req.Group, false)
		g.Attestation = publicAttestation(req.Group.Attestation)
		g.CustomAllocationDefinition = wire.MaskCustomAllocation(g.CustomAllocationDefinition)
		b.EnrollmentGroup = &g
	default:
		return nil, errors.New("webhookalloc: request has no enrollment")
	}
	empty := json.RawMessage(`{}`)
	b.DeviceRuntimeContext = webhook.DeviceRuntimeContext{
		RegistrationID:        req.RegistrationID,
		CurrentIoTHubHostName: req.CurrentHub,
		CurrentDeviceID:       req.CurrentDeviceID,
		Payload:               req.Payload,
	}
	switch req.Attestation {
	case dps.AttestationX509:
		b.DeviceRuntimeContext.X509 = &empty
	case dps.AttestationTPM:
		b.DeviceRuntimeContext.TPM = &empty
	default:
		b.DeviceRuntimeContext.SymmetricKey = &empty
	}
	b.LinkedHubs = make([]string, len(req.Candidates))
	for i, h := range req.Candidates {
		b.LinkedHubs[i] = h.HostName
	}
	return wire.Marshal(b)
}

// publicAttestation keeps the attestation type and, for X.509, what the
// service computes about certificates — never keys, certificates' bodies
// or TPM keys.
func publicAttestation(a dps.Attestation) *wire.AttestationMechanism {
	out := &wire.AttestationMechanism{Type: string(a.Type)}
	if a.X509 != nil {
		full := wire.FromAttestation(a, false).X509
		strip := func(c *wire.X509Certificates) {
			if c == nil {
				return
			}
			for _, w := range []*wire.X509CertificateWithInfo{c.Primary, c.Secondary} {
				if w != nil {
					w.Certificate = ""
				}
			}
		}
		strip(full.ClientCertificates)
		strip(full.SigningCertificates)
		out.X509 = full
	}
	return out
}

// Allocate calls the enrollment's webhook.
func (a *Allocator) Allocate(ctx context.Context, req dps.AllocationRequest) (dps.Assignment, error) {
	set := req.Settings()
	if set == nil || set.CustomAllocation == nil || set.CustomAllocation.WebhookURL == "" {
		return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed: the enrollment has no customAllocationDefinition.webhookUrl")
	}
	target := set.CustomAllocation.WebhookURL
	body, err := Body(req)
	if err != nil {
		return dps.Assignment{}, err
	}
	if len(body) > webhook.MaxBody {
		return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed: the allocation request would exceed 96 KB (device payload too large)")
	}
	deadline := a.o.Now().Add(a.o.RetryBudget)
	bctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	delay := time.Second
	secret := a.o.Secret
	if s := set.CustomAllocation.SigningSecret; s != "" {
		secret = []byte(s)
	}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		status, resp, err := a.call(bctx, target, body, secret)
		a.record(ctx, req, target, status, err, time.Since(start))
		switch {
		case err != nil && ctx.Err() != nil:
			return dps.Assignment{}, ctx.Err()
		case err != nil:
			return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed: calling %s: %v", redact(target), err)
		case status == http.StatusUnauthorized:
			return dps.Assignment{}, failure(dps.CodeCustomAllocationUnauthorized, "Custom allocation failed: %s answered 401 Unauthorized", redact(target))
		case status == http.StatusTooManyRequests || status >= 500:
			if a.o.Now().Add(delay).After(deadline) {
				return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed with status code: %d (after %d attempts within the %s retry budget)", status, attempt, a.o.RetryBudget)
			}
			a.o.Logger.WarnContext(ctx, "custom allocation webhook asked to retry", logkey.RegistrationID, req.RegistrationID, "status", status, "attempt", attempt)
			if err := a.o.Sleep(bctx, delay); err != nil {
				if ctx.Err() != nil {
					return dps.Assignment{}, ctx.Err()
				}
				return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed with status code: %d (retry budget exhausted)", status)
			}
			delay = min(delay*2, 8*time.Second)
			continue
		case status < 200 || status > 299:
			return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed with status code: %d", status)
		}
		return a.decide(ctx, resp, req, target)
	}
}

// record passes one call to Options.Events (not a call cut short by ctx:
// the registration is not over, it resumes later).
func (a *Allocator) record(ctx context.Context, req dps.AllocationRequest, target string, status int, err error, latency time.Duration) {
	if a.o.Events == nil || ctx.Err() != nil {
		return
	}
	call := &dps.WebhookCall{URL: redact(target), Status: status, Latency: latency}
	if err != nil {
		call.Error = err.Error() // call's errors never hold the URL (it may carry a key)
	}
	e := dps.RegistrationEvent{Kind: dps.EventWebhook, RegistrationID: req.RegistrationID, OperationID: req.OperationID, Attestation: req.Attestation, Webhook: call}
	if req.Group != nil {
		e.EnrollmentGroup = req.Group.ID
	}
	a.o.Events.Record(e)
}

// call sends one request with its own timeout.
func (a *Allocator) call(ctx context.Context, target string, body, secret []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, a.o.Timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	hr.Header.Set("Content-Type", "application/json; charset=utf-8")
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", "dps")
	hr.Header.Set("X-Request-Id", wire.NewTrackingID())
	if secret != nil {
		hr.Header.Set(webhook.SignatureHeader, webhook.Sign(secret, body, a.o.Now()))
	}
	resp, err := a.o.Client.Do(hr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, nil, fmt.Errorf("no answer within %s", a.o.Timeout)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may hold a function key
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, webhook.MaxBody+1))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer: %v", err)
	}
	if len(data) > webhook.MaxBody && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return 0, nil, errors.New("the answer exceeds 96 KB")
	}
	return resp.StatusCode, data, nil
}

// decide validates a 2xx answer.
func (a *Allocator) decide(ctx context.Context, data []byte, req dps.AllocationRequest, target string) (dps.Assignment, error) {
	candidates := req.Candidates
	var resp struct {
		IoTHubHostName string          `json:"iotHubHostName"` // matched case-insensitively
		InitialTwin    json.RawMessage `json:"initialTwin"`
		Payload        json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed: %s answered with invalid JSON: %v", redact(target), err)
	}
	hub := strings.TrimSpace(resp.IoTHubHostName)
	if hub == "" {
		return dps.Assignment{}, failure(dps.CodeCustomAllocationNoHub, "Custom allocation failed: %s did not name an IoT hub (iotHubHostName)", redact(target))
	}
	found := ""
	for _, c := range candidates {
		if strings.EqualFold(c.HostName, hub) {
			found = c.HostName
		}
	}
	if found == "" {
		return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed: %s chose %q, which is not one of the linked hubs offered", redact(target), hub)
	}
	out := dps.Assignment{Hub: found}
	// The device reads the payload and the hub the twin: what they cannot
	// take fails the registration here, with the reason, rather than being
	// passed on (the embedded C SDK rejects a whole response it cannot
	// parse, and the device would never learn it was assigned). Twin
	// members provisioning does not set are dropped, not failed.
	if len(resp.InitialTwin) > 0 && string(resp.InitialTwin) != "null" {
		twin, dropped, err := cleanTwin(resp.InitialTwin)
		if err != nil {
			return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed: %s answered %v", redact(target), err)
		}
		if len(dropped) > 0 {
			// The names are the webhook's: a bounded log line.
			names := dropped[:min(len(dropped), 10)]
			for i, n := range names {
				if len(n) > 64 {
					names[i] = strings.ToValidUTF8(n[:64], "") + "…"
				}
			}
			a.o.Logger.WarnContext(ctx, "custom allocation webhook's initialTwin: members other than tags and properties.desired ignored",
				logkey.RegistrationID, req.RegistrationID, "webhook", redact(target), "members", names, "count", len(dropped))
		}
		out.InitialTwin = twin
	}
	if len(resp.Payload) > 0 && string(resp.Payload) != "null" {
		if err := checkPayload(resp.Payload); err != nil {
			return dps.Assignment{}, failure(dps.CodeCustomAllocationFailed, "Custom allocation failed: %s answered %v", redact(target), err)
		}
		out.Payload = resp.Payload
	}
	return out, nil
}

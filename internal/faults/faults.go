// Package faults is dps's fault injection for device tests (a dps
// extension, off unless configured): rules that match requests by
// registration ID (a glob), enrollment or group, transport and operation,
// and answer them badly on purpose — a status and DPS error code with a
// retry-after, a delay, "assigning" for N polls of an assigned operation,
// or a dropped connection — on their first N matches or with a
// probability. Every injected fault is logged at info and counted.
//
// The package decides; the transports (internal/httpapi, internal/mqttapi)
// act, at the same points as throttling. Faults change no stored state
// except as the real failure would: an error answer to a register is given
// before the registration service is called, so no operation is created.
package faults

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/opendps/dps/internal/logkey"
)

// Transports and operations a rule matches.
const (
	TransportHTTPS  = "https"
	TransportMQTT   = "mqtt"
	TransportMQTTWS = "mqttws"
	TransportAny    = "any"

	OpRegister   = "register"
	OpPoll       = "poll"
	OpHubConnect = "hubConnect"
	OpTwin       = "twin"
	OpTelemetry  = "telemetry"

	DropBeforeResponse = "beforeResponse"
	DropAfterConnack   = "afterConnack"
)

// Rule is one fault. Its YAML keys (the faults: list of the configuration)
// and JSON keys (PUT /faults/{name}) are a public contract.
type Rule struct {
	Name   string `yaml:"name" json:"name"`
	Match  Match  `yaml:"match" json:"match"`
	Action Action `yaml:"action" json:"action"`
	// Times injects the fault on the first Times matches only (0: every
	// match). Probability injects it on each match with this probability
	// (0: always). With both, each match is drawn and at most Times are
	// injected.
	Times       int     `yaml:"times,omitempty" json:"times,omitempty"`
	Probability float64 `yaml:"probability,omitempty" json:"probability,omitempty"`
}

// Match selects requests; empty members match everything.
type Match struct {
	// RegistrationID is a glob (* any run, ? one character, [a-z] a class),
	// compared case-insensitively; hub operations compare the device ID.
	RegistrationID string `yaml:"registrationId,omitempty" json:"registrationId,omitempty"`
	// Enrollment is the registration ID of an individual enrollment (DPS
	// names an individual enrollment by its device's registration ID).
	Enrollment string `yaml:"enrollment,omitempty" json:"enrollment,omitempty"`
	// Group is an enrollment group ID (glob). It is known only once an
	// operation has been read: such a rule matches polls, never registers.
	Group string `yaml:"group,omitempty" json:"group,omitempty"`
	// Transport is https, mqtt, mqttws or any (empty: any).
	Transport string `yaml:"transport,omitempty" json:"transport,omitempty"`
	// Operation is register, poll, hubConnect, twin or telemetry (empty: any).
	Operation string `yaml:"operation,omitempty" json:"operation,omitempty"`
}

// Action is what an injected fault does; exactly one of Status, DelayMs,
// AssigningPolls and Drop is set.
type Action struct {
	// Status is the HTTP status answered (MQTT: the status in the response
	// topic), 400 to 599; ErrorCode the DPS code in the body (default:
	// Status×1000+1); RetryAfterSeconds the retry-after sent with it (0:
	// none).
	Status            int `yaml:"status,omitempty" json:"status,omitempty"`
	ErrorCode         int `yaml:"errorCode,omitempty" json:"errorCode,omitempty"`
	RetryAfterSeconds int `yaml:"retryAfterSeconds,omitempty" json:"retryAfterSeconds,omitempty"`
	// DelayMs holds the request this long before it is served as usual.
	DelayMs int `yaml:"delayMs,omitempty" json:"delayMs,omitempty"`
	// AssigningPolls answers "assigning" to the first N polls of each
	// operation that is in fact assigned (the operation is not touched).
	AssigningPolls int `yaml:"assigningPolls,omitempty" json:"assigningPolls,omitempty"`
	// Drop closes the connection: beforeResponse after the request was
	// served (its answer is lost, as when a network fails), afterConnack
	// (MQTT only) right after a successful CONNACK.
	Drop string `yaml:"drop,omitempty" json:"drop,omitempty"`
}

// Validate checks a rule and returns it normalised (transport and
// operation spelled canonically).
func (r Rule) Validate() (Rule, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if r.Name == "" || len(r.Name) > 128 || strings.ContainsAny(r.Name, "/?#% \t\r\n") {
		bad("name", "%q: must be 1 to 128 characters without / ? # %% or spaces", r.Name)
	}
	for key, g := range map[string]string{"match.registrationId": r.Match.RegistrationID, "match.group": r.Match.Group} {
		if _, err := path.Match(g, ""); err != nil {
			bad(key, "%q: not a valid glob", g)
		}
	}
	switch t := strings.ToLower(r.Match.Transport); t {
	case "", TransportAny, TransportHTTPS, TransportMQTT, TransportMQTTWS:
		r.Match.Transport = t
	default:
		bad("match.transport", "%q: must be https, mqtt, mqttws or any", r.Match.Transport)
	}
	op := ""
	for _, o := range []string{OpRegister, OpPoll, OpHubConnect, OpTwin, OpTelemetry} {
		if strings.EqualFold(r.Match.Operation, o) {
			op = o
		}
	}
	if op == "" && r.Match.Operation != "" {
		bad("match.operation", "%q: must be register, poll, hubConnect, twin or telemetry", r.Match.Operation)
	}
	r.Match.Operation = op
	a := r.Action
	set := 0
	for _, on := range []bool{a.Status != 0, a.DelayMs != 0, a.AssigningPolls != 0, a.Drop != ""} {
		if on {
			set++
		}
	}
	if set != 1 {
		bad("action", "must set exactly one of status, delayMs, assigningPolls and drop")
	}
	if a.Status != 0 && (a.Status < 400 || a.Status > 599) {
		bad("action.status", "%d: must be between 400 and 599", a.Status)
	}
	if a.ErrorCode != 0 && (a.Status == 0 || a.ErrorCode < 100000 || a.ErrorCode > 999999) {
		bad("action.errorCode", "%d: must be six digits, with a status", a.ErrorCode)
	}
	if a.RetryAfterSeconds < 0 || a.RetryAfterSeconds > 3600 || a.RetryAfterSeconds != 0 && a.Status == 0 {
		bad("action.retryAfterSeconds", "%d: must be between 0 and 3600, with a status", a.RetryAfterSeconds)
	}
	if a.DelayMs < 0 || a.DelayMs > 600_000 {
		bad("action.delayMs", "%d: must be between 0 and 600000", a.DelayMs)
	}
	if a.AssigningPolls < 0 || a.AssigningPolls > 1000 {
		bad("action.assigningPolls", "%d: must be between 0 and 1000", a.AssigningPolls)
	}
	if a.AssigningPolls > 0 && op != "" && op != OpPoll {
		bad("action.assigningPolls", "applies to poll only (a register is always answered assigning)")
	}
	switch {
	case a.Drop == "":
	case strings.EqualFold(a.Drop, DropBeforeResponse):
		r.Action.Drop = DropBeforeResponse
	case strings.EqualFold(a.Drop, DropAfterConnack):
		r.Action.Drop = DropAfterConnack
		if r.Match.Transport == TransportHTTPS {
			bad("action.drop", "afterConnack applies to MQTT connections only")
		}
	default:
		bad("action.drop", "%q: must be beforeResponse or afterConnack", a.Drop)
	}
	if r.Times < 0 {
		bad("times", "%d: must not be negative", r.Times)
	}
	if r.Probability < 0 || r.Probability > 1 || r.Probability != r.Probability {
		bad("probability", "%v: must be between 0 and 1", r.Probability)
	}
	return r, errors.Join(errs...)
}

// Point is where a fault may be injected: one request, or (Connect) one
// MQTT connection just accepted.
type Point struct {
	Transport      string // https, mqtt, mqttws
	Operation      string // register, poll, hubConnect, twin, telemetry
	RegistrationID string // or the hub device ID
	// Group is the operation's enrollment group ("" for an individual
	// enrollment), known only when GroupKnown.
	Group      string
	GroupKnown bool
	// Connect: the point is an MQTT CONNECT just acknowledged; only
	// drop afterConnack rules apply there, and only there.
	Connect bool
}

// Fault is a rule's injection at one point.
type Fault struct {
	Rule   string
	Action Action
}

// Status is a rule with its count of injected faults.
type Status struct {
	Rule
	Injected int64 `json:"injected"`
}

// Options configure an Injector.
type Options struct {
	Logger *slog.Logger
	// Injected, when set, is called for every injected fault (metrics).
	Injected func(rule string)
	// Random returns a number in [0, 1) (default math/rand/v2).
	Random func() float64
}

// Injector holds the rules. A nil *Injector injects nothing. It is safe
// for concurrent use.
type Injector struct {
	o     Options
	mu    sync.Mutex
	rules []*state // in the order they were first set
}

type state struct {
	rule     Rule
	injected int64
	// polls counts the polls answered "assigning" per operation ID
	// (assigningPolls), at most maxOperations operations.
	polls map[string]int
}

// maxOperations bounds the operations an assigningPolls rule remembers; past
// it the rule forgets them all (their next polls are held again).
const maxOperations = 10_000

// New returns an Injector with rules, which must be valid (Rule.Validate)
// and uniquely named.
func New(o Options, rules ...Rule) (*Injector, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Random == nil {
		o.Random = rand.Float64
	}
	in := &Injector{o: o}
	for _, r := range rules {
		if in.find(r.Name) >= 0 {
			return nil, fmt.Errorf("faults: rule %q is defined twice", r.Name)
		}
		if _, err := in.Put(r); err != nil {
			return nil, err
		}
	}
	return in, nil
}

func (in *Injector) find(name string) int {
	return slices.IndexFunc(in.rules, func(s *state) bool { return strings.EqualFold(s.rule.Name, name) })
}

// Put adds a rule or replaces the rule of its name (whose count starts
// again from zero).
func (in *Injector) Put(r Rule) (Status, error) {
	r, err := r.Validate()
	if err != nil {
		return Status{}, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	s := &state{rule: r}
	if i := in.find(r.Name); i >= 0 {
		in.rules[i] = s
	} else {
		in.rules = append(in.rules, s)
	}
	return Status{Rule: r}, nil
}

// Delete removes a rule and returns its last status; ok is false when
// there was none of that name.
func (in *Injector) Delete(name string) (st Status, ok bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	i := in.find(name)
	if i < 0 {
		return Status{}, false
	}
	s := in.rules[i]
	in.rules = slices.Delete(in.rules, i, i+1)
	return Status{Rule: s.rule, Injected: s.injected}, true
}

// List returns every rule with its count, in the order they were set.
func (in *Injector) List() []Status {
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]Status, len(in.rules))
	for i, s := range in.rules {
		out[i] = Status{Rule: s.rule, Injected: s.injected}
	}
	return out
}

// Check returns the fault to inject at p, if any: the first rule, in
// order, that matches p and draws an injection. assigningPolls rules are
// not considered here (see Hold).
func (in *Injector) Check(ctx context.Context, p Point) (Fault, bool) {
	if in == nil {
		return Fault{}, false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, s := range in.rules {
		a := s.rule.Action
		if a.AssigningPolls > 0 || p.Connect != (a.Drop == DropAfterConnack) || !s.matches(p) || !in.draw(s) {
			continue
		}
		in.injected(ctx, s, p)
		return Fault{Rule: s.rule.Name, Action: a}, true
	}
	return Fault{}, false
}

// Hold reports whether the answer to p, which found operation operationID
// assigned, is to say "assigning" instead (an assigningPolls rule). Each
// held answer counts as one injected fault.
func (in *Injector) Hold(ctx context.Context, p Point, operationID string) bool {
	if in == nil {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, s := range in.rules {
		n := s.rule.Action.AssigningPolls
		if n == 0 || p.Connect || !s.matches(p) {
			continue
		}
		key := strings.ToLower(operationID)
		if s.polls[key] >= n || !in.draw(s) {
			continue
		}
		if s.polls == nil || len(s.polls) >= maxOperations {
			s.polls = map[string]int{}
		}
		s.polls[key]++
		in.injected(ctx, s, p)
		return true
	}
	return false
}

// draw decides whether a matching rule injects now (times, probability).
func (in *Injector) draw(s *state) bool {
	if s.rule.Times > 0 && s.injected >= int64(s.rule.Times) {
		return false
	}
	return s.rule.Probability == 0 || in.o.Random() < s.rule.Probability
}

func (in *Injector) injected(ctx context.Context, s *state, p Point) {
	s.injected++
	in.o.Logger.LogAttrs(ctx, slog.LevelInfo, "fault injected", slog.String("rule", s.rule.Name),
		slog.String(logkey.RegistrationID, p.RegistrationID), slog.String("transport", p.Transport),
		slog.String("operation", p.Operation), slog.Int64("injected", s.injected))
	if in.o.Injected != nil {
		in.o.Injected(s.rule.Name)
	}
}

func (s *state) matches(p Point) bool {
	m := s.rule.Match
	if m.Transport != "" && m.Transport != TransportAny && m.Transport != p.Transport {
		return false
	}
	if m.Operation != "" && m.Operation != p.Operation {
		return false
	}
	id := strings.ToLower(p.RegistrationID)
	if m.RegistrationID != "" && !glob(m.RegistrationID, id) {
		return false
	}
	if m.Enrollment != "" && !strings.EqualFold(m.Enrollment, id) {
		return false
	}
	if m.Group != "" && (!p.GroupKnown || p.Group == "" || !glob(m.Group, strings.ToLower(p.Group))) {
		return false
	}
	return true
}

// glob matches name (lower case) against pattern, case-insensitively.
// Registration IDs hold no '/', so path.Match's treatment of it is moot.
func glob(pattern, name string) bool {
	ok, err := path.Match(strings.ToLower(pattern), name)
	return err == nil && ok
}

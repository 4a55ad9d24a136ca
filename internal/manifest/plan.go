package manifest

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/opendps/dps/internal/client"
)

// Action is what a plan does with one object.
type Action string

// The actions of a plan.
const (
	Create    Action = "create"
	Update    Action = "update"
	Delete    Action = "delete"
	Unchanged Action = "unchanged"
)

// Step is one object of a plan.
type Step struct {
	Action Action
	// Item is the file's object (for a delete, its kind, hub and ID).
	Item Item
	// Changes are an update's differences.
	Changes []Change
	// Warnings say what the step cannot do (a CA certificate created
	// unverified).
	Warnings []string
	// Err is why the service's object could not be read: the step fails.
	Err error
	// current is the service's object (update, delete).
	current Object
	// twin: the update writes the hub device's initial twin (Item.Twin),
	// which its create did not (the device's twin has no tags and no
	// desired properties).
	twin bool
	// keys: the update must read the service's keys first (write), as
	// the file leaves some out.
	keys bool
}

// Plan is what applying a manifest changes.
type Plan struct {
	Steps []Step
}

// Options configure a plan.
type Options struct {
	// Prune deletes what the service holds of the kinds the manifest
	// manages (Manifest.Scopes) that it does not name. Hub devices that
	// the DPS service provisioned (an enrollment's or a group's
	// registration assigned them) are never pruned.
	Prune bool
}

// NewPlan compares m with what t holds. An object that cannot be read is
// a step with Err; what prune must delete that cannot be listed is an
// error.
func NewPlan(ctx context.Context, m *Manifest, t *Target, o Options) (*Plan, error) {
	p := &Plan{}
	items := slices.Clone(m.Items)
	slices.SortStableFunc(items, func(a, b Item) int { return cmp.Compare(a.Kind.order(), b.Kind.order()) })
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p.Steps = append(p.Steps, planItem(ctx, t, it))
	}
	if !o.Prune {
		return p, nil
	}
	named := map[string]bool{}
	for _, it := range m.Items {
		named[it.key()] = true
	}
	scopes := slices.Clone(m.Scopes)
	slices.SortStableFunc(scopes, func(a, b Scope) int { return cmp.Compare(b.Kind.order(), a.Kind.order()) })
	var provisioned map[string]bool
	for _, s := range scopes {
		objs, err := t.all(ctx, s.Kind, s.Hub)
		if err != nil {
			return nil, fmt.Errorf("prune: list the %ss%s: %s", s.Kind, inHub(s.Hub), errorText(err))
		}
		if s.Kind == HubDevice && provisioned == nil {
			if provisioned, err = provisionedDevices(ctx, t); err != nil {
				return nil, fmt.Errorf("prune: find the devices the service provisioned: %s", errorText(err))
			}
		}
		for _, cur := range objs {
			it := Item{Kind: s.Kind, Hub: s.Hub, ID: idOf(s.Kind, cur)}
			if it.ID == "" || named[it.key()] || s.Kind == HubDevice && provisioned[deviceKey(s.Hub, it.ID)] {
				continue
			}
			p.Steps = append(p.Steps, Step{Action: Delete, Item: it, current: cur})
		}
	}
	return p, nil
}

func inHub(hub string) string {
	if hub == "" {
		return ""
	}
	return " of hub " + hub
}

func deviceKey(hub, id string) string { return strings.ToLower(hub) + "/" + id }

// provisionedDevices are the hub devices that registrations assigned:
// individual enrollments' registration states and every group's.
func provisionedDevices(ctx context.Context, t *Target) (map[string]bool, error) {
	out := map[string]bool{}
	add := func(reg Object, regID string) {
		if reg == nil {
			return
		}
		hub, _ := reg["assignedHub"].(string)
		dev, _ := reg["deviceId"].(string)
		if dev == "" {
			dev = regID
		}
		if hub != "" {
			out[deviceKey(hub, dev)] = true
		}
	}
	es, err := t.all(ctx, Enrollment, "")
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		reg, _ := e["registrationState"].(Object)
		add(reg, idOf(Enrollment, e))
	}
	gs, err := t.all(ctx, Group, "")
	if err != nil {
		return nil, err
	}
	for _, g := range gs {
		regs, err := t.registrations(ctx, idOf(Group, g))
		if err != nil {
			return nil, err
		}
		for _, r := range regs {
			id, _ := r["registrationId"].(string)
			add(r, id)
		}
	}
	return out, nil
}

// planItem compares one object with the service's.
func planItem(ctx context.Context, t *Target, it Item) Step {
	st := Step{Item: it}
	cur, err := t.get(ctx, it.Kind, it.Hub, it.ID)
	if err != nil {
		st.Err = fmt.Errorf("read: %w", wrapStatus(err))
		return st
	}
	if it.Kind == Certificate {
		if v, _ := it.Body["isVerified"].(bool); v && (cur == nil || cur["isVerified"] != true) {
			st.Warnings = append(st.Warnings, "not verified on this service: prove possession of its key with dpsctl ca code and dpsctl ca verify")
		}
	}
	if cur == nil {
		st.Action = Create
		return st
	}
	if (it.Kind == Enrollment || it.Kind == Group) && givesKeys(it.Body) && symmetric(cur) {
		att, err := t.keys(ctx, it.Kind, it.ID)
		if err != nil {
			st.Err = fmt.Errorf("read the keys: %w", wrapStatus(err))
			return st
		}
		cur["attestation"] = att
	}
	st.current = cur
	st.Changes = Diff(it.Kind, it.Body, cur, it.secret)
	if it.Kind == HubDevice && prune(it.Twin) != nil {
		// A create whose twin write failed left the twin empty: the
		// next plan writes it. A twin with tags or desired properties is
		// the device's: never compared.
		tw, err := t.twin(ctx, it.Hub, it.ID)
		if err != nil {
			st.Err = fmt.Errorf("read the twin: %w", wrapStatus(err))
			return st
		}
		if tw != nil && len(initialTwin(tw)) == 0 {
			st.twin = true
			d := differ{secret: it.secret}
			st.Changes = append(st.Changes, Change{Path: "twin", New: it.Twin, Secret: d.isSecret("twin", it.Twin)})
		}
	}
	if len(st.Changes) == 0 {
		st.Action = Unchanged
		return st
	}
	st.Action = Update
	// The update keeps the keys the file leaves out: write reads them
	// (the service's GET may not show them, as Azure DPS's does not) —
	// not here, so that a dry run needs no more than read rights.
	st.keys = (it.Kind == Enrollment || it.Kind == Group) && missingKeys(it.Body, cur)
	return st
}

// givesKeys reports whether an object's attestation names symmetric keys.
func givesKeys(o Object) bool {
	att, _ := o["attestation"].(Object)
	sk, _ := att["symmetricKey"].(Object)
	p, _ := sk["primaryKey"].(string)
	s, _ := sk["secondaryKey"].(string)
	return p != "" || s != ""
}

// Counts are how many steps of each action a plan has, and how many
// cannot be applied (Err).
func (p *Plan) Counts() (counts map[Action]int, unreadable int) {
	counts = map[Action]int{}
	for _, s := range p.Steps {
		if s.Err != nil {
			unreadable++
			continue
		}
		counts[s.Action]++
	}
	return counts, unreadable
}

// Changes reports whether applying the plan writes anything.
func (p *Plan) Changes() bool {
	return slices.ContainsFunc(p.Steps, func(s Step) bool { return s.Err != nil || s.Action != Unchanged })
}

// Write prints the plan as a diff: "+ " create, "~ " update with its
// changed members (keys and values from the environment as (changed)),
// "- " delete, "! " an object that cannot be read; unchanged objects are
// counted, not listed.
func (p *Plan) Write(w io.Writer) {
	for _, s := range p.Steps {
		switch {
		case s.Err != nil:
			fmt.Fprintf(w, "! %s: %v\n", s.Item.Name(), s.Err)
		case s.Action == Create:
			fmt.Fprintf(w, "+ %s\n", s.Item.Name())
		case s.Action == Update:
			fmt.Fprintf(w, "~ %s\n", s.Item.Name())
			for _, c := range s.Changes {
				fmt.Fprintf(w, "    %s\n", c)
			}
		case s.Action == Delete:
			fmt.Fprintf(w, "- %s\n", s.Item.Name())
		}
		for _, warn := range s.Warnings {
			fmt.Fprintf(w, "  warning: %s: %s\n", s.Item.Name(), warn)
		}
	}
	fmt.Fprintln(w, p.Summary())
}

// Summary is the plan in one line.
func (p *Plan) Summary() string {
	c, bad := p.Counts()
	if !p.Changes() {
		return fmt.Sprintf("no changes: %d object(s) up to date", c[Unchanged])
	}
	s := fmt.Sprintf("%d to create, %d to update, %d to delete, %d unchanged", c[Create], c[Update], c[Delete], c[Unchanged])
	if bad > 0 {
		s += fmt.Sprintf(", %d unreadable", bad)
	}
	return s
}

// Failure is a step that failed.
type Failure struct {
	Step Step
	Err  error
}

func (f Failure) String() string {
	return fmt.Sprintf("%s %s: %v", f.Step.Action, f.Step.Item.Name(), f.Err)
}

// Result is what Apply did.
type Result struct {
	Created, Updated, Deleted, Unchanged int
	Failures                             []Failure
}

// String is the result in one line.
func (r Result) String() string {
	if r.Created+r.Updated+r.Deleted == 0 && len(r.Failures) == 0 {
		return fmt.Sprintf("no changes: %d object(s) up to date", r.Unchanged)
	}
	s := fmt.Sprintf("%d created, %d updated, %d deleted, %d unchanged", r.Created, r.Updated, r.Deleted, r.Unchanged)
	if len(r.Failures) > 0 {
		s += fmt.Sprintf(", %d failed", len(r.Failures))
	}
	return s
}

// Apply carries the plan out on t: creates and updates in dependency
// order (certificates, groups, enrollments, hub devices), then deletes in
// the reverse order. A step that fails is reported (with the service's
// message) and the others go on. done, when set, is called after each
// step that wrote or failed.
func (p *Plan) Apply(ctx context.Context, t *Target, done func(Step, error)) Result {
	var r Result
	for _, s := range p.Steps {
		if ctx.Err() != nil {
			r.Failures = append(r.Failures, Failure{s, ctx.Err()})
			continue
		}
		action, err := applyStep(ctx, t, s)
		r.count(s, action, err)
		if done != nil && (err != nil || action != Unchanged) {
			s.Action = cmp.Or(action, s.Action)
			done(s, err)
		}
	}
	return r
}

func (r *Result) count(s Step, action Action, err error) {
	if err != nil {
		r.Failures = append(r.Failures, Failure{s, err})
		return
	}
	switch action {
	case Create:
		r.Created++
	case Update:
		r.Updated++
	case Delete:
		r.Deleted++
	case Unchanged:
		r.Unchanged++
	}
}

// applyStep carries out one step and returns what it did. A write that
// lost a race (the object was created, changed or deleted in between:
// 409, 412) is planned again once.
func applyStep(ctx context.Context, t *Target, s Step) (Action, error) {
	for attempt := 0; ; attempt++ {
		action, err := write(ctx, t, s)
		st := client.StatusOf(err)
		if attempt > 0 || s.Action == Delete || st != http.StatusConflict && st != http.StatusPreconditionFailed {
			return action, err
		}
		if s = planItem(ctx, t, s.Item); s.Err != nil {
			return "", s.Err
		}
	}
}

func write(ctx context.Context, t *Target, s Step) (Action, error) {
	if s.Err != nil {
		return "", s.Err
	}
	it := s.Item
	switch s.Action {
	case Create:
		if _, err := t.put(ctx, it.Kind, it.Hub, it.ID, sendable(it.Kind, it.Body), ""); err != nil {
			return "", wrapStatus(err)
		}
		if it.Kind == HubDevice && prune(it.Twin) != nil {
			if err := t.patchTwin(ctx, it.Hub, it.ID, it.Twin); err != nil {
				return "", fmt.Errorf("created, but its initial twin was not written (the next apply writes it): %s", errorText(err))
			}
		}
		return Create, nil
	case Update:
		if s.keys {
			att, err := t.keys(ctx, it.Kind, it.ID)
			if err != nil {
				return "", fmt.Errorf("read the keys: %w", wrapStatus(err))
			}
			s.current["attestation"] = att
		}
		if slices.ContainsFunc(s.Changes, func(c Change) bool { return !s.twin || c.Path != "twin" }) {
			if _, err := t.put(ctx, it.Kind, it.Hub, it.ID, merge(it.Kind, it.Body, s.current), etagOf(it.Kind, s.current)); err != nil {
				return "", wrapStatus(err)
			}
		}
		if s.twin {
			if err := t.patchTwin(ctx, it.Hub, it.ID, it.Twin); err != nil {
				return "", fmt.Errorf("its initial twin was not written: %s", errorText(err))
			}
		}
		return Update, nil
	case Delete:
		err := t.delete(ctx, it.Kind, it.Hub, it.ID, etagOf(it.Kind, s.current))
		if err != nil && client.StatusOf(err) != http.StatusNotFound {
			return "", wrapStatus(err)
		}
		return Delete, nil
	}
	return Unchanged, nil
}

// wrapStatus keeps err's status (for applyStep) with the service's
// message as its text.
func wrapStatus(err error) error { return &statusError{err} }

type statusError struct{ err error }

func (e *statusError) Error() string { return errorText(e.err) }
func (e *statusError) Unwrap() error { return e.err }

package manifest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/opendps/dps/internal/client"
)

// CopyOptions configure Copy.
type CopyOptions struct {
	// StateFile records the progress after each object: a copy that
	// stopped (interrupted, or after Limit objects) is resumed by the
	// next with the same file, which skips what was copied. It is
	// removed when the copy completes. "": no resuming.
	StateFile string
	// Limit stops the copy after this many objects (0: no limit).
	Limit int
	// MapHubs rewrites IoT hub host names in iotHubs and iotHubHostName
	// (source name → target name, any case).
	MapHubs map[string]string
	// Progress, when set, is called after each object and once when a
	// kind starts: its kind, how many of it are done (in this run and the
	// ones it resumes) and how many the source holds — -1 until the copy
	// has read the kind's last page (the source is not read ahead).
	Progress func(kind Kind, done, total int)
}

// CopyReport is what Copy did, and what it could not copy and why.
type CopyReport struct {
	Created, Updated, Unchanged int
	// Failures are objects the target refused (with its message) or the
	// source would not give, from this run and the ones it resumed.
	Failures []string
	// Notes say what was not copied, or not whole, and why.
	Notes []string
	// Resumed: the copy went on from a state file.
	Resumed bool
	// Stopped: the Limit was reached; a run with the same state file
	// goes on.
	Stopped bool
}

// copyState is the state file.
type copyState struct {
	Source string `json:"source"`
	// Phase is the kind being copied.
	Phase Kind `json:"phase"`
	// Continuation is the query continuation of the page being copied.
	Continuation string `json:"continuation"`
	// Done are the IDs of that page already copied.
	Done []string `json:"done"`
	// Counts are the objects copied per kind, in every run.
	Counts map[Kind]int `json:"counts"`
	// Results count creates, updates and unchanged objects.
	Results map[Action]int `json:"results"`
	// Failures and Notes (by note, the objects it concerns) carry the
	// report over runs.
	Failures []string            `json:"failures,omitempty"`
	Notes    map[string][]string `json:"notes,omitempty"`
}

// phases are the kinds Copy copies, in order.
var phases = []Kind{Certificate, Group, Enrollment}

// The notes of a copy's report; an object's ID follows each.
const (
	noteNoCertificates = "CA certificates: the source has no certificates API (Azure DPS keeps them in Azure Resource Manager): add them to the target with dpsctl ca add and verify them; groups that reference them fail until then"
	noteUnverified     = "CA certificates copied unverified (proof of possession cannot be copied): prove it on the target with dpsctl ca code and dpsctl ca verify"
	noteCARef          = "enrollment groups that reference a CA certificate the target has not verified: their devices are refused until it is"
	noteTPM            = "TPM enrollments: the endorsement key is copied, the TPM registration is not (the device registers again and receives a new hub key)"
	noteRegistered     = "registration states are not copied (the service API cannot create them): these devices register again on the target, and may be assigned another hub"
	noteGroupRegs      = "enrollment groups whose registered devices register again on the target (registration states are not copied)"
	noteSigningSecret  = "custom allocation: a webhook signing secret (dps's signingSecret) is never returned, so not copied: set it again on the target"
	noteUnknownPrefix  = "members this dpsctl does not know, copied as they are (check that the target supports them): "
	noteNoX509Cert     = "X.509 enrollments and groups whose certificate the source did not return (Azure DPS may return only its info): the target refuses them; create them there with the certificate (dpsctl enrollment create ID --attestation x509 --cert FILE, or a manifest)"
)

// known are the members of enrollments and groups dps models.
var known = map[Kind][]string{
	Enrollment: {"registrationId", "deviceId", "registrationState", "optionalDeviceInformation", "attestation", "capabilities",
		"iotHubHostName", "initialTwin", "etag", "provisioningStatus", "reprovisionPolicy", "createdDateTimeUtc",
		"lastUpdatedDateTimeUtc", "allocationPolicy", "iotHubs", "customAllocationDefinition",
		"certificateAuthorityName", "certificatePolicyName", "credentialPolicyName"},
	Group: {"enrollmentGroupId", "attestation", "capabilities", "iotHubHostName", "initialTwin", "etag", "provisioningStatus",
		"reprovisionPolicy", "createdDateTimeUtc", "lastUpdatedDateTimeUtc", "allocationPolicy", "iotHubs", "customAllocationDefinition",
		"certificateAuthorityName", "certificatePolicyName", "credentialPolicyName"},
}

// Copy copies the CA certificates, enrollment groups and individual
// enrollments of src (a DPS service API: dps or Azure DPS), with their
// symmetric keys (read through the attestation mechanism API), to dst:
// each created, or updated when it differs. It pages with the query API's
// continuation tokens and records its progress in o.StateFile after each
// object. An object the target refuses (refused) is reported and the copy
// goes on; any other error — a source or target that cannot be reached
// or read, a target that does not authorize or answers 5xx, ctx done —
// stops it before that object is recorded, and the state file resumes it
// there.
func Copy(ctx context.Context, src, dst *Target, o CopyOptions) (rep CopyReport, err error) {
	st, resumed, err := loadState(o.StateFile, src.Service.HostName)
	if err != nil {
		return rep, err
	}
	rep.Resumed = resumed
	c := copier{ctx: ctx, src: src, dst: dst, o: o, st: st}
	defer c.report(&rep)
	copied := 0
	for _, kind := range phases[slices.Index(phases, st.Phase):] {
		if st.Phase != kind {
			st.Phase, st.Continuation, st.Done = kind, "", nil
			if err := c.save(); err != nil {
				return rep, err
			}
		}
		total := -1 // known at the kind's last page
		c.progress(kind, total)
		verified := map[string]bool{}
		if kind == Group {
			if verified, err = c.verifiedOnTarget(); err != nil {
				return rep, err
			}
		}
		for {
			objs, next, err := src.page(ctx, kind, "", st.Continuation)
			if kind == Certificate && isMissingAPI(err) {
				c.note(noteNoCertificates, "")
				break
			}
			if err != nil {
				return rep, fmt.Errorf("read the source's %ss: %s", kind, errorText(err))
			}
			if next == "" || next == st.Continuation {
				// The last page: every object of the earlier pages is
				// done (counted), and those of this one are all there is.
				onPage := 0
				for _, obj := range objs {
					if idOf(kind, obj) != "" {
						onPage++
					}
				}
				total = st.Counts[kind] - len(st.Done) + onPage
			}
			for _, obj := range objs {
				id := idOf(kind, obj)
				if id == "" || slices.Contains(st.Done, id) {
					continue
				}
				if o.Limit > 0 && copied >= o.Limit {
					rep.Stopped = true
					return rep, c.save()
				}
				if err := ctx.Err(); err != nil {
					return rep, err
				}
				if err := c.copyOne(kind, id, obj, verified); err != nil {
					return rep, err
				}
				copied++
				st.Done = append(st.Done, id)
				st.Counts[kind]++
				if err := c.save(); err != nil {
					return rep, err
				}
				c.progress(kind, total)
			}
			if next == "" || next == st.Continuation {
				break
			}
			st.Continuation, st.Done = next, nil
			if err := c.save(); err != nil {
				return rep, err
			}
		}
	}
	if o.StateFile != "" {
		if err := os.Remove(o.StateFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, err
		}
	}
	return rep, nil
}

type copier struct {
	ctx      context.Context
	src, dst *Target
	o        CopyOptions
	st       *copyState
}

func (c *copier) progress(kind Kind, total int) {
	if c.o.Progress != nil {
		done := c.st.Counts[kind]
		if total >= 0 {
			total = max(total, done)
		}
		c.o.Progress(kind, done, total)
	}
}

// refused reports whether err is the target's refusal of one object (the
// copy records it and goes on): a 400, 409, 412, 413 or 422 answer. Any
// other error — no answer, 401, 403, 404 (a path the target does not
// serve), 429 and 5xx after the retries, ctx done — is not about the
// object: the copy stops there.
func refused(err error) bool {
	switch client.StatusOf(err) {
	case http.StatusBadRequest, http.StatusConflict, http.StatusPreconditionFailed, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

func isMissingAPI(err error) bool {
	st := client.StatusOf(err)
	return st == http.StatusNotFound || st == http.StatusMethodNotAllowed
}

// verifiedOnTarget are the target's CA certificates, by folded name, and
// whether each is verified.
func (c *copier) verifiedOnTarget() (map[string]bool, error) {
	out := map[string]bool{}
	cas, err := c.dst.all(c.ctx, Certificate, "")
	if isMissingAPI(err) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the target's CA certificates: %s", errorText(err))
	}
	for _, ca := range cas {
		v, _ := ca["isVerified"].(bool)
		out[strings.ToLower(idOf(Certificate, ca))] = v
	}
	return out, nil
}

// copyOne copies one object. The target's refusal is a failure in the
// report; any other error (a source that cannot be read, a target that
// does not answer or authorize) is returned: the object is not done.
func (c *copier) copyOne(kind Kind, id string, obj Object, verified map[string]bool) error {
	body := maps.Clone(obj)
	if reg, _ := body["registrationState"].(Object); reg != nil {
		if s, _ := reg["status"].(string); strings.EqualFold(s, "assigned") {
			c.note(noteRegistered, id)
		}
	}
	delete(body, "registrationState")
	if kind == Group || kind == Enrollment {
		if symmetric(body) {
			att, err := c.src.keys(c.ctx, kind, id)
			if client.StatusOf(err) == http.StatusNotFound {
				return nil // deleted on the source since it was listed
			}
			if err != nil {
				return fmt.Errorf("read the keys of the source's %s %s: %s", kind, id, errorText(err))
			}
			body["attestation"] = att
		}
		c.notes(kind, id, body, verified)
		mapHubs(body, c.o.MapHubs)
	}
	if kind == Certificate {
		if v, _ := body["isVerified"].(bool); v {
			c.note(noteUnverified, id)
		}
	}
	it := Item{Kind: kind, ID: id, Body: body, Where: "source " + string(kind) + " " + id}
	action, err := applyStep(c.ctx, c.dst, planItem(c.ctx, c.dst, it))
	if err != nil && !refused(err) {
		if ctxErr := c.ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return fmt.Errorf("copy %s to the target: %v", it.Name(), err)
	}
	if err != nil {
		c.st.Failures = append(c.st.Failures, fmt.Sprintf("%s: %v", it.Name(), err))
		return nil
	}
	c.st.Results[action]++
	return nil
}

// notes records what of an enrollment or group is not copied whole.
func (c *copier) notes(kind Kind, id string, body Object, verified map[string]bool) {
	att, _ := body["attestation"].(Object)
	if typ, _ := att["type"].(string); strings.EqualFold(typ, "tpm") {
		c.note(noteTPM, id)
	}
	if x, _ := att["x509"].(Object); x != nil {
		for _, set := range []string{"clientCertificates", "signingCertificates"} {
			certs, _ := x[set].(Object)
			for _, which := range []string{"primary", "secondary"} {
				cert, _ := certs[which].(Object)
				if pem, _ := cert["certificate"].(string); cert != nil && pem == "" {
					c.note(noteNoX509Cert, string(kind)+" "+id)
				}
			}
		}
		refs, _ := x["caReferences"].(Object)
		for _, which := range []string{"primary", "secondary"} {
			if name, _ := refs[which].(string); name != "" && !verified[strings.ToLower(name)] {
				c.note(noteCARef, id+" ("+name+")")
			}
		}
	}
	if cad, _ := body["customAllocationDefinition"].(Object); cad != nil {
		c.note(noteSigningSecret, string(kind)+" "+id)
	}
	for k, v := range body {
		if v != nil && !slices.Contains(known[kind], k) {
			c.note(noteUnknownPrefix+k, string(kind)+" "+id)
		}
	}
	if kind == Group {
		regs, err := c.src.registrations(c.ctx, id)
		if err == nil && len(regs) > 0 {
			c.note(noteGroupRegs, fmt.Sprintf("%s (%d)", id, len(regs)))
		}
	}
}

func (c *copier) note(note, id string) {
	if c.st.Notes == nil {
		c.st.Notes = map[string][]string{}
	}
	if !slices.Contains(c.st.Notes[note], id) {
		c.st.Notes[note] = append(c.st.Notes[note], id)
	}
}

// report fills rep from the state.
func (c *copier) report(rep *CopyReport) {
	rep.Created, rep.Updated, rep.Unchanged = c.st.Results[Create], c.st.Results[Update], c.st.Results[Unchanged]
	rep.Failures = c.st.Failures
	for _, n := range slices.Sorted(maps.Keys(c.st.Notes)) {
		ids := slices.DeleteFunc(slices.Clone(c.st.Notes[n]), func(s string) bool { return s == "" })
		if len(ids) > 0 {
			const show = 20
			list := strings.Join(ids[:min(len(ids), show)], ", ")
			if len(ids) > show {
				list += fmt.Sprintf(" and %d more", len(ids)-show)
			}
			n += ": " + list
		}
		rep.Notes = append(rep.Notes, n)
	}
}

// mapHubs rewrites hub host names (source → target).
func mapHubs(body Object, m map[string]string) {
	if len(m) == 0 {
		return
	}
	rename := func(h string) string {
		for from, to := range m {
			if strings.EqualFold(from, h) {
				return to
			}
		}
		return h
	}
	if hubs, ok := body["iotHubs"].([]any); ok {
		out := make([]any, len(hubs))
		for i, h := range hubs {
			if s, ok := h.(string); ok {
				out[i] = rename(s)
			} else {
				out[i] = h
			}
		}
		body["iotHubs"] = out
	}
	if h, ok := body["iotHubHostName"].(string); ok && h != "" {
		body["iotHubHostName"] = rename(h)
	}
}

// loadState reads the state file, or starts a new state.
func loadState(path, source string) (*copyState, bool, error) {
	st := &copyState{Source: source, Phase: phases[0]}
	resumed := false
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, false, err
		default:
			if err := json.Unmarshal(b, st); err != nil {
				return nil, false, fmt.Errorf("state file %s: %v", path, err)
			}
			if !strings.EqualFold(st.Source, source) {
				return nil, false, fmt.Errorf("state file %s is of a copy from %s, not %s: give another --state-file", path, st.Source, source)
			}
			if !slices.Contains(phases, st.Phase) {
				return nil, false, fmt.Errorf("state file %s: unknown phase %q", path, st.Phase)
			}
			resumed = true
		}
	}
	if st.Counts == nil {
		st.Counts = map[Kind]int{}
	}
	if st.Results == nil {
		st.Results = map[Action]int{}
	}
	return st, resumed, nil
}

// save writes the state file (0600: it names objects, never keys).
func (c *copier) save() error {
	if c.o.StateFile == "" {
		return nil
	}
	b, err := json.MarshalIndent(c.st, "", "  ")
	if err != nil {
		return err
	}
	tmp := c.o.StateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, c.o.StateFile); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/wire"
)

// How objects are compared. A member the file gives is compared with the
// service's; a member it does not give is left as the service has it (so
// defaults the service fills in are no difference). A member that is
// absent, null, "", false, [] or {} on one side equals any of those on
// the other. Objects are compared member by member (the file's members
// only), lists and the members in exact whole.

// readOnly are the members of enrollments and groups the service sets:
// neither compared nor sent.
var readOnly = map[Kind][]string{
	Enrollment: {"etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc", "registrationState"},
	Group:      {"etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc"},
}

// writable are, for certificates and hub devices, the only members
// compared and sent (with the ID); the rest is the service's.
var writable = map[Kind][]string{
	Certificate: {"certificate"},
	HubDevice:   {"status", "statusReason", "authentication", "capabilities"},
}

// exact are members compared whole: user data, where a member the file
// no longer gives is a difference.
var exact = []string{"initialTwin", "optionalDeviceInformation"}

// writeOnly are members the service never returns: not compared (sent
// when the object is written for another difference).
var writeOnly = []string{"customAllocationDefinition.signingSecret"}

// foldCase are members whose values are compared case-insensitively.
var foldCase = []string{"provisioningStatus", "allocationPolicy", "attestation.type", "status", "authentication.type"}

// secretNames are members whose values are never printed.
var secretNames = []string{"primaryKey", "secondaryKey", "signingSecret"}

// Change is one member that differs.
type Change struct {
	// Path is the member's dotted path ("attestation.symmetricKey.primaryKey").
	Path string
	// Old is the service's value (nil: absent), New the file's.
	Old, New any
	// Secret: the values are keys or come from the environment; print
	// (changed), never them.
	Secret bool
}

// String is the change as a plan prints it.
func (c Change) String() string {
	if c.Secret {
		return c.Path + ": (changed)"
	}
	return c.Path + ": " + show(c.Path, c.Old) + " → " + show(c.Path, c.New)
}

// show is a value in a line, webhook URLs masked and long values cut.
func show(path string, v any) string {
	if v == nil {
		return "(none)"
	}
	v = maskURLs(path, v)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	s := strings.TrimSpace(b.String())
	if len(s) > 120 {
		s = s[:117] + "…"
	}
	return s
}

// maskURLs hides the query of webhook URLs (an Azure Functions key
// travels in it).
func maskURLs(path string, v any) any {
	switch x := v.(type) {
	case string:
		if strings.HasSuffix(path, "webhookUrl") {
			return wire.MaskURL(x)
		}
	case Object:
		out := make(Object, len(x))
		for k, e := range x {
			out[k] = maskURLs(join(path, k), e)
		}
		return out
	}
	return v
}

// comparable returns the members of obj that are compared: read-only
// ones dropped, and what the service computes from a certificate
// (x509 …info).
func comparable(kind Kind, obj Object) Object {
	out := Object{}
	if w, ok := writable[kind]; ok {
		for _, k := range w {
			if v, ok := obj[k]; ok {
				out[k] = v
			}
		}
		return out
	}
	for k, v := range obj {
		if !slices.Contains(readOnly[kind], k) {
			out[k] = v
		}
	}
	if att, ok := out["attestation"].(Object); ok {
		if x, ok := att["x509"].(Object); ok {
			att, x = maps.Clone(att), maps.Clone(x)
			for _, set := range []string{"clientCertificates", "signingCertificates"} {
				certs, ok := x[set].(Object)
				if !ok {
					continue
				}
				certs = maps.Clone(certs)
				for _, which := range []string{"primary", "secondary"} {
					if c, ok := certs[which].(Object); ok {
						c = maps.Clone(c)
						delete(c, "info")
						certs[which] = c
					}
				}
				x[set] = certs
			}
			att["x509"] = x
			out["attestation"] = att
		}
	}
	return out
}

// sendable is the body to write: the object without read-only members
// (for hub devices and certificates, the writable ones and the ID; for
// the others every member but the read-only ones, unknown ones too).
func sendable(kind Kind, obj Object) Object {
	out := comparable(kind, obj)
	if m := idMember[kind]; obj[m] != nil {
		out[m] = obj[m]
	}
	return out
}

// Diff compares the file's object want with the service's have (both
// whole objects of kind) and returns what differs, in path order. secret
// holds the paths of want whose values came from the environment.
func Diff(kind Kind, want, have Object, secret map[string]bool) []Change {
	d := differ{kind: kind, secret: secret}
	d.walk("", comparable(kind, want), comparable(kind, have))
	return d.out
}

type differ struct {
	kind   Kind
	secret map[string]bool
	out    []Change
}

func (d *differ) walk(path string, want, have any) {
	if slices.Contains(writeOnly, path) {
		return
	}
	if wm, ok := want.(Object); ok && !slices.Contains(exact, path) {
		hm, isObj := have.(Object)
		if have == nil || isObj {
			for _, k := range slices.Sorted(maps.Keys(wm)) {
				d.walk(join(path, k), wm[k], hm[k])
			}
			return
		}
	}
	if d.equal(path, prune(want), prune(have)) {
		return
	}
	d.out = append(d.out, Change{Path: path, Old: have, New: want, Secret: d.isSecret(path, want) || d.isSecret(path, have)})
}

func (d *differ) equal(path string, want, have any) bool {
	if d.kind == Certificate && path == "certificate" {
		ws, _ := want.(string)
		hs, _ := have.(string)
		wc, err1 := dps.ParseCertificate(ws)
		hc, err2 := dps.ParseCertificate(hs)
		if err1 == nil && err2 == nil {
			return bytes.Equal(wc.Raw, hc.Raw)
		}
	}
	if slices.Contains(foldCase, path) {
		ws, ok1 := want.(string)
		hs, ok2 := have.(string)
		if ok1 && ok2 {
			return strings.EqualFold(ws, hs)
		}
	}
	return reflect.DeepEqual(want, have)
}

// isSecret reports whether the value at path is a key, holds one, or
// came from the environment.
func (d *differ) isSecret(path string, v any) bool {
	for p := range d.secret {
		if p == path || strings.HasPrefix(p, path+".") || strings.HasPrefix(p, path+"[") {
			return true
		}
	}
	last := path[strings.LastIndex(path, ".")+1:]
	return slices.Contains(secretNames, last) || holdsSecret(v)
}

func holdsSecret(v any) bool {
	switch x := v.(type) {
	case Object:
		for k, e := range x {
			if s, ok := e.(string); ok && s != "" && slices.Contains(secretNames, k) {
				return true
			}
			if holdsSecret(e) {
				return true
			}
		}
	case []any:
		return slices.ContainsFunc(x, holdsSecret)
	}
	return false
}

// prune drops the members that are empty (absent, null, "", false, [],
// {}), so that an empty value equals an absent one; nil when nothing is
// left.
func prune(v any) any {
	switch x := v.(type) {
	case Object:
		out := Object{}
		for k, e := range x {
			if p := prune(e); p != nil {
				out[k] = p
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	case []any:
		if len(x) == 0 {
			return nil
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = prune(e)
		}
		return out
	case string:
		if x == "" {
			return nil
		}
	case bool:
		if !x {
			return nil
		}
	}
	return v
}

// merge is the body of an update: the service's object (its read-only
// members dropped) with the file's members put over it, each whole —
// except the symmetric keys the file leaves out, which are the service's
// (a PUT without them has Azure DPS and IoT hubs generate new ones).
func merge(kind Kind, want, have Object) Object {
	out := sendable(kind, have)
	for k, v := range sendable(kind, want) {
		out[k] = v
	}
	keepKeys(kind, out, have)
	return out
}

// keyMember is, per kind, the member that holds symmetric keys and the
// type that has them.
var keyMember = map[Kind]struct{ member, typ string }{
	Enrollment: {"attestation", "symmetricKey"},
	Group:      {"attestation", "symmetricKey"},
	HubDevice:  {"authentication", "sas"},
}

// keepKeys fills in, in body (an update's), the primaryKey and secondaryKey
// its symmetric-key attestation (or sas authentication) leaves out with
// have's, when both are of that type. body's nested objects are copied,
// not changed.
func keepKeys(kind Kind, body, have Object) {
	km, ok := keyMember[kind]
	if !ok {
		return
	}
	want, _ := body[km.member].(Object)
	cur, _ := have[km.member].(Object)
	if want == nil || cur == nil {
		return
	}
	typ, _ := want["type"].(string)
	curTyp, _ := cur["type"].(string)
	// A hub device's authentication without a type is sas.
	if !strings.EqualFold(curTyp, km.typ) || typ != "" && !strings.EqualFold(typ, km.typ) || typ == "" && kind != HubDevice {
		return
	}
	curKeys, _ := cur["symmetricKey"].(Object)
	wantKeys, _ := want["symmetricKey"].(Object)
	filled := maps.Clone(wantKeys)
	if filled == nil {
		filled = Object{}
	}
	changed := false
	for _, k := range []string{"primaryKey", "secondaryKey"} {
		if s, _ := filled[k].(string); s != "" {
			continue
		}
		if s, _ := curKeys[k].(string); s != "" {
			filled[k] = s
			changed = true
		}
	}
	if changed {
		want = maps.Clone(want)
		want["symmetricKey"] = filled
		body[km.member] = want
	}
}

// missingKeys reports whether an update of want over have would need
// have's keys that have does not show (Azure DPS's GET returns none): want
// is a symmetric-key attestation that leaves a key out.
func missingKeys(want, have Object) bool {
	w, _ := want["attestation"].(Object)
	h, _ := have["attestation"].(Object)
	typ, _ := w["type"].(string)
	if !strings.EqualFold(typ, "symmetricKey") || !symmetric(have) {
		return false
	}
	wk, _ := w["symmetricKey"].(Object)
	hk, _ := h["symmetricKey"].(Object)
	for _, k := range []string{"primaryKey", "secondaryKey"} {
		ws, _ := wk[k].(string)
		hs, _ := hk[k].(string)
		if ws == "" && hs == "" {
			return true
		}
	}
	return false
}

// toObject decodes a JSON object.
func toObject(b []byte) (Object, error) {
	var o Object
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	return o, nil
}

// Package manifest is declarative enrollments: a file of individual
// enrollments, enrollment groups, CA certificates and built-in hub devices
// in the service APIs' own JSON shapes (what `dpsctl … -o json` prints),
// compared with what a service holds — a plan of creates, updates and
// deletes — and applied. The JSON-lines export, its import and the copy
// from another DPS service API are built on the same comparison.
//
// A manifest (YAML or JSON):
//
//	enrollments:        # individual enrollments (IndividualEnrollment)
//	  - registrationId: dev-1
//	    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_DEV1_KEY}"}}
//	enrollmentGroups:   # EnrollmentGroup
//	  - enrollmentGroupId: line-1
//	    attestation: {type: x509, x509: {caReferences: {primary: factory-ca}}}
//	certificates:       # CA certificates held by dps ({name, certificate})
//	  - name: factory-ca
//	    certificate: |
//	      -----BEGIN CERTIFICATE-----
//	      …
//	hubDevices:         # built-in hub devices, by hub host name (IoT Hub's Device)
//	  localhost:
//	    - deviceId: sensor-1
//	      authentication: {type: sas, symmetricKey: {primaryKey: "${DPSD_SENSOR1_KEY}"}}
//	      twin: {tags: {site: berlin}, properties: {desired: {interval: 30}}}
//
// A string value of a manifest (YAML or JSON) may hold ${NAME} references
// to environment variables whose names start with DPSD_ or DPS_ (no other
// variable is read, so a file cannot copy other secrets out of the
// environment); an unset one is an error, and $${ is a literal ${. Values
// taken from the environment are never printed. An export (JSON lines) is
// data, never expanded: its values are taken as they are.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/wire"
	"go.yaml.in/yaml/v3"
)

// Kind is the kind of an object.
type Kind string

// The kinds of objects, in the order they are created (deleted in the
// reverse order): groups may reference certificates.
const (
	Certificate Kind = "certificate"
	Group       Kind = "group"
	Enrollment  Kind = "enrollment"
	HubDevice   Kind = "hubDevice"
	// Registration is a registration state in an export; it is not
	// applied (the service API cannot create one).
	Registration Kind = "registration"
)

// kinds are the kinds a manifest applies, in creation order.
var kinds = []Kind{Certificate, Group, Enrollment, HubDevice}

func (k Kind) order() int { return slices.Index(kinds, k) }

// Object is a JSON object as encoding/json decodes one.
type Object = map[string]any

// Item is one object of a manifest.
type Item struct {
	Kind Kind
	// Hub is a hub device's built-in hub (its host name).
	Hub string
	ID  string
	// Body is the object in the shape the API takes; a hub device's
	// twin is apart, in Twin.
	Body Object
	// Twin is a hub device's initial twin {tags, properties: {desired}},
	// written when the device is created; nil for none.
	Twin Object
	// Where names the item in messages: "FILE: enrollments[2]".
	Where string
	// secret holds the dotted paths (in Body) of values taken from the
	// environment: printed as (changed), never as values.
	secret map[string]bool
}

// Name is how messages name the item: "enrollment dev-1",
// "hubDevice localhost/sensor-1".
func (it Item) Name() string {
	if it.Kind == HubDevice {
		return string(it.Kind) + " " + it.Hub + "/" + it.ID
	}
	return string(it.Kind) + " " + it.ID
}

// key identifies the object: IDs of the DPS service are case-insensitive,
// IoT Hub device IDs are not.
func (it Item) key() string {
	id := it.ID
	if it.Kind != HubDevice {
		id = strings.ToLower(id)
	}
	return string(it.Kind) + "\x00" + strings.ToLower(it.Hub) + "\x00" + id
}

// Scope is a kind (for hub devices, of one hub) a manifest manages: with
// prune, what a service holds of it that the manifest does not name is
// deleted.
type Scope struct {
	Kind Kind
	Hub  string
}

// Manifest is a parsed file (or several merged).
type Manifest struct {
	Items  []Item
	Scopes []Scope
	// Registrations counts the registration states of an export, which
	// are not applied.
	Registrations int
}

// Hubs are the hubs the manifest's hub devices (or hub scopes) name.
func (m *Manifest) Hubs() []string {
	var out []string
	add := func(h string) {
		if !slices.ContainsFunc(out, func(x string) bool { return strings.EqualFold(x, h) }) {
			out = append(out, h)
		}
	}
	for _, s := range m.Scopes {
		if s.Kind == HubDevice {
			add(s.Hub)
		}
	}
	for _, it := range m.Items {
		if it.Kind == HubDevice {
			add(it.Hub)
		}
	}
	return out
}

// Merge joins manifests (dpsd's several files) and checks that no object
// is named twice.
func Merge(ms ...*Manifest) (*Manifest, error) {
	out := &Manifest{}
	for _, m := range ms {
		out.Items = append(out.Items, m.Items...)
		for _, s := range m.Scopes {
			if !slices.ContainsFunc(out.Scopes, func(x Scope) bool { return x.Kind == s.Kind && strings.EqualFold(x.Hub, s.Hub) }) {
				out.Scopes = append(out.Scopes, s)
			}
		}
		out.Registrations += m.Registrations
	}
	return out, duplicates(out.Items)
}

func duplicates(items []Item) error {
	seen := map[string]string{}
	var errs []error
	for _, it := range items {
		if first, ok := seen[it.key()]; ok {
			errs = append(errs, fmt.Errorf("%s: %s is also at %s", it.Where, it.Name(), first))
			continue
		}
		seen[it.key()] = it.Where
	}
	return errors.Join(errs...)
}

// The members of a manifest file.
const (
	keyEnrollments  = "enrollments"
	keyGroups       = "enrollmentGroups"
	keyCertificates = "certificates"
	keyHubDevices   = "hubDevices"
)

// Parse reads a manifest: YAML, JSON (the same members), or JSON lines
// as dpsctl export writes them (one object a line with a kind member).
// name is the file's name for messages; getenv looks up ${DPSD_…} and
// ${DPS_…} references. Every problem found is reported, each naming its
// object.
func Parse(name string, data []byte, getenv func(string) string) (*Manifest, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		var first Object
		if err := dec.Decode(&first); err != nil {
			return nil, fmt.Errorf("%s: not valid JSON: %v", name, err)
		}
		if _, ok := first["kind"]; ok {
			return parseLines(name, data)
		}
		if dec.More() {
			return nil, fmt.Errorf("%s: more than one JSON value, and the first has no kind member (an export has one on every line)", name)
		}
		return fromFile(name, first, getenv)
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if doc == nil {
		return &Manifest{}, nil
	}
	// Through JSON: the objects in the shapes encoding/json decodes
	// (float64 numbers, map[string]any objects), as the service's are.
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %v (every key must be a string)", name, err)
	}
	var top any
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	obj, ok := top.(Object)
	if !ok {
		return nil, fmt.Errorf("%s: want a mapping of %s, %s, %s and %s", name, keyEnrollments, keyGroups, keyCertificates, keyHubDevices)
	}
	return fromFile(name, obj, getenv)
}

// ParseFile is Parse of the file r.
func ParseFile(name string, r io.Reader, getenv func(string) string) (*Manifest, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return Parse(name, data, getenv)
}

func fromFile(name string, top Object, getenv func(string) string) (*Manifest, error) {
	m := &Manifest{}
	var errs []error
	bad := func(where, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", name, where, fmt.Sprintf(format, args...)))
	}
	for k := range top {
		switch k {
		case keyEnrollments, keyGroups, keyCertificates, keyHubDevices:
		default:
			bad(k, "unknown member (want %s, %s, %s or %s)", keyEnrollments, keyGroups, keyCertificates, keyHubDevices)
		}
	}
	list := func(key string, kind Kind, hub string, v any) {
		where := key
		if hub != "" {
			where = key + "." + hub
		}
		if v == nil {
			m.Scopes = append(m.Scopes, Scope{Kind: kind, Hub: hub})
			return
		}
		objs, ok := v.([]any)
		if !ok {
			bad(where, "want a list of objects")
			return
		}
		m.Scopes = append(m.Scopes, Scope{Kind: kind, Hub: hub})
		for i, o := range objs {
			w := fmt.Sprintf("%s[%d]", where, i)
			obj, ok := o.(Object)
			if !ok {
				bad(w, "want an object")
				continue
			}
			it, err := newItem(kind, hub, obj, name+": "+w, getenv)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			m.Items = append(m.Items, it)
		}
	}
	// In creation order, so that a plan lists certificates first.
	if v, ok := top[keyCertificates]; ok {
		list(keyCertificates, Certificate, "", v)
	}
	if v, ok := top[keyGroups]; ok {
		list(keyGroups, Group, "", v)
	}
	if v, ok := top[keyEnrollments]; ok {
		list(keyEnrollments, Enrollment, "", v)
	}
	if v, ok := top[keyHubDevices]; ok {
		hubs, ok := v.(Object)
		switch {
		case v == nil:
		case !ok:
			bad(keyHubDevices, "want a mapping of hub host names to lists of devices")
		default:
			names := make([]string, 0, len(hubs))
			for h := range hubs {
				names = append(names, h)
			}
			slices.Sort(names)
			for _, h := range names {
				if h == "" || strings.ContainsAny(h, "/: ") {
					bad(keyHubDevices, "%q is not a hub host name", h)
					continue
				}
				list(keyHubDevices, HubDevice, h, hubs[h])
			}
		}
	}
	if len(errs) == 0 {
		errs = append(errs, duplicates(m.Items))
	}
	return m, errors.Join(errs...)
}

// parseLines reads an export. Its values are data (an exported twin may
// hold the text "${DPSD_…}"): nothing is expanded.
func parseLines(name string, data []byte) (*Manifest, error) {
	m := &Manifest{}
	var errs []error
	seen := map[Scope]bool{}
	dec := json.NewDecoder(bytes.NewReader(data))
	for n := 1; ; n++ {
		var obj Object
		if err := dec.Decode(&obj); err == io.EOF {
			break
		} else if err != nil {
			errs = append(errs, fmt.Errorf("%s: object %d: %v", name, n, err))
			break
		}
		where := fmt.Sprintf("%s: object %d", name, n)
		kind, _ := obj["kind"].(string)
		delete(obj, "kind")
		hub := ""
		switch Kind(kind) {
		case Registration:
			m.Registrations++
			continue
		case HubDevice:
			hub, _ = obj["hub"].(string)
			delete(obj, "hub")
			if hub == "" {
				errs = append(errs, fmt.Errorf("%s: a hubDevice needs its hub", where))
				continue
			}
		case Enrollment, Group, Certificate:
		default:
			errs = append(errs, fmt.Errorf("%s: unknown kind %q (want enrollment, group, certificate, hubDevice or registration)", where, kind))
			continue
		}
		it, err := newItem(Kind(kind), hub, obj, where, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if s := (Scope{Kind: it.Kind, Hub: strings.ToLower(hub)}); !seen[s] {
			seen[s] = true
			m.Scopes = append(m.Scopes, Scope{Kind: it.Kind, Hub: hub})
		}
		m.Items = append(m.Items, it)
	}
	if len(errs) == 0 {
		errs = append(errs, duplicates(m.Items))
	}
	return m, errors.Join(errs...)
}

// idMember is the member of each kind that names the object.
var idMember = map[Kind]string{Enrollment: "registrationId", Group: "enrollmentGroupId", Certificate: "name", HubDevice: "deviceId"}

// newItem checks one object and expands its references (none when getenv
// is nil: an export's values are taken as they are).
func newItem(kind Kind, hub string, obj Object, where string, getenv func(string) string) (Item, error) {
	it := Item{Kind: kind, Hub: hub, Where: where, secret: map[string]bool{}}
	if kind == HubDevice {
		if t, ok := obj["twin"]; ok {
			twin, ok := t.(Object)
			if t != nil && !ok {
				return it, fmt.Errorf("%s: twin: want an object {tags, properties: {desired}}", where)
			}
			for k := range twin {
				if k != "tags" && k != "properties" {
					return it, fmt.Errorf("%s: twin.%s: a device's initial twin has only tags and properties.desired", where, k)
				}
			}
			it.Twin = twin
			delete(obj, "twin")
		}
	}
	var errs []error
	expanded := obj
	if getenv != nil {
		expanded = expand(obj, "", getenv, it.secret, &errs).(Object)
		if it.Twin != nil {
			// Paths under "twin": the twin is apart from Body, so they
			// cannot collide with Body's.
			it.Twin = expand(it.Twin, "twin", getenv, it.secret, &errs).(Object)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return it, fmt.Errorf("%s: %w", where, err)
	}
	it.Body = expanded
	id, _ := expanded[idMember[kind]].(string)
	it.ID = id
	if id == "" {
		return it, fmt.Errorf("%s: %s is required", where, idMember[kind])
	}
	if err := validate(it); err != nil {
		msg := err.Error()
		if e, ok := errors.AsType[*dps.Error](err); ok && e.Message != "" {
			msg = e.Message
		}
		return it, fmt.Errorf("%s (%s): %s", where, it.Name(), msg)
	}
	return it, nil
}

// validate checks what can be checked without the service: the ID, and
// that the object converts to the service's model.
func validate(it Item) error {
	b, err := json.Marshal(it.Body)
	if err != nil {
		return err
	}
	switch it.Kind {
	case Enrollment:
		if err := dps.ValidateRegistrationID(it.ID); err != nil {
			return err
		}
		var e wire.IndividualEnrollment
		if err := json.Unmarshal(b, &e); err != nil {
			return errors.New("not an individual enrollment: " + err.Error())
		}
		if e.Attestation == nil {
			return errors.New("attestation is required")
		}
		_, err = wire.ToEnrollment(e)
		return err
	case Group:
		if err := dps.ValidateGroupID(it.ID); err != nil {
			return err
		}
		var g wire.EnrollmentGroup
		if err := json.Unmarshal(b, &g); err != nil {
			return errors.New("not an enrollment group: " + err.Error())
		}
		if g.Attestation == nil {
			return errors.New("attestation is required")
		}
		_, err = wire.ToGroup(g)
		return err
	case Certificate:
		if err := dps.ValidateGroupID(it.ID); err != nil {
			return errors.New("name: must be 1-128 letters, digits, '-', '.', '_' or ':'")
		}
		pem, _ := it.Body["certificate"].(string)
		if pem == "" {
			return errors.New("certificate (PEM or base64 DER) is required")
		}
		_, err := dps.ParseCertificate(pem)
		return err
	case HubDevice:
		if len(it.ID) > 128 {
			return errors.New("deviceId: at most 128 characters")
		}
	}
	return nil
}

// envRef is a ${NAME} reference; only names starting with DPSD_ or DPS_
// are expanded.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// AllowedEnv reports whether a manifest may read the environment
// variable name.
func AllowedEnv(name string) bool {
	return strings.HasPrefix(name, "DPSD_") || strings.HasPrefix(name, "DPS_")
}

// expand replaces the references in v's strings, recording the paths of
// the values it changed in secret.
func expand(v any, path string, getenv func(string) string, secret map[string]bool, errs *[]error) any {
	switch x := v.(type) {
	case Object:
		out := make(Object, len(x))
		for k, e := range x {
			out[k] = expand(e, join(path, k), getenv, secret, errs)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = expand(e, fmt.Sprintf("%s[%d]", path, i), getenv, secret, errs)
		}
		return out
	case string:
		if !strings.Contains(x, "${") {
			return x
		}
		// $${ is a literal ${: expand the text between the escapes.
		parts := strings.Split(x, "$${")
		expanded := false
		for i, part := range parts {
			parts[i] = envRef.ReplaceAllStringFunc(part, func(m string) string {
				name := envRef.FindStringSubmatch(m)[1]
				if !AllowedEnv(name) {
					*errs = append(*errs, fmt.Errorf("%s: ${%s}: only variables named DPSD_… or DPS_… are expanded (write $${ for a literal ${)", path, name))
					return m
				}
				expanded = true
				val := getenv(name)
				if val == "" {
					*errs = append(*errs, fmt.Errorf("%s: environment variable %s is not set", path, name))
				}
				return val
			})
		}
		if expanded {
			secret[path] = true
		}
		return strings.Join(parts, "${")
	}
	return v
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

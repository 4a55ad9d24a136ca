package manifest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps/internal/client"
)

// Target is a service that plans read and write: a DPS service API (dps
// or Azure DPS) and, for hub devices, built-in hubs' service APIs.
type Target struct {
	Service *client.Client
	// Hubs are clients of built-in hubs' service APIs (each from one of
	// the hub's access policies with RegistryRead, RegistryWrite and
	// ServiceConnect), by hub host name.
	Hubs map[string]*client.Client
	// PageSize is the x-ms-max-item-count of queries (default 100).
	PageSize int
}

func (t *Target) hub(name string) (*client.Client, error) {
	for h, c := range t.Hubs {
		if strings.EqualFold(h, name) {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no connection string for hub %s (give its --hub-connection-string)", name)
}

func (t *Target) pageSize() int {
	if t.PageSize > 0 {
		return t.PageSize
	}
	return 100
}

// maxAttempts bounds the tries of one request the service throttles.
const maxAttempts = 6

// call sends one request, again after 429 and 503 answers (waiting as
// Retry-After says, at most 30 s a time).
func call(ctx context.Context, f func() ([]byte, http.Header, error)) ([]byte, http.Header, error) {
	for attempt := 1; ; attempt++ {
		b, h, err := f()
		if st := client.StatusOf(err); st != http.StatusTooManyRequests && st != http.StatusServiceUnavailable || attempt == maxAttempts {
			return b, h, err
		}
		wait := time.Duration(attempt) * time.Second
		if s, perr := strconv.Atoi(h.Get("Retry-After")); perr == nil && s >= 0 {
			wait = min(time.Duration(s)*time.Second, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func seg(s string) string { return url.PathEscape(s) }

func objectPath(kind Kind, id string) string {
	switch kind {
	case Enrollment:
		return "/enrollments/" + seg(id)
	case Group:
		return "/enrollmentGroups/" + seg(id)
	case Certificate:
		return "/certificates/" + seg(id)
	default:
		return "/devices/" + seg(id)
	}
}

// do sends a request to the service (or, for hub devices, to the hub's).
func (t *Target) do(ctx context.Context, kind Kind, hub, method, path string, hdr map[string]string, body any) ([]byte, http.Header, error) {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return nil, nil, err
		}
	}
	for k, v := range hdr {
		if v == "" {
			delete(hdr, k)
		}
	}
	if kind == HubDevice {
		c, err := t.hub(hub)
		if err != nil {
			return nil, nil, err
		}
		return call(ctx, func() ([]byte, http.Header, error) { return c.HubCall(ctx, method, path, hdr, raw) })
	}
	return call(ctx, func() ([]byte, http.Header, error) {
		b, h, err := t.Service.ServiceCall(ctx, method, path, hdr, raw)
		return b, h, err
	})
}

// get reads one object; nil when the service has none.
func (t *Target) get(ctx context.Context, kind Kind, hub, id string) (Object, error) {
	b, _, err := t.do(ctx, kind, hub, http.MethodGet, objectPath(kind, id), nil, nil)
	if client.StatusOf(err) == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return toObject(b)
}

// keys reads an enrollment's or group's attestation with its keys.
func (t *Target) keys(ctx context.Context, kind Kind, id string) (Object, error) {
	b, _, err := t.do(ctx, kind, "", http.MethodPost, objectPath(kind, id)+"/attestationmechanism", nil, nil)
	if err != nil {
		return nil, err
	}
	return toObject(b)
}

// put writes one object: ifMatch "" creates, an ETag replaces that
// version.
func (t *Target) put(ctx context.Context, kind Kind, hub, id string, body Object, ifMatch string) (Object, error) {
	b, _, err := t.do(ctx, kind, hub, http.MethodPut, objectPath(kind, id), map[string]string{"If-Match": ifMatch}, body)
	if err != nil {
		return nil, err
	}
	return toObject(b)
}

func (t *Target) delete(ctx context.Context, kind Kind, hub, id, ifMatch string) error {
	_, _, err := t.do(ctx, kind, hub, http.MethodDelete, objectPath(kind, id), map[string]string{"If-Match": ifMatch}, nil)
	return err
}

// twin reads a hub device's twin; nil when the hub has no such device.
func (t *Target) twin(ctx context.Context, hub, id string) (Object, error) {
	b, _, err := t.do(ctx, HubDevice, hub, http.MethodGet, "/twins/"+seg(id), nil, nil)
	if client.StatusOf(err) == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return toObject(b)
}

// patchTwin merges tags and desired properties into a hub device's twin.
func (t *Target) patchTwin(ctx context.Context, hub, id string, twin Object) error {
	_, _, err := t.do(ctx, HubDevice, hub, http.MethodPatch, "/twins/"+seg(id), map[string]string{"If-Match": "*"}, twin)
	return err
}

// page reads one page of a kind from continuation ("" first); next is
// "" after the last page. Certificates come in one page.
func (t *Target) page(ctx context.Context, kind Kind, hub, continuation string) (objs []Object, next string, err error) {
	var b []byte
	var h http.Header
	hdr := map[string]string{"x-ms-continuation": continuation, "x-ms-max-item-count": strconv.Itoa(t.pageSize())}
	switch kind {
	case Enrollment:
		b, h, err = t.do(ctx, kind, "", http.MethodPost, "/enrollments/query", hdr, Object{"query": "SELECT * FROM enrollments"})
	case Group:
		b, h, err = t.do(ctx, kind, "", http.MethodPost, "/enrollmentGroups/query", hdr, Object{"query": "SELECT * FROM enrollmentGroups"})
	case Certificate:
		b, _, err = t.do(ctx, kind, "", http.MethodGet, "/certificates", nil, nil)
	case HubDevice:
		b, h, err = t.do(ctx, kind, hub, http.MethodPost, "/devices/query", hdr, Object{"query": "SELECT * FROM devices"})
	default:
		return nil, "", fmt.Errorf("cannot list %s", kind)
	}
	if err != nil {
		return nil, "", err
	}
	if err := json.Unmarshal(b, &objs); err != nil {
		return nil, "", fmt.Errorf("%s query: the answer is not a list of objects: %w", kind, err)
	}
	if h != nil {
		next = h.Get("x-ms-continuation")
	}
	return objs, next, nil
}

// all reads every page of a kind.
func (t *Target) all(ctx context.Context, kind Kind, hub string) ([]Object, error) {
	var out []Object
	cont := ""
	for {
		objs, next, err := t.page(ctx, kind, hub, cont)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
		if next == "" || next == cont {
			return out, nil
		}
		cont = next
	}
}

// registrations reads every registration state of an enrollment group.
func (t *Target) registrations(ctx context.Context, groupID string) ([]Object, error) {
	var out []Object
	cont := ""
	for {
		hdr := map[string]string{"x-ms-continuation": cont, "x-ms-max-item-count": strconv.Itoa(t.pageSize())}
		b, h, err := t.do(ctx, Group, "", http.MethodPost, "/registrations/"+seg(groupID)+"/query", hdr, nil)
		if err != nil {
			return nil, err
		}
		var objs []Object
		if err := json.Unmarshal(b, &objs); err != nil {
			return nil, fmt.Errorf("registration query: %w", err)
		}
		out = append(out, objs...)
		next := h.Get("x-ms-continuation")
		if next == "" || next == cont {
			return out, nil
		}
		cont = next
	}
}

// idOf is an object's ID.
func idOf(kind Kind, o Object) string {
	s, _ := o[idMember[kind]].(string)
	return s
}

// etagOf is the If-Match that replaces or deletes exactly o: its etag
// (a hub device's quoted, as IoT Hub's ETag header is).
func etagOf(kind Kind, o Object) string {
	s, _ := o["etag"].(string)
	if d, ok := o["deviceEtag"].(string); ok && kind == HubDevice {
		s = d // o is a twin (a query's): its etag is the twin's
	}
	if s == "" {
		return "*"
	}
	if kind == HubDevice && !strings.HasPrefix(s, `"`) {
		return `"` + s + `"`
	}
	return s
}

// symmetric reports whether an object's attestation is a symmetric key.
func symmetric(o Object) bool {
	att, _ := o["attestation"].(Object)
	typ, _ := att["type"].(string)
	return strings.EqualFold(typ, "symmetricKey")
}

// errorText is the service's message of err (or err's text).
func errorText(err error) string {
	if e, ok := errors.AsType[*client.Error](err); ok && e.Body.Message != "" {
		return fmt.Sprintf("%s (HTTP %d)", e.Body.Message, e.StatusCode)
	}
	return err.Error()
}

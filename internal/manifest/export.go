package manifest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/opendps/dps/internal/client"
)

// An export is JSON lines: one object a line, its kind first
// ({"kind":"enrollment",…}), in the service API's shape otherwise:
//
//   - certificate: a CA certificate {name, certificate, isVerified, …};
//   - group, enrollment: with their symmetric keys (read through the
//     attestation mechanism API), an enrollment without its
//     registrationState;
//   - registration: a registration state, with the enrollmentGroupId of
//     a group's (import skips them: the service API cannot create one);
//   - hubDevice: a built-in hub's device with its keys, its hub and its
//     twin's tags and desired properties {"hub":…,"twin":{…},…}.
//
// It holds every key: it is a backup, to keep as secret as the service.

// ExportCounts are how many objects of each kind an export wrote, and
// what it could not read.
type ExportCounts struct {
	Objects map[Kind]int
	Notes   []string
}

// Export writes every object t holds as JSON lines, and the devices and
// twins of the hubs t.Hubs has clients of. progress, when set, is called
// after each object.
func Export(ctx context.Context, t *Target, w io.Writer, progress func(Kind, int)) (ExportCounts, error) {
	out := ExportCounts{Objects: map[Kind]int{}}
	bw := bufio.NewWriter(w)
	line := func(kind Kind, extra Object, o Object) error {
		if err := writeLine(bw, kind, extra, o); err != nil {
			return err
		}
		out.Objects[kind]++
		if progress != nil {
			progress(kind, out.Objects[kind])
		}
		return nil
	}
	certs, _, err := t.page(ctx, Certificate, "", "")
	switch st := client.StatusOf(err); {
	case st == http.StatusNotFound || st == http.StatusMethodNotAllowed:
		out.Notes = append(out.Notes, "CA certificates: the service has no certificates API (Azure DPS keeps them in Azure Resource Manager); none exported")
	case err != nil:
		return out, fmt.Errorf("list the CA certificates: %s", errorText(err))
	}
	for _, c := range certs {
		if err := line(Certificate, nil, c); err != nil {
			return out, err
		}
	}
	for _, kind := range []Kind{Group, Enrollment} {
		cont := ""
		for {
			objs, next, err := t.page(ctx, kind, "", cont)
			if err != nil {
				return out, fmt.Errorf("list the %ss: %s", kind, errorText(err))
			}
			for _, o := range objs {
				id := idOf(kind, o)
				if symmetric(o) {
					att, err := t.keys(ctx, kind, id)
					if err != nil {
						return out, fmt.Errorf("read the keys of %s %s: %s", kind, id, errorText(err))
					}
					o["attestation"] = att
				}
				reg, _ := o["registrationState"].(Object)
				delete(o, "registrationState")
				if err := line(kind, nil, o); err != nil {
					return out, err
				}
				if reg != nil {
					if err := line(Registration, nil, reg); err != nil {
						return out, err
					}
				}
				if kind == Group {
					regs, err := t.registrations(ctx, id)
					if err != nil {
						return out, fmt.Errorf("list the registrations of group %s: %s", id, errorText(err))
					}
					for _, r := range regs {
						if err := line(Registration, Object{"enrollmentGroupId": id}, r); err != nil {
							return out, err
						}
					}
				}
			}
			if next == "" || next == cont {
				break
			}
			cont = next
		}
	}
	for _, hub := range slices.Sorted(maps.Keys(t.Hubs)) {
		name := t.Hubs[hub].HostName
		cont := ""
		for {
			twins, next, err := t.page(ctx, HubDevice, hub, cont)
			if err != nil {
				return out, fmt.Errorf("list the devices of hub %s: %s", name, errorText(err))
			}
			for _, tw := range twins {
				id := idOf(HubDevice, tw)
				dev, err := t.get(ctx, HubDevice, hub, id)
				if err != nil {
					return out, fmt.Errorf("read device %s of hub %s: %s", id, name, errorText(err))
				}
				if dev == nil {
					continue // deleted in between
				}
				dev["twin"] = initialTwin(tw)
				if err := line(HubDevice, Object{"hub": name}, dev); err != nil {
					return out, err
				}
			}
			if next == "" || next == cont {
				break
			}
			cont = next
		}
	}
	return out, bw.Flush()
}

// initialTwin is what of a twin a device is created with: its tags and
// desired properties, without the service's $metadata and $version.
func initialTwin(tw Object) Object {
	out := Object{}
	if tags := userProps(tw["tags"]); tags != nil {
		out["tags"] = tags
	}
	props, _ := tw["properties"].(Object)
	if desired := userProps(props["desired"]); desired != nil {
		out["properties"] = Object{"desired": desired}
	}
	return out
}

func userProps(v any) Object {
	m, _ := v.(Object)
	out := Object{}
	for k, e := range m {
		if !strings.HasPrefix(k, "$") {
			out[k] = e
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// writeLine writes {"kind":…, extra…, o…} as one line.
func writeLine(w io.Writer, kind Kind, extra, o Object) error {
	var b bytes.Buffer
	b.WriteString(`{"kind":`)
	k, _ := json.Marshal(kind)
	b.Write(k)
	for i, m := range []Object{extra, o} {
		for _, key := range slices.Sorted(maps.Keys(m)) {
			if key == "kind" || i == 1 && extra[key] != nil {
				continue
			}
			kb, _ := json.Marshal(key)
			vb, err := marshal(m[key])
			if err != nil {
				return err
			}
			b.WriteByte(',')
			b.Write(kb)
			b.WriteByte(':')
			b.Write(vb)
		}
	}
	b.WriteString("}\n")
	_, err := w.Write(b.Bytes())
	return err
}

func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

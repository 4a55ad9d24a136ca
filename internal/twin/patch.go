package twin

import "time"

// parseEnvelope reads a service body or DPS's initial twin,
// {"tags":{…},"properties":{"desired":{…}}}, and validates both sections.
// tags or desired is nil when its member is absent or null. Other members
// (identity fields, properties.reported, which the service cannot write)
// are ignored. With orNull, an empty or null body is an empty envelope.
func parseEnvelope(body []byte, orNull bool) (tags, desired map[string]any, err error) {
	if orNull && (len(body) == 0 || string(body) == "null") {
		return nil, nil, nil
	}
	v, err := decode("the twin", body)
	if err != nil {
		return nil, nil, err
	}
	if v == nil && orNull {
		return nil, nil, nil
	}
	root, ok := v.(map[string]any)
	if !ok {
		return nil, nil, invalid("the twin must be a JSON object {\"tags\":{…},\"properties\":{\"desired\":{…}}}")
	}
	if tags, err = memberObject(root, "tags", "tags"); err != nil {
		return nil, nil, err
	}
	if tags != nil {
		if err := validate("tags", tags); err != nil {
			return nil, nil, err
		}
	}
	props, err := memberObject(root, "properties", "properties")
	if err != nil || props == nil {
		return tags, nil, err
	}
	if desired, err = memberObject(props, "desired", "properties.desired"); err != nil || desired == nil {
		return tags, nil, err
	}
	if desired, err = serviceDesired(desired); err != nil {
		return nil, nil, err
	}
	return tags, desired, nil
}

// PatchReported applies a device's reported-properties patch (the body of
// $iothub/twin/PATCH/properties/reported/) and returns the new reported
// $version.
func (t *Twin) PatchReported(patch []byte, now time.Time) (int64, error) {
	const what = "reported properties"
	p, err := decodeObject("the "+what+" patch", patch)
	if err != nil {
		return 0, err
	}
	if err := validate(what, p); err != nil {
		return 0, err
	}
	props, m := mergeObject(t.reported.props, t.reported.meta, p, stampAt(now, 0))
	if err := checkSize(what, props, sizeOf(t.reported.props), MaxReportedSize); err != nil {
		return 0, err
	}
	t.reported = section{version: t.reported.version + 1, props: props, meta: m}
	t.version++
	return t.reported.version, nil
}

// PatchDesired merges a service's patch into the desired properties. It
// returns the desired-property notification for the device: the patch as
// applied plus "$version".
func (t *Twin) PatchDesired(patch []byte, now time.Time) ([]byte, error) {
	p, err := decodeObject("the desired properties patch", patch)
	if err != nil {
		return nil, err
	}
	if p, err = serviceDesired(p); err != nil {
		return nil, err
	}
	return t.apply(nil, p, false, now)
}

// ReplaceDesired replaces the desired properties with doc (null members
// dropped) and returns the notification for the device: the new desired
// properties plus "$version".
func (t *Twin) ReplaceDesired(doc []byte, now time.Time) ([]byte, error) {
	p, err := decodeObject("the desired properties", doc)
	if err != nil {
		return nil, err
	}
	if p, err = serviceDesired(p); err != nil {
		return nil, err
	}
	return t.apply(nil, p, true, now)
}

// PatchTags merges a service's patch into the tags.
func (t *Twin) PatchTags(patch []byte) error {
	p, err := decodeObject("the tags patch", patch)
	if err != nil {
		return err
	}
	if err := validate("tags", p); err != nil {
		return err
	}
	_, err = t.apply(p, nil, false, time.Time{})
	return err
}

// ReplaceTags replaces the tags with doc (null members dropped).
func (t *Twin) ReplaceTags(doc []byte) error {
	p, err := decodeObject("the tags", doc)
	if err != nil {
		return err
	}
	if err := validate("tags", p); err != nil {
		return err
	}
	_, err = t.apply(p, nil, true, time.Time{})
	return err
}

// Update applies a service PATCH of the twin,
// {"tags":{…},"properties":{"desired":{…}}}: each section present is
// merged, in one operation. It returns the desired-property notification
// for the device, or nil when desired was not in the body. A body that
// names neither section changes nothing.
func (t *Twin) Update(body []byte, now time.Time) ([]byte, error) {
	tags, desired, err := parseEnvelope(body, false)
	if err != nil || tags == nil && desired == nil {
		return nil, err
	}
	return t.apply(tags, desired, false, now)
}

// Replace applies a service PUT of the twin: tags and desired properties
// are replaced by the body's (an absent or null member empties its
// section). It returns the notification for the device: the new desired
// properties plus "$version".
func (t *Twin) Replace(body []byte, now time.Time) ([]byte, error) {
	tags, desired, err := parseEnvelope(body, false)
	if err != nil {
		return nil, err
	}
	if tags == nil {
		tags = map[string]any{}
	}
	if desired == nil {
		desired = map[string]any{}
	}
	return t.apply(tags, desired, true, now)
}

// apply writes validated tags and desired patches (nil: untouched), merged
// or, with replace, as replacements, and counts one operation. It returns
// the desired notification when desired was written.
func (t *Twin) apply(tags, desired map[string]any, replace bool, now time.Time) ([]byte, error) {
	newTags := t.tags
	if tags != nil {
		if replace {
			newTags = withoutNulls(tags)
		} else {
			newTags, _ = mergeObject(t.tags, nil, tags, nil)
		}
		if err := checkSize("tags", newTags, sizeOf(t.tags), MaxTagsSize); err != nil {
			return nil, err
		}
	}
	newDesired := t.desired
	var note []byte
	if desired != nil {
		st := stampAt(now, t.desired.version+1)
		newDesired.version = st.ver
		if replace {
			newDesired.props = withoutNulls(desired)
			newDesired.meta = fresh(newDesired.props, st)
		} else {
			newDesired.props, newDesired.meta = mergeObject(t.desired.props, t.desired.meta, desired, st)
		}
		if err := checkSize("desired properties", newDesired.props, sizeOf(t.desired.props), MaxDesiredSize); err != nil {
			return nil, err
		}
		shown := desired
		if replace {
			shown = newDesired.props
		}
		note = appendSection(nil, shown, nil, st.ver)
	}
	t.tags, t.desired = newTags, newDesired
	t.version++
	return note, nil
}

// mergeObject merges patch into old and returns the result, sharing the
// untouched members of old but never modifying it. With st, it also
// returns the merged metadata (om may be nil: no metadata yet).
func mergeObject(old map[string]any, om *meta, patch map[string]any, st *stamp) (map[string]any, *meta) {
	out := make(map[string]any, len(old)+len(patch))
	for k, v := range old {
		out[k] = v
	}
	var kids map[string]*meta
	if st != nil {
		kids = make(map[string]*meta, len(out)+len(patch))
		if om != nil {
			for k, m := range om.kids {
				kids[k] = m
			}
		}
	}
	for k, pv := range patch {
		switch pv := pv.(type) {
		case nil:
			delete(out, k)
			delete(kids, k)
		case map[string]any:
			if ov, ok := out[k].(map[string]any); ok {
				var okm *meta
				if om != nil {
					okm = om.kids[k]
				}
				nv, nm := mergeObject(ov, okm, pv, st)
				out[k] = nv
				if st != nil {
					kids[k] = nm
				}
				continue
			}
			nv := withoutNulls(pv)
			out[k] = nv
			if st != nil {
				kids[k] = fresh(nv, st)
			}
		default:
			out[k] = pv
			if st != nil {
				kids[k] = &meta{at: st.at, ver: st.ver}
			}
		}
	}
	if st == nil {
		return out, nil
	}
	if len(kids) == 0 {
		kids = nil
	}
	return out, &meta{at: st.at, ver: st.ver, kids: kids}
}

// fresh is the metadata of a value written whole by one write.
func fresh(v map[string]any, st *stamp) *meta {
	m := &meta{at: st.at, ver: st.ver}
	if len(v) == 0 {
		return m
	}
	m.kids = make(map[string]*meta, len(v))
	for k, x := range v {
		if o, ok := x.(map[string]any); ok {
			m.kids[k] = fresh(o, st)
		} else {
			m.kids[k] = &meta{at: st.at, ver: st.ver}
		}
	}
	return m
}

// withoutNulls returns m without its null members, at every level of
// objects (arrays contain no null: validate refuses them). It returns m
// itself when there is none.
func withoutNulls(m map[string]any) map[string]any {
	out, _ := dropNulls(m)
	return out
}

func dropNulls(m map[string]any) (map[string]any, bool) {
	var out map[string]any
	for k, v := range m {
		var nv any
		switch x := v.(type) {
		case nil:
		case map[string]any:
			o, changed := dropNulls(x)
			if !changed {
				continue
			}
			nv = o
		default:
			continue
		}
		if out == nil {
			out = make(map[string]any, len(m))
			for k2, v2 := range m {
				out[k2] = v2
			}
		}
		if nv == nil {
			delete(out, k)
		} else {
			out[k] = nv
		}
	}
	if out == nil {
		return m, false
	}
	return out, true
}

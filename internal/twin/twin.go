// Package twin is the device twin of dps's built-in IoT hub: a pure,
// storage-agnostic model of one device's tags, desired and reported
// properties, with IoT Hub's versions, metadata, patch semantics and limits.
//
// # Versions
//
// The desired and the reported properties have their own $version, both 1
// for a new twin, also when DPS's initial twin sets desired properties (the
// initial twin is part of the creation, not an update). Every accepted
// write of a section adds one to its $version, including a patch that
// changes no value ({} or deleting an absent member). The twin version
// starts at 2 and adds one per accepted operation of any kind (a service
// update of tags and desired together counts once; one that names
// neither section is none): Azure reports version 2 for a new twin whose
// sections are both at $version 1 (the DeviceCreated event), and version =
// desired $version + reported $version for twins whose tags never changed.
//
// # Patches
//
// A patch is merged as IoT Hub does: an object member merges recursively
// into an existing object, null deletes the member, anything else (arrays
// included) replaces it. A replacement document (service PUT, DPS's initial
// twin) drops null members. Key and value rules follow IoT Hub's documented
// limits (see the Max constants); keys may not contain '.', '$', space or
// C0/C1 control characters, so a device's "$version" in a reported patch is
// refused, while the top-level "$version" and "$metadata" members that the
// service SDKs send back after reading a twin are ignored in desired
// properties. Arrays may not contain null, nor objects with null members.
// An operation that fails changes nothing. Errors are *dps.Error of Kind
// dps.KindInvalid: dps.CodeFormatError (IoT Hub's IotHubFormatError) when
// the body is not JSON, dps.CodeInvalid (IoT Hub's ArgumentInvalid, 400004)
// when it breaks a rule.
//
// # Metadata
//
// Every object and leaf of the desired and reported properties, and each
// section's root, carries $lastUpdated, and in desired also
// $lastUpdatedVersion (the desired $version that wrote it). A write stamps
// every member it names and the objects on their path; a deleted member's
// parent records the deletion. Times are kept to 100 ns, as Azure's clock
// ticks, and written as Azure writes them (Json.NET): UTC with up to 7
// fractional digits, trailing zeros dropped. Arrays are leaves. Tags have no
// metadata.
//
// A Twin is a value: operations never modify maps in place, so a copy keeps
// its content whatever happens to the original.
package twin

import (
	"encoding/json"
	"time"
)

// IoT Hub's twin limits.
const (
	MaxTagsSize     = 8 * 1024  // size of tags (key and value bytes, numbers 8, booleans 4)
	MaxDesiredSize  = 32 * 1024 // size of the desired properties, without $version and $metadata
	MaxReportedSize = 32 * 1024 // size of the reported properties, without $version and $metadata
	MaxKeyLength    = 1024      // bytes of UTF-8 in a key
	MaxStringLength = 4096      // bytes of UTF-8 in a string value
	MaxDepth        = 10        // levels of objects and arrays below a section's root
	MaxInteger      = 1<<52 - 1 // largest integer value
	MinInteger      = -1 << 52  // smallest integer value
)

// tick is the resolution of the times Azure records.
const tick = 100 * time.Nanosecond

// Twin is one device's twin. Use New or UnmarshalJSON; the zero Twin is
// not valid.
type Twin struct {
	version  int64
	tags     map[string]any
	desired  section
	reported section
}

// section is the desired or the reported properties.
type section struct {
	version int64
	props   map[string]any
	meta    *meta // never nil; mirrors props
}

// meta is the metadata of one member (or of a section's root): when it was
// last written and, in desired, by which $version. kids mirrors the
// members of an object value; it is nil for leaves and empty objects.
type meta struct {
	at   time.Time
	ver  int64 // 0 in reported
	kids map[string]*meta
}

// stamp is what a write records in the metadata it touches.
type stamp struct {
	at  time.Time
	ver int64
}

func stampAt(now time.Time, ver int64) *stamp {
	return &stamp{at: now.UTC().Truncate(tick), ver: ver}
}

// New returns the twin of a new device identity. initial is DPS's initial
// twin, {"tags":{…},"properties":{"desired":{…}}}; either member may be
// absent or null, and so may initial itself. Other members are ignored.
func New(initial json.RawMessage, now time.Time) (Twin, error) {
	tags, desired, err := parseEnvelope(initial, true)
	if err != nil {
		return Twin{}, err
	}
	if tags == nil {
		tags = map[string]any{}
	}
	if desired == nil {
		desired = map[string]any{}
	}
	if err := checkSize("tags", tags, 0, MaxTagsSize); err != nil {
		return Twin{}, err
	}
	if err := checkSize("desired properties", desired, 0, MaxDesiredSize); err != nil {
		return Twin{}, err
	}
	t := Twin{
		version:  2,
		tags:     withoutNulls(tags),
		desired:  section{version: 1},
		reported: section{version: 1, props: map[string]any{}, meta: &meta{at: stampAt(now, 0).at}},
	}
	t.desired.props = withoutNulls(desired)
	if len(t.desired.props) == 0 {
		t.desired.meta = &meta{at: t.reported.meta.at}
	} else {
		t.desired.meta = fresh(t.desired.props, stampAt(now, 1))
	}
	return t, nil
}

// Version is the twin version: it grows with every accepted operation.
func (t Twin) Version() int64 { return t.version }

// DesiredVersion is the $version of the desired properties.
func (t Twin) DesiredVersion() int64 { return t.desired.version }

// ReportedVersion is the $version of the reported properties.
func (t Twin) ReportedVersion() int64 { return t.reported.version }

// Package docs is the stored form of the domain, owned by the stores: one
// explicitly tagged document struct per record type, converted to and from
// the dps values, so a domain field renamed or retyped does not change (or
// silently lose) what is on disk. It also holds what both stores repeat:
// the ETag rules, continuation tokens, the JSON encoding and the prune
// batch size.
//
// # Format versions
//
// A document carries its format version in "v". Version 1 is the current
// format (camelCase names, see the struct tags). A document without "v" is
// in the format of the releases before it: json.Marshal of the dps struct
// itself, keyed by Go field names. Decoding accepts both (the previous
// shape is frozen in legacy.go), and each store's migration rewrites every
// document of an existing database in the current format once; encoding
// always writes the current format. A document of a newer version than
// this release knows is refused rather than read with fields missing.
// Kinds whose table came after format 1 (hub messages) have no previous
// format: a document of theirs without "v" is refused too.
//
// # Raw JSON members
//
// Raw JSON members (payloads, twins, device information, extra members)
// are stored compacted, characters as sent (& < > unescaped), and a nil one
// is stored as null and read back as the four bytes null (so is a member
// missing from a document), exactly as the previous format did: the wire
// layer renders what the store returns (for example "initialTwin":null),
// so changing that would change the answers clients see.
package docs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opendps/dps/internal/wire"
)

// Version is the document format this release writes.
const Version = 1

// marshal is the project's one JSON encoding (no HTML escaping, so
// payloads keep & < > as sent).
var marshal = wire.Marshal

// decode reads a stored document in any format this release knows: the
// current one into cur (whose version field is version), or the previous
// releases' (no version) into old, reporting which. A current document is
// decoded once; only a document without a version is decoded again in the
// old shape (its first, partial decode is discarded).
func decode[C, L any](b []byte, cur *C, version *int, old *L) (legacy bool, err error) {
	err = json.Unmarshal(b, cur)
	switch {
	case *version == Version:
		return false, err
	case *version != 0:
		return false, newerFormat(*version)
	}
	if err := json.Unmarshal(b, old); err != nil {
		return false, err
	}
	return true, nil
}

// decodeCurrent reads a stored document of a kind that has no previous
// format (its table was created in the current one) into cur, whose
// version field is version: a document without a version is refused like
// one of a newer format, not read as if it were current.
func decodeCurrent[C any](b []byte, cur *C, version *int) error {
	err := json.Unmarshal(b, cur)
	switch {
	case *version == Version:
		return err
	case *version != 0:
		return newerFormat(*version)
	case err != nil:
		return err
	}
	return errors.New("document has no format version (documents of this kind have only the current format)")
}

func newerFormat(v int) error {
	return fmt.Errorf("document format %d is not one this release reads (it writes %d): written by a newer release?", v, Version)
}

// Kind names a type of stored document.
type Kind string

const (
	KindEnrollment    Kind = "enrollment"
	KindGroup         Kind = "group"
	KindRegistration  Kind = "registration"
	KindOperation     Kind = "operation"
	KindHubDevice     Kind = "hubDevice"
	KindCACertificate Kind = "caCertificate"
	KindChallenge     Kind = "challenge"
	KindMessage       Kind = "message"
	// KindRegistrationEvent: an entry of the registration-events feed.
	KindRegistrationEvent Kind = "registrationEvent"
)

// Table is a table of documents, the same in both stores: its name, the
// columns of its primary key and the kind of document in its doc column.
// Legacy reports whether the table existed before format 1: only such a
// table may hold documents of the previous format, and only such tables
// exist when the migration that introduced format 1 rewrites them (tables
// added after it are created by later migrations, in the current format).
type Table struct {
	Name   string
	Key    []string
	Kind   Kind
	Legacy bool
}

// Tables lists every table holding documents.
func Tables() []Table {
	return []Table{
		{"enrollments", []string{"id"}, KindEnrollment, true},
		{"groups", []string{"id"}, KindGroup, true},
		{"registrations", []string{"id"}, KindRegistration, true},
		{"operations", []string{"id"}, KindOperation, true},
		{"hub_devices", []string{"hub", "device_id"}, KindHubDevice, true},
		{"ca_certificates", []string{"id"}, KindCACertificate, true},
		{"tpm_challenges", []string{"id"}, KindChallenge, true},
		{"hub_messages", []string{"hub", "seq"}, KindMessage, false},
		{"hub_route_dead_letters", []string{"hub", "route", "seq"}, KindMessage, false},
		{"registration_events", []string{"seq"}, KindRegistrationEvent, false},
	}
}

// Upgrade returns a stored document of kind k in the current format, and
// whether that differs from doc (false: it already was current). The
// migrations call it for every document of a database.
func Upgrade(k Kind, doc []byte) ([]byte, bool, error) {
	var out []byte
	var err error
	switch k {
	case KindEnrollment:
		out, err = reencode(doc, DecodeEnrollment, EncodeEnrollment)
	case KindGroup:
		out, err = reencode(doc, DecodeGroup, EncodeGroup)
	case KindRegistration:
		out, err = reencode(doc, DecodeRegistration, EncodeRegistration)
	case KindOperation:
		out, err = reencode(doc, DecodeOperation, EncodeOperation)
	case KindHubDevice:
		out, err = reencode(doc, DecodeHubDevice, EncodeHubDevice)
	case KindCACertificate:
		out, err = reencode(doc, DecodeCACertificate, EncodeCACertificate)
	case KindChallenge:
		out, err = reencode(doc, DecodeChallenge, EncodeChallenge)
	case KindMessage:
		out, err = reencode(doc, DecodeMessage, EncodeMessage)
	case KindRegistrationEvent:
		out, err = reencode(doc, DecodeRegistrationEvent, EncodeRegistrationEvent)
	default:
		return nil, false, fmt.Errorf("unknown document kind %q", k)
	}
	if err != nil {
		return nil, false, err
	}
	if bytes.Equal(out, doc) {
		return doc, false, nil
	}
	return out, true, nil
}

func reencode[T any](doc []byte, dec func([]byte) (T, error), enc func(T) ([]byte, error)) ([]byte, error) {
	v, err := dec(doc)
	if err != nil {
		return nil, err
	}
	return enc(v)
}

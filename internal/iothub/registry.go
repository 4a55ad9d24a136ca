package iothub

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/twin"
)

// The device identity registry of the hub's service API: create, replace,
// read, delete and list device identities, bulk operations and
// statistics.
//
// IoT Hub's device IDs are case-sensitive, but the stores fold them (one
// record per folded ID): a create whose ID exists in another case is
// refused as DeviceAlreadyExists, and every other operation finds an
// identity only by its exact ID.
//
// A create writes only if the device has no record (dps.ReplacesNothing:
// of two concurrent creates one gets 409); replaces are compare-and-set. A
// delete with an ETag reads the record before it deletes: it may remove a
// record replaced between its check and its write.

// RegistryStore is the store's side of the registry beyond one record
// (Store): deleting, listing and counting a hub's identities.
type RegistryStore interface {
	// DeleteHubDevice removes a device identity and its C2D queue;
	// absent is not an error.
	DeleteHubDevice(ctx context.Context, hub, deviceID string) error
	// ListHubDevices returns up to limit identities whose folded ID
	// sorts after after's, in folded-ID order.
	ListHubDevices(ctx context.Context, hub, after string, limit int) ([]dps.HubDevice, error)
	// CountHubDevices counts a hub's identities and the disabled ones.
	CountHubDevices(ctx context.Context, hub string) (total, disabled int, err error)
}

// Device is a device identity as the registry API shows it (and takes
// it: CreateDevice and UpdateDevice read DeviceID, Status, StatusReason,
// Auth and IoTEdge; the other members are the hub's).
type Device struct {
	DeviceID     string
	GenerationID string
	// ETag is the identity's ETag (unquoted, opaque), the twin's
	// DeviceETag: it changes with the generation, status, status reason,
	// authentication and capabilities, not with twin writes.
	ETag         string
	Status       dps.DeviceStatus // enabled or disabled; "" on input reads as enabled
	StatusReason string
	Auth         dps.HubAuth
	IoTEdge      bool
	// Connected reports whether the device has a connection on this
	// node, since ConnectedSince (a connection on another node is not
	// seen).
	Connected      bool
	ConnectedSince time.Time
	// CloudToDeviceMessages is how many C2D messages wait for the device.
	CloudToDeviceMessages int
}

// DeviceScope is an IoT Edge device's scope,
// ms-azure-iot-edge://{id}-{generationId}; "" for other devices.
func (d Device) DeviceScope() string {
	if !d.IoTEdge {
		return ""
	}
	return "ms-azure-iot-edge://" + d.DeviceID + "-" + d.GenerationID
}

// MaxListDevices is the most identities one ListDevices returns (IoT
// Hub's top: a value outside 1–1000 is 1000).
const MaxListDevices = 1000

// MaxBulkDevices is the most items one Bulk call takes.
const MaxBulkDevices = 100

// MaxDeviceIDLen and MaxStatusReasonLen are IoT Hub's limits.
const (
	MaxDeviceIDLen     = 128
	MaxStatusReasonLen = 128
)

// ValidateDeviceID checks an IoT Hub device ID: 1–128 ASCII letters,
// digits and - . + % _ # * ? ! ( ) , = @ $ '.
func ValidateDeviceID(id string) error {
	if id == "" || len(id) > MaxDeviceIDLen {
		return invalid("The device ID must be 1-%d characters.", MaxDeviceIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-.+%_#*?!(),=@$'", c) >= 0 {
			continue
		}
		return invalid("The device ID %q may contain only ASCII letters, digits and - . + %% _ # * ? ! ( ) , = @ $ '.", id)
	}
	return nil
}

func invalid(format string, args ...any) *dps.Error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// checkDevice validates an identity as a create or replace gives it and
// returns it normalised: status enabled when "", keys generated for a sas
// identity without them, members of other authentication types dropped.
func checkDevice(d Device) (Device, error) {
	if err := ValidateDeviceID(d.DeviceID); err != nil {
		return d, err
	}
	switch d.Status {
	case "":
		d.Status = dps.DeviceEnabled
	case dps.DeviceEnabled, dps.DeviceDisabled:
	default:
		return d, invalid("The status %q is not enabled or disabled.", d.Status)
	}
	if len(d.StatusReason) > MaxStatusReasonLen {
		return d, invalid("The status reason is over %d characters.", MaxStatusReasonLen)
	}
	a := d.Auth
	switch a.Type {
	case dps.HubAuthSAS, "":
		a = dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: a.PrimaryKey, SecondaryKey: a.SecondaryKey}
		for _, k := range []*dps.Key{&a.PrimaryKey, &a.SecondaryKey} {
			if *k == "" {
				*k = newDeviceKey()
				continue
			}
			b, err := base64.StdEncoding.DecodeString(string(*k))
			if err != nil || len(b) < 16 || len(b) > 64 {
				return d, invalid("A symmetric key must be the base64 of 16 to 64 bytes.")
			}
		}
	case dps.HubAuthSelfSigned:
		a = dps.HubAuth{Type: a.Type, PrimaryThumbprint: a.PrimaryThumbprint, SecondaryThumbprint: a.SecondaryThumbprint}
		if a.PrimaryThumbprint == "" {
			return d, invalid("A selfSigned identity needs a primary thumbprint.")
		}
		for _, tp := range []string{a.PrimaryThumbprint, a.SecondaryThumbprint} {
			if _, err := hex.DecodeString(tp); tp != "" && (err != nil || len(tp) != 40 && len(tp) != 64) {
				return d, invalid("A thumbprint must be 40 or 64 hexadecimal digits (SHA-1 or SHA-256).")
			}
		}
	case dps.HubAuthCA, dps.HubAuthNone:
		a = dps.HubAuth{Type: a.Type}
	default:
		return d, invalid("The authentication type %q is not sas, selfSigned, certificateAuthority or none.", a.Type)
	}
	d.Auth = a
	return d, nil
}

// newDeviceKey is a symmetric key as IoT Hub generates them: 32 random
// bytes, base64.
func newDeviceKey() dps.Key {
	b := make([]byte, 32)
	rand.Read(b)
	return dps.Key(base64.StdEncoding.EncodeToString(b))
}

func deviceExists(deviceID string, other string) error {
	msg := "A device with ID " + strconv.Quote(deviceID) + " is already registered."
	if other != deviceID {
		msg = "The device ID " + strconv.Quote(deviceID) + " is taken by " + strconv.Quote(other) +
			": dps's built-in hub keeps device IDs that differ only in case apart from each other no more than one per folded ID."
	}
	return &dps.Error{Kind: dps.KindConflict, Code: dps.CodeDeviceAlreadyExists, Message: msg}
}

func etagMismatch() error {
	return &dps.Error{Kind: dps.KindPrecondition, Code: dps.CodePreconditionFailed,
		Message: "The device's etag does not match If-Match: the device changed since it was read."}
}

// CreateDevice creates a device identity: a new generation, an empty live
// twin, the status given (enabled when ""). A sas identity without keys
// gets two generated ones.
//
// Errors: KindInvalid for an ID, status or authentication IoT Hub refuses;
// KindConflict (dps.CodeDeviceAlreadyExists) when the ID exists, in any
// case.
func (s *Service) CreateDevice(ctx context.Context, hub string, d Device) (Device, error) {
	return s.createDevice(ctx, hub, d, nil)
}

// createDevice creates an identity whose twin setup (nil: empty) may
// change; a bulk create gives it tags and properties.
func (s *Service) createDevice(ctx context.Context, hub string, d Device, setup func(*twin.Twin, time.Time) error) (Device, error) {
	d, err := checkDevice(d)
	if err != nil {
		return d, err
	}
	switch cur, err := s.o.Store.HubDevice(ctx, hub, d.DeviceID); {
	case err == nil:
		return Device{}, deviceExists(d.DeviceID, cur.DeviceID)
	case dps.KindOf(err) != dps.KindNotFound:
		return Device{}, err
	}
	now := s.o.Now()
	t, err := twin.New(nil, now)
	if err == nil && setup != nil {
		err = setup(&t, now)
	}
	if err != nil {
		return Device{}, err
	}
	live, err := t.MarshalJSON()
	if err != nil {
		return Device{}, err
	}
	rec, err := s.o.Store.PutHubDevice(ctx, dps.HubDevice{Hub: hub, DeviceID: d.DeviceID, Auth: d.Auth, IoTEdge: d.IoTEdge,
		Status: d.Status, StatusReason: d.StatusReason, GenerationID: dps.NewGenerationID(now), LiveTwin: live, Updated: now.UTC(),
		Replaces: dps.ReplacesNothing}) // created only if still absent: a concurrent create wins, this one is 409
	if dps.KindOf(err) == dps.KindConflict {
		return Device{}, deviceExists(d.DeviceID, d.DeviceID)
	}
	if err != nil {
		return Device{}, err
	}
	// A connection of an earlier identity of this ID is not this one's.
	s.closeEverywhere(ctx, hub, rec.DeviceID, rec.GenerationID, dps.Errorf(dps.KindNotFound, "the device %s was created again", rec.DeviceID))
	s.DeviceCreated(ctx, rec) // the deviceLifecycle event
	return s.toDevice(ctx, hub, rec)
}

// UpdateDevice replaces a device identity's status, status reason,
// authentication and capabilities with d's (whole-object replace: a sas
// identity without keys gets new ones), keeping its generation and twin.
// ifMatch is the request's If-Match: "" or * (quoted or not) for any
// identity, else its ETag. Disabling the device closes its connection,
// on any node.
//
// Errors: KindInvalid as CreateDevice; KindNotFound for a device that is
// not on the hub; KindPrecondition (dps.CodePreconditionFailed) when
// ifMatch names another ETag.
func (s *Service) UpdateDevice(ctx context.Context, hub string, d Device, ifMatch string) (Device, error) {
	return s.replaceDevice(ctx, hub, d, ifMatch, nil)
}

// replaceDevice is UpdateDevice with a twin change (nil: none) made in
// the same write.
func (s *Service) replaceDevice(ctx context.Context, hub string, d Device, ifMatch string, setup func(*twin.Twin, time.Time) error) (Device, error) {
	d, err := checkDevice(d)
	if err != nil {
		return d, err
	}
	want, wildcard := parseIfMatch(ifMatch)
	for range casAttempts {
		cur, err := s.serviceDevice(ctx, hub, d.DeviceID)
		if err != nil {
			return Device{}, err
		}
		if !wildcard && deviceETag(cur) != want {
			return Device{}, etagMismatch()
		}
		next := cur
		next.Status, next.StatusReason, next.Auth, next.IoTEdge = d.Status, d.StatusReason, d.Auth, d.IoTEdge
		next.Replaces, next.TwinWrite, next.Updated = cur.ETag, dps.TwinKeep, s.o.Now().UTC()
		var note []byte
		var version int64
		if setup != nil {
			t, err := twin.Of(cur)
			if err != nil {
				return Device{}, err
			}
			before := t.DesiredVersion()
			if err := setup(&t, s.o.Now()); err != nil {
				return Device{}, err
			}
			if t.DesiredVersion() != before {
				note, version = t.DesiredDoc(), t.DesiredVersion()
			}
			if next.LiveTwin, err = t.MarshalJSON(); err != nil {
				return Device{}, err
			}
		}
		rec, err := s.o.Store.PutHubDevice(ctx, next)
		switch dps.KindOf(err) {
		case dps.KindConflict:
			continue // another write won; read again
		case dps.KindNotFound:
			return Device{}, deviceNotFound(d.DeviceID)
		}
		if err != nil {
			return Device{}, err
		}
		if !rec.Enabled() {
			s.closeEverywhere(ctx, hub, rec.DeviceID, "", dps.Errorf(dps.KindForbidden, "the device %s is disabled", rec.DeviceID))
			s.revokeIssued(ctx, hub, rec.DeviceID)
		} else if note != nil {
			s.notifyDesired(ctx, hub, rec.DeviceID, version, note)
		}
		return s.toDevice(ctx, hub, rec)
	}
	return Device{}, dps.Errorf(dps.KindConflict, "the device %s is being written too often", d.DeviceID)
}

// GetDevice returns a device identity. Errors: KindNotFound for a device
// that is not on the hub.
func (s *Service) GetDevice(ctx context.Context, hub, deviceID string) (Device, error) {
	d, err := s.serviceDevice(ctx, hub, deviceID)
	if err != nil {
		return Device{}, err
	}
	return s.toDevice(ctx, hub, d)
}

// DeleteDevice deletes a device identity, its twin and its C2D queue,
// and closes its connection on any node. ifMatch is UpdateDevice's.
//
// Errors: KindNotFound for a device that is not on the hub;
// KindPrecondition when ifMatch names another ETag.
func (s *Service) DeleteDevice(ctx context.Context, hub, deviceID, ifMatch string) error {
	reg, err := s.registryStore()
	if err != nil {
		return err
	}
	d, err := s.serviceDevice(ctx, hub, deviceID)
	if err != nil {
		return err
	}
	if want, wildcard := parseIfMatch(ifMatch); !wildcard && deviceETag(d) != want {
		return etagMismatch()
	}
	if err := reg.DeleteHubDevice(ctx, hub, d.DeviceID); err != nil {
		return err
	}
	s.closeEverywhere(ctx, hub, d.DeviceID, "", dps.Errorf(dps.KindNotFound, "the device %s was deleted", d.DeviceID))
	s.revokeIssued(ctx, hub, d.DeviceID)
	s.DeviceRemoved(ctx, d) // the deviceLifecycle event
	return nil
}

// ListDevices returns up to top identities of the hub (top outside
// 1–MaxListDevices is MaxListDevices), in folded-ID order.
func (s *Service) ListDevices(ctx context.Context, hub string, top int) ([]Device, error) {
	reg, err := s.registryStore()
	if err != nil {
		return nil, err
	}
	if top < 1 || top > MaxListDevices {
		top = MaxListDevices
	}
	recs, err := reg.ListHubDevices(ctx, hub, "", top)
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, len(recs))
	for _, r := range recs {
		d, err := s.toDevice(ctx, hub, r)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// RegistryStatistics counts a hub's device identities.
type RegistryStatistics struct {
	Total, Enabled, Disabled int
}

// Statistics counts the hub's device identities.
func (s *Service) Statistics(ctx context.Context, hub string) (RegistryStatistics, error) {
	reg, err := s.registryStore()
	if err != nil {
		return RegistryStatistics{}, err
	}
	total, disabled, err := reg.CountHubDevices(ctx, hub)
	if err != nil {
		return RegistryStatistics{}, err
	}
	return RegistryStatistics{Total: total, Enabled: total - disabled, Disabled: disabled}, nil
}

// ConnectedDevices counts the devices of the hub connected to this node
// (IoT Hub's connectedDeviceCount; the other nodes' connections are not
// counted).
func (s *Service) ConnectedDevices(hub string) int {
	prefix := strings.ToLower(hub) + "\x00"
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	n := 0
	for k := range s.conns.conns {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

func (s *Service) registryStore() (RegistryStore, error) {
	if s.o.Registry == nil {
		return nil, dps.Errorf(dps.KindUnavailable, "this hub's store cannot delete, list or count device identities")
	}
	return s.o.Registry, nil
}

// toDevice is the registry's view of a record.
func (s *Service) toDevice(ctx context.Context, hub string, r dps.HubDevice) (Device, error) {
	n, err := s.o.Store.CloudQueueDepth(ctx, hub, r.DeviceID, s.o.Now().UTC())
	if err != nil {
		return Device{}, err
	}
	d := Device{DeviceID: r.DeviceID, GenerationID: r.GenerationID, ETag: deviceETag(r), Status: status(r),
		StatusReason: r.StatusReason, Auth: r.Auth, IoTEdge: r.IoTEdge, CloudToDeviceMessages: n}
	if d.Auth.Type == "" {
		d.Auth.Type = dps.HubAuthNone
	}
	if a := s.conns.lookup(hub, r.DeviceID); a != nil {
		d.Connected, d.ConnectedSince = true, a.since
	}
	return d, nil
}

// Bulk import modes (ExportImportDevice.importMode), compared
// case-insensitively.
const (
	ImportCreate                    = "create"
	ImportUpdate                    = "update"
	ImportUpdateIfMatchETag         = "updateIfMatchETag"
	ImportCreateOrUpdate            = "createOrUpdate"
	ImportCreateOrUpdateIfMatchETag = "createOrUpdateIfMatchETag"
	ImportDelete                    = "delete"
	ImportDeleteIfMatchETag         = "deleteIfMatchETag"
	ImportUpdateTwin                = "updateTwin"
	ImportUpdateTwinIfMatchETag     = "updateTwinIfMatchETag"
)

var importModes = []string{ImportCreate, ImportUpdate, ImportUpdateIfMatchETag, ImportCreateOrUpdate, ImportCreateOrUpdateIfMatchETag,
	ImportDelete, ImportDeleteIfMatchETag, ImportUpdateTwin, ImportUpdateTwinIfMatchETag}

// ImportMode returns the canonical spelling of an import mode, and
// whether it is one.
func ImportMode(m string) (string, bool) {
	for _, k := range importModes {
		if strings.EqualFold(k, m) {
			return k, true
		}
	}
	return "", false
}

// BulkItem is one item of a bulk registry operation (ExportImportDevice).
type BulkItem struct {
	Mode   string // an import mode (ImportMode's spelling)
	Device Device // the identity (DeviceID, Status, StatusReason, Auth, IoTEdge)
	// ETag and TwinETag are the identity's and the twin's for the
	// IfMatchETag modes.
	ETag, TwinETag string
	// Tags, Desired and Reported are the twin's sections (nil: absent):
	// a create starts the twin with them (reported included, as the
	// C# SDK's AddDeviceWithTwinAsync writes it); an update replaces tags
	// and desired properties given; updateTwin replaces both.
	Tags, Desired, Reported json.RawMessage
}

// BulkFailure is an item that failed: its device, mode and error.
type BulkFailure struct {
	DeviceID string
	Mode     string
	Err      error
}

// Bulk runs each item (1–MaxBulkDevices) in order and returns the items
// that failed; the others took effect.
//
// Errors: KindInvalid for no items, too many or an unknown import mode
// (nothing is done).
func (s *Service) Bulk(ctx context.Context, hub string, items []BulkItem) ([]BulkFailure, error) {
	if len(items) == 0 || len(items) > MaxBulkDevices {
		return nil, invalid("A bulk registry operation takes 1 to %d devices, not %d.", MaxBulkDevices, len(items))
	}
	for i := range items {
		m, ok := ImportMode(items[i].Mode)
		if !ok {
			return nil, invalid("The import mode %q of device %q is not one of %s.", items[i].Mode, items[i].Device.DeviceID, strings.Join(importModes, ", "))
		}
		items[i].Mode = m
	}
	var failed []BulkFailure
	for _, it := range items {
		if err := s.bulkItem(ctx, hub, it); err != nil {
			if dps.KindOf(err) == dps.KindInternal || dps.KindOf(err) == dps.KindUnavailable {
				return nil, err // the store failed: the caller retries the whole call
			}
			failed = append(failed, BulkFailure{DeviceID: it.Device.DeviceID, Mode: it.Mode, Err: err})
		}
	}
	return failed, nil
}

func (s *Service) bulkItem(ctx context.Context, hub string, it BulkItem) error {
	ifMatch := "*"
	if strings.HasSuffix(it.Mode, "IfMatchETag") {
		ifMatch = it.ETag
		if strings.HasPrefix(it.Mode, "updateTwin") {
			ifMatch = it.TwinETag
		}
		if strings.TrimSpace(ifMatch) == "" {
			return invalid("The import mode %s needs an eTag.", it.Mode)
		}
	}
	envelope := func() []byte {
		b, _ := json.Marshal(struct {
			Tags       json.RawMessage `json:"tags,omitempty"`
			Properties struct {
				Desired json.RawMessage `json:"desired,omitempty"`
			} `json:"properties"`
		}{Tags: it.Tags, Properties: struct {
			Desired json.RawMessage `json:"desired,omitempty"`
		}{it.Desired}})
		return b
	}
	create := func(t *twin.Twin, now time.Time) error {
		if it.Tags == nil && it.Desired == nil && it.Reported == nil {
			return nil
		}
		nt, err := twin.New(envelope(), now)
		if err != nil {
			return err
		}
		if it.Reported != nil && string(it.Reported) != "null" {
			if _, err := nt.PatchReported(it.Reported, now); err != nil {
				return err
			}
		}
		*t = nt
		return nil
	}
	var update func(*twin.Twin, time.Time) error
	if it.Tags != nil || it.Desired != nil {
		update = func(t *twin.Twin, now time.Time) error {
			_, err := t.Replace(envelope(), now)
			return err
		}
	}
	var err error
	switch it.Mode {
	case ImportCreate:
		_, err = s.createDevice(ctx, hub, it.Device, create)
	case ImportUpdate, ImportUpdateIfMatchETag:
		_, err = s.replaceDevice(ctx, hub, it.Device, ifMatch, update)
	case ImportCreateOrUpdate, ImportCreateOrUpdateIfMatchETag:
		_, err = s.replaceDevice(ctx, hub, it.Device, ifMatch, update)
		if dps.KindOf(err) == dps.KindNotFound {
			_, err = s.createDevice(ctx, hub, it.Device, create)
		}
	case ImportDelete, ImportDeleteIfMatchETag:
		err = s.DeleteDevice(ctx, hub, it.Device.DeviceID, ifMatch)
	case ImportUpdateTwin, ImportUpdateTwinIfMatchETag:
		_, err = s.ReplaceTwin(ctx, hub, it.Device.DeviceID, envelope(), ifMatch)
	}
	return err
}

package storetest

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// goldenDir is internal/store/docs/testdata, the golden documents of the
// current format that the docs package's tests pin to hand-written values.
func goldenDir(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the golden documents")
	}
	return filepath.Join(filepath.Dir(file), "..", "docs", "testdata")
}

// testGoldenDocuments: the store keeps its documents in the docs format.
// A golden document placed in a row reads back, through the store, as the
// value it holds; and what the store writes for that value is its document
// in the same format, byte for byte where the store adds nothing (hub
// devices, challenges, unfinished operations, hub messages).
func testGoldenDocuments(t *testing.T, f Factory) {
	if f.Doc == nil || f.SetDoc == nil {
		t.Fatal("the factory has no Doc/SetDoc: the golden document checks need them")
	}
	files, err := filepath.Glob(filepath.Join(goldenDir(t), "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("golden documents: %v, %v", files, err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			golden := bytes.TrimSuffix(b, []byte("\n"))
			s := f.New(t)
			kind, _, _ := strings.Cut(strings.TrimSuffix(name, ".json"), "-")
			same := func(what string, got, want any) {
				t.Helper()
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s\n%#v\nwant\n%#v", what, got, want)
				}
			}
			stored := func(table string, want func() ([]byte, error), key ...string) {
				t.Helper()
				w, err := want()
				if err != nil {
					t.Fatal(err)
				}
				if got := f.Doc(t, s, table, key...); !bytes.Equal(got, w) {
					t.Errorf("stored document\n%s\nwant\n%s", got, w)
				}
			}
			switch kind {
			case "enrollment":
				want, err := docs.DecodeEnrollment(golden)
				if err != nil {
					t.Fatal(err)
				}
				put, err := s.PutEnrollment(ctx(), want, "")
				if err != nil {
					t.Fatal(err)
				}
				id := dps.FoldID(want.RegistrationID)
				stored("enrollments", func() ([]byte, error) { return docs.EncodeEnrollment(put) }, id)
				f.SetDoc(t, s, "enrollments", golden, id)
				got, err := s.Enrollment(ctx(), want.RegistrationID)
				if err != nil {
					t.Fatal(err)
				}
				same("enrollment", got, want)
			case "group":
				want, err := docs.DecodeGroup(golden)
				if err != nil {
					t.Fatal(err)
				}
				put, err := s.PutGroup(ctx(), want, "")
				if err != nil {
					t.Fatal(err)
				}
				id := dps.FoldID(want.ID)
				stored("groups", func() ([]byte, error) { return docs.EncodeGroup(put) }, id)
				f.SetDoc(t, s, "groups", golden, id)
				got, err := s.Group(ctx(), want.ID)
				if err != nil {
					t.Fatal(err)
				}
				same("group", got, want)
			case "registration":
				want, err := docs.DecodeRegistration(golden)
				if err != nil {
					t.Fatal(err)
				}
				r := want
				r.ETag = "" // the record it replaces: none
				o := dps.Operation{ID: "golden", RegistrationID: want.RegistrationID, Status: want.Status, Result: &r}
				created, err := s.CreateOperation(ctx(), o)
				if err != nil {
					t.Fatal(err)
				}
				id := dps.FoldID(want.RegistrationID)
				stored("registrations", func() ([]byte, error) { return docs.EncodeRegistration(*created.Result) }, id)
				f.SetDoc(t, s, "registrations", golden, id)
				got, err := s.Registration(ctx(), want.RegistrationID)
				if err != nil {
					t.Fatal(err)
				}
				same("registration", got, want)
			case "operation":
				want, err := docs.DecodeOperation(golden)
				if err != nil {
					t.Fatal(err)
				}
				o := want
				if o.Result != nil {
					r := *o.Result
					r.ETag = "" // the record it replaces: none
					o.Result = &r
				}
				created, err := s.CreateOperation(ctx(), o)
				if err != nil {
					t.Fatal(err)
				}
				if want.Status == dps.StatusAssigning {
					stored("operations", func() ([]byte, error) { return golden, nil }, want.ID)
				} else {
					stored("operations", func() ([]byte, error) { return docs.EncodeOperation(created) }, want.ID)
				}
				f.SetDoc(t, s, "operations", golden, want.ID)
				got, err := s.Operation(ctx(), want.ID)
				if err != nil {
					t.Fatal(err)
				}
				same("operation", got, want)
			case "hubdevice":
				want, err := docs.DecodeHubDevice(golden)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.PutHubDevice(ctx(), want); err != nil {
					t.Fatal(err)
				}
				// The write gave the record a new ETag: the document as
				// stored earlier is put back, to be read.
				f.SetDoc(t, s, "hub_devices", golden, dps.FoldID(want.Hub), dps.FoldID(want.DeviceID))
				stored("hub_devices", func() ([]byte, error) { return golden, nil }, dps.FoldID(want.Hub), dps.FoldID(want.DeviceID))
				got, err := s.HubDevice(ctx(), want.Hub, want.DeviceID)
				if err != nil {
					t.Fatal(err)
				}
				same("hub device", got, want)
			case "cacertificate":
				want, err := docs.DecodeCACertificate(golden)
				if err != nil {
					t.Fatal(err)
				}
				put, err := s.PutCACertificate(ctx(), want, "")
				if err != nil {
					t.Fatal(err)
				}
				id := dps.FoldID(want.Name)
				stored("ca_certificates", func() ([]byte, error) { return docs.EncodeCACertificate(put) }, id)
				f.SetDoc(t, s, "ca_certificates", golden, id)
				got, err := s.CACertificate(ctx(), want.Name)
				if err != nil {
					t.Fatal(err)
				}
				same("CA certificate", got, want)
			case "challenge":
				want, err := docs.DecodeChallenge(golden)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.PutChallenge(ctx(), want); err != nil {
					t.Fatal(err)
				}
				stored("tpm_challenges", func() ([]byte, error) { return golden, nil }, dps.FoldID(want.RegistrationID))
				got, err := s.Challenge(ctx(), want.RegistrationID)
				if err != nil {
					t.Fatal(err)
				}
				same("challenge", got, want)
				// The key a store matches on is the document's.
				if ok, err := s.ConsumeChallenge(ctx(), want.RegistrationID, want.Key+"x"); err != nil || ok {
					t.Errorf("ConsumeChallenge with another key = %v, %v", ok, err)
				}
				if ok, err := s.ConsumeChallenge(ctx(), want.RegistrationID, want.Key); err != nil || !ok {
					t.Errorf("ConsumeChallenge with the document's key = %v, %v", ok, err)
				}
			case "message":
				want, err := docs.DecodeMessage(golden)
				if err != nil {
					t.Fatal(err)
				}
				if want.Seq != 1 {
					t.Fatalf("golden message has Seq %d: a store appends the first message of a hub as 1", want.Seq)
				}
				out, err := s.AppendMessages(ctx(), []dps.Message{want})
				if err != nil {
					t.Fatal(err)
				}
				same("appended message", out, []dps.Message{want})
				stored("hub_messages", func() ([]byte, error) { return golden, nil }, dps.FoldID(want.Hub), "1")
				got, err := s.Messages(ctx(), want.Hub, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				same("message", got, []dps.Message{want})
			case "registrationevent":
				want, err := docs.DecodeRegistrationEvent(golden)
				if err != nil {
					t.Fatal(err)
				}
				if want.Seq != 1 {
					t.Fatalf("golden event has Seq %d: a store appends the first event as 1", want.Seq)
				}
				out, err := s.AppendRegistrationEvents(ctx(), []dps.RegistrationEvent{want})
				if err != nil {
					t.Fatal(err)
				}
				same("appended event", out, []dps.RegistrationEvent{want})
				stored("registration_events", func() ([]byte, error) { return golden, nil }, "1")
				got, err := s.RegistrationEvents(ctx(), 0, 0, dps.RegistrationEventFilter{})
				if err != nil {
					t.Fatal(err)
				}
				same("event", got, []dps.RegistrationEvent{want})
			default:
				t.Fatalf("golden document %s: no check for kind %q", name, kind)
			}
		})
	}
}

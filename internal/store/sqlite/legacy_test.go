package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/store/storetest"
)

// legacyStamps are what the store generated when testdata/legacy.db was
// written (testdata/README.md).
var legacyStamps = storetest.Stamps{
	"enrollment/sym-device-01":   {ETag: `"726GNCYDXVGX3IIZT7DZPTFXGG"`, Created: at("2026-12-03T13:19:48.517834318Z"), Updated: at("2026-12-03T13:19:48.517834318Z")},
	"enrollment/x509-device-01":  {ETag: `"UMXTJT3XGR4DTLBLCKDV2OBPJG"`, Created: at("2026-12-03T13:19:48.51849071Z"), Updated: at("2026-12-03T13:19:48.51849071Z")},
	"enrollment/tpm-device-01":   {ETag: `"4TCFHZOTOGA6GSLT5B47WI6ZRO"`, Created: at("2026-12-03T13:19:48.518831278Z"), Updated: at("2026-12-03T13:19:48.519165636Z")},
	"group/factory-line-1":       {ETag: `"VC5TVUTZJRMPXXHDBLUQTHRVA6"`, Created: at("2026-12-03T13:19:48.519553443Z"), Updated: at("2026-12-03T13:19:48.519553443Z")},
	"group/x509-signed":          {ETag: `"P6LAW4Y2JZM27JRZLZIDGS47PZ"`, Created: at("2026-12-03T13:19:48.519959926Z"), Updated: at("2026-12-03T13:19:48.519959926Z")},
	"group/x509-ca":              {ETag: `"OC3D7GQ7OMBZMM4CBMDCNTAJTF"`, Created: at("2026-12-03T13:19:48.520308139Z"), Updated: at("2026-12-03T13:19:48.520308139Z")},
	"ca/root-ca":                 {ETag: `"LNEHJD3RHQ45UVWFDVOTGBLHQN"`, Created: at("2026-12-03T13:19:48.52070336Z"), Updated: at("2026-12-03T13:19:48.52070336Z")},
	"ca/root-ca-2":               {ETag: `"FTBOC5CTEPECOMQKM5UZSO4CC2"`, Created: at("2026-12-03T13:19:48.521035924Z"), Updated: at("2026-12-03T13:19:48.521035924Z")},
	"registration/group-dev-01":  {ETag: "Ik1LUUlRSzIzQzRZMlNDNjMyUjROSlEyMkZWIg=="},
	"registration/failed-dev":    {ETag: "IkxHMkY3TjdRN1JJNUpVRVdNVUFTRDc2RFNJIg=="},
	"registration/tpm-device-01": {ETag: "IkJPR0NTVURWU0xNRFRQTEs1S1lKTlhXVU5ZIg=="},
	"registration/ca-dev-01":     {ETag: "IkFYV1JURTU1NUtSREhDR0lLM01RTTIyVFFWIg=="},
}

// TestLegacyDatabase: a database written by the previous release
// (testdata/legacy.db, every record type with every field) opens, is
// migrated to the current document format once, and serves every record
// as that release stored it; writes over its records work.
func TestLegacyDatabase(t *testing.T) {
	ctx := context.Background()
	src, err := os.ReadFile(filepath.Join("testdata", "legacy.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dps.db")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	db := open(t, path)
	storetest.CheckLegacyFixture(t, db, legacyStamps)
	if n, err := db.OldDocs(ctx); err != nil || n != 0 {
		t.Errorf("%d documents left in the previous format, %v", n, err)
	}
	if v, err := db.Migrations(ctx); err != nil || !slices.Equal(v, []int{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Errorf("migrations recorded: %v, %v", v, err)
	}
	// The sweeper's listing reads the group from the migrated documents.
	heads, err := db.PendingOperationHeaders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	groups := map[string]string{}
	for _, h := range heads {
		groups[h.ID] = h.EnrollmentGroupID
	}
	if want := map[string]string{"4.0a1b2c3d4e5f6071.66666666-2222-3333-4444-555555555555": "Factory-Line-1", "4.0a1b2c3d4e5f6071.77777777-2222-3333-4444-555555555555": ""}; !reflect.DeepEqual(groups, want) {
		t.Errorf("pending headers' groups = %v, want %v", groups, want)
	}
	before, err := db.RawDoc(ctx, "enrollments", "sym-device-01")
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Opened again: nothing is migrated twice, everything still reads.
	again := open(t, path)
	if after, err := again.RawDoc(ctx, "enrollments", "sym-device-01"); err != nil || string(after) != string(before) {
		t.Errorf("document after reopening = %s, %v; want it unchanged: %s", after, err, before)
	}
	storetest.CheckLegacyFixture(t, again, legacyStamps)
	storetest.CheckLegacyFixtureWrites(t, again, legacyStamps)
}

// TestLegacyDocumentsInBatches: the rewrite reads a table a batch at a
// time; with batches smaller than the tables no document is skipped.
func TestLegacyDocumentsInBatches(t *testing.T) {
	ctx := context.Background()
	src, err := os.ReadFile(filepath.Join("testdata", "legacy.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dps.db")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	if left, err := sqlite.UpgradeDocuments(ctx, path, 2); err != nil || left != 0 {
		t.Fatalf("%d documents left in the previous format after the rewrite, %v", left, err)
	}
	db := open(t, path)
	if n, err := db.OldDocs(ctx); err != nil || n != 0 {
		t.Errorf("%d documents left in the previous format, %v", n, err)
	}
	storetest.CheckLegacyFixture(t, db, legacyStamps)
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

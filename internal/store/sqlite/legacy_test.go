package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/store/storetest"
)

// legacyFixture is a database written by an earlier release
// (testdata/README.md says how each was made).
type legacyFixture struct {
	commit string // the release that wrote it
	file   string // in testdata
	// migrations is what that release had applied: the proof the file is
	// that release's, and the list of what opening it must add.
	migrations []int
	stamps     storetest.Stamps // what the store generated while writing it
}

// legacyFixtures hold the same records (the generator is the same), as two
// releases stored them: c723902, the last release that landed before the
// document format (migrations 0001–0004), and 0c4f88f, the last commit
// before it (0001–0006).
var legacyFixtures = []legacyFixture{{
	commit:     "c723902",
	file:       "legacy-c723902.db",
	migrations: []int{1, 2, 3, 4},
	stamps: storetest.Stamps{
		"enrollment/sym-device-01":   {ETag: `"CKE77GZ2BRHPUEUUTT2XVVY3TH"`, Created: at("2026-12-03T13:58:58.27250805Z"), Updated: at("2026-12-03T13:58:58.27250805Z")},
		"enrollment/x509-device-01":  {ETag: `"JTUN37LSCQ5FKCESFVZBO4OGNI"`, Created: at("2026-12-03T13:58:58.273171054Z"), Updated: at("2026-12-03T13:58:58.273171054Z")},
		"enrollment/tpm-device-01":   {ETag: `"NM5BTM6L7LSHYT5IF27MEXWTQS"`, Created: at("2026-12-03T13:58:58.273483631Z"), Updated: at("2026-12-03T13:58:58.273839318Z")},
		"group/factory-line-1":       {ETag: `"XSUSJ4GRGOBHKE2MDTEJLW35GK"`, Created: at("2026-12-03T13:58:58.274202589Z"), Updated: at("2026-12-03T13:58:58.274202589Z")},
		"group/x509-signed":          {ETag: `"XNZELGGG4NEKXIU6UG4XF2ADTX"`, Created: at("2026-12-03T13:58:58.27455483Z"), Updated: at("2026-12-03T13:58:58.27455483Z")},
		"group/x509-ca":              {ETag: `"SZL2R2JVFGAAUTF77VZP5PZDLI"`, Created: at("2026-12-03T13:58:58.274910016Z"), Updated: at("2026-12-03T13:58:58.274910016Z")},
		"ca/root-ca":                 {ETag: `"YCITSX476VRZ7MJF7WUM3PPHIZ"`, Created: at("2026-12-03T13:58:58.275229355Z"), Updated: at("2026-12-03T13:58:58.275229355Z")},
		"ca/root-ca-2":               {ETag: `"QT3KLVMO5DFCSEKO5H4XHHSAHF"`, Created: at("2026-12-03T13:58:58.275552612Z"), Updated: at("2026-12-03T13:58:58.275552612Z")},
		"registration/group-dev-01":  {ETag: "Ik83SEpCQUo1WFU2NzVLVTRVMzJHRUpHNVdPIg=="},
		"registration/failed-dev":    {ETag: "IjdHWkNRUjdNRTRIUldGSlg0UlNYSldJS0ZKIg=="},
		"registration/tpm-device-01": {ETag: "IkJRNEo0RlRESEc1Ulk0U0RaMkpSTjNUVlg1Ig=="},
		"registration/ca-dev-01":     {ETag: "Ik9DVEoyVERGUjZWN1BHWVFLTlpYNktFU1ZaIg=="},
	},
}, {
	commit:     "0c4f88f",
	file:       "legacy.db",
	migrations: []int{1, 2, 3, 4, 5, 6},
	stamps: storetest.Stamps{
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
	},
}}

// copyLegacy copies a fixture to a new file (tests change it) and checks
// it holds the migrations of the release that wrote it, and only those:
// opening it must apply every later one.
func copyLegacy(t *testing.T, fx legacyFixture) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", fx.file))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dps.db")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rows, err := raw.Query(`SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var have []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		have = append(have, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(have, fx.migrations) {
		t.Fatalf("testdata/%s holds migrations %v; %s had %v", fx.file, have, fx.commit, fx.migrations)
	}
	return path
}

// TestLegacyDatabase: a database written by an earlier release (each of
// legacyFixtures, every record type with every field) opens, is migrated
// to the current schema and document format once, and serves every record
// as that release stored it; writes over its records work.
func TestLegacyDatabase(t *testing.T) {
	for _, fx := range legacyFixtures {
		t.Run(fx.commit, func(t *testing.T) {
			ctx := context.Background()
			path := copyLegacy(t, fx)
			db := open(t, path)
			storetest.CheckLegacyFixture(t, db, fx.stamps)
			if n, err := db.OldDocs(ctx); err != nil || n != 0 {
				t.Errorf("%d documents left in the previous format, %v", n, err)
			}
			if v, err := db.Migrations(ctx); err != nil || !slices.Equal(v, embeddedMigrations(t)) {
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
			storetest.CheckLegacyFixture(t, again, fx.stamps)
			storetest.CheckLegacyFixtureWrites(t, again, fx.stamps)
		})
	}
}

// TestLegacyDocumentsInBatches: the rewrite reads a table a batch at a
// time; with batches smaller than the tables no document is skipped.
func TestLegacyDocumentsInBatches(t *testing.T) {
	for _, fx := range legacyFixtures {
		t.Run(fx.commit, func(t *testing.T) {
			ctx := context.Background()
			path := copyLegacy(t, fx)
			if left, err := sqlite.UpgradeDocuments(ctx, path, 2); err != nil || left != 0 {
				t.Fatalf("%d documents left in the previous format after the rewrite, %v", left, err)
			}
			db := open(t, path)
			if n, err := db.OldDocs(ctx); err != nil || n != 0 {
				t.Errorf("%d documents left in the previous format, %v", n, err)
			}
			storetest.CheckLegacyFixture(t, db, fx.stamps)
		})
	}
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// embeddedMigrations are the versions of the migrations in this package's
// migrations directory: a legacy database ends with all of them applied.
func embeddedMigrations(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var v []int
	for _, e := range entries {
		n, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil {
			t.Fatalf("migration %s: %v", e.Name(), err)
		}
		v = append(v, n)
	}
	return v
}

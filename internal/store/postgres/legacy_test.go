package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps/internal/store/postgres"
	"github.com/opendps/dps/internal/store/storetest"
)

// legacyFixture is a pg_dump of a database written by an earlier release
// (testdata/README.md says how each was made).
type legacyFixture struct {
	commit string // the release that wrote it
	file   string // in testdata
	// migrations is what that release had applied: the proof the dump is
	// that release's, and the list of what opening it must add.
	migrations []int
	stamps     storetest.Stamps // what the store generated while writing it
}

// legacyFixtures hold the same records (the generator is the same), as two
// releases stored them: c723902, the last release that landed before the
// document format (migration 0001 only), and 0c4f88f, the last commit
// before it (0001–0003).
var legacyFixtures = []legacyFixture{{
	commit:     "c723902",
	file:       "legacy-c723902.sql",
	migrations: []int{1},
	stamps: storetest.Stamps{
		"enrollment/sym-device-01":   {ETag: `"SII4UPCAN73RP55Q4VSKLQCDLO"`, Created: at("2026-12-03T13:58:59.174436662Z"), Updated: at("2026-12-03T13:58:59.174436662Z")},
		"enrollment/x509-device-01":  {ETag: `"YZVADPEQWIWRHJA42YNFZY7B2C"`, Created: at("2026-12-03T13:58:59.175261429Z"), Updated: at("2026-12-03T13:58:59.175261429Z")},
		"enrollment/tpm-device-01":   {ETag: `"2P4Z3WJDK3444636BNFMWAZBLM"`, Created: at("2026-12-03T13:58:59.175690574Z"), Updated: at("2026-12-03T13:58:59.17616817Z")},
		"group/factory-line-1":       {ETag: `"UALC4EAQCFXNAPECH5EPDFPZEL"`, Created: at("2026-12-03T13:58:59.176799654Z"), Updated: at("2026-12-03T13:58:59.176799654Z")},
		"group/x509-signed":          {ETag: `"GTT45RUTDGDQT2MMMLBGCU5EOH"`, Created: at("2026-12-03T13:58:59.177428514Z"), Updated: at("2026-12-03T13:58:59.177428514Z")},
		"group/x509-ca":              {ETag: `"45ZYIFSPWSE2ODUWA7HASHNV53"`, Created: at("2026-12-03T13:58:59.177893927Z"), Updated: at("2026-12-03T13:58:59.177893927Z")},
		"ca/root-ca":                 {ETag: `"FPGB2UR4KJP4WAY6WEREU4DNVE"`, Created: at("2026-12-03T13:58:59.178483463Z"), Updated: at("2026-12-03T13:58:59.178483463Z")},
		"ca/root-ca-2":               {ETag: `"RAKQSF5MGMFYIAQXHJVYTPGPVV"`, Created: at("2026-12-03T13:58:59.179098016Z"), Updated: at("2026-12-03T13:58:59.179098016Z")},
		"registration/group-dev-01":  {ETag: "IkI0STdCS1VSNlFFSEpKSk9QWkk3SEZJT1VNIg=="},
		"registration/failed-dev":    {ETag: "IloyNE5GN1pXSTIzQzZHUVFQU0RKQ1JNUlhNIg=="},
		"registration/tpm-device-01": {ETag: "IkE2U1laUlJXS1pWVk1HR0FWUFozT1RDV05EIg=="},
		"registration/ca-dev-01":     {ETag: "IkxUS1FTT0FPTFdUN0xLMzI1WFozTktCSlVFIg=="},
	},
}, {
	commit:     "0c4f88f",
	file:       "legacy.sql",
	migrations: []int{1, 2, 3},
	stamps: storetest.Stamps{
		"enrollment/sym-device-01":   {ETag: `"KDTDCC7TT2ENALMSDHL7XVYAYJ"`, Created: at("2026-12-03T13:19:49.840536101Z"), Updated: at("2026-12-03T13:19:49.840536101Z")},
		"enrollment/x509-device-01":  {ETag: `"VORXS7HSMQBR4L7U4ISLXS26PS"`, Created: at("2026-12-03T13:19:49.841509728Z"), Updated: at("2026-12-03T13:19:49.841509728Z")},
		"enrollment/tpm-device-01":   {ETag: `"VPBLOKVDNIO3XP7BXP5MT7OGP6"`, Created: at("2026-12-03T13:19:49.842134019Z"), Updated: at("2026-12-03T13:19:49.842730527Z")},
		"group/factory-line-1":       {ETag: `"7DLVWMONAQ52AVQAARP62ZO5EF"`, Created: at("2026-12-03T13:19:49.843544244Z"), Updated: at("2026-12-03T13:19:49.843544244Z")},
		"group/x509-signed":          {ETag: `"AMZWAWYGMYY7N5OENN2CH3DJ7S"`, Created: at("2026-12-03T13:19:49.844823183Z"), Updated: at("2026-12-03T13:19:49.844823183Z")},
		"group/x509-ca":              {ETag: `"VZWNCQMZ6BI3KPJVQV4GM47X7E"`, Created: at("2026-12-03T13:19:49.84548763Z"), Updated: at("2026-12-03T13:19:49.84548763Z")},
		"ca/root-ca":                 {ETag: `"2IEMKR6YYQBAPRM5YZ5LMJBJP6"`, Created: at("2026-12-03T13:19:49.846303931Z"), Updated: at("2026-12-03T13:19:49.846303931Z")},
		"ca/root-ca-2":               {ETag: `"URAM5TW52BCSIRCWLNFZWKEOM4"`, Created: at("2026-12-03T13:19:49.847094934Z"), Updated: at("2026-12-03T13:19:49.847094934Z")},
		"registration/group-dev-01":  {ETag: "IkVQT1E1M0VCVkdJUEhXQlpSNTJOQVIyM05TIg=="},
		"registration/failed-dev":    {ETag: "IjJCUFVSRTY0QjQ3RElONFYyUlE3Q1VES01NIg=="},
		"registration/tpm-device-01": {ETag: "IlFUSUZOR1ZaWU9WWlk1RzY2RFpDU0lWM0Q3Ig=="},
		"registration/ca-dev-01":     {ETag: "Ik5NV09XTzdJWE5FV1hZQVhGV01NVkZHSUFFIg=="},
	},
}}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// restoreLegacy creates a database holding a fixture, checks it holds the
// migrations of the release that wrote it (opening it must apply every
// later one), and returns its DSN.
func restoreLegacy(t *testing.T, fx legacyFixture) string {
	t.Helper()
	ctx := context.Background()
	dump, err := os.ReadFile(filepath.Join("testdata", fx.file))
	if err != nil {
		t.Fatal(err)
	}
	// psql meta-commands (\restrict, \unrestrict) are psql's, not SQL.
	var script strings.Builder
	for line := range strings.Lines(string(dump)) {
		if !strings.HasPrefix(line, `\`) {
			script.WriteString(line)
		}
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("legacy_%d_%d", os.Getpid(), schemas.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), dsn)
		if err == nil {
			c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("the test DSN is not a URL: %v", err)
	}
	u.Path = "/" + name
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, script.String()); err != nil {
		t.Fatalf("restore testdata/%s: %v", fx.file, err)
	}
	rows, err := conn.Query(ctx, `SELECT version FROM public.schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(have, fx.migrations) {
		t.Fatalf("testdata/%s holds migrations %v; %s had %v", fx.file, have, fx.commit, fx.migrations)
	}
	return u.String()
}

// TestLegacyDatabase: a database written by an earlier release (each of
// legacyFixtures, every record type with every field) opens, is migrated
// to the current schema and document format once, and serves every record
// as that release stored it; writes over its records work.
func TestLegacyDatabase(t *testing.T) {
	for _, fx := range legacyFixtures {
		t.Run(fx.commit, func(t *testing.T) {
			ctx := context.Background()
			legacy := restoreLegacy(t, fx)
			db, err := postgres.Open(ctx, legacy, postgres.Options{MaxConns: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
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

			// Opened again (another node): nothing is migrated twice, everything still reads.
			again, err := postgres.Open(ctx, legacy, postgres.Options{MaxConns: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer again.Close()
			if after, err := again.RawDoc(ctx, "enrollments", "sym-device-01"); err != nil || string(after) != string(before) {
				t.Errorf("document after reopening = %s, %v; want it unchanged: %s", after, err, before)
			}
			storetest.CheckLegacyFixture(t, again, fx.stamps)
			storetest.CheckLegacyFixtureWrites(t, again, fx.stamps)
		})
	}
}

// TestLegacyDocumentsInBatches: the rewrite reads a table a batch at a
// time (by key; hub devices by two columns); with batches smaller than
// the tables no document is skipped.
func TestLegacyDocumentsInBatches(t *testing.T) {
	for _, fx := range legacyFixtures {
		t.Run(fx.commit, func(t *testing.T) {
			ctx := context.Background()
			legacy := restoreLegacy(t, fx)
			if left, err := postgres.UpgradeDocuments(ctx, legacy, 2); err != nil || left != 0 {
				t.Fatalf("%d documents left in the previous format after the rewrite, %v", left, err)
			}
			db, err := postgres.Open(ctx, legacy, postgres.Options{MaxConns: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if n, err := db.OldDocs(ctx); err != nil || n != 0 {
				t.Errorf("%d documents left in the previous format, %v", n, err)
			}
			storetest.CheckLegacyFixture(t, db, fx.stamps)
		})
	}
}

// TestLegacyMigrationOutlastsStatementTimeout: the migrations rewrite whole
// tables (a stored generated column, every document), which on a real
// database takes far longer than the pool's statement timeout; they run
// without it, or dpsd could never start on a large database.
func TestLegacyMigrationOutlastsStatementTimeout(t *testing.T) {
	ctx := context.Background()
	legacy := restoreLegacy(t, legacyFixtures[0])
	conn, err := pgx.Connect(ctx, legacy)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, `INSERT INTO operations (id, registration_id, status, created, doc)
		SELECT o.id || '-' || g, o.registration_id, o.status, o.created, o.doc
		FROM (SELECT * FROM operations LIMIT 1) o, generate_series(1, 10000) g`)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := postgres.Open(ctx, legacy, postgres.Options{MaxConns: 4, StatementTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("opening a database of 10,000 operations with a 20 ms statement timeout: %v", err)
	}
	db.Close()
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

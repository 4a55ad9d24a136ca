package postgres

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/opendps/dps"
)

// TestTranslateOutages: what PostgreSQL answers when it cannot serve for
// now is KindUnavailable (503 with Retry-After), not an internal error.
func TestTranslateOutages(t *testing.T) {
	for _, tt := range []struct {
		code string
		want dps.Kind
	}{
		{"53100", dps.KindUnavailable}, // disk_full
		{"53200", dps.KindUnavailable}, // out_of_memory
		{"53300", dps.KindUnavailable}, // too_many_connections
		{"53400", dps.KindUnavailable}, // configuration_limit_exceeded
		{"25006", dps.KindUnavailable}, // read_only_sql_transaction: a primary turned standby
		{"57P01", dps.KindUnavailable}, // admin_shutdown
		{"57P02", dps.KindUnavailable}, // crash_shutdown
		{"08006", dps.KindUnavailable}, // connection_failure
		{"57014", dps.KindUnavailable}, // query_canceled (statement timeout)
		{"23505", dps.KindConflict},
		{"42P01", dps.KindInternal}, // undefined_table: a bug, not an outage
	} {
		err := translate(&pgconn.PgError{Code: tt.code, Message: "m"})
		if got := dps.KindOf(err); got != tt.want {
			t.Errorf("SQLSTATE %s: kind %v, want %v", tt.code, got, tt.want)
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Errorf("SQLSTATE %s: the cause is lost: %v", tt.code, err)
		}
	}
}

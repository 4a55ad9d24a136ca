package postgres

import (
	"context"
	"time"

	"github.com/opendps/dps"
)

// PendingOperationHeaders returns the operations PendingOperations returns,
// oldest first, without their documents: only ID, RegistrationID (folded,
// as stored for lookups), EnrollmentGroupID, Status and Created are set.
// The sweeper lists them every few seconds; a backlog's payloads (stored
// out of line) are not read (migration 0004).
func (db *DB) PendingOperationHeaders(ctx context.Context) ([]dps.Operation, error) {
	rows, err := db.pool.Query(ctx, `SELECT id, registration_id, group_id, created FROM operations
		WHERE status = 'assigning' AND lease_until < $1 ORDER BY created LIMIT 10000`, time.Now().UnixNano())
	if err != nil {
		return nil, translate(err)
	}
	defer rows.Close()
	var out []dps.Operation
	for rows.Next() {
		op := dps.Operation{Status: dps.StatusAssigning}
		var created int64
		if err := rows.Scan(&op.ID, &op.RegistrationID, &op.EnrollmentGroupID, &created); err != nil {
			return nil, translate(err)
		}
		op.Created = time.Unix(0, created).UTC()
		out = append(out, op)
	}
	return out, translate(rows.Err())
}

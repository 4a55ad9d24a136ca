package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/opendps/dps"
)

// PendingOperationHeaders returns the operations PendingOperations returns,
// oldest first, without their documents: only ID, RegistrationID (folded,
// as stored for lookups), EnrollmentGroupID, Status and Created are set.
// The sweeper lists them every few seconds; a backlog's payloads stay in
// the database. It reads one index (migration 0007), named: the planner
// would otherwise take operations_pending and decode every document for
// group_id.
func (db *DB) PendingOperationHeaders(ctx context.Context) ([]dps.Operation, error) {
	st, err := db.stmt(ctx, `SELECT id, registration_id, group_id, created FROM operations INDEXED BY operations_pending_headers WHERE status = 'assigning' ORDER BY created`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx)
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: list unfinished operations: %w", err))
	}
	defer rows.Close()
	var out []dps.Operation
	for rows.Next() {
		op := dps.Operation{Status: dps.StatusAssigning}
		var created int64
		if err := rows.Scan(&op.ID, &op.RegistrationID, &op.EnrollmentGroupID, &created); err != nil {
			return nil, translate(fmt.Errorf("sqlite: list unfinished operations: %w", err))
		}
		op.Created = time.Unix(0, created).UTC()
		out = append(out, op)
	}
	return out, translate(rows.Err())
}

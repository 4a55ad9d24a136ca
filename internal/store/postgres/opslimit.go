package postgres

import (
	"context"

	"github.com/opendps/dps"
)

// TrimOperations deletes the finished operations of a registration ID but
// its keep newest, and reports how many it deleted. Unfinished operations
// are never deleted.
func (db *DB) TrimOperations(ctx context.Context, registrationID string, keep int) (int64, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM operations WHERE registration_id = $1 AND status <> 'assigning' AND id NOT IN (
		SELECT id FROM operations WHERE registration_id = $1 AND status <> 'assigning' ORDER BY created DESC LIMIT $2)`, dps.FoldID(registrationID), max(keep, 0))
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}

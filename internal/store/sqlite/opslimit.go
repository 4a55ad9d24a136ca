package sqlite

import (
	"context"
	"database/sql"

	"github.com/opendps/dps"
)

// TrimOperations deletes the finished operations of a registration ID but
// its keep newest, and reports how many it deleted. Unfinished operations
// are never deleted.
func (db *DB) TrimOperations(ctx context.Context, registrationID string, keep int) (int64, error) {
	id := dps.FoldID(registrationID)
	var n int64
	err := db.exec(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM operations WHERE registration_id = ? AND status <> 'assigning' AND id NOT IN (
			SELECT id FROM operations WHERE registration_id = ? AND status <> 'assigning' ORDER BY created DESC LIMIT ?)`, id, id, max(keep, 0))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// Meta returns the instance-wide value stored under key, storing value first
// if none is there yet. Every node sees the same winner.
func (db *DB) Meta(ctx context.Context, key, value string) (string, error) {
	var v string
	err := db.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&v)
	})
	return v, err
}

// Enrollment returns the individual enrollment for registrationID (any case).
func (db *DB) Enrollment(ctx context.Context, registrationID string) (dps.Enrollment, error) {
	return getDoc(ctx, db.pool, docs.DecodeEnrollment, `SELECT doc FROM enrollments WHERE id = $1`, "enrollment", registrationID, dps.FoldID(registrationID))
}

// PutEnrollment creates or replaces an individual enrollment under the ETag rules.
func (db *DB) PutEnrollment(ctx context.Context, e dps.Enrollment, ifMatch string) (dps.Enrollment, error) {
	err := putDoc(ctx, db, "enrollments", "enrollment", e.RegistrationID, ifMatch,
		createdOf(docs.DecodeEnrollment, func(o dps.Enrollment) time.Time { return o.Created }),
		func(tx pgx.Tx, id, etag string, created, now time.Time) error {
			e.ETag, e.Created, e.Updated = etag, created, now
			doc, err := docs.EncodeEnrollment(e)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO enrollments (id, etag, doc) VALUES ($1, $2, $3)
				ON CONFLICT (id) DO UPDATE SET etag = excluded.etag, doc = excluded.doc`, id, etag, doc)
			return err
		})
	return e, err
}

// DeleteEnrollment deletes an individual enrollment.
func (db *DB) DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error {
	return deleteRow(ctx, db, "enrollments", "enrollment", dps.FoldID(registrationID), ifMatch)
}

// Enrollments returns a page of individual enrollments.
func (db *DB) Enrollments(ctx context.Context, continuation string, limit int) ([]dps.Enrollment, string, error) {
	return page(ctx, db, docs.DecodeEnrollment, "enrollments", "", continuation, limit, func(e dps.Enrollment) string { return dps.FoldID(e.RegistrationID) })
}

// Group returns an enrollment group.
func (db *DB) Group(ctx context.Context, id string) (dps.Group, error) {
	return getDoc(ctx, db.pool, docs.DecodeGroup, `SELECT doc FROM groups WHERE id = $1`, "enrollment group", id, dps.FoldID(id))
}

// PutGroup creates or replaces an enrollment group under the ETag rules.
func (db *DB) PutGroup(ctx context.Context, g dps.Group, ifMatch string) (dps.Group, error) {
	err := putDoc(ctx, db, "groups", "enrollment group", g.ID, ifMatch,
		createdOf(docs.DecodeGroup, func(o dps.Group) time.Time { return o.Created }),
		func(tx pgx.Tx, id, etag string, created, now time.Time) error {
			g.ETag, g.Created, g.Updated = etag, created, now
			doc, err := docs.EncodeGroup(g)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO groups (id, attestation, etag, doc) VALUES ($1, $2, $3, $4)
				ON CONFLICT (id) DO UPDATE SET attestation = excluded.attestation, etag = excluded.etag, doc = excluded.doc`,
				id, string(g.Attestation.Type), etag, doc)
			return err
		})
	return g, err
}

// DeleteGroup deletes an enrollment group.
func (db *DB) DeleteGroup(ctx context.Context, id, ifMatch string) error {
	return deleteRow(ctx, db, "groups", "enrollment group", dps.FoldID(id), ifMatch)
}

// GroupsPage returns a page of enrollment groups.
func (db *DB) GroupsPage(ctx context.Context, continuation string, limit int) ([]dps.Group, string, error) {
	return page(ctx, db, docs.DecodeGroup, "groups", "", continuation, limit, func(g dps.Group) string { return dps.FoldID(g.ID) })
}

// Registration returns a registration record.
func (db *DB) Registration(ctx context.Context, registrationID string) (dps.Registration, error) {
	return getDoc(ctx, db.pool, docs.DecodeRegistration, `SELECT doc FROM registrations WHERE id = $1`, "registration", registrationID, dps.FoldID(registrationID))
}

// DeleteRegistration deletes a registration record.
func (db *DB) DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error {
	return deleteRow(ctx, db, "registrations", "registration", dps.FoldID(registrationID), ifMatch)
}

// Registrations returns a page of a group's registration records.
func (db *DB) Registrations(ctx context.Context, groupID, continuation string, limit int) ([]dps.Registration, string, error) {
	if groupID == "" {
		return nil, "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "enrollment group ID is required"}
	}
	return page(ctx, db, docs.DecodeRegistration, "registrations", groupID, continuation, limit, func(r dps.Registration) string { return dps.FoldID(r.RegistrationID) })
}

// CreateOperation persists a new operation and returns it as stored; a
// final operation with a registration result writes its registration
// record in the same transaction.
func (db *DB) CreateOperation(ctx context.Context, op dps.Operation) (dps.Operation, error) {
	err := db.tx(ctx, func(tx pgx.Tx) error { return insertOperation(ctx, tx, &op) })
	return op, err
}

// CreateOperationWithDevice creates an operation, its registration record
// and the hub device records it produced in one transaction.
func (db *DB) CreateOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error) {
	put.ETag = docs.NewETag() // every write of a hub device record gets a new ETag
	ddoc, err := docs.EncodeHubDevice(put)
	if err != nil {
		return op, err
	}
	err = db.tx(ctx, func(tx pgx.Tx) error {
		if err := putDevices(ctx, tx, put, ddoc, remove); err != nil {
			return err
		}
		return insertOperation(ctx, tx, &op)
	})
	return op, err
}

// putDevices writes a device record, honouring put.Replaces, and removes
// the one it replaces, honouring remove.Replaces.
func putDevices(ctx context.Context, tx pgx.Tx, put dps.HubDevice, ddoc []byte, remove *dps.HubDevice) error {
	if put.Hub != "" { // none: the device's new identity is on a remote hub
		if err := checkReplaces(ctx, tx, put); err != nil {
			return docs.DeviceChanged(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO hub_devices (hub, device_id, doc) VALUES ($1, $2, $3)
		ON CONFLICT (hub, device_id) DO UPDATE SET doc = excluded.doc`, dps.FoldID(put.Hub), dps.FoldID(put.DeviceID), ddoc); err != nil {
			return err
		}
	}
	if remove != nil {
		if err := checkReplaces(ctx, tx, *remove); err != nil { // the record it was computed from, if remove says
			return docs.DeviceChanged(err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM hub_devices WHERE hub = $1 AND device_id = $2`, dps.FoldID(remove.Hub), dps.FoldID(remove.DeviceID)); err != nil {
			return err
		}
		if err := deleteCloudQueue(ctx, tx, remove.Hub, remove.DeviceID); err != nil {
			return err
		}
	}
	return nil
}

func insertOperation(ctx context.Context, tx pgx.Tx, op *dps.Operation) error {
	if err := putRegistration(ctx, tx, op); err != nil {
		return err
	}
	doc, err := docs.EncodeOperation(*op)
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO operations (id, registration_id, status, created, doc) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING`,
		op.ID, dps.FoldID(op.RegistrationID), string(op.Status), op.Created.UnixNano(), doc)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return &dps.Error{Kind: dps.KindConflict, Message: "operation already exists"}
	}
	return nil
}

// putRegistration writes the registration record an operation produced
// (assigned or failed), with a new ETag, if the record is still the one the
// operation was computed from (the result's ETag on entry; "" for none);
// otherwise KindConflict.
func putRegistration(ctx context.Context, tx pgx.Tx, op *dps.Operation) error {
	if op.Result == nil || (op.Status != dps.StatusAssigned && op.Status != dps.StatusFailed) {
		return nil
	}
	r := *op.Result
	prev := r.ETag
	r.ETag = docs.NewRegistrationETag()
	rdoc, err := docs.EncodeRegistration(r)
	if err != nil {
		return err
	}
	id := dps.FoldID(r.RegistrationID)
	var tag pgconn.CommandTag
	if prev == "" {
		tag, err = tx.Exec(ctx, `INSERT INTO registrations (id, group_id, etag, doc) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING`,
			id, dps.FoldID(r.EnrollmentGroupID), r.ETag, rdoc)
	} else {
		tag, err = tx.Exec(ctx, `UPDATE registrations SET group_id = $1, etag = $2, doc = $3 WHERE id = $4 AND etag = $5`,
			dps.FoldID(r.EnrollmentGroupID), r.ETag, rdoc, id, prev)
	}
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return &dps.Error{Kind: dps.KindConflict, Message: "the device's registration changed concurrently"}
	}
	op.Result = &r
	return nil
}

// Operation returns an operation.
func (db *DB) Operation(ctx context.Context, id string) (dps.Operation, error) {
	return getDoc(ctx, db.pool, docs.DecodeOperation, `SELECT doc FROM operations WHERE id = $1`, "operation", id, id)
}

// CompleteOperation records an operation's final state and its registration
// record in one transaction; completing a final operation returns it as
// stored, so the record is written once per operation.
func (db *DB) CompleteOperation(ctx context.Context, op dps.Operation) (dps.Operation, error) {
	err := db.tx(ctx, func(tx pgx.Tx) error { return completeOperation(ctx, tx, &op, nil) })
	return op, err
}

// CompleteOperationWithDevice is CompleteOperation that also writes the hub
// device records the operation produced (put, and remove when the device
// moved), in the same transaction: if the registration record changed
// meanwhile (KindConflict), no device record is written either.
func (db *DB) CompleteOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error) {
	put.ETag = docs.NewETag() // every write of a hub device record gets a new ETag
	ddoc, err := docs.EncodeHubDevice(put)
	if err != nil {
		return op, err
	}
	err = db.tx(ctx, func(tx pgx.Tx) error {
		return completeOperation(ctx, tx, &op, func() error { return putDevices(ctx, tx, put, ddoc, remove) })
	})
	return op, err
}

// completeOperation finishes an unfinished operation (and calls devices, if
// not nil, in the same transaction); a final one is returned as stored.
func completeOperation(ctx context.Context, tx pgx.Tx, op *dps.Operation, devices func() error) error {
	var status string
	var doc []byte
	if err := tx.QueryRow(ctx, `SELECT status, doc FROM operations WHERE id = $1 FOR UPDATE`, op.ID).Scan(&status, &doc); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return docs.NotFound("operation", op.ID)
		}
		return err
	}
	if dps.Status(status).Final() {
		stored, err := docs.DecodeOperation(doc)
		if err != nil {
			return err
		}
		*op = stored
		return nil
	}
	if err := putRegistration(ctx, tx, op); err != nil {
		return err
	}
	if devices != nil {
		if err := devices(); err != nil {
			return err
		}
	}
	doc, err := docs.EncodeOperation(*op)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE operations SET status = $1, doc = $2, owner = '', lease_until = 0 WHERE id = $3`, string(op.Status), doc, op.ID)
	return err
}

// PendingOperations returns the operations still assigning that no node
// holds an unexpired lease on, oldest first: the ones a node may take.
func (db *DB) PendingOperations(ctx context.Context) ([]dps.Operation, error) {
	return listDocs(ctx, db.pool, docs.DecodeOperation, "operations", `SELECT doc FROM operations WHERE status = 'assigning' AND lease_until < $1 ORDER BY created LIMIT 10000`, time.Now().UnixNano())
}

// ClaimOperation makes owner the owner of an unfinished operation until
// until, if nobody else holds an unexpired lease on it.
func (db *DB) ClaimOperation(ctx context.Context, id, owner string, until time.Time) (bool, error) {
	tag, err := db.pool.Exec(ctx, `UPDATE operations SET owner = $2, lease_until = $3
		WHERE id = $1 AND status = 'assigning' AND (owner = '' OR owner = $2 OR lease_until < $4)`,
		id, owner, until.UnixNano(), time.Now().UnixNano())
	if err != nil {
		return false, translate(err)
	}
	return tag.RowsAffected() == 1, nil
}

// DeleteOperationsBefore deletes up to Options.PruneBatch (by default
// docs.DefaultPruneBatch) final operations created before t; the sweeper
// calls it again while there is more.
func (db *DB) DeleteOperationsBefore(ctx context.Context, t time.Time) (int64, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM operations WHERE id IN (SELECT id FROM operations WHERE created < $1 AND status <> 'assigning' LIMIT $2)`, t.UnixNano(), db.pruneBatch)
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}

// PutHubDevice records a device identity and returns it as written, with
// a new ETag. d.Replaces, when set, must be the ETag of the device's
// current record: KindNotFound when there is none, KindConflict when it
// has another ETag (nothing written). The current record is locked while
// it is compared.
func (db *DB) PutHubDevice(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error) {
	d.ETag = docs.NewETag()
	doc, err := docs.EncodeHubDevice(d)
	if err != nil {
		return d, err
	}
	err = db.tx(ctx, func(tx pgx.Tx) error {
		if err := checkReplaces(ctx, tx, d); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO hub_devices (hub, device_id, doc) VALUES ($1, $2, $3)
			ON CONFLICT (hub, device_id) DO UPDATE SET doc = excluded.doc`, dps.FoldID(d.Hub), dps.FoldID(d.DeviceID), doc)
		return err
	})
	d.Replaces = ""
	return d, translate(err)
}

// checkReplaces enforces a hub device write's precondition in tx, locking
// the current record while it is compared.
func checkReplaces(ctx context.Context, tx pgx.Tx, d dps.HubDevice) error {
	if d.Replaces == "" {
		return nil
	}
	if d.Replaces == dps.ReplacesNothing {
		// Creations of one device are serialised: FOR UPDATE locks no row
		// that does not exist yet.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('device/' || $1 || '/' || $2, 0))`, dps.FoldID(d.Hub), dps.FoldID(d.DeviceID)); err != nil {
			return err
		}
	}
	var cur []byte
	err := tx.QueryRow(ctx, `SELECT doc FROM hub_devices WHERE hub = $1 AND device_id = $2 FOR UPDATE`, dps.FoldID(d.Hub), dps.FoldID(d.DeviceID)).Scan(&cur)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	return docs.CheckReplaces(d, cur, err == nil)
}

// HubDevice returns a recorded device identity.
func (db *DB) HubDevice(ctx context.Context, hub, deviceID string) (dps.HubDevice, error) {
	return getDoc(ctx, db.pool, docs.DecodeHubDevice, `SELECT doc FROM hub_devices WHERE hub = $1 AND device_id = $2`, "hub device", hub+"/"+deviceID, dps.FoldID(hub), dps.FoldID(deviceID))
}

// DeleteHubDevice removes a device identity and its C2D queue; absent is
// not an error.
func (db *DB) DeleteHubDevice(ctx context.Context, hub, deviceID string) error {
	return db.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM hub_devices WHERE hub = $1 AND device_id = $2`, dps.FoldID(hub), dps.FoldID(deviceID)); err != nil {
			return err
		}
		return deleteCloudQueue(ctx, tx, hub, deviceID)
	})
}

// RemoveHubDevice removes the device identity d names (hub and device
// ID) and its C2D queue only if its record is the one d.Replaces names
// (its ETag; "" removes whatever it is): KindConflict when the record
// changed since; an absent one is not an error.
func (db *DB) RemoveHubDevice(ctx context.Context, d dps.HubDevice) error {
	return db.tx(ctx, func(tx pgx.Tx) error {
		switch err := checkReplaces(ctx, tx, d); { // locks the record
		case dps.KindOf(err) == dps.KindNotFound:
			return nil // gone already
		case err != nil:
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM hub_devices WHERE hub = $1 AND device_id = $2`, dps.FoldID(d.Hub), dps.FoldID(d.DeviceID)); err != nil {
			return err
		}
		return deleteCloudQueue(ctx, tx, d.Hub, d.DeviceID)
	})
}

// CACertificate returns a CA certificate held by the instance.
func (db *DB) CACertificate(ctx context.Context, name string) (dps.CACertificate, error) {
	return getDoc(ctx, db.pool, docs.DecodeCACertificate, `SELECT doc FROM ca_certificates WHERE id = $1`, "CA certificate", name, dps.FoldID(name))
}

// CACertificates returns every CA certificate.
func (db *DB) CACertificates(ctx context.Context) ([]dps.CACertificate, error) {
	return listDocs(ctx, db.pool, docs.DecodeCACertificate, "CA certificates", `SELECT doc FROM ca_certificates ORDER BY id`)
}

// PutCACertificate creates or replaces a CA certificate under the ETag rules.
func (db *DB) PutCACertificate(ctx context.Context, c dps.CACertificate, ifMatch string) (dps.CACertificate, error) {
	err := putDoc(ctx, db, "ca_certificates", "CA certificate", c.Name, ifMatch,
		createdOf(docs.DecodeCACertificate, func(o dps.CACertificate) time.Time { return o.Created }),
		func(tx pgx.Tx, id, etag string, created, now time.Time) error {
			c.ETag, c.Created, c.Updated = etag, created, now
			doc, err := docs.EncodeCACertificate(c)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO ca_certificates (id, etag, doc) VALUES ($1, $2, $3)
				ON CONFLICT (id) DO UPDATE SET etag = excluded.etag, doc = excluded.doc`, id, etag, doc)
			return err
		})
	return c, err
}

// DeleteCACertificate deletes a CA certificate.
func (db *DB) DeleteCACertificate(ctx context.Context, name, ifMatch string) error {
	return deleteRow(ctx, db, "ca_certificates", "CA certificate", dps.FoldID(name), ifMatch)
}

// PutChallenge stores the latest TPM challenge of a registration ID.
func (db *DB) PutChallenge(ctx context.Context, c dps.Challenge) error {
	doc, err := docs.EncodeChallenge(c)
	if err != nil {
		return err
	}
	_, err = db.pool.Exec(ctx, `INSERT INTO tpm_challenges (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc`, dps.FoldID(c.RegistrationID), doc)
	return translate(err)
}

// Challenge returns the latest TPM challenge of a registration ID.
func (db *DB) Challenge(ctx context.Context, registrationID string) (dps.Challenge, error) {
	return getDoc(ctx, db.pool, docs.DecodeChallenge, `SELECT doc FROM tpm_challenges WHERE id = $1`, "TPM challenge", registrationID, dps.FoldID(registrationID))
}

// ConsumeChallenge deletes the challenge if its key is still key (the
// document's "key" member, docs.Challenge).
func (db *DB) ConsumeChallenge(ctx context.Context, registrationID string, key dps.Key) (bool, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM tpm_challenges WHERE id = $1 AND doc->>'key' = $2`, dps.FoldID(registrationID), string(key))
	if err != nil {
		return false, translate(err)
	}
	return tag.RowsAffected() == 1, nil
}

// ListHubDevices returns up to limit device identities of a hub whose
// folded device ID sorts after after's (folded; "" from the first), in
// that order: a listing resumes after the last device it returned.
func (db *DB) ListHubDevices(ctx context.Context, hub, after string, limit int) ([]dps.HubDevice, error) {
	return listDocs(ctx, db.pool, docs.DecodeHubDevice, "hub devices", `SELECT doc FROM hub_devices WHERE hub = $1 AND device_id > $2 ORDER BY device_id LIMIT $3`,
		dps.FoldID(hub), dps.FoldID(after), docs.PageSize(limit))
}

// CountHubDevices returns how many device identities a hub has, and how
// many of them are disabled.
func (db *DB) CountHubDevices(ctx context.Context, hub string) (total, disabled int, err error) {
	err = db.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE doc->>'status' = 'disabled') FROM hub_devices WHERE hub = $1`, dps.FoldID(hub)).Scan(&total, &disabled)
	return total, disabled, translate(err)
}

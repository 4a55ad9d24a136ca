package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// Certificate issuance: issuing CAs, credential policies and the
// certificates issued (migration 0013; the SQLite store's 0015 describes
// the columns). The CAs' keys arrive sealed; the store keeps them as given.

const caColumns = `name, etag, key_type, chain, sealed_key, created, updated`

func scanCA(row pgx.Row) (dps.IssuingCA, error) {
	var c dps.IssuingCA
	var keyType, chain string
	var created, updated int64
	if err := row.Scan(&c.Name, &c.ETag, &keyType, &chain, &c.SealedKey, &created, &updated); err != nil {
		return c, err
	}
	c.KeyType, c.Created, c.Updated = dps.KeyType(keyType), time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	var err error
	c.Chain, err = docs.DecodeChain(chain)
	return c, err
}

// IssuingCA returns an issuing CA (name in any case); KindNotFound if none.
func (db *DB) IssuingCA(ctx context.Context, name string) (dps.IssuingCA, error) {
	c, err := scanCA(db.pool.QueryRow(ctx, `SELECT `+caColumns+` FROM issuing_cas WHERE id = $1`, dps.FoldID(name)))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, docs.NotFound("issuing CA", name)
	}
	return c, translate(err)
}

// IssuingCAs returns every issuing CA, ordered by folded name.
func (db *DB) IssuingCAs(ctx context.Context) ([]dps.IssuingCA, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+caColumns+` FROM issuing_cas ORDER BY id`)
	if err != nil {
		return nil, translate(err)
	}
	defer rows.Close()
	var out []dps.IssuingCA
	for rows.Next() {
		c, err := scanCA(rows)
		if err != nil {
			return nil, translate(err)
		}
		out = append(out, c)
	}
	return out, translate(rows.Err())
}

// PutIssuingCA creates or replaces an issuing CA under the ETag rules of
// docs.CheckPut; of two concurrent creates, one gets KindConflict.
func (db *DB) PutIssuingCA(ctx context.Context, c dps.IssuingCA, ifMatch string) (dps.IssuingCA, error) {
	chain, err := docs.EncodeChain(c.Chain)
	if err != nil {
		return c, err
	}
	id := dps.FoldID(c.Name)
	err = db.tx(ctx, func(tx pgx.Tx) error {
		var etag string
		var created int64
		err := tx.QueryRow(ctx, `SELECT etag, created FROM issuing_cas WHERE id = $1 FOR UPDATE`, id).Scan(&etag, &created)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		exists := err == nil
		if err := docs.CheckPut(exists, etag, "issuing CA", c.Name, ifMatch); err != nil {
			return err
		}
		now := time.Now().UTC()
		c.ETag, c.Updated, c.Created = docs.NewETag(), now, now
		if exists {
			c.Created = time.Unix(0, created).UTC()
			_, err = tx.Exec(ctx, `UPDATE issuing_cas SET name = $2, etag = $3, key_type = $4, chain = $5, sealed_key = $6, updated = $7 WHERE id = $1`,
				id, c.Name, c.ETag, string(c.KeyType), chain, c.SealedKey, c.Updated.UnixNano())
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO issuing_cas (id, `+caColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			id, c.Name, c.ETag, string(c.KeyType), chain, c.SealedKey, c.Created.UnixNano(), c.Updated.UnixNano())
		return err
	})
	return c, err
}

// DeleteIssuingCA deletes an issuing CA under the ETag rule of
// docs.CheckDelete; KindConflict while a credential policy names it.
func (db *DB) DeleteIssuingCA(ctx context.Context, name, ifMatch string) error {
	id := dps.FoldID(name)
	return db.tx(ctx, func(tx pgx.Tx) error {
		var etag string
		err := tx.QueryRow(ctx, `SELECT etag FROM issuing_cas WHERE id = $1 FOR UPDATE`, id).Scan(&etag)
		if errors.Is(err, pgx.ErrNoRows) {
			return docs.NotFound("issuing CA", name)
		}
		if err != nil {
			return err
		}
		if err := docs.CheckDelete(etag, "issuing CA", name, ifMatch); err != nil {
			return err
		}
		var policy string
		switch err := tx.QueryRow(ctx, `SELECT name FROM credential_policies WHERE ca = $1 LIMIT 1`, id).Scan(&policy); {
		case err == nil:
			return docs.CAInUse(name, policy)
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM issuing_cas WHERE id = $1`, id)
		return err
	})
}

func scanPolicy(row pgx.Row) (dps.CredentialPolicy, error) {
	var p dps.CredentialPolicy
	var keyTypes, subject string
	var created, updated int64
	if err := row.Scan(&p.Name, &p.CertificateAuthority, &p.ETag, &p.ValidityDays, &keyTypes, &subject, &created, &updated); err != nil {
		return p, err
	}
	p.KeyTypes, p.Subject = docs.DecodeKeyTypes(keyTypes), dps.SubjectSource(subject)
	p.Created, p.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return p, nil
}

// policyQuery reads policies with their CA's name as the CA has it.
const policyQuery = `SELECT p.name, COALESCE(c.name, p.ca), p.etag, p.validity_days, p.key_types, p.subject, p.created, p.updated
	FROM credential_policies p LEFT JOIN issuing_cas c ON c.id = p.ca`

// CredentialPolicy returns a credential policy (name in any case);
// KindNotFound if none.
func (db *DB) CredentialPolicy(ctx context.Context, name string) (dps.CredentialPolicy, error) {
	p, err := scanPolicy(db.pool.QueryRow(ctx, policyQuery+` WHERE p.id = $1`, dps.FoldID(name)))
	if errors.Is(err, pgx.ErrNoRows) {
		return p, docs.NotFound("credential policy", name)
	}
	return p, translate(err)
}

// CredentialPolicies returns every credential policy, ordered by folded
// name.
func (db *DB) CredentialPolicies(ctx context.Context) ([]dps.CredentialPolicy, error) {
	rows, err := db.pool.Query(ctx, policyQuery+` ORDER BY p.id`)
	if err != nil {
		return nil, translate(err)
	}
	defer rows.Close()
	var out []dps.CredentialPolicy
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, translate(err)
		}
		out = append(out, p)
	}
	return out, translate(rows.Err())
}

// PutCredentialPolicy creates or replaces a credential policy under the
// ETag rules of docs.CheckPut; KindNotFound when its CA does not exist.
// The CA's row is share-locked, so a concurrent delete of the CA waits
// and then sees the policy.
func (db *DB) PutCredentialPolicy(ctx context.Context, p dps.CredentialPolicy, ifMatch string) (dps.CredentialPolicy, error) {
	id := dps.FoldID(p.Name)
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var caName string
		err := tx.QueryRow(ctx, `SELECT name FROM issuing_cas WHERE id = $1 FOR SHARE`, dps.FoldID(p.CertificateAuthority)).Scan(&caName)
		if errors.Is(err, pgx.ErrNoRows) {
			return docs.NotFound("issuing CA", p.CertificateAuthority)
		}
		if err != nil {
			return err
		}
		var etag string
		var created int64
		err = tx.QueryRow(ctx, `SELECT etag, created FROM credential_policies WHERE id = $1 FOR UPDATE`, id).Scan(&etag, &created)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		exists := err == nil
		if err := docs.CheckPut(exists, etag, "credential policy", p.Name, ifMatch); err != nil {
			return err
		}
		now := time.Now().UTC()
		p.ETag, p.Updated, p.Created, p.CertificateAuthority = docs.NewETag(), now, now, caName
		if exists {
			p.Created = time.Unix(0, created).UTC()
			_, err = tx.Exec(ctx, `UPDATE credential_policies SET name = $2, ca = $3, etag = $4, validity_days = $5, key_types = $6, subject = $7, updated = $8 WHERE id = $1`,
				id, p.Name, dps.FoldID(caName), p.ETag, p.ValidityDays, docs.EncodeKeyTypes(p.KeyTypes), string(p.Subject), p.Updated.UnixNano())
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO credential_policies (id, name, ca, etag, validity_days, key_types, subject, created, updated)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			id, p.Name, dps.FoldID(caName), p.ETag, p.ValidityDays, docs.EncodeKeyTypes(p.KeyTypes), string(p.Subject), p.Created.UnixNano(), p.Updated.UnixNano())
		return err
	})
	return p, err
}

// DeleteCredentialPolicy deletes a credential policy under the ETag rule
// of docs.CheckDelete.
func (db *DB) DeleteCredentialPolicy(ctx context.Context, name, ifMatch string) error {
	return db.tx(ctx, func(tx pgx.Tx) error {
		var etag string
		err := tx.QueryRow(ctx, `SELECT etag FROM credential_policies WHERE id = $1 FOR UPDATE`, dps.FoldID(name)).Scan(&etag)
		if errors.Is(err, pgx.ErrNoRows) {
			return docs.NotFound("credential policy", name)
		}
		if err != nil {
			return err
		}
		if err := docs.CheckDelete(etag, "credential policy", name, ifMatch); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM credential_policies WHERE id = $1`, dps.FoldID(name))
		return err
	})
}

const issuedColumns = `serial, ca, policy, registration_id, hub, device_name, operation_id, certificate, not_before, not_after, issued, revoked`

func scanIssued(row pgx.Row) (dps.IssuedCertificate, error) {
	var c dps.IssuedCertificate
	var op *string
	var nb, na, issued, revoked int64
	if err := row.Scan(&c.SerialNumber, &c.CertificateAuthority, &c.Policy, &c.RegistrationID, &c.Hub, &c.DeviceID, &op, &c.Certificate, &nb, &na, &issued, &revoked); err != nil {
		return c, err
	}
	if op != nil {
		c.OperationID = *op
	}
	c.NotBefore, c.NotAfter, c.Issued = time.Unix(0, nb).UTC(), time.Unix(0, na).UTC(), time.Unix(0, issued).UTC()
	if revoked != 0 {
		c.Revoked = time.Unix(0, revoked).UTC()
	}
	return c, nil
}

// RecordIssuedCertificate stores the record of an issued certificate. When
// c names an operation that already has one (on any node), nothing new is
// stored and that one is returned: one operation gets one certificate;
// when c is for another hub or device ID (a retried completion that moved
// the device), that one is re-pointed to c's.
// CertificateAuthority and Hub are stored folded (and read back so).
func (db *DB) RecordIssuedCertificate(ctx context.Context, c dps.IssuedCertificate) (dps.IssuedCertificate, error) {
	var op *string
	if c.OperationID != "" {
		op = &c.OperationID
	}
	out := c
	out.CertificateAuthority, out.Hub = dps.FoldID(c.CertificateAuthority), dps.FoldID(c.Hub)
	err := db.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO issued_certificates (serial, ca, policy, registration_id, hub, device_id, device_name, operation_id, certificate, not_before, not_after, issued, revoked)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0) ON CONFLICT (operation_id) DO NOTHING`,
			c.SerialNumber, out.CertificateAuthority, c.Policy, c.RegistrationID, out.Hub, dps.FoldID(c.DeviceID), c.DeviceID, op, c.Certificate,
			c.NotBefore.UnixNano(), c.NotAfter.UnixNano(), c.Issued.UnixNano())
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		// The operation has its certificate: re-pointed when a retried
		// completion moved the device to another hub or device ID.
		if _, err := tx.Exec(ctx, `UPDATE issued_certificates SET hub = $2, device_id = $3, device_name = $4
			WHERE operation_id = $1 AND (hub <> $2 OR device_id <> $3)`, op, out.Hub, dps.FoldID(c.DeviceID), c.DeviceID); err != nil {
			return err
		}
		out, err = scanIssued(tx.QueryRow(ctx, `SELECT `+issuedColumns+` FROM issued_certificates WHERE operation_id = $1`, op))
		return err
	})
	return out, err
}

// IssuedCertificate returns the record of the certificate with a serial
// number (upper-case hex); KindNotFound if none.
func (db *DB) IssuedCertificate(ctx context.Context, serial string) (dps.IssuedCertificate, error) {
	c, err := scanIssued(db.pool.QueryRow(ctx, `SELECT `+issuedColumns+` FROM issued_certificates WHERE serial = $1`, serial))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, docs.NotFound("issued certificate", serial)
	}
	return c, translate(err)
}

// RevokeIssuedCertificates revokes, at at, every certificate issued to a
// device (hub and device ID in any case) that is not revoked yet and not
// expired, reporting how many.
func (db *DB) RevokeIssuedCertificates(ctx context.Context, hub, deviceID string, at time.Time) (int, error) {
	var n int64
	err := db.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE issued_certificates SET revoked = $1 WHERE hub = $2 AND device_id = $3 AND revoked = 0 AND not_after > $1`,
			at.UnixNano(), dps.FoldID(hub), dps.FoldID(deviceID))
		n = tag.RowsAffected()
		return err
	})
	return int(n), err
}

// RevokedCertificates returns the revoked certificates of an issuing CA
// (name in any case) that have not expired at now, by serial number: what
// its CRL lists.
func (db *DB) RevokedCertificates(ctx context.Context, ca string, now time.Time) ([]dps.IssuedCertificate, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+issuedColumns+` FROM issued_certificates
		WHERE ca = $1 AND revoked <> 0 AND not_after > $2 ORDER BY serial`, dps.FoldID(ca), now.UnixNano())
	if err != nil {
		return nil, translate(err)
	}
	defer rows.Close()
	var out []dps.IssuedCertificate
	for rows.Next() {
		c, err := scanIssued(rows)
		if err != nil {
			return nil, translate(err)
		}
		out = append(out, c)
	}
	return out, translate(rows.Err())
}

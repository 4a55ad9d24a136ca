-- CA certificates held by the instance (for enrollment groups' caReferences).
CREATE TABLE ca_certificates (
	id   TEXT PRIMARY KEY,
	etag TEXT NOT NULL,
	doc  BLOB NOT NULL
);

//go:build !unix

package sqlite

import "os"

// lock is a no-op where flock does not exist: only one dpsd may be started
// on a database there, and nothing enforces it.
func lock(string) (*os.File, error) { return nil, nil }

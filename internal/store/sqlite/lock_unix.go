//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lock takes an exclusive flock on path+".lock" for the life of the store.
// The kernel releases it when the file is closed or the process ends, even
// by SIGKILL, so a restart after a crash finds it free. A flock is not
// SQLite's own (fcntl) locking, which it does not disturb; a separate file
// keeps it so, since closing any descriptor of the database file itself
// would drop SQLite's fcntl locks.
func lock(path string) (*os.File, error) {
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, _ := os.ReadFile(name); len(b) > 0 {
				pid := strings.TrimSpace(string(b))
				holder += " (pid " + pid + ")"
				if pid == strconv.Itoa(os.Getpid()) {
					holder = "another handle of this process"
				}
			}
			return nil, fmt.Errorf("sqlite: %s is in use by %s: a SQLite database serves one dpsd; stop the other one, or use PostgreSQL for several nodes (%w)", path, holder, ErrInUse)
		}
		return nil, fmt.Errorf("sqlite: lock %s: %w", name, err)
	}
	// Who holds it, for the message above; best effort.
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

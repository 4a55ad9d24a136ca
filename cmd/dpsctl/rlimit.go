package main

import (
	"fmt"
	"syscall"
)

// raiseFileLimit raises this process's open-file limit to at least n: the
// soft limit up to the hard one, and the hard one too when allowed (as
// root). It reports the limit it could not reach.
func raiseFileLimit(n uint64) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("open-file limit: %w", err)
	}
	if l.Cur >= n {
		return nil
	}
	want := syscall.Rlimit{Cur: n, Max: max(l.Max, n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return nil
	}
	l.Cur = l.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	return fmt.Errorf("open-file limit %d, below the %d this run needs (raise the hard limit: ulimit -Hn, or run as root)", l.Cur, n)
}

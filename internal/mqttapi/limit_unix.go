//go:build unix

package mqttapi

import "syscall"

// defaultMaxConnections derives MaxConnections from the soft limit on open
// files. The Go runtime raises the soft limit to the hard limit when the
// process starts, so this is the limit the process lives with.
func defaultMaxConnections() int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return maxConnections
	}
	return connectionLimit(uint64(rl.Cur))
}

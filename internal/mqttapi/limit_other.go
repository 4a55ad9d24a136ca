//go:build !unix

package mqttapi

// defaultMaxConnections is maxConnections where there is no RLIMIT_NOFILE.
func defaultMaxConnections() int64 { return maxConnections }

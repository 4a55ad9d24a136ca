package mqttapi

// maxConnections is the largest default of BrokerOptions.MaxConnections.
const maxConnections = 100000

// connectionLimit is the default MaxConnections for a process allowed
// nofile open files: three quarters of them, at most maxConnections. Each
// MQTT connection holds one descriptor; the last quarter is left to HTTPS
// connections, the store, the logs and the listeners, so that a flood of
// MQTT connections is refused by the limit (cheaply, and counted) rather
// than running the whole process out of descriptors.
func connectionLimit(nofile uint64) int64 {
	return int64(max(1, min(maxConnections, nofile-nofile/4)))
}

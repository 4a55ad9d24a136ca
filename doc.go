// Package dps is the domain model of dps, a self-hosted Device Provisioning
// Service that speaks the Azure IoT Hub DPS wire protocol.
//
// # What lives here
//
// Enrollments (individual and groups), attestation mechanisms, registration
// records, asynchronous registration operations, linked IoT hubs and
// allocation policies, and the transport-neutral error type [Error] with its
// [Kind]. The package imports only the standard library and performs no I/O;
// layout_test.go keeps it so.
//
// # Where everything else lives
//
//   - internal/registration: the device registration use case (attest,
//     resolve the enrollment, allocate, hand the device to a hub connector,
//     persist the result).
//   - internal/sas: SAS token parsing, signing and verification.
//   - internal/allocation: the built-in allocation policies.
//   - internal/wire: the JSON shapes of the DPS APIs and the one table that
//     maps a Kind to a DPS status and error code.
//   - internal/httpapi: the HTTPS adapter.
//   - internal/mqttapi: the MQTT adapter (embedded broker, also over WebSocket).
//   - internal/store/sqlite: the embedded store; internal/store/postgres: the
//     store for several nodes; internal/store/storetest: their one
//     conformance suite; internal/store/groupcache: decoded enrollment
//     groups kept in memory, never stale; internal/store/health: the
//     readiness write check; internal/store/docs: the stored documents
//     (tagged, versioned, converted to and from the domain) and the rules
//     both stores share (ETags, continuation tokens, prune batches).
//   - internal/hub/builtin: the built-in hub connector.
//   - cmd/dpsd, cmd/dpsctl: the server and the CLI, the only wiring.
//   - device: a Go client for devices; webhook: types for webhook authors.
package dps

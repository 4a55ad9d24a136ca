// Package dps is the domain model of dps, a self-hosted Device Provisioning
// Service that speaks the Azure IoT Hub DPS wire protocol.
//
// # What lives here
//
// Enrollments (individual and groups), attestation mechanisms, registration
// records, asynchronous registration operations, linked IoT hubs and
// allocation policies, certificate issuance (issuing CAs, credential
// policies, CSRs and the certificates issued), and the transport-neutral error type [Error] with its
// [Kind]. The package imports only the standard library and performs no I/O;
// layout_test.go keeps it so.
//
// # Where everything else lives
//
// Every package of the module, as layout_test.go checks (it also holds the
// import rules between them):
//
//   - internal/registration: the device registration use case (attest,
//     resolve the enrollment, allocate, hand the device to a hub connector,
//     persist the result); internal/registration/engine: the operation
//     engine it runs on (lanes and workers, per-device tracking, leases,
//     sweeps and prunes, retry backoff, the poll cache).
//   - internal/enrollment: the management use case (validation, keys,
//     ETags, bulk, CA proof of possession).
//   - internal/issuance: certificate issuance (issuing CAs with sealed
//     keys, credential policies, a registration's CSR and the operational
//     certificate issued for it, renewal and revocation on the built-in
//     hub, CRLs).
//   - internal/sas: SAS token parsing, signing and verification.
//   - internal/access: service API access policies and their SAS tokens.
//   - The attestation mechanisms, each a registration.Attestor that
//     cmd/dpsd lists in one map by attestation type
//     (docs/adding-an-attestation.md): internal/symkey (symmetric keys,
//     individual and group-derived), internal/x509attest (X.509 chains,
//     CRLs), internal/tpmattest (TPM challenges and activation blobs).
//   - internal/allocation: the built-in allocation policies;
//     internal/allocation/webhookalloc: custom allocation webhooks.
//   - internal/wire: the JSON shapes of the DPS APIs and the one table that
//     maps a Kind to a DPS status (codes.go here names every error code).
//   - internal/httpapi: the HTTPS adapter (device and service APIs).
//   - internal/mqttapi: the MQTT adapter (embedded broker, also over
//     WebSocket) for DPS and for the built-in hubs' devices; internal/wsstream: MQTT's byte stream over WebSocket.
//   - internal/store/sqlite: the embedded store; internal/store/postgres: the
//     store for several nodes; internal/store/storetest: their one
//     conformance suite; internal/store/groupcache: decoded enrollment
//     groups kept in memory, never stale; internal/store/health: the
//     readiness write check; internal/store/docs: the stored documents
//     (tagged, versioned, converted to and from the domain) and the rules
//     both stores share (ETags, continuation tokens, prune batches).
//   - internal/hub/builtin: the built-in hub connector (the device records
//     provisioning writes for the built-in hubs).
//   - internal/hub/remote: the remote hub connector (Azure IoT Hubs, or
//     another dps's hub, through the IoT Hub service REST API).
//   - internal/iothub: the built-in IoT hubs' use case (device
//     authentication, twins, telemetry into the event log, connected
//     devices, direct methods), apart from any transport.
//   - internal/twin: the device twin of the built-in IoT hub (tags,
//     desired and reported properties, versions, $metadata, patches and
//     limits), pure and storage-agnostic.
//   - internal/hubquery: the IoT Hub query language (parser, evaluator).
//   - internal/hubproto: the IoT Hub device protocol as pure functions
//     (MQTT username, topics and filters, property bags, device SAS tokens).
//   - internal/routing: message routing (routes over the built-in hubs'
//     event logs: conditions, batches, checkpoints and leases in the
//     store, retries, dead letters); internal/route/webhook: its HTTP
//     webhook endpoint.
//   - The message routing endpoints, each a client of the engine it
//     delivers to: internal/route/kafka (franz-go; also Azure Event Hubs,
//     Confluent, Redpanda, MSK), internal/route/nats (NATS JetStream),
//     internal/route/mqtt (an external MQTT broker, QoS 1);
//     internal/route: what they share (the header mapping, topic and
//     subject templates, TLS files); internal/route/routetest: their test
//     helpers.
//   - internal/console: the web console under /console/ on the HTTPS
//     listener (server-rendered pages over the use cases, sessions signed
//     in with service access policies, live feeds as server-sent events).
//   - internal/regevents: the registration-events feed (what became of
//     each register and poll, recorded through a bounded queue, kept for
//     a bounded time in the store, read and followed by the service API
//     and the web console).
//   - internal/client: the Go client of the service API (dpsctl).
//   - internal/manifest: declarative enrollments (dpsctl apply, dpsd's
//     manifest), the JSON-lines export and import, and the copy from
//     another DPS service API, on one comparison of objects.
//   - internal/throttle: Azure's back-pressure (per registration ID
//     register and poll limits, a per-instance registration limit, the
//     service APIs' quotas, a log of refusals limited to a line per key
//     per interval); internal/faults: fault injection rules for device
//     tests.
//   - internal/connlimit: the listeners' connection limits (overall and
//     per source address), refusing before TLS.
//   - internal/prom: Prometheus metrics; internal/logkey: log attribute
//     names; internal/pki: generated CA and server certificates;
//     internal/buildinfo: the version dpsd --version and dpsctl version print.
//   - internal/bench: the load generator of dpsctl bench; internal/ceiling:
//     the benchmark ceiling (dpsd --ceiling).
//   - internal/dpstest, internal/pgtest: test helpers (certificates, TPM
//     devices, dpsd processes; throwaway PostgreSQL clusters).
//   - test/packaging: tests of what ships beside the packages (the
//     container image, release binaries, compose.yaml, the systemd unit);
//     test/walkthrough: the README's walkthroughs, run as written.
//   - cmd/dpsd, cmd/dpsctl: the server and the CLI, the only wiring.
//   - device: a Go client for devices (provisioning over HTTPS and MQTT,
//     and the built-in hub over MQTT); webhook: types for webhook authors;
//     examples/webhook: an example webhook.
package dps

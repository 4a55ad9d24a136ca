// Compatibility scenarios: the real Azure IoT Node SDKs, used exactly as a
// customer would, against a running dpsd. The Go test in this directory
// starts dpsd and a custom allocation webhook, then runs this script.
//
// Output: one JSON line per scenario {"scenario","transport","ok","error"};
// the exit code is non-zero when any scenario failed.
'use strict';

const crypto = require('crypto');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { Mqtt, MqttWs } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { faultScenarios } = require('./faults');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt: DeviceMqtt, MqttWs: DeviceMqttWs } = require('azure-iot-device-mqtt');
const { Http: DeviceHttp } = require('azure-iot-device-http');
const { Registry, Client: ServiceClient } = require('azure-iothub');
// NoRetry as the device SDK itself resolves azure-iot-common (not a
// dependency of this suite of its own).
const { NoRetry } = require(require.resolve('azure-iot-common', { paths: [require.resolve('azure-iot-device')] }));

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error('missing environment variable ' + name);
  return v;
};
const host = env('DPS_HOST');
const idScope = env('DPS_ID_SCOPE');
const connectionString = env('DPS_CONNECTION_STRING');
const webhookUrl = env('DPS_WEBHOOK_URL');
const transports = (process.env.DPS_TRANSPORTS || 'http,mqtt,mqttws').split(',');
const fs = require('fs');
const path = require('path');
const x509Dir = env('DPS_X509_DIR');
const readX509 = (name) => fs.readFileSync(path.join(x509Dir, name), 'utf8');
const run = Date.now().toString(36);
// The built-in hubs dpsd serves, and a service connection string
// (iothubowner) for each.
const hubConnectionStrings = [env('HUB_CONNECTION_STRING_A'), env('HUB_CONNECTION_STRING_B')];
const csField = (cs, name) => {
  const m = new RegExp('(?:^|;)' + name + '=([^;]*)').exec(cs);
  if (!m) throw new Error('connection string without ' + name);
  return m[1];
};
const [hubA, hubB] = hubConnectionStrings.map((cs) => csField(cs, 'HostName'));

const service = ProvisioningServiceClient.fromConnectionString(connectionString);
const results = [];

function deriveKey(groupKey, registrationId) {
  return crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');
}

function newTransport(name) {
  if (name === 'mqttws') return new MqttWs(); // MQTT over WebSocket on 443: wss://host/$iothub/websocket
  return name === 'mqtt' ? new Mqtt() : new Http();
}

function register(transport, registrationId, key, payload) {
  const security = new SymmetricKeySecurityClient(registrationId, key);
  const client = ProvisioningDeviceClient.create(host, idScope, newTransport(transport), security);
  if (payload !== undefined) client.setProvisioningPayload(payload);
  return client.register();
}

function registerX509(transport, registrationId, cert, key) {
  const security = new X509Security(registrationId, { cert, key });
  const client = ProvisioningDeviceClient.create(host, idScope, newTransport(transport), security);
  return client.register();
}

// watchedRegistration starts a registration whose MQTT transport records
// every time the server closed its connection: the SDK has no public event
// for it, but its MqttBase emits 'error' (NotConnectedError) when the
// connection closes under it, and the SDK then connects again by itself for
// its next request. The transport re-emits that error when no request was
// in flight; unhandled, it would end the process (as it ends a device's).
function watchedRegistration(transport, registrationId, key) {
  const t = newTransport(transport);
  const drops = [];
  t._mqttBase.on('error', (err) => drops.push(err));
  t.on('error', () => {});
  const client = ProvisioningDeviceClient.create(host, idScope, t, new SymmetricKeySecurityClient(registrationId, key));
  return { done: client.register(), drops };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// runBulkEnrollmentOperation only settles when given a callback (its
// promise form never resolves in azure-iot-provisioning-service 1.11.2).
function bulk(op) {
  return new Promise((resolve, reject) => service.runBulkEnrollmentOperation(op, (err, body) => (err ? reject(err) : resolve(body))));
}

// ensure creates an enrollment once; a 409 (already created by the other
// transport's run) is fine.
async function ensure(create) {
  try {
    await create();
  } catch (err) {
    if (!(err.response && err.response.statusCode === 409)) throw err;
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error('assertion failed: ' + msg);
}

function errText(err) {
  if (!err) return String(err);
  const parts = [err.name, err.message];
  if (err.response && err.response.statusCode) parts.push('HTTP ' + err.response.statusCode);
  if (err.responseBody) parts.push(String(err.responseBody));
  if (err.result) parts.push(JSON.stringify(err.result));
  return parts.filter(Boolean).join(': ');
}

async function expectFailure(promise, what) {
  try {
    const r = await promise;
    throw new Error(what + ' unexpectedly succeeded: ' + JSON.stringify(r));
  } catch (err) {
    if (err.message && err.message.includes('unexpectedly succeeded')) throw err;
    return err;
  }
}

async function scenario(name, transport, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ scenario: name, transport, ok: true, ms: Date.now() - started });
  } catch (err) {
    results.push({ scenario: name, transport, ok: false, error: errText(err) + (err.stack ? '\n' + err.stack : ''), ms: Date.now() - started });
  }
  console.log(JSON.stringify(results[results.length - 1]));
}

function deepEqual(a, b) {
  return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
}
function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.keys(v).sort().reduce((o, k) => { o[k] = sortKeys(v[k]); return o; }, {});
  return v;
}

// httpsJSON sends one request to the device endpoint and parses the answer.
function httpsJSON(method, path, auth, body) {
  const https = require('https');
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request({ host, port: 443, method, path, headers: Object.assign(
      { 'Content-Type': 'application/json; charset=utf-8', Accept: 'application/json' },
      auth ? { Authorization: auth } : {}, data ? { 'Content-Length': Buffer.byteLength(data) } : {}) }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        try { resolve({ status: res.statusCode, headers: res.headers, body: text ? JSON.parse(text) : undefined }); } catch (e) { reject(new Error('non-JSON answer ' + res.statusCode + ': ' + text)); }
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function deviceSAS(registrationId, key) {
  const sr = encodeURIComponent(idScope + '/registrations/' + registrationId);
  const se = Math.floor(Date.now() / 1000) + 3600;
  const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(sr + '\n' + se).digest('base64');
  return 'SharedAccessSignature sr=' + sr + '&sig=' + encodeURIComponent(sig) + '&se=' + se + '&skn=registration';
}

// The wire contract other SDKs depend on and the Node SDK does not check:
// register answers 202 {operationId, status:"assigning"} with retry-after;
// every poll carries operationId and status, and registrationState carries
// registrationId and status (Java, embedded C, IoT Edge's aziot).
async function wireScenarios() {
  await scenario('wire: register 202 and every poll answer complete (Java, embedded C, aziot)', 'https', async () => {
    const id = 'wire-' + run;
    const keys = (await service.createOrUpdateIndividualEnrollment({ registrationId: id, attestation: { type: 'symmetricKey' } })).responseBody.attestation.symmetricKey;
    const auth = deviceSAS(id, keys.primaryKey);
    const base = '/' + idScope + '/registrations/' + id;
    const reg = await httpsJSON('PUT', base + '/register?api-version=2021-06-01', auth, { registrationId: id, payload: { a: 1 } });
    assert(reg.status === 202, 'register status ' + reg.status);
    assert(reg.body.operationId && reg.body.status === 'assigning', 'register body ' + JSON.stringify(reg.body));
    assert(reg.headers['retry-after'], 'register retry-after header');
    for (let i = 0; i < 50; i++) {
      const poll = await httpsJSON('GET', base + '/operations/' + reg.body.operationId + '?api-version=2021-06-01', auth);
      const b = poll.body || {};
      assert(b.operationId === reg.body.operationId && b.status, 'poll lacks operationId or status: ' + JSON.stringify(b));
      assert(b.registrationState && b.registrationState.registrationId === id && b.registrationState.status, 'poll registrationState incomplete: ' + JSON.stringify(b));
      if (b.status === 'assigned') {
        assert(poll.status === 200 && b.registrationState.assignedHub && b.registrationState.deviceId, 'assigned answer: ' + poll.status + ' ' + JSON.stringify(b));
        return;
      }
      assert(poll.status === 202 && b.status === 'assigning', 'unexpected poll answer ' + poll.status + ' ' + JSON.stringify(b));
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('never assigned');
  });
  await scenario('wire: errors are JSON with errorCode, trackingId, message, timestampUtc', 'https', async () => {
    const r = await httpsJSON('PUT', '/' + idScope + '/registrations/nobody-' + run + '/register', deviceSAS('nobody-' + run, crypto.randomBytes(32).toString('base64')), {});
    assert(r.status === 401 && r.body.errorCode === 401002 && r.body.trackingId && r.body.message && r.body.timestampUtc, JSON.stringify(r));
  });
}

async function serviceScenarios() {
  const id = 'svc-' + run;
  await scenario('service: individual enrollment create/get/update-with-etag/delete', 'https', async () => {
    const created = (await service.createOrUpdateIndividualEnrollment({
      registrationId: id,
      attestation: { type: 'symmetricKey' },
      initialTwin: { tags: { site: 'a' }, properties: { desired: { interval: 10 } } },
    })).responseBody;
    assert(created.etag, 'etag on create');
    assert(created.attestation.symmetricKey.primaryKey, 'generated primary key on create');
    const got = (await service.getIndividualEnrollment(id)).responseBody;
    assert(got.registrationId === id, 'get returns the enrollment');
    assert(!got.attestation.symmetricKey || !got.attestation.symmetricKey.primaryKey, 'get hides keys');
    got.provisioningStatus = 'disabled';
    const updated = (await service.createOrUpdateIndividualEnrollment(got)).responseBody;
    assert(updated.provisioningStatus === 'disabled', 'update applied');
    assert(updated.etag !== got.etag, 'etag changed');
    const stale = await expectFailure(service.createOrUpdateIndividualEnrollment(got), 'update with a stale etag');
    assert(stale.response && stale.response.statusCode === 412, 'stale etag is 412, got ' + errText(stale));
    const att = (await service.getIndividualEnrollmentAttestationMechanism(id)).responseBody;
    assert(att.symmetricKey.primaryKey === created.attestation.symmetricKey.primaryKey, 'attestation mechanism returns the unchanged key');
    await service.deleteIndividualEnrollment(id, updated.etag);
    const gone = await expectFailure(service.getIndividualEnrollment(id), 'get after delete');
    assert(gone.response && gone.response.statusCode === 404, 'get after delete is 404, got ' + errText(gone));
  });

  await scenario('service: enrollment group create/get/update-with-etag/delete', 'https', async () => {
    const gid = 'svc-grp-' + run;
    const created = (await service.createOrUpdateEnrollmentGroup({ enrollmentGroupId: gid, attestation: { type: 'symmetricKey' } })).responseBody;
    assert(created.attestation.symmetricKey.primaryKey, 'group keys on create');
    const got = (await service.getEnrollmentGroup(gid)).responseBody;
    got.reprovisionPolicy = { updateHubAssignment: true, migrateDeviceData: false };
    const updated = (await service.createOrUpdateEnrollmentGroup(got)).responseBody;
    assert(updated.reprovisionPolicy.migrateDeviceData === false, 'group update applied');
    const att = (await service.getEnrollmentGroupAttestationMechanism(gid)).responseBody;
    assert(att.symmetricKey.primaryKey === created.attestation.symmetricKey.primaryKey, 'group keys unchanged');
    await service.deleteEnrollmentGroup(updated);
    await expectFailure(service.getEnrollmentGroup(gid), 'group get after delete');
  });

  await scenario('service: query enrollments and groups with paging', 'https', async () => {
    for (let i = 0; i < 5; i++) {
      await service.createOrUpdateIndividualEnrollment({ registrationId: `q-${run}-${i}`, attestation: { type: 'symmetricKey' } });
    }
    const query = service.createIndividualEnrollmentQuery({ query: '*' }, 2);
    let seen = 0, pages = 0;
    while (query.hasMoreResults) {
      const page = (await query.next(query.continuationToken)).responseBody;
      pages++;
      seen += page.filter((e) => e.registrationId.startsWith(`q-${run}-`)).length;
      assert(pages < 100, 'query terminates');
    }
    assert(seen === 5 && pages >= 3, `paged query saw ${seen} in ${pages} pages`);
    const gq = service.createEnrollmentGroupQuery({ query: 'SELECT * FROM enrollmentGroups' }, 10);
    await gq.next();
  });

  await scenario('service: bulk create and delete with a per-item failure', 'https', async () => {
    const items = [0, 1].map((i) => ({ registrationId: `bulk-${run}-${i}`, attestation: { type: 'symmetricKey' } }));
    const res = await bulk({ mode: 'create', enrollments: items });
    assert(res.isSuccessful === true, 'bulk create: ' + JSON.stringify(res));
    const again = await bulk({ mode: 'create', enrollments: items.slice(0, 1) });
    assert(again.isSuccessful === false && again.errors.length === 1 && again.errors[0].registrationId === items[0].registrationId, 'duplicate create fails per item: ' + JSON.stringify(again));
    const del = await bulk({ mode: 'delete', enrollments: items });
    assert(del.isSuccessful === true, 'bulk delete: ' + JSON.stringify(del));
  });
}

async function deviceScenarios(transport) {
  const t = transport;
  const ind = 'ind-' + t + '-' + run;
  const created = (await service.createOrUpdateIndividualEnrollment({ registrationId: ind, attestation: { type: 'symmetricKey' } })).responseBody;
  const keys = created.attestation.symmetricKey;

  await scenario('symmetric individual, primary key', t, async () => {
    const r = await register(t, ind, keys.primaryKey);
    assert(r.status === 'assigned' && r.assignedHub && r.deviceId === ind, 'assigned: ' + JSON.stringify(r));
  });
  await scenario('symmetric individual, secondary key', t, async () => {
    const r = await register(t, ind, keys.secondaryKey);
    assert(r.assignedHub && r.deviceId === ind, 'assigned: ' + JSON.stringify(r));
  });

  const gid = 'grp-' + t + '-' + run;
  const group = (await service.createOrUpdateEnrollmentGroup({ enrollmentGroupId: gid, attestation: { type: 'symmetricKey' } })).responseBody;
  const gdev = 'gdev-' + t + '-' + run;
  await scenario('symmetric group, derived key', t, async () => {
    const r = await register(t, gdev, deriveKey(group.attestation.symmetricKey.primaryKey, gdev));
    assert(r.assignedHub && r.deviceId === gdev, 'assigned: ' + JSON.stringify(r));
  });
  await scenario('symmetric group, the group key itself is refused', t, async () => {
    await expectFailure(register(t, gdev + '-x', group.attestation.symmetricKey.primaryKey), 'registration with the group key');
  });
  await scenario('re-registration reports a substatus', t, async () => {
    const r = await register(t, gdev, deriveKey(group.attestation.symmetricKey.secondaryKey, gdev));
    assert(r.substatus === 'initialAssignment', 'same hub again: ' + JSON.stringify(r));
    await service.deleteDeviceRegistrationState(gdev);
    const again = await register(t, gdev, deriveKey(group.attestation.symmetricKey.primaryKey, gdev));
    assert(again.substatus === 'initialAssignment', 'after deleting the registration state: ' + JSON.stringify(again));
  });
  await scenario('service: registration state get and group query', t, async () => {
    const st = (await service.getDeviceRegistrationState(gdev)).responseBody;
    assert(st.registrationId === gdev && st.status === 'assigned' && st.assignedHub, 'registration state: ' + JSON.stringify(st));
    const q = service.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, gid, 10);
    const page = (await q.next()).responseBody;
    assert(page.some((s) => s.registrationId === gdev), 'group registration query: ' + JSON.stringify(page));
  });

  await scenario('custom allocation, payload round trip', t, async () => {
    const cid = 'custom-' + t + '-' + run;
    await service.createOrUpdateIndividualEnrollment({
      registrationId: cid,
      attestation: { type: 'symmetricKey' },
      allocationPolicy: 'custom',
      iotHubs: [hubA, hubB],
      customAllocationDefinition: { webhookUrl, apiVersion: '2021-10-01' },
    });
    const att = (await service.getIndividualEnrollmentAttestationMechanism(cid)).responseBody;
    const payload = { model: 'heatpump', fw: { version: '2.1.0', modules: ['a', { b: [1, 2, null] }] }, note: 'caf\u00e9' };
    const r = await register(t, cid, att.symmetricKey.primaryKey, payload);
    assert(r.assignedHub === hubB, 'webhook chose hub B (' + hubB + ') for a heatpump: ' + JSON.stringify(r));
    assert(r.payload && deepEqual(r.payload.received, payload), 'device got its payload back through the webhook: ' + JSON.stringify(r.payload));
    assert(r.payload.greeting === 'hello from the webhook', 'webhook payload: ' + JSON.stringify(r.payload));
  });

  await scenario('X.509 individual enrollment', t, async () => {
    await ensure(() => service.createOrUpdateIndividualEnrollment({
      registrationId: 'x509-node-ind',
      attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: readX509('ind.pem') } } } },
    }));
    const r = await registerX509(t, 'x509-node-ind', readX509('ind.pem'), readX509('ind-key.pem'));
    assert(r.assignedHub && r.deviceId === 'x509-node-ind', 'assigned: ' + JSON.stringify(r));
  });
  await scenario('X.509 group, device chain through an intermediate', t, async () => {
    await ensure(() => service.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: 'x509-node-grp',
      attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: readX509('root.pem') } } } },
    }));
    const r = await registerX509(t, 'x509-node-grp-dev', readX509('grp-chain.pem'), readX509('grp-key.pem'));
    assert(r.assignedHub && r.deviceId === 'x509-node-grp-dev', 'assigned: ' + JSON.stringify(r));
  });
  await scenario('X.509 certificate of another device is refused', t, async () => {
    await expectFailure(registerX509(t, 'x509-node-other', readX509('ind.pem'), readX509('ind-key.pem')), 'registration with a certificate whose CN is another ID');
  });

  const off = 'off-' + t + '-' + run;
  const offKeys = (await service.createOrUpdateIndividualEnrollment({ registrationId: off, attestation: { type: 'symmetricKey' }, provisioningStatus: 'disabled' })).responseBody.attestation.symmetricKey;
  await scenario('disabled enrollment is refused', t, async () => {
    await expectFailure(register(t, off, offKeys.primaryKey), 'registration of a disabled enrollment');
  });
  await scenario('wrong key is refused', t, async () => {
    await expectFailure(register(t, ind, crypto.randomBytes(32).toString('base64')), 'registration with a wrong key');
  });
  await scenario('unknown device is refused', t, async () => {
    await expectFailure(register(t, 'nobody-' + run, crypto.randomBytes(32).toString('base64')), 'registration of an unknown device');
  });
  await scenario('wrong ID scope is refused', t, async () => {
    const security = new SymmetricKeySecurityClient(ind, keys.primaryKey);
    const client = ProvisioningDeviceClient.create(host, '0ne99999999', newTransport(t), security);
    await expectFailure(client.register(), 'registration with a wrong ID scope');
  });
}

// MQTT sessions of one registration ID. dpsd answers the register with
// retry-after 1, so each device stays connected about a second between its
// register and its poll: the other device connects in that window.
async function sessionScenarios(t) {
  const id = 'session-' + t + '-' + run;
  const keys = (await service.createOrUpdateIndividualEnrollment({ registrationId: id, attestation: { type: 'symmetricKey' } })).responseBody.attestation.symmetricKey;
  await scenario('MQTT session: a second device with the same registration ID and a wrong key leaves the first connected; it completes', t, async () => {
    const first = watchedRegistration(t, id, keys.primaryKey);
    await sleep(400);
    await expectFailure(register(t, id, crypto.randomBytes(32).toString('base64')), 'registration with a wrong key');
    const r = await first.done;
    assert(r.status === 'assigned' && r.deviceId === id, 'first device assigned: ' + JSON.stringify(r));
    assert(first.drops.length === 0, 'the first device was disconnected by a connection that failed authentication: ' + first.drops.map(errText).join('; '));
  });
  await scenario('MQTT session: a re-connect with the right key replaces the first connection; both complete', t, async () => {
    const first = watchedRegistration(t, id, keys.primaryKey);
    await sleep(400);
    const second = await watchedRegistration(t, id, keys.secondaryKey).done;
    const r = await first.done;
    assert(second.status === 'assigned' && second.deviceId === id, 'second device assigned: ' + JSON.stringify(second));
    assert(r.status === 'assigned' && r.deviceId === id, 'first device assigned: ' + JSON.stringify(r));
    assert(first.drops.length >= 1, 'the authenticated second connection did not replace the first');
  });
}

// ---------------------------------------------------------------------------
// The built-in hubs: devices provisioned through dps connect to their
// assigned hub with the device SDK (azure-iot-device with -mqtt over Mqtt and
// MqttWs, and -http), and the service SDK (azure-iothub) reads and patches
// their twins and calls their methods. Every device client uses NoRetry, so
// a refusal or a dropped connection shows at once instead of being retried
// away.

const registries = {};
const methodClients = {};
for (const cs of hubConnectionStrings) {
  registries[csField(cs, 'HostName')] = Registry.fromConnectionString(cs);
  methodClients[csField(cs, 'HostName')] = ServiceClient.fromConnectionString(cs);
}

function deviceTransport(t) {
  if (t === 'mqttws') return DeviceMqttWs;
  return t === 'mqtt' ? DeviceMqtt : DeviceHttp;
}

// within fails with a clear message when p has not settled after ms.
function within(ms, p, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(what + ': no answer within ' + ms + ' ms')), ms); });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function waitFor(what, ms, fn) {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out after ' + ms + ' ms waiting for ' + what);
    await sleep(25);
  }
}

const plain = (v) => JSON.parse(JSON.stringify(v));
const cb = (fn) => new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));

// hubClient is a device client of the hub, as a customer writes it, with
// the SDK's NoRetry policy; it records its 'disconnect' and 'error' events.
function hubClient(t, hub, deviceId, auth) {
  const cs = 'HostName=' + hub + ';DeviceId=' + deviceId + ';' + (auth.key ? 'SharedAccessKey=' + auth.key : 'x509=true');
  const c = DeviceClient.fromConnectionString(cs, deviceTransport(t));
  c.setRetryPolicy(new NoRetry());
  if (auth.cert) c.setOptions({ cert: auth.cert, key: auth.certKey });
  c.disconnects = [];
  c.errors = [];
  c.on('disconnect', (d) => c.disconnects.push(d));
  c.on('error', (err) => c.errors.push(err));
  return c;
}

async function closeQuietly(c) {
  if (!c) return;
  try { await within(5000, c.close(), 'close'); } catch (_) { /* already closed by the server */ }
}

// withHubClient opens a client, runs fn with it and closes it.
async function withHubClient(t, hub, deviceId, auth, fn) {
  const c = hubClient(t, hub, deviceId, auth);
  try {
    await within(10000, c.open(), 'device client open');
    return await fn(c);
  } finally {
    await closeQuietly(c);
  }
}

// expectRefused asserts that err is the documented refusal of a device
// whose credential does not match: CONNACK 5 (Not authorized) over MQTT,
// HTTP 401 (UnauthorizedError) over HTTPS. The Node SDK reports every
// failure of a client's first MQTT connection as UnauthorizedError
// ("Failure on first connection (Not authorized): <mqtt.js error>"), a
// plain close or CONNACK 3 included, so the return code is read from
// mqtt.js's text, which the SDK keeps: "Connection refused: Not
// authorized" is return code 5.
function expectRefused(err, t, what) {
  if (t === 'http') {
    const status = err.response && err.response.statusCode;
    assert(err.name === 'UnauthorizedError' && status === 401, what + ': want UnauthorizedError with HTTP 401, got ' + errText(err) + ' (status ' + status + ')');
    return;
  }
  const te = err.transportError || err;
  const text = String(te.message || err.message);
  assert(err.name === 'UnauthorizedError' && text.includes('Connection refused: Not authorized'), what + ': want CONNACK 5 (Not authorized), got ' + errText(err));
}

// tryConnect makes one authenticated exchange: open over MQTT, a
// telemetry message over HTTPS (which has no connection). It resolves to
// the error, or undefined when the hub accepted the device.
async function tryConnect(t, hub, deviceId, auth) {
  const c = hubClient(t, hub, deviceId, auth);
  try {
    if (t === 'http') await within(10000, c.sendEvent(new Message('probe')), 'sendEvent');
    else await within(10000, c.open(), 'open');
    return undefined;
  } catch (err) {
    return err;
  } finally {
    await closeQuietly(c);
  }
}

async function expectConnectRefused(t, hub, deviceId, auth, what) {
  const err = await tryConnect(t, hub, deviceId, auth);
  if (!err) throw new Error(what + ' was accepted by ' + hub);
  expectRefused(err, t, what);
}

// sendTelemetry sends one message with application properties and a
// message id, and prints what was sent: the Go test then finds it in the
// hub's event log.
async function sendTelemetry(c, t, hub, deviceId, messageId) {
  const body = JSON.stringify({ temperature: 21.5, transport: t, at: messageId });
  const msg = new Message(body);
  msg.messageId = messageId;
  const properties = { alert: 'high', path: 'a/b&c=d x%', n: '42' };
  for (const [k, v] of Object.entries(properties)) msg.properties.add(k, v);
  await within(10000, c.sendEvent(msg), 'sendEvent');
  console.log(JSON.stringify({ telemetry: { transport: t, hub, deviceId, messageId, properties, body } }));
}

// provisionToHub creates a symmetric-key enrollment with custom allocation
// over both hubs and registers it with the provisioning SDK.
async function provisionToHub(t, registrationId, payload, extra) {
  const created = (await service.createOrUpdateIndividualEnrollment(Object.assign({
    registrationId,
    attestation: { type: 'symmetricKey' },
    allocationPolicy: 'custom',
    iotHubs: [hubA, hubB],
    customAllocationDefinition: { webhookUrl, apiVersion: '2021-10-01' },
  }, extra || {}))).responseBody;
  const key = created.attestation.symmetricKey.primaryKey;
  const r = await register(t, registrationId, key, payload);
  return { hub: r.assignedHub, deviceId: r.deviceId, key, registration: r };
}

// webhookDesired is the desired properties the suite's webhook puts into
// the initial twin for a payload (compat_test.go).
function webhookDesired(payload, hub, registrationId) {
  return Object.assign({ webhook: { hub, registrationId } }, payload.desired || {});
}

// expectServiceFailure is expectFailure for the service SDK, whose results
// hold the HTTP response (circular).
async function expectServiceFailure(promise, what) {
  return expectFailure(promise.then((r) => (r && r.responseBody !== undefined ? plain(r.responseBody) : r)), what);
}

function need(dev) {
  if (!dev) throw new Error('not run: the device was not provisioned (see the provisioning scenario)');
  return dev;
}

// onMethod registers a direct-method handler and resolves once the
// subscription is acknowledged (the SDK's own enable path; its public
// onDeviceMethod does not report when it is subscribed).
async function onMethod(c, name, handler) {
  c.onDeviceMethod(name, handler);
  await within(10000, cb((done) => c._enableMethods(done)), 'subscribe to methods');
}

async function invoke(hub, deviceId, methodName, payload) {
  return within(20000, methodClients[hub].invokeDeviceMethod(deviceId, { methodName, payload, responseTimeoutInSeconds: 10 }), 'invokeDeviceMethod');
}

function serviceSAS(cs) {
  const host = csField(cs, 'HostName');
  const sr = encodeURIComponent(host);
  const se = Math.floor(Date.now() / 1000) + 3600;
  const sig = crypto.createHmac('sha256', Buffer.from(csField(cs, 'SharedAccessKey'), 'base64')).update(sr + '\n' + se).digest('base64');
  return 'SharedAccessSignature sr=' + sr + '&sig=' + encodeURIComponent(sig) + '&se=' + se + '&skn=' + csField(cs, 'SharedAccessKeyName');
}

// sendC2D sends a cloud-to-device message through the hub's service REST
// API (the contract of the built-in hub's C2D endpoint).
function sendC2D(hub, deviceId, body, headers) {
  const https = require('https');
  const cs = hubConnectionStrings.find((s) => csField(s, 'HostName') === hub);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: hub, port: 443, method: 'POST', path: '/devices/' + encodeURIComponent(deviceId) + '/messages/deviceBound?api-version=2021-04-12',
      headers: Object.assign({ Authorization: serviceSAS(cs), 'Content-Length': Buffer.byteLength(body) }, headers) }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

// hubREST is one request to a hub's service REST API, signed with its
// iothubowner policy.
function hubREST(hub, method, path, headers, body) {
  const https = require('https');
  const cs = hubConnectionStrings.find((s) => csField(s, 'HostName') === hub);
  const data = body === undefined ? '' : body;
  return new Promise((resolve, reject) => {
    const req = https.request({ host: hub, port: 443, method, path: path + (path.includes('?') ? '&' : '?') + 'api-version=2021-04-12',
      headers: Object.assign({ Authorization: serviceSAS(cs), 'Content-Length': Buffer.byteLength(data) }, headers || {}) }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

// takeFeedback reads the hub's C2D feedback batch by batch (completing
// each) until it finds the record of messageId, or ms pass.
async function takeFeedback(hub, messageId, ms) {
  const end = Date.now() + ms;
  const seen = [];
  for (;;) {
    const r = await hubREST(hub, 'GET', '/messages/serviceBound/feedback');
    if (r.status === 200) {
      const etag = r.headers.etag;
      assert(/^".+"$/.test(etag || ''), 'feedback ETag ' + etag);
      const batch = JSON.parse(r.body);
      const del = await hubREST(hub, 'DELETE', '/messages/serviceBound/feedback/' + encodeURIComponent(etag.slice(1, -1)));
      assert(del.status === 204, 'complete the feedback batch: HTTP ' + del.status + ' ' + del.body);
      seen.push(...batch);
      const rec = batch.find((f) => f.originalMessageId === messageId);
      if (rec) return rec;
      continue;
    }
    assert(r.status === 204, 'feedback: HTTP ' + r.status + ' ' + r.body);
    if (Date.now() > end) throw new Error('no feedback for ' + messageId + ' within ' + ms + ' ms; saw ' + JSON.stringify(seen));
    await sleep(500);
  }
}

async function hubScenarios(t) {
  const mqtt = t !== 'http';
  // mqtt: hub A (localhost); mqttws and http: hub B (127.0.0.2, a hub
  // named by an IP address).
  const model = t === 'mqtt' ? 'thermostat' : 'heatpump';
  const wantHub = model === 'heatpump' ? hubB : hubA;
  const id = 'hub-' + t + '-' + run;
  const payload = { model, desired: { interval: 30, config: { mode: 'eco', threshold: 21.5 }, label: 'caf\u00e9 & co' } };
  let dev;
  await scenario('hub: a device provisioned with custom allocation is assigned the hub the webhook chose (' + wantHub + ')', t, async () => {
    const d = await provisionToHub(t, id, payload);
    assert(d.hub === wantHub && d.deviceId === id, 'registration: ' + JSON.stringify(d.registration));
    dev = d;
  });
  const auth = () => ({ key: need(dev).key });

  if (mqtt) {
    await scenario('hub: getTwin returns the desired properties of the webhook\'s initial twin, with $version', t, async () => {
      const d = need(dev);
      await withHubClient(t, d.hub, d.deviceId, auth(), async (c) => {
        const twin = await within(10000, c.getTwin(), 'getTwin');
        const desired = plain(twin.properties.desired);
        assert(Number.isInteger(desired.$version) && desired.$version >= 1, 'desired $version: ' + JSON.stringify(desired));
        delete desired.$version;
        const want = webhookDesired(payload, d.hub, id);
        assert(deepEqual(desired, want), 'desired ' + JSON.stringify(desired) + ', want ' + JSON.stringify(want));
        assert(Number.isInteger(twin.properties.reported.$version), 'reported $version: ' + JSON.stringify(plain(twin.properties.reported)));
      });
    });

    await scenario('hub: reported properties round-trip to the service (Registry.getTwin), null deletes', t, async () => {
      const d = need(dev);
      await withHubClient(t, d.hub, d.deviceId, auth(), async (c) => {
        const twin = await within(10000, c.getTwin(), 'getTwin');
        const before = twin.properties.reported.$version;
        const patch = { firmware: '2.1.0', battery: 87, location: { room: 'kitchen', floor: 2 }, transient: true };
        await within(10000, cb((done) => twin.properties.reported.update(patch, done)), 'reported update');
        await within(10000, cb((done) => twin.properties.reported.update({ transient: null }, done)), 'reported update with null');
        const svc = (await registries[d.hub].getTwin(d.deviceId)).responseBody;
        const reported = plain(svc.properties.reported);
        const got = {};
        for (const k of Object.keys(reported)) if (!k.startsWith('$')) got[k] = reported[k];
        const want = { firmware: '2.1.0', battery: 87, location: { room: 'kitchen', floor: 2 } };
        assert(deepEqual(got, want), 'service sees reported ' + JSON.stringify(reported) + ', want ' + JSON.stringify(want));
        assert(Number.isInteger(reported.$version) && reported.$version > before, 'reported $version ' + reported.$version + ' after ' + before);
        const again = await within(10000, c.getTwin(), 'getTwin');
        assert(again.properties.reported.$version === reported.$version, 'device reads reported $version ' + again.properties.reported.$version + ', service ' + reported.$version);
      });
    });

    await scenario('hub: a desired patch through the service SDK (updateTwin with the etag) fires properties.desired with $version', t, async () => {
      const d = need(dev);
      await withHubClient(t, d.hub, d.deviceId, auth(), async (c) => {
        const twin = await within(10000, c.getTwin(), 'getTwin');
        const events = [];
        twin.on('properties.desired', (p) => events.push(plain(p)));
        // The listener subscribes in the background; this second call
        // resolves once that SUBSCRIBE is acknowledged.
        await within(10000, cb((done) => twin.enableTwinDesiredPropertiesUpdates(done)), 'subscribe to desired updates');
        const reg = registries[d.hub];
        const cur = (await reg.getTwin(d.deviceId)).responseBody;
        const marker = id + '-patch';
        const updated = (await reg.updateTwin(d.deviceId, { properties: { desired: { interval: 60, marker } } }, cur.etag)).responseBody;
        const version = updated.properties.desired.$version;
        assert(updated.properties.desired.interval === 60 && version > cur.properties.desired.$version, 'updateTwin answered ' + JSON.stringify(plain(updated.properties)));
        const ev = await waitFor('the desired-property notification', 5000, () => events.find((e) => e.marker === marker));
        assert(deepEqual(ev, { interval: 60, marker, $version: version }), 'notification ' + JSON.stringify(ev) + ', want the patch with $version ' + version);
        assert(twin.properties.desired.interval === 60 && twin.properties.desired.$version === version, 'device twin after the patch: ' + JSON.stringify(plain(twin.properties.desired)));
        const stale = await expectServiceFailure(reg.updateTwin(d.deviceId, { properties: { desired: { interval: 1 } } }, cur.etag), 'updateTwin with a stale etag');
        assert(stale.response && stale.response.statusCode === 412, 'updateTwin with a stale etag: want 412, got ' + errText(stale));
      });
    });
  }

  await scenario('hub: telemetry with application properties and a message id completes', t, async () => {
    const d = need(dev);
    await withHubClient(t, d.hub, d.deviceId, auth(), async (c) => {
      await sendTelemetry(c, t, d.hub, d.deviceId, id + '-telemetry');
    });
  });

  if (mqtt) {
    await scenario('hub: a direct method through azure-iothub invokeDeviceMethod is answered by the device', t, async () => {
      const d = need(dev);
      await withHubClient(t, d.hub, d.deviceId, auth(), async (c) => {
        const calls = [];
        await onMethod(c, 'setInterval', (req, res) => {
          calls.push(plain(req.payload));
          res.send(201, { applied: req.payload.interval, by: d.deviceId }, () => {});
        });
        const r = await invoke(d.hub, d.deviceId, 'setInterval', { interval: 15, unit: 's' });
        assert(r.result.status === 201 && deepEqual(r.result.payload, { applied: 15, by: d.deviceId }), 'service saw ' + JSON.stringify(r.result));
        assert(deepEqual(calls, [{ interval: 15, unit: 's' }]), 'device got ' + JSON.stringify(calls));
      });
    });
  }

  // Negatives.
  await scenario('hub: a wrong key is refused', t, async () => {
    const d = need(dev);
    await expectConnectRefused(t, d.hub, d.deviceId, { key: crypto.randomBytes(32).toString('base64') }, 'a connection with a wrong key');
  });

  if (mqtt) {
    await scenario('hub: a connect with the same device ID and a wrong key leaves the connected device connected', t, async () => {
      const d = need(dev);
      await withHubClient(t, d.hub, d.deviceId, auth(), async (c) => {
        await onMethod(c, 'ping', (req, res) => res.send(200, { pong: req.payload }, () => {}));
        await expectConnectRefused(t, d.hub, d.deviceId, { key: crypto.randomBytes(32).toString('base64') }, 'a connection with a wrong key');
        await sleep(300);
        const r = await invoke(d.hub, d.deviceId, 'ping', 7);
        assert(r.result.status === 200 && deepEqual(r.result.payload, { pong: 7 }), 'method after the refused connect: ' + JSON.stringify(r.result));
        const twin = await within(10000, c.getTwin(), 'getTwin after the refused connect');
        assert(Number.isInteger(twin.properties.desired.$version), 'twin after the refused connect');
        assert(c.disconnects.length === 0, 'the connected device was disconnected: ' + c.disconnects.map((x) => errText(x.reason || x)).join('; '));
      });
    });

    await scenario('hub: a second authenticated connection replaces the first (the first sees a disconnect)', t, async () => {
      const d = need(dev);
      const first = hubClient(t, d.hub, d.deviceId, auth());
      const second = hubClient(t, d.hub, d.deviceId, auth());
      try {
        await within(10000, first.open(), 'first open');
        await onMethod(first, 'who', (req, res) => res.send(200, 'first', () => {}));
        await within(10000, second.open(), 'second open');
        await onMethod(second, 'who', (req, res) => res.send(200, 'second', () => {}));
        await waitFor('the first connection\'s disconnect event', 5000, () => first.disconnects.length > 0);
        const r = await invoke(d.hub, d.deviceId, 'who', null);
        assert(r.result.status === 200 && r.result.payload === 'second', 'the method reached ' + JSON.stringify(r.result));
        assert(second.disconnects.length === 0, 'the second connection was dropped too: ' + second.disconnects.map((x) => errText(x.reason || x)).join('; '));
      } finally {
        await closeQuietly(second);
        await closeQuietly(first);
      }
    });
  }

  // X.509: two self-signed devices with individual enrollments (one
  // enrollment each for all transports); both land on hub A.
  const x509 = (name) => ({ cert: readX509(name + '.pem'), certKey: readX509(name + '-key.pem') });
  const x509Devices = {};
  await scenario('hub: X.509 devices provisioned with individual enrollments', t, async () => {
    for (const name of ['x509-hub-1', 'x509-hub-2']) {
      await ensure(() => service.createOrUpdateIndividualEnrollment({
        registrationId: name,
        attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: readX509(name + '.pem') } } } },
        allocationPolicy: 'custom',
        iotHubs: [hubA, hubB],
        customAllocationDefinition: { webhookUrl, apiVersion: '2021-10-01' },
      }));
      const r = await registerX509(t, name, readX509(name + '.pem'), readX509(name + '-key.pem'));
      assert(r.assignedHub === hubA && r.deviceId === name, 'registration: ' + JSON.stringify(r));
      x509Devices[name] = { hub: r.assignedHub, deviceId: r.deviceId };
    }
  });
  await scenario('hub: an X.509 device connects with its certificate (x509=true) and sends telemetry', t, async () => {
    const d = need(x509Devices['x509-hub-1']);
    await withHubClient(t, d.hub, d.deviceId, x509('x509-hub-1'), async (c) => {
      await sendTelemetry(c, t, d.hub, d.deviceId, 'x509-' + t + '-' + run);
    });
  });
  await scenario('hub: another device\'s certificate is refused', t, async () => {
    const d = need(x509Devices['x509-hub-2']);
    await expectConnectRefused(t, d.hub, d.deviceId, x509('x509-hub-1'), 'x509-hub-2 connecting with the certificate of x509-hub-1');
  });

  // Certificate issuance: the Go runner registered csr-node-dev with a CSR
  // (no Node SDK sends one) and renewed its certificate over MQTT; the
  // device connects with each through the SDK's X.509 authentication.
  await scenario('hub: a device connects with the certificate dps issued for its CSR, and with its renewal, and sends telemetry', t, async () => {
    for (const n of ['1', '2']) {
      await withHubClient(t, hubA, 'csr-node-dev', x509('csr-dev-' + n), async (c) => {
        await sendTelemetry(c, t, hubA, 'csr-node-dev', 'csr-' + n + '-' + t + '-' + run);
      });
    }
  });
  await scenario('hub: the issued certificate does not authenticate another device', t, async () => {
    const d = need(x509Devices['x509-hub-1']);
    await expectConnectRefused(t, d.hub, d.deviceId, x509('csr-dev-1'), 'x509-hub-1 connecting with the issued certificate of csr-node-dev');
  });

  // Re-provisioning to the other hub removes the identity from the old one.
  const mid = 'move-' + t + '-' + run;
  const before = { model: 'thermostat', desired: { phase: 1 } };
  const after = { model: 'heatpump', desired: { phase: 2 } };
  let moved;
  await scenario('hub: a device re-provisioned to the other hub (updateHubAssignment) is refused on the old hub', t, async () => {
    const d = await provisionToHub(t, mid, before, { reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: false } });
    assert(d.hub === hubA, 'first assignment: ' + JSON.stringify(d.registration));
    const ok = await tryConnect(t, hubA, mid, { key: d.key });
    assert(!ok, 'the device could not connect to ' + hubA + ' before it moved: ' + errText(ok));
    const r = await register(t, mid, d.key, after);
    assert(r.assignedHub === hubB && r.deviceId === mid, 'second assignment (the webhook moves a heatpump to ' + hubB + '): ' + JSON.stringify(r));
    moved = { hub: hubB, deviceId: mid, key: d.key };
    await expectConnectRefused(t, hubA, mid, { key: d.key }, 'a connection to the old hub after the move');
  });
  await scenario('hub: the re-provisioned device works on its new hub', t, async () => {
    const d = need(moved);
    await withHubClient(t, d.hub, d.deviceId, { key: d.key }, async (c) => {
      if (mqtt) {
        const twin = await within(10000, c.getTwin(), 'getTwin');
        const desired = plain(twin.properties.desired);
        delete desired.$version;
        const want = webhookDesired(after, hubB, mid);
        assert(deepEqual(desired, want), 'desired on the new hub ' + JSON.stringify(desired) + ', want ' + JSON.stringify(want));
      }
      await sendTelemetry(c, t, d.hub, d.deviceId, mid + '-after-move');
    });
    const gone = await expectServiceFailure(registries[hubA].getTwin(mid), 'the twin on the old hub');
    assert(gone.response && gone.response.statusCode === 404, 'twin on the old hub: want 404, got ' + errText(gone));
  });

  // Cloud-to-device messages, sent through dps's HTTPS extension (Azure sends them over AMQP only).
  await scenario('hub: a C2D message sent through the service REST API is received and completed', t, async () => {
    const d = need(dev);
    const c = hubClient(t, d.hub, d.deviceId, auth());
    const received = [];
    const completed = [];
    try {
      if (!mqtt) c.setOptions({ http: { receivePolicy: { interval: 1 } } });
      c.on('message', (msg) => {
        received.push(msg);
        completed.push(c.complete(msg).then(() => 'ok', (err) => err));
      });
      await within(10000, c.open(), 'open');
      if (mqtt) await within(10000, cb((done) => c._enableC2D(done)), 'subscribe to C2D');
      const messageId = id + '-c2d';
      const body = JSON.stringify({ command: 'reboot', delay: 5 });
      const res = await sendC2D(d.hub, d.deviceId, body, { 'iothub-messageid': messageId, 'iothub-ack': 'full', 'iothub-app-priority': 'high', 'iothub-app-path': 'a/b&c=d' });
      assert(res.status === 204, 'C2D send: HTTP ' + res.status + ' ' + res.body);
      const msg = await waitFor('the C2D message', 10000, () => received[0]);
      const props = {};
      for (let i = 0; i < msg.properties.count(); i++) { const p = msg.properties.getItem(i); props[p.key] = p.value; }
      assert(msg.messageId === messageId, 'messageId ' + msg.messageId + ', want ' + messageId);
      assert(Buffer.from(msg.data).toString() === body, 'body ' + Buffer.from(msg.data).toString());
      // The Node HTTP transport keeps the header name as the property's key
      // (azure-iot-http-base toMessage); MQTT gives the bag's key.
      const pre = mqtt ? '' : 'iothub-app-';
      assert(props[pre + 'priority'] === 'high' && props[pre + 'path'] === 'a/b&c=d', 'properties ' + JSON.stringify(props));
      const done = await within(10000, completed[0], 'complete');
      assert(done === 'ok', 'complete failed: ' + errText(done));
      await sleep(mqtt ? 300 : 2500);
      assert(received.length === 1, received.length + ' deliveries of one message');
    } finally {
      await closeQuietly(c);
    }
  });
  await scenario('hub: the C2D message the device completed (iothub-ack full) has Success feedback (GET/DELETE /messages/serviceBound/feedback)', t, async () => {
    const d = need(dev);
    const rec = await takeFeedback(d.hub, id + '-c2d', 5000);
    const twin = plain((await registries[d.hub].get(d.deviceId)).responseBody);
    assert(rec.statusCode === 'Success' && rec.description === 'Success' && rec.deviceId === d.deviceId && rec.deviceGenerationId === twin.generationId &&
      !Number.isNaN(Date.parse(rec.enqueuedTimeUtc)), 'feedback ' + JSON.stringify(rec) + ' (generation ' + twin.generationId + ')');
  });
}

// Revocation of issued certificates: the device disabled through the
// registry (azure-iothub) has its certificates refused, on every transport,
// also once it is enabled again (they were revoked), and the CA's CRL,
// fetched without a token, lists them.
async function issuanceRevocationScenarios() {
  const x509 = (name) => ({ cert: readX509(name + '.pem'), certKey: readX509(name + '-key.pem') });
  const registry = registries[hubA];
  const setStatus = async (status) => {
    const dev = plain((await registry.get('csr-node-dev')).responseBody);
    dev.status = status;
    await registry.update(dev);
  };
  await scenario('hub: a disabled device\'s issued certificates are refused, also once it is enabled again', '-', async () => {
    await setStatus('disabled');
    for (const t of transports) await expectConnectRefused(t, hubA, 'csr-node-dev', x509('csr-dev-2'), 'the disabled device with its renewed certificate');
    await setStatus('enabled');
    for (const t of transports) {
      for (const n of ['1', '2']) await expectConnectRefused(t, hubA, 'csr-node-dev', x509('csr-dev-' + n), 'the re-enabled device with its revoked certificate ' + n);
    }
  });
  await scenario('issuance: the issuing CA\'s CRL (no token) lists the revoked certificates', '-', async () => {
    const crl = await new Promise((resolve, reject) => {
      const req = require('https').request({ host, port: 443, path: '/certificateAuthorities/compat-ca/crl', method: 'GET' }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body: Buffer.concat(chunks) }));
      });
      req.on('error', reject);
      req.end();
    });
    assert(crl.status === 200 && crl.type === 'application/pkix-crl', 'CRL: HTTP ' + crl.status + ' ' + crl.type);
    for (const n of ['1', '2']) {
      const serial = new crypto.X509Certificate(readX509('csr-dev-' + n + '.pem')).serialNumber; // upper-case hex
      const der = Buffer.from(serial.length % 2 ? '0' + serial : serial, 'hex');
      assert(crl.body.includes(der), 'the CRL does not list the serial ' + serial + ' of certificate ' + n);
    }
  });
}

// Feedback of messages a device never took: one that expires while the
// device is offline (the hub's expiry sweep, every 10 s, records it) and
// one the service purges, both sent with iothub-ack negative.
async function feedbackScenarios() {
  const registry = registries[hubA];
  const did = 'fb-' + run;
  const pid = 'fb-purge-' + run;
  await scenario('c2d feedback: a message that expires while its device is offline gives Expired feedback (the sweep); a purged one Purged', 'https', async () => {
    await registry.create({ deviceId: did });
    await registry.create({ deviceId: pid });
    const expiry = new Date(Date.now() + 1000).toISOString();
    let r = await sendC2D(hubA, did, 'short-lived', { 'iothub-messageid': did + '-expires', 'iothub-ack': 'negative', 'iothub-expiry': expiry });
    assert(r.status === 204, 'send: HTTP ' + r.status + ' ' + r.body);
    r = await sendC2D(hubA, pid, 'purged', { 'iothub-messageid': pid + '-purged', 'iothub-ack': 'full' });
    assert(r.status === 204, 'send: HTTP ' + r.status + ' ' + r.body);
    const purge = await hubREST(hubA, 'DELETE', '/devices/' + encodeURIComponent(pid) + '/commands');
    assert(purge.status === 200 && JSON.parse(purge.body).totalMessagesPurged === 1, 'purge: HTTP ' + purge.status + ' ' + purge.body);
    const purged = await takeFeedback(hubA, pid + '-purged', 5000);
    assert(purged.statusCode === 'Purged' && purged.description === 'Message purged' && purged.deviceId === pid, 'purged feedback ' + JSON.stringify(purged));
    // Nothing touches the first device's queue again: only the sweep can see the expiry.
    const expired = await takeFeedback(hubA, did + '-expires', 25000);
    assert(expired.statusCode === 'Expired' && expired.description === 'Message expired' && expired.deviceId === did, 'expired feedback ' + JSON.stringify(expired));
    await registry.delete(did);
    await registry.delete(pid);
  });
}

// The registry of the built-in hub through the real azure-iothub Registry:
// identities created, read, replaced, listed, counted and deleted, in bulk
// too, and what a device sees when its identity is disabled or deleted.
const deviceKeys = ['deviceId', 'generationId', 'etag', 'connectionState', 'status', 'statusReason', 'connectionStateUpdatedTime',
  'statusUpdatedTime', 'lastActivityTime', 'cloudToDeviceMessageCount', 'authentication', 'capabilities'];
const never = '0001-01-01T00:00:00';

// rawRegistryCall is a REST call through the SDK's own client (signed as
// the Registry signs), for what the Registry API does not expose: Node's
// update always sends If-Match "*".
function rawRegistryCall(registry, method, path, headers, body) {
  return new Promise((resolve, reject) => registry._restApiClient.executeApiCall(method, path + '?api-version=2021-04-12', headers, body,
    (err, res) => (err ? reject(err) : resolve(res))));
}

function expectServiceError(err, status, name, what) {
  const got = err.response && err.response.statusCode;
  assert(got === status && err.name === name, what + ': want ' + status + ' ' + name + ', got ' + errText(err));
}

async function registryScenarios() {
  const registry = registries[hubA];
  const id = 'reg-' + run;
  await scenario('registry: create/get/update (stale etag 412)/list/statistics/delete, device JSON exactly', 'https', async () => {
    const created = plain((await registry.create({ deviceId: id })).responseBody);
    // The SDK's Device object orders its members its own way: the wire
    // order is checked on the raw answer.
    const wire = await rawRegistryCall(registry, 'GET', '/devices/' + encodeURIComponent(id), {}, null);
    assert(JSON.stringify(Object.keys(wire)) === JSON.stringify(deviceKeys), 'device members on the wire ' + JSON.stringify(Object.keys(wire)));
    assert(JSON.stringify(Object.keys(wire.authentication)) === '["symmetricKey","x509Thumbprint","type"]', 'authentication members ' + JSON.stringify(Object.keys(wire.authentication)));
    const keys = created.authentication.symmetricKey;
    assert(/^\d{18}$/.test(created.generationId) && typeof created.etag === 'string' && created.etag.length > 0 && !created.etag.includes('"'), 'ids ' + JSON.stringify(created));
    assert(keys.primaryKey.length === 44 && keys.secondaryKey.length === 44 && keys.primaryKey !== keys.secondaryKey, 'generated keys ' + JSON.stringify(keys));
    const want = { deviceId: id, generationId: created.generationId, etag: created.etag, connectionState: 'Disconnected', status: 'enabled',
      statusReason: null, connectionStateUpdatedTime: never, statusUpdatedTime: never, lastActivityTime: never, cloudToDeviceMessageCount: 0,
      authentication: { symmetricKey: keys, x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null }, type: 'sas' },
      capabilities: { iotEdge: false } };
    assert(deepEqual(created, want), 'created ' + JSON.stringify(created) + ', want ' + JSON.stringify(want));
    expectServiceError(await expectServiceFailure(registry.create({ deviceId: id }), 'a second create'), 409, 'DeviceAlreadyExistsError', 'second create');
    const got = plain((await registry.get(id)).responseBody);
    assert(deepEqual(got, created), 'get ' + JSON.stringify(got));

    got.statusReason = 'maintenance';
    const updated = plain((await registry.update(got)).responseBody);
    assert(updated.generationId === created.generationId && updated.etag !== created.etag && updated.statusReason === 'maintenance' &&
      deepEqual(updated.authentication, created.authentication), 'updated ' + JSON.stringify(updated));
    const stale = await expectFailure(rawRegistryCall(registry, 'PUT', '/devices/' + encodeURIComponent(id),
      { 'Content-Type': 'application/json; charset=utf-8', 'If-Match': '"' + created.etag + '"' }, got), 'a replace with a stale etag');
    expectServiceError(stale, 412, 'InvalidEtagError', 'stale etag');
    const current = plain(await rawRegistryCall(registry, 'PUT', '/devices/' + encodeURIComponent(id),
      { 'Content-Type': 'application/json; charset=utf-8', 'If-Match': '"' + updated.etag + '"' }, updated));
    assert(current.generationId === created.generationId && current.statusReason === 'maintenance', 'replace with the current etag ' + JSON.stringify(current));

    const list = plain((await registry.list()).responseBody);
    const listed = list.find((d) => d.deviceId === id);
    assert(listed && deepEqual(listed, current), 'list ' + JSON.stringify(listed));
    const stats = plain((await registry.getRegistryStatistics()).responseBody);
    assert(JSON.stringify(Object.keys(stats)) === '["totalDeviceCount","enabledDeviceCount","disabledDeviceCount"]' &&
      stats.totalDeviceCount === list.length && stats.enabledDeviceCount + stats.disabledDeviceCount === stats.totalDeviceCount, 'statistics ' + JSON.stringify(stats));

    await registry.delete(id);
    expectServiceError(await expectServiceFailure(registry.get(id), 'get after delete'), 404, 'DeviceNotFoundError', 'get after delete');
    expectServiceError(await expectServiceFailure(registry.delete(id), 'a second delete'), 404, 'DeviceNotFoundError', 'second delete');
  });

  await scenario('registry: addDevices/updateDevices/removeDevices (bulk) with per-item results', 'https', async () => {
    const a = 'bulk-a-' + run;
    const b = 'bulk-b-' + run;
    const ok = { isSuccessful: true, errors: [], warnings: [] };
    let r = plain((await registry.addDevices([{ deviceId: a }, { deviceId: b, status: 'disabled' }])).responseBody);
    assert(deepEqual(r, ok), 'addDevices ' + JSON.stringify(r));
    const gotB = plain((await registry.get(b)).responseBody);
    assert(gotB.status === 'disabled' && gotB.authentication.symmetricKey.primaryKey.length === 44, 'b ' + JSON.stringify(gotB));
    r = plain((await registry.addDevices([{ deviceId: a }])).responseBody);
    assert(r.isSuccessful === false && r.errors.length === 1 && r.errors[0].deviceId === a && r.errors[0].errorCode === 'DeviceAlreadyExists', 'addDevices of an existing id ' + JSON.stringify(r));
    r = plain((await registry.updateDevices([{ deviceId: a, eTag: 'stale', status: 'disabled' }], false)).responseBody);
    assert(r.isSuccessful === false && r.errors.length === 1 && r.errors[0].errorCode === 'PreconditionFailed', 'updateDevices with a stale eTag ' + JSON.stringify(r));
    r = plain((await registry.updateDevices([gotB].map((d) => Object.assign(d, { status: 'enabled' })), true)).responseBody);
    assert(deepEqual(r, ok), 'updateDevices forced ' + JSON.stringify(r));
    assert((await registry.get(b)).responseBody.status === 'enabled', 'b after updateDevices');
    r = plain((await registry.removeDevices([{ deviceId: a }, { deviceId: b }], true)).responseBody);
    assert(deepEqual(r, ok), 'removeDevices ' + JSON.stringify(r));
    expectServiceError(await expectServiceFailure(registry.get(a), 'get after removeDevices'), 404, 'DeviceNotFoundError', 'get after removeDevices');
  });

  // A device of the registry connecting with the device SDK (MQTT).
  const t = 'mqtt';
  const did = 'reg-dev-' + run;
  let key;
  await scenario('registry: a device created through the Registry connects; its identity shows Connected', t, async () => {
    key = (await registry.create({ deviceId: did })).responseBody.authentication.symmetricKey.primaryKey;
    await withHubClient(t, hubA, did, { key }, async () => {
      const d = plain((await registry.get(did)).responseBody);
      assert(d.connectionState === 'Connected' && d.connectionStateUpdatedTime !== never, 'connected device ' + JSON.stringify(d));
    });
  });
  await scenario('registry: a connected device is disconnected when disabled through Registry.update', t, async () => {
    assert(key, 'not run: the device was not created');
    const c = hubClient(t, hubA, did, { key });
    try {
      await within(10000, c.open(), 'open');
      const d = plain((await registry.get(did)).responseBody);
      d.status = 'disabled';
      d.statusReason = 'stolen';
      await registry.update(d);
      await waitFor('the disconnect of the disabled device', 5000, () => c.disconnects.length > 0 || c.errors.length > 0);
    } finally {
      await closeQuietly(c);
    }
  });
  await scenario('registry: a disabled device is refused (MQTT CONNACK 3, HTTPS 403); enabled again it connects', t, async () => {
    assert(key, 'not run: the device was not created');
    const err = await tryConnect('mqtt', hubA, did, { key });
    assert(err, 'the disabled device connected over MQTT');
    const text = String((err.transportError || err).message || err.message);
    assert(text.includes('Server unavailable'), 'MQTT refusal of a disabled device: want CONNACK 3 (Server unavailable), got ' + errText(err));
    const herr = await tryConnect('http', hubA, did, { key });
    assert(herr && herr.response && herr.response.statusCode === 403, 'HTTPS refusal of a disabled device: want 403, got ' + errText(herr));
    const d = plain((await registry.get(did)).responseBody);
    d.status = 'enabled';
    await registry.update(d);
    const ok = await tryConnect('mqtt', hubA, did, { key });
    assert(!ok, 'the enabled device was refused: ' + errText(ok));
  });
  await scenario('registry: a connected device is disconnected when deleted, and refused afterwards', t, async () => {
    assert(key, 'not run: the device was not created');
    const c = hubClient(t, hubA, did, { key });
    try {
      await within(10000, c.open(), 'open');
      await registry.delete(did);
      await waitFor('the disconnect of the deleted device', 5000, () => c.disconnects.length > 0 || c.errors.length > 0);
    } finally {
      await closeQuietly(c);
    }
    await expectConnectRefused('mqtt', hubA, did, { key }, 'the deleted device connecting over MQTT');
    await expectConnectRefused('http', hubA, did, { key }, 'the deleted device sending over HTTPS');
  });
}

// Direct methods as IoT Hub fails them, through the real
// azure-iothub Client.invokeDeviceMethod: a device that is not connected
// (404 404103 DeviceNotOnline, which Node reports as a plain 'Not found'
// error: its code is not DeviceNotFound), a connected device that never
// answers (504 504101, GatewayTimeoutError, after responseTimeoutInSeconds),
// and connectTimeoutInSeconds accepted.
function methodError(err) {
  try { return JSON.parse(err.responseBody); } catch (_) { return {}; }
}

async function methodScenarios() {
  const registry = registries[hubA];
  const client = methodClients[hubA];
  const t = 'mqtt';
  const did = 'meth-' + run;
  let key;
  await scenario('methods: invokeDeviceMethod to a device that is not connected fails 404 DeviceNotOnline', 'https', async () => {
    key = (await registry.create({ deviceId: did })).responseBody.authentication.symmetricKey.primaryKey;
    const started = Date.now();
    const err = await expectFailure(within(20000, client.invokeDeviceMethod(did, { methodName: 'reboot', payload: { at: 1 } }), 'invokeDeviceMethod'), 'a method on an offline device');
    const body = methodError(err);
    assert(err.response && err.response.statusCode === 404 && err.message === 'Not found', 'want the SDK\'s 404 Not found, got ' + errText(err));
    assert(body.errorCode === 404103 && typeof body.trackingId === 'string' && typeof body.message === 'string' && body.info && typeof body.timestampUtc === 'string',
      'want a 404103 DeviceNotOnline body, got ' + err.responseBody);
    assert(err.response.headers['iothub-errorcode'] === 'DeviceNotOnline', 'iothub-errorcode ' + err.response.headers['iothub-errorcode']);
    assert(Date.now() - started < 3000, 'the offline answer took ' + (Date.now() - started) + ' ms (connectTimeoutInSeconds is 0)');
  });
  await scenario('methods: a connected device that never answers: responseTimeoutInSeconds 5 fails 504 GatewayTimeoutError after 5 s', t, async () => {
    assert(key, 'not run: the device was not created');
    await withHubClient(t, hubA, did, { key }, async (c) => {
      const calls = [];
      await onMethod(c, 'hang', (req) => calls.push(plain(req.payload))); // never answers
      const started = Date.now();
      // Node's own HTTP timeout is (response + connect) s: 10 s here.
      const err = await expectFailure(within(20000, client.invokeDeviceMethod(did, { methodName: 'hang', payload: { n: 1 }, responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 5 }), 'invokeDeviceMethod'), 'a method nobody answers');
      const took = Date.now() - started;
      const body = methodError(err);
      assert(err.name === 'GatewayTimeoutError' && err.response && err.response.statusCode === 504, 'want GatewayTimeoutError (504), got ' + errText(err));
      assert(body.errorCode === 504101 && body.info && body.info.timeout === '00:00:05', 'want a 504101 body with info.timeout 00:00:05, got ' + err.responseBody);
      assert(took >= 4500 && took < 9000, 'the timeout came after ' + took + ' ms, want about 5000');
      assert(deepEqual(calls, [{ n: 1 }]), 'the device got ' + JSON.stringify(calls));
    });
  });
  await scenario('methods: connectTimeoutInSeconds is accepted; the connected device answers', t, async () => {
    assert(key, 'not run: the device was not created');
    await withHubClient(t, hubA, did, { key }, async (c) => {
      await onMethod(c, 'echo', (req, res) => res.send(200, { echo: req.payload }, () => {}));
      const r = await within(20000, client.invokeDeviceMethod(did, { methodName: 'echo', payload: 'hi', responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 30 }), 'invokeDeviceMethod');
      assert(r.result.status === 200 && deepEqual(r.result.payload, { echo: 'hi' }), 'service saw ' + JSON.stringify(r.result));
    });
    await registry.delete(did);
  });
}

// Rights: a policy with RegistryRead alone reads the registry and can do
// nothing else; a device's own SAS token is no service credential. IoT
// Hub answers both 401 IotHubUnauthorizedAccess (UnauthorizedError).
async function rightsScenarios() {
  const readCS = env('HUB_READ_CONNECTION_STRING_A');
  const reader = Registry.fromConnectionString(readCS);
  const readerMethods = ServiceClient.fromConnectionString(readCS);
  const owner = registries[hubA];
  const did = 'rights-' + run;
  let key;
  await scenario('rights: a RegistryRead policy reads the registry but cannot create, update or delete a device, nor read a twin or call a method', 'https', async () => {
    key = (await owner.create({ deviceId: did })).responseBody.authentication.symmetricKey.primaryKey;
    const got = plain((await reader.get(did)).responseBody);
    assert(got.deviceId === did, 'reader get ' + JSON.stringify(got));
    assert(plain((await reader.list()).responseBody).some((d) => d.deviceId === did), 'reader list without the device');
    const refused = async (p, what) => {
      const err = await expectServiceFailure(p, what);
      assert(err.name === 'UnauthorizedError' && err.response && err.response.statusCode === 401, what + ': want UnauthorizedError (401), got ' + errText(err));
      assert(err.response.headers['iothub-errorcode'] === 'IotHubUnauthorizedAccess', what + ': iothub-errorcode ' + err.response.headers['iothub-errorcode']);
    };
    await refused(reader.create({ deviceId: did + '-new' }), 'create with RegistryRead');
    await refused(reader.update(Object.assign(got, { status: 'disabled' })), 'update with RegistryRead');
    await refused(reader.delete(did), 'delete with RegistryRead');
    await refused(reader.getTwin(did), 'getTwin with RegistryRead');
    await refused(readerMethods.invokeDeviceMethod(did, { methodName: 'm' }), 'invokeDeviceMethod with RegistryRead');
    const after = plain((await owner.get(did)).responseBody);
    assert(after.status === 'enabled' && after.etag === got.etag, 'the refused writes changed the device: ' + JSON.stringify(after));
    expectServiceError(await expectServiceFailure(owner.get(did + '-new'), 'the device the reader created'), 404, 'DeviceNotFoundError', 'refused create');
  });
  await scenario('rights: a device SAS token cannot call the service API (401)', 'https', async () => {
    assert(key, 'not run: the device was not created');
    const https = require('https');
    const sr = encodeURIComponent(hubA + '/devices/' + did);
    const se = Math.floor(Date.now() / 1000) + 3600;
    const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(sr + '\n' + se).digest('base64');
    const token = 'SharedAccessSignature sr=' + sr + '&sig=' + encodeURIComponent(sig) + '&se=' + se;
    const call = (method, p, body) => new Promise((resolve, reject) => {
      const data = body === undefined ? '' : JSON.stringify(body);
      const req = https.request({ host: hubA, port: 443, method, path: p + '?api-version=2021-04-12',
        headers: { Authorization: token, 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(data) } }, (res) => {
        let text = '';
        res.on('data', (c) => { text += c; });
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
      });
      req.on('error', reject);
      req.end(data);
    });
    // The token works where a device uses it...
    const ok = await call('POST', '/devices/' + encodeURIComponent(did) + '/messages/events', { probe: 1 });
    assert(ok.status === 204, 'the device token on the device endpoint: HTTP ' + ok.status + ' ' + ok.body);
    // ...and nowhere on the service API.
    for (const [method, p, body] of [['GET', '/devices/' + encodeURIComponent(did)], ['PUT', '/devices/' + encodeURIComponent(did + '-x'), { deviceId: did + '-x' }],
      ['GET', '/twins/' + encodeURIComponent(did)], ['POST', '/twins/' + encodeURIComponent(did) + '/methods', { methodName: 'm' }], ['GET', '/statistics/devices']]) {
      const r = await call(method, p, body);
      assert(r.status === 401 && r.headers['iothub-errorcode'] === 'IotHubUnauthorizedAccess', method + ' ' + p + ' with a device token: HTTP ' + r.status + ' ' + r.body);
    }
    await owner.delete(did);
  });
}

async function queryScenarios() {
  const registry = registries[hubB];
  await scenario('query: createQuery with WHERE on tags, pages of 2, and COUNT()', 'https', async () => {
    const site = 'site-' + run;
    const ids = ['q1-' + run, 'q2-' + run, 'q3-' + run, 'q4-' + run];
    for (const id of ids) await registry.create({ deviceId: id });
    // Three of the four get the tag; the fourth another value.
    for (const [i, id] of ids.entries()) {
      const twin = plain((await registry.getTwin(id)).responseBody);
      await registry.updateTwin(id, { tags: { site: i < 3 ? site : site + '-other', n: i } }, twin.etag);
    }
    const q = registry.createQuery("SELECT * FROM devices WHERE tags.site = '" + site + "'", 2);
    const pages = [];
    const seen = [];
    while (q.hasMoreResults) {
      const { result } = await q.nextAsTwin();
      pages.push(result.length);
      for (const t of result) {
        assert(t.tags.site === site, 'a twin that does not match: ' + JSON.stringify(t.tags));
        seen.push(t.deviceId);
      }
      assert(pages.length < 5, 'too many pages: ' + JSON.stringify(pages));
    }
    assert(JSON.stringify(pages) === '[2,1]', 'pages ' + JSON.stringify(pages));
    assert(JSON.stringify(seen.sort()) === JSON.stringify(ids.slice(0, 3).sort()), 'matched ' + JSON.stringify(seen));
    const c = registry.createQuery("SELECT COUNT() AS n FROM devices WHERE tags.site = '" + site + "' AND tags.n >= 1");
    const { result } = await c.next();
    assert(JSON.stringify(result) === '[{"n":2}]', 'count ' + JSON.stringify(result));
    const bad = await expectFailure(registry.createQuery('SELECT * FROM devices ORDER BY deviceId').next(), 'an unsupported query');
    assert(bad.response && bad.response.statusCode === 400, 'unsupported query: want 400, got ' + errText(bad));
    for (const id of ids) await registry.delete(id);
  });
}

(async () => {
  await serviceScenarios();
  await wireScenarios();
  for (const t of transports) {
    await deviceScenarios(t);
    if (t !== 'http') await sessionScenarios(t);
  }
  await faultScenarios({ scenario, register, service, connectionString, host, transports, run });
  for (const t of transports) await hubScenarios(t);
  await issuanceRevocationScenarios();
  await registryScenarios();
  await methodScenarios();
  await feedbackScenarios();
  await rightsScenarios();
  await queryScenarios();
  const failed = results.filter((r) => !r.ok);
  // The Go runner requires this line: without it, a promise that never
  // settled ended the script early.
  console.log(JSON.stringify({ done: true, scenarios: results.length, failed: failed.length }));
  process.exit(failed.length ? 1 : 0);
})().catch((err) => {
  console.log(JSON.stringify({ scenario: 'runner', transport: '-', ok: false, error: errText(err) + '\n' + err.stack }));
  process.exit(2);
});

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
      iotHubs: ['hub-a.example.net', 'hub-b.example.net'],
      customAllocationDefinition: { webhookUrl, apiVersion: '2021-10-01' },
    });
    const att = (await service.getIndividualEnrollmentAttestationMechanism(cid)).responseBody;
    const payload = { model: 'heatpump', fw: { version: '2.1.0', modules: ['a', { b: [1, 2, null] }] }, note: 'caf\u00e9' };
    const r = await register(t, cid, att.symmetricKey.primaryKey, payload);
    assert(r.assignedHub === 'hub-b.example.net', 'webhook chose hub-b for a heatpump: ' + JSON.stringify(r));
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

(async () => {
  await serviceScenarios();
  await wireScenarios();
  for (const t of transports) {
    await deviceScenarios(t);
    if (t !== 'http') await sessionScenarios(t);
  }
  const failed = results.filter((r) => !r.ok);
  // The Go runner requires this line: without it, a promise that never
  // settled ended the script early.
  console.log(JSON.stringify({ done: true, scenarios: results.length, failed: failed.length }));
  process.exit(failed.length ? 1 : 0);
})().catch((err) => {
  console.log(JSON.stringify({ scenario: 'runner', transport: '-', ok: false, error: errText(err) + '\n' + err.stack }));
  process.exit(2);
});

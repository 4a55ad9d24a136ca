// Remote-hub scenarios: a device provisioned on dps A with the real Node
// provisioning SDK lands on dps B's hub, which A links as a remote hub
// (through B's hub connection string); the real Node device SDK then
// connects to B. The Go test remote_test.go starts both instances and the
// custom allocation webhook, then runs this script.
//
// Output: one JSON line per scenario {"scenario","transport","ok","error"},
// one {"telemetry":…} line per message a device sent (the Go test finds it
// in B's event log), and {"done":true} at the end.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { Mqtt, MqttWs } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt: DeviceMqtt, MqttWs: DeviceMqttWs } = require('azure-iot-device-mqtt');
const { Http: DeviceHttp } = require('azure-iot-device-http');
const { Registry } = require('azure-iothub');
const { NoRetry } = require(require.resolve('azure-iot-common', { paths: [require.resolve('azure-iot-device')] }));

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error('missing environment variable ' + name);
  return v;
};
const host = env('DPS_HOST');
const idScope = env('DPS_ID_SCOPE');
const webhookUrl = env('DPS_WEBHOOK_URL');
const transports = (process.env.DPS_TRANSPORTS || 'http,mqtt,mqttws').split(',');
const x509Dir = env('DPS_X509_DIR');
const readX509 = (name) => fs.readFileSync(path.join(x509Dir, name), 'utf8');
const hubCS = env('HUB_CONNECTION_STRING_B');
const hubB = /(?:^|;)HostName=([^;]*)/.exec(hubCS)[1];
const run = Date.now().toString(36);

const service = ProvisioningServiceClient.fromConnectionString(env('DPS_CONNECTION_STRING'));
const registryB = Registry.fromConnectionString(hubCS); // B's service API, as B's iothubowner
const results = [];

const plain = (v) => JSON.parse(JSON.stringify(v));
const cb = (fn) => new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));

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

function within(ms, p, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(what + ': no answer within ' + ms + ' ms')), ms); });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function need(dev) {
  if (!dev) throw new Error('not run: the device was not provisioned (see the provisioning scenario)');
  return dev;
}

function provisioningTransport(t) {
  if (t === 'mqttws') return new MqttWs();
  return t === 'mqtt' ? new Mqtt() : new Http();
}

function deviceTransport(t) {
  if (t === 'mqttws') return DeviceMqttWs;
  return t === 'mqtt' ? DeviceMqtt : DeviceHttp;
}

// stripVersions drops the $version/$metadata members of twin properties.
function stripVersions(props) {
  const out = {};
  for (const [k, v] of Object.entries(plain(props))) if (!k.startsWith('$')) out[k] = v;
  return out;
}

// What the suite's webhook (remote_test.go) puts into the initial twin.
function webhookTwin(payload, registrationId) {
  return { tags: { model: payload.model }, desired: Object.assign({ webhook: { hub: hubB, registrationId } }, payload.desired || {}) };
}

// provision registers a device with A through the provisioning SDK.
async function provision(t, registrationId, security, payload) {
  const client = ProvisioningDeviceClient.create(host, idScope, provisioningTransport(t), security);
  client.setProvisioningPayload(payload);
  return within(60000, client.register(), 'register with A');
}

// checkOnB reads the device through B's service API: its authentication
// as A wrote it, and the webhook's twin.
async function checkOnB(deviceId, wantAuth, payload) {
  const dev = plain((await registryB.get(deviceId)).responseBody);
  assert(dev.status === 'enabled', 'status on B: ' + JSON.stringify(dev));
  wantAuth(dev.authentication);
  const twin = plain((await registryB.getTwin(deviceId)).responseBody);
  const want = webhookTwin(payload, deviceId);
  assert(deepEqual(twin.tags, want.tags), 'tags on B ' + JSON.stringify(twin.tags) + ', want ' + JSON.stringify(want.tags));
  assert(deepEqual(stripVersions(twin.properties.desired), want.desired), 'desired on B ' + JSON.stringify(twin.properties.desired) + ', want ' + JSON.stringify(want.desired));
}

// onB connects the device to B with the device SDK, and over MQTT reads
// the twin the webhook set and reports a property that B's service API
// then shows; it sends one telemetry message on every transport.
async function onB(t, deviceId, auth, payload) {
  const cs = 'HostName=' + hubB + ';DeviceId=' + deviceId + ';' + (auth.key ? 'SharedAccessKey=' + auth.key : 'x509=true');
  const c = DeviceClient.fromConnectionString(cs, deviceTransport(t));
  c.setRetryPolicy(new NoRetry());
  if (auth.cert) c.setOptions({ cert: auth.cert, key: auth.certKey });
  c.on('error', () => {});
  try {
    await within(10000, c.open(), 'open a connection to B');
    if (t !== 'http') {
      const twin = await within(10000, c.getTwin(), 'getTwin from B');
      const want = webhookTwin(payload, deviceId).desired;
      const desired = stripVersions(twin.properties.desired);
      assert(deepEqual(desired, want), 'desired read from B ' + JSON.stringify(desired) + ', want ' + JSON.stringify(want));
      const reported = { firmware: '1.2.' + t, provisionedBy: 'dps A' };
      await within(10000, cb((done) => twin.properties.reported.update(reported, done)), 'report a property to B');
      const seen = stripVersions(plain((await registryB.getTwin(deviceId)).responseBody).properties.reported);
      assert(deepEqual(seen, reported), 'B\'s service API shows reported ' + JSON.stringify(seen) + ', want ' + JSON.stringify(reported));
    }
    const messageId = deviceId + '-' + t + '-telemetry';
    const body = JSON.stringify({ temperature: 20.5, transport: t, via: 'remote hub' });
    const msg = new Message(body);
    msg.messageId = messageId;
    const properties = { origin: 'dps A', hub: hubB };
    for (const [k, v] of Object.entries(properties)) msg.properties.add(k, v);
    await within(10000, c.sendEvent(msg), 'sendEvent to B');
    console.log(JSON.stringify({ telemetry: { transport: t, hub: hubB, deviceId, messageId, properties, body } }));
  } finally {
    try { await within(5000, c.close(), 'close'); } catch (_) { /* closed */ }
  }
}

async function remoteScenarios(t) {
  // Symmetric key: an individual enrollment on A, custom allocation.
  const symId = 'rem-sym-' + t + '-' + run;
  const symPayload = { model: 'heatpump', desired: { interval: 30, mode: 'eco' } };
  let sym;
  await scenario('remote: a symmetric-key device provisioned on A (custom allocation) is assigned B\'s hub ' + hubB, t, async () => {
    const created = (await service.createOrUpdateIndividualEnrollment({
      registrationId: symId,
      attestation: { type: 'symmetricKey' },
      allocationPolicy: 'custom',
      iotHubs: [hubB],
      customAllocationDefinition: { webhookUrl, apiVersion: '2021-10-01' },
    })).responseBody;
    const key = created.attestation.symmetricKey.primaryKey;
    const r = await provision(t, symId, new SymmetricKeySecurityClient(symId, key), symPayload);
    assert(r.assignedHub === hubB && r.deviceId === symId, 'registration: ' + JSON.stringify(r));
    sym = { key };
  });
  await scenario('remote: B\'s registry holds the symmetric-key device with its enrollment key (sas) and the webhook\'s twin', t, async () => {
    const d = need(sym);
    await checkOnB(symId, (a) => assert(a.type === 'sas' && a.symmetricKey.primaryKey === d.key, 'authentication on B ' + JSON.stringify(a)), symPayload);
  });
  await scenario('remote: the symmetric-key device connects to B' + (t === 'http' ? ' and sends telemetry' : ', reads the webhook\'s twin, reports a property and sends telemetry'), t, async () => {
    await onB(t, symId, { key: need(sym).key }, symPayload);
  });

  // X.509: one self-signed device (one enrollment for every transport).
  const xId = 'x509-remote';
  const xPayload = { model: 'meter', desired: { phase: t } };
  const cert = readX509('x509-remote.pem');
  const certKey = readX509('x509-remote-key.pem');
  let xdev;
  await scenario('remote: an X.509 device provisioned on A (custom allocation) is assigned B\'s hub ' + hubB, t, async () => {
    await service.createOrUpdateIndividualEnrollment({
      registrationId: xId,
      attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: cert } } } },
      allocationPolicy: 'custom',
      iotHubs: [hubB],
      customAllocationDefinition: { webhookUrl, apiVersion: '2021-10-01' },
    }).catch((err) => { if (!(err.response && err.response.statusCode === 409)) throw err; });
    const r = await provision(t, xId, new X509Security(xId, { cert, key: certKey }), xPayload);
    assert(r.assignedHub === hubB && r.deviceId === xId, 'registration: ' + JSON.stringify(r));
    xdev = {};
  });
  await scenario('remote: B\'s registry holds the X.509 device as selfSigned with its SHA-256 thumbprint, and the webhook\'s twin', t, async () => {
    need(xdev);
    const thumb = crypto.createHash('sha256').update(new crypto.X509Certificate(cert).raw).digest('hex').toUpperCase();
    await checkOnB(xId, (a) => assert(a.type === 'selfSigned' && String(a.x509Thumbprint.primaryThumbprint).toUpperCase() === thumb &&
      String(a.x509Thumbprint.secondaryThumbprint).toUpperCase() === thumb, 'authentication on B ' + JSON.stringify(a) + ', want thumbprint ' + thumb), xPayload);
  });
  await scenario('remote: the X.509 device connects to B with its certificate (x509=true)' + (t === 'http' ? ' and sends telemetry' : ', reads the webhook\'s twin, reports a property and sends telemetry'), t, async () => {
    need(xdev);
    await onB(t, xId, { cert, certKey }, xPayload);
  });
}

(async () => {
  for (const t of transports) await remoteScenarios(t);
  const failed = results.filter((r) => !r.ok);
  console.log(JSON.stringify({ done: true, scenarios: results.length, failed: failed.length }));
  process.exit(failed.length ? 1 : 0);
})().catch((err) => {
  console.log(JSON.stringify({ scenario: 'runner', transport: '-', ok: false, error: errText(err) + '\n' + err.stack }));
  process.exit(2);
});

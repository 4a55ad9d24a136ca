'use strict';
// Fault injection against the real Node provisioning SDK: rules set at run
// time through dps's service API extension (PUT /faults/{name}, signed with
// the service connection string), injected 429s with retry-after on
// register and on poll, over every transport; the SDK backs off as told and
// is then assigned, and GET /faults counts what was injected.
//
// ctx: { scenario(name, transport, fn), register(transport, id, key),
//        service (ProvisioningServiceClient), connectionString, host,
//        transports, run }
const crypto = require('crypto');
const https = require('https');

function field(cs, name) {
  const m = new RegExp('(?:^|;)' + name + '=([^;]*)').exec(cs);
  if (!m) throw new Error('connection string without ' + name);
  return m[1];
}

function sas(cs) {
  const sr = encodeURIComponent(field(cs, 'HostName'));
  const se = Math.floor(Date.now() / 1000) + 3600;
  const sig = crypto.createHmac('sha256', Buffer.from(field(cs, 'SharedAccessKey'), 'base64')).update(sr + '\n' + se).digest('base64');
  return 'SharedAccessSignature sr=' + sr + '&sig=' + encodeURIComponent(sig) + '&se=' + se + '&skn=' + field(cs, 'SharedAccessKeyName');
}

// faultsRequest sends one request to the service API's /faults extension.
function faultsRequest(ctx, method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request({ host: ctx.host, port: 443, method, path: '/faults' + path + '?api-version=2021-10-01',
      headers: Object.assign({ Authorization: sas(ctx.connectionString), Accept: 'application/json' },
        data ? { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(data) } : {}) }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        let parsed;
        try { parsed = text ? JSON.parse(text) : undefined; } catch (e) { return reject(new Error('non-JSON answer ' + res.statusCode + ': ' + text)); }
        if (res.statusCode >= 300) return reject(new Error(method + ' /faults' + path + ': HTTP ' + res.statusCode + ' ' + text));
        resolve(parsed);
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function check(cond, msg) {
  if (!cond) throw new Error('assertion failed: ' + msg);
}

// registerHonouringRetryAfter registers as a device application does.
// Over MQTT the SDK itself answers a 429 by waiting the topic's retry-after
// and trying again (status "registering" / "assigning"). Over HTTP it does
// not: azure-iot-http-base turns every status of 300 or more into an error
// before the transport's own ">= 429: retry" branch is reached, so the
// register fails with ThrottlingError, and the application retries after
// the answer's Retry-After header — which is checked here.
async function registerHonouringRetryAfter(ctx, t, id, key, retryAfterSeconds) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await ctx.register(t, id, key);
    } catch (err) {
      if (t !== 'http' || attempt >= 5 || !err || err.name !== 'ThrottlingError') throw err;
      const h = (err.response && err.response.headers) || {};
      check(h['retry-after'] === String(retryAfterSeconds), 'Retry-After of the 429: ' + JSON.stringify(h['retry-after']));
      const body = typeof err.responseBody === 'string' ? JSON.parse(err.responseBody) : err.responseBody;
      check(body && body.errorCode === 429001, '429 body ' + JSON.stringify(err.responseBody));
      await new Promise((r) => setTimeout(r, Number(h['retry-after']) * 1000));
    }
  }
}

async function faultScenarios(ctx) {
  for (const t of ctx.transports) {
    const transport = t === 'http' ? 'https' : t; // dps names the transports https, mqtt, mqttws
    for (const operation of ['register', 'poll']) {
      await ctx.scenario('fault injection: 429 with retry-after on ' + operation + ', backed off as told, then assigned', t, async () => {
        const id = 'fault-' + operation + '-' + t + '-' + ctx.run;
        const created = (await ctx.service.createOrUpdateIndividualEnrollment({ registrationId: id, attestation: { type: 'symmetricKey' } })).responseBody;
        const name = 'compat-' + operation + '-' + t + '-' + ctx.run;
        const retryAfterSeconds = 2;
        const set = await faultsRequest(ctx, 'PUT', '/' + encodeURIComponent(name), {
          match: { registrationId: id, transport, operation },
          action: { status: 429, errorCode: 429001, retryAfterSeconds },
          times: 2,
        });
        check(set.name === name && set.injected === 0, 'PUT answer ' + JSON.stringify(set));
        try {
          const started = Date.now();
          const r = await registerHonouringRetryAfter(ctx, t, id, created.attestation.symmetricKey.primaryKey, retryAfterSeconds);
          const elapsed = Date.now() - started;
          check(r.status === 'assigned' && r.deviceId === id, 'assigned: ' + JSON.stringify(r));
          // Two injected 429s, each followed by the retry-after it carried.
          check(elapsed >= 2 * retryAfterSeconds * 1000 - 200, 'assigned after ' + elapsed + ' ms: the SDK did not wait the retry-after twice');
          const list = await faultsRequest(ctx, 'GET', '');
          const rule = list.find((x) => x.name === name);
          check(rule && rule.injected === 2, 'GET /faults counts ' + JSON.stringify(rule));
        } finally {
          const deleted = await faultsRequest(ctx, 'DELETE', '/' + encodeURIComponent(name));
          check(deleted.name === name, 'DELETE answer ' + JSON.stringify(deleted));
        }
      });
    }
  }
}

module.exports = { faultScenarios };

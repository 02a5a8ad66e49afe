// A token endpoint that misbehaves on request, for the faults a real OAuth2
// server will not produce.  The first path segment names the fault:
// POST /<case>/token.  GET /_count, /_count/<case>, /_peak/<case> (most
// requests of the case in progress at once) and /_last/<case> tell the
// tests what arrived; POST /_reset forgets it.
//
// Env: FAULT_PORT (0: any), FAULT_HOST (the loopback address to listen on,
// 127.0.0.1 unless set: a second peer on 127.0.0.2 and the same port plays an
// attacker's host), PORT_FILE (the bound port is written there).
// Tokens are made up per answer and carry the TVSECRET marker the test
// harness scans logs for; this peer never prints a request or a token.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { writeFileSync, renameSync } from 'node:fs';

const hex = () => randomBytes(16).toString('hex');
const okToken = () => ({
  access_token: `TVSECRET-at-${hex()}`, token_type: 'Bearer', expires_in: 3600,
  refresh_token: `TVSECRET-rt-${hex()}`, scope: 'read',
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const type = typeof body === 'string' || Buffer.isBuffer(body) ? 'text/plain' : 'application/json';
  res.writeHead(status, { 'content-type': type, ...headers });
  res.end(text);
}
const json = (res, status, raw) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(raw);
};
const form = (t) => new URLSearchParams(Object.entries(t).map(([k, v]) => [k, String(v)])).toString();

// the request's parameters, always an object: a body of null, [] or junk
// must not crash the peer
function params(req) {
  if (!(req.headers['content-type'] || '').includes('json')) return Object.fromEntries(new URLSearchParams(req.body));
  try {
    const p = JSON.parse(req.body);
    return p && typeof p === 'object' ? p : {};
  } catch { return {}; }
}

function basicPassword(req) {
  const m = /^Basic (.+)$/.exec(req.headers.authorization || '');
  if (!m) return null;
  const pair = Buffer.from(m[1], 'base64').toString();
  const password = pair.slice(pair.indexOf(':') + 1);
  try { return decodeURIComponent(password); } catch { return password; } // a stray %
}

const decoded = (v) => { try { return decodeURIComponent(v.replace(/\+/g, ' ')); } catch { return v; } };
const lowerHex = (v) => v.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase());
// One value in each encoding a provider might quote it in.
const encodings = {
  raw: (v) => v,
  percent: (v) => encodeURIComponent(v),
  percent_lower: (v) => lowerHex(encodeURIComponent(v)),
  form: (v) => new URLSearchParams({ v }).toString().slice(2),
  form_lower: (v) => lowerHex(new URLSearchParams({ v }).toString().slice(2)),
  json: (v) => JSON.stringify(v).slice(1, -1),
  json_ascii: (v) => JSON.stringify(v).slice(1, -1).replace(/[\u0080-\uffff\/]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`),
  base64: (v) => Buffer.from(v).toString('base64'),
  base64url: (v) => Buffer.from(v).toString('base64url'),
};
// What the request carried, as sent and decoded: the body, the
// Authorization header, each parameter's value, the Basic pair and its parts.
function carried(req) {
  const out = [req.body, req.headers.authorization || ''];
  for (const v of Object.values(params(req))) if (typeof v === 'string') out.push(v);
  const m = /^Basic (.+)$/.exec(req.headers.authorization || '');
  if (m) {
    const pair = Buffer.from(m[1], 'base64').toString();
    const colon = pair.indexOf(':');
    out.push(pair, decoded(pair.slice(0, colon)), decoded(pair.slice(colon + 1)));
  }
  return out.filter(Boolean);
}
// The request quoted back: ?as=<encoding> for one (any other: all),
// ?repeat=n times over.
function quote(req, url) {
  const as = url.searchParams.get('as');
  const chosen = Object.hasOwn(encodings, as || '') ? [encodings[as]] : Object.values(encodings);
  const once = carried(req).flatMap((v) => chosen.map((enc) => enc(v))).join(' | ');
  return once.repeat(Math.min(Number(url.searchParams.get('repeat') || 1), 10000));
}

const usedRefreshTokens = new Set();
const html = (title, body) => `<!DOCTYPE html><html><head><title>${title}</title></head><body><h1>${title}</h1>${
  body}</body></html>`;
const errorPage = html('Internal Server Error', '<p>Something went wrong on our side. Please try again later.</p>'.repeat(30));
const loginPage = html('Sign in', '<form method="post" action="/login"><input name="username">'
  + '<input name="password" type="password"><button>Sign in</button></form>');
// wait until the socket drains or the client goes away, leaving no listener behind
const drained = (res) => new Promise((resolve) => {
  const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
  res.on('drain', done);
  res.on('close', done);
});

const cases = {
  ok: (req, res) => send(res, 200, okToken()),
  no_refresh: (req, res) => { const t = okToken(); delete t.refresh_token; send(res, 200, t); },
  // a token with the query's parameters beside it, as a provider sends
  // instance_url: whatever fields a test wants a provider to say
  fields: (req, res, url) => send(res, 200, { ...okToken(), ...Object.fromEntries(url.searchParams) }),
  extra: (req, res) => send(res, 200, { ...okToken(), instance_url: 'https://eu12.example.com',
    id_token: 'eyJ.x.y', team: { id: 'T1', name: 'Acme' } }),
  nested: (req, res) => send(res, 200, { ok: true, data: { token: okToken() } }),
  expires_string: (req, res) => send(res, 200, { ...okToken(), expires_in: '3600' }),
  expires_ms: (req, res) => send(res, 200, { ...okToken(), expires_in: 3600000 }),
  no_expiry: (req, res) => { const t = okToken(); delete t.expires_in; send(res, 200, t); },
  rt_expiry: (req, res) => send(res, 200, { ...okToken(), refresh_token_expires_in: 7776000 }),
  scope_array: (req, res) => send(res, 200, { ...okToken(), scope: ['read', 'write'] }),
  empty_fields: (req, res) => send(res, 200, { ...okToken(), scope: '', token_type: '', refresh_token: null, id_token: '' }),
  bad_expires_at: (req, res) => send(res, 200, { ...okToken(), expires_at: 'next tuesday' }),
  scope_object: (req, res) => send(res, 200, { ...okToken(), scope: { read: true } }),
  // a token type that would put a header of the provider's into every request made with the token
  crlf_type: (req, res) => send(res, 200, { ...okToken(), token_type: 'Bearer\r\nX-Injected: 1' }),
  form: (req, res) => send(res, 200, form({ ...okToken(), token_type: 'bearer' }),
    { 'content-type': 'application/x-www-form-urlencoded' }),
  text_form: (req, res) => send(res, 200, form({ ...okToken(), token_type: 'bearer' })),
  error200: (req, res) => send(res, 200, { error: 'invalid_grant', error_description: 'The refresh token is invalid' }),
  invalid_grant: (req, res) => send(res, 400, { error: 'invalid_grant', error_description: 'Token has been expired or revoked.' }),
  invalid_client: (req, res) => send(res, 401, { error: 'invalid_client' }, { 'www-authenticate': 'Basic realm="token"' }),
  unauthorized_client: (req, res) => send(res, 400, { error: 'unauthorized_client' }),
  invalid_request: (req, res) => send(res, 400, { error: 'invalid_request', error_description: 'Missing parameter' }),
  // a hostile provider quoting the request's secrets back
  leaky: (req, res) => {
    const p = params(req);
    const quoted = [p.refresh_token, p.client_secret, p.password, basicPassword(req)].filter(Boolean);
    send(res, 400, { error: 'invalid_grant', error_description: `bad token: ${quoted.join(' ')}` });
  },
  // a hostile provider quoting the whole request back in every encoding
  // (quote.../token?as=&repeat=): in error_description, in error, or in
  // the odd places of a 200 (fields that fail to store or are kept)
  quote: (req, res, url) => send(res, 400, { error: 'invalid_grant', error_description: quote(req, url) }),
  quote_error: (req, res, url) => send(res, 400, { error: quote(req, url), error_description: quote(req, url) }),
  quote200: (req, res, url) => send(res, 200, { ...okToken(), token_type: quote(req, url), scope: quote(req, url),
    expires_in: quote(req, url), expires_at: quote(req, url), [quote(req, url).slice(0, 200)]: quote(req, url) }),
  s500: (req, res) => send(res, 500, { error: 'server_error' }),
  s502: (req, res) => send(res, 502, 'Bad Gateway'),
  s503: (req, res) => send(res, 503, '', { 'retry-after': '5' }),
  s429: (req, res) => send(res, 429, { error: 'rate_limited' }, { 'retry-after': '7' }),
  s429_date: (req, res) => send(res, 429, { error: 'rate_limited' },
    { 'retry-after': new Date(Date.now() + 30000).toUTCString() }),
  html: (req, res) => send(res, 500, errorPage, { 'content-type': 'text/html' }),
  html200: (req, res) => send(res, 200, loginPage, { 'content-type': 'text/html; charset=utf-8' }),
  malformed: (req, res) => json(res, 200, `{"access_token": "TVSECRET-at-${hex()}", "expires_in": 36`),
  not_object: (req, res) => json(res, 200, '["access_token"]'),
  // valid JSON nested 200 000 deep: a recursive parser's stack would not hold it
  deep: (req, res) => json(res, 200, '['.repeat(200000) + ']'.repeat(200000)),
  empty: (req, res) => json(res, 200, ''),
  bad_utf8: (req, res) => json(res, 200, Buffer.concat([Buffer.from(`{"access_token": "TVSECRET-at-${hex()}`),
    Buffer.from([0xc3, 0x28]), Buffer.from('", "expires_in": 3600}')])),
  nul: (req, res) => json(res, 200, `{"access_token": "TVSECRET-at-${hex()}\\u0000", "expires_in": 3600}`),
  // ~10 MB of valid JSON, written in chunks as the socket drains
  huge: async (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    const t = JSON.stringify(okToken());
    res.write(`${t.slice(0, -1)}, "padding": "`);
    const chunk = 'x'.repeat(64 * 1024);
    for (let i = 0; i < 160 && !res.destroyed; i++) {
      if (!res.write(chunk)) await drained(res);
    }
    if (!res.destroyed) res.end('"}');
  },
  redirect: (req, res) => send(res, 302, '', { location: `http://127.0.0.1:${port}/ok/token` }),
  redirect307: (req, res) => send(res, 307, '', { location: `http://127.0.0.1:${port}/ok/token` }),
  slow: async (req, res, url) => {
    await sleep(Number(url.searchParams.get('ms') || 3000));
    if (!res.destroyed) send(res, 200, okToken());
  },
  hang: () => {},
  // the headers at once, then the body a byte every half second
  dribble: async (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    for (const ch of JSON.stringify(okToken())) {
      if (res.destroyed) return;
      res.write(ch);
      await sleep(500);
    }
    res.end();
  },
  revoke: (req, res) => send(res, 200, ''),
  revoke_fail: (req, res) => send(res, 503, ''),
  // rotation with reuse detection: a refresh token works once
  rotate: (req, res) => {
    const rt = params(req).refresh_token;
    if (rt && usedRefreshTokens.has(rt)) {
      send(res, 400, { error: 'invalid_grant', error_description: 'refresh token reused' });
      return;
    }
    if (rt) usedRefreshTokens.add(rt);
    send(res, 200, okToken());
  },
};

let counts = {};
let last = {};
let inflight = {};
let peak = {};

function control(req, res, url) {
  const [, what, name] = url.pathname.split('/');
  if (what === '_count') return send(res, 200, name ? counts[name] || 0 : counts);
  if (what === '_last') return send(res, 200, last[name] || {});
  if (what === '_peak') return send(res, 200, peak[name] || 0);
  if (what === '_reset') {
    counts = {}; last = {}; inflight = {}; peak = {};
    usedRefreshTokens.clear();
    return send(res, 200, {});
  }
  return send(res, 404, { error: 'unknown control' });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://peer');
  const name = url.pathname.split('/')[1];
  // counted as it arrives, before its body and before any delay, so a
  // hanging request is counted too
  if (!name.startsWith('_')) {
    counts[name] = (counts[name] || 0) + 1;
    inflight[name] = (inflight[name] || 0) + 1;
    peak[name] = Math.max(peak[name] || 0, inflight[name]);
    res.on('close', () => { inflight[name] -= 1; });
  }
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > 1024 * 1024) req.destroy();
    else chunks.push(c);
  });
  req.on('error', () => {}); // a client gone mid-body is no fault of ours
  req.on('end', () => {
    if (name.startsWith('_')) return control(req, res, url);
    req.body = Buffer.concat(chunks).toString();
    last[name] = { method: req.method, path: url.pathname, query: url.search, headers: req.headers, body: req.body };
    // own keys only: /constructor/token is an unknown case, not Object()
    if (!Object.hasOwn(cases, name)) return send(res, 404, { error: 'unknown fault case' });
    // a handler that throws drops its connection; the peer stays up
    (async () => cases[name](req, res, url))().catch(() => res.destroy());
  });
});
// a hanging request must hang until the client gives up
server.requestTimeout = 0;
server.headersTimeout = 60000;
server.keepAliveTimeout = 5000;

const sockets = new Set();
server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });

let port;
const host = process.env.FAULT_HOST || '127.0.0.1';
if (!/^127\.\d+\.\d+\.\d+$/.test(host)) throw new Error('FAULT_HOST must be a loopback address');
server.listen(Number(process.env.FAULT_PORT || 0), host, () => {
  port = server.address().port;
  if (process.env.PORT_FILE) {
    writeFileSync(`${process.env.PORT_FILE}.tmp`, String(port));
    renameSync(`${process.env.PORT_FILE}.tmp`, process.env.PORT_FILE);
  }
  console.log(`fault peer listening on http://${host}:${port}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    for (const s of sockets) s.destroy();
    process.exit(0);
  });
}

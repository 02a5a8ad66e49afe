// Token and "who am I" endpoints that answer as well-known providers
// document theirs, for the catalogue's integration test (a real Google or
// Slack cannot be reached from here).  POST /<provider>/token takes a
// refresh (or, for Slack, a code) and checks the request as the provider
// would: how the client authenticates (Basic or in the body), the body's
// format, the scope Microsoft wants again.  Each answers in that
// provider's shape: Slack's user token nested in the exchange, GitHub's
// error inside a 200, Salesforce's issued_at without expires_in, Google's
// refresh without a new refresh token, QuickBooks' x_refresh_token_expires_in,
// rotating providers refusing a refresh token used twice.
// GET|POST /verify/<provider> answers by the credential: one holding
// "revoked" is refused (401, or Slack's 200 with "ok": false), "flaky" gets
// a 503, any other a 200.
// GET /_last/<provider> says what the last request carried (host, content
// type, how the client authenticated, grant and scope: no secret);
// /_count/<provider> how many came.
//
// Env: PORT_FILE, TLS_CERT and TLS_KEY (https).  Tokens are made up per
// answer with the TVSECRET marker the leak scan looks for; nothing is printed.
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, renameSync } from 'node:fs';

const hex = () => randomBytes(12).toString('hex');
const secret = (kind) => `TVSECRET-${kind}-${hex()}`;
const spent = new Set();          // refresh tokens a rotating provider has replaced
const last = {};
const count = {};

function reply(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function params(req) {
  if ((req.headers['content-type'] || '').includes('json')) {
    try { const p = JSON.parse(req.body); return p && typeof p === 'object' ? p : {}; } catch { return {}; }
  }
  return Object.fromEntries(new URLSearchParams(req.body));
}

const basic = (req) => /^Basic \S+$/.test(req.headers.authorization || '');
const bearer = (req) => (/^Bearer (.+)$/.exec(req.headers.authorization || '') || [])[1] || '';

// What each provider requires of a refresh request, and how it answers.
// need: 'basic' or 'post' client authentication, 'json' body.
const providers = {
  slack: {
    need: ['basic'],
    answer: (p) => p.grant_type === 'authorization_code'
      ? { ok: true, app_id: 'A1', access_token: secret('bot'), token_type: 'bot', scope: 'commands',
          authed_user: { id: 'U1', scope: 'chat:write', access_token: secret('at'), token_type: 'user',
                         expires_in: 43200, refresh_token: secret('rt') },
          team: { id: 'T1', name: 'Acme' } }
      : { ok: true, access_token: secret('at'), token_type: 'user', expires_in: 43200, refresh_token: secret('rt'),
          scope: 'chat:write' },
    rotates: true,
  },
  github_app: {
    need: ['post'],
    // GitHub answers a spent or revoked refresh token with a 200
    refuse200: (p) => /revoked/.test(p.refresh_token || '') &&
      { error: 'bad_refresh_token', error_description: 'The refresh token passed is incorrect or expired.',
        error_uri: 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors' },
    answer: () => ({ access_token: secret('ghu'), expires_in: 28800, refresh_token: secret('ghr'),
                     refresh_token_expires_in: 15811200, scope: '', token_type: 'bearer' }),
    rotates: true,
  },
  salesforce: {
    need: ['post'],
    answer: () => ({ access_token: secret('at'), signature: 'c2lnbmF0dXJl', scope: 'api refresh_token openid',
                     instance_url: 'https://acme.my.salesforce.com', id: 'https://login.salesforce.com/id/00D/005',
                     token_type: 'Bearer', issued_at: String(Date.now() - 600 * 1000) }),
  },
  google: {
    need: ['post'],
    answer: () => ({ access_token: secret('ya29'), expires_in: 3599, scope: 'openid email', token_type: 'Bearer' }),
  },
  microsoft: {
    need: ['post', 'scope'],
    answer: (p) => ({ token_type: 'Bearer', scope: p.scope, expires_in: 4170, ext_expires_in: 4170,
                      access_token: secret('at'), refresh_token: secret('rt') }),
    rotates: true,
  },
  zoho: {
    need: ['post'],
    answer: () => ({ access_token: secret('at'), api_domain: 'https://www.zohoapis.eu', token_type: 'Bearer',
                     expires_in: 3600 }),
  },
  shopify: {
    need: ['post'],
    answer: () => ({ access_token: secret('shpat'), scope: 'read_products', expires_in: 3600,
                     refresh_token: secret('shprt'), refresh_token_expires_in: 7776000 }),
    rotates: true,
  },
  quickbooks: {
    need: ['basic'],
    answer: () => ({ token_type: 'bearer', expires_in: 3600, refresh_token: secret('rt'),
                     x_refresh_token_expires_in: 8726400, access_token: secret('at') }),
    rotates: true,
  },
  notion: {
    need: ['basic', 'json'],
    answer: () => ({ access_token: secret('ntn'), token_type: 'bearer', refresh_token: secret('rt'), bot_id: 'b1',
                     workspace_id: 'w1', workspace_name: 'Acme', duplicated_template_id: null }),
    rotates: true,
  },
  dropbox: {
    need: [],
    answer: () => ({ access_token: secret('sl'), expires_in: 14400, token_type: 'bearer' }),
  },
  hubspot: {
    need: ['post'],
    answer: () => ({ token_type: 'bearer', refresh_token: secret('rt'), access_token: secret('at'), expires_in: 1800 }),
  },
  xero: {
    need: ['basic'],
    answer: () => ({ access_token: secret('at'), expires_in: 1800, token_type: 'Bearer', refresh_token: secret('rt'),
                     scope: 'openid offline_access accounting.transactions' }),
    rotates: true,
  },
};

function token(name, req, res) {
  const p = params(req);
  const spec = providers[name];
  const json = (req.headers['content-type'] || '').includes('json');
  last[name] = { host: (req.headers.host || '').replace(/:\d+$/, ''), content_type: json ? 'json' : 'form',
                 client_auth: basic(req) ? 'basic' : (p.client_secret ? 'post' : 'none'),
                 grant_type: p.grant_type || null, scope: p.scope || null };
  count[name] = (count[name] || 0) + 1;
  const wrong = (spec.need.includes('basic') && !basic(req)) || (spec.need.includes('post') && !(p.client_id && p.client_secret))
    || (spec.need.includes('json') && !json) || (spec.need.includes('scope') && !p.scope);
  if (wrong) return reply(res, 400, { error: 'invalid_request', error_description: 'the request is not as documented' });
  if (p.grant_type === 'refresh_token') {
    const refused = spec.refuse200 && spec.refuse200(p);
    if (refused) return reply(res, 200, refused);
    if (!p.refresh_token || spent.has(p.refresh_token)) return reply(res, 400, { error: 'invalid_grant' });
    if (spec.rotates) spent.add(p.refresh_token);
  } else if (!(p.grant_type === 'authorization_code' && p.code)) {
    return reply(res, 400, { error: 'unsupported_grant_type' });
  }
  return reply(res, 200, spec.answer(p));
}

function verify(name, req, res) {
  count[`verify_${name}`] = (count[`verify_${name}`] || 0) + 1;
  const credential = req.headers.authorization || req.headers['x-api-key'] || '';
  if (/flaky/.test(credential)) return reply(res, 503, { message: 'try later' });
  if (name === 'slack') return reply(res, 200, /revoked/.test(credential) ? { ok: false, error: 'token_revoked' }
    : { ok: true, user: 'alice', team: 'Acme' });
  if (!credential || /revoked/.test(credential)) return reply(res, 401, { error: { message: 'Invalid API key' } });
  return reply(res, 200, { id: 'acct_1', object: 'account' });
}

const server = https.createServer({ cert: readFileSync(process.env.TLS_CERT), key: readFileSync(process.env.TLS_KEY) },
  (req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; if (body.length > 1 << 20) req.destroy(); });
    req.on('end', () => {
      req.body = body;
      const [, first, second] = new URL(req.url, 'https://x').pathname.split('/');
      if (req.method === 'GET' && first === '_last') return reply(res, 200, last[second] || {});
      if (req.method === 'GET' && first === '_count') return reply(res, 200, { count: count[second] || 0 });
      if (first === 'verify') return verify(second, req, res);
      if (req.method === 'POST' && providers[first] && second === 'token') return token(first, req, res);
      reply(res, 404, { error: 'not_found' });
    });
  });
server.listen(0, '127.0.0.1', () => {
  const tmp = `${process.env.PORT_FILE}.tmp`;
  writeFileSync(tmp, String(server.address().port));
  renameSync(tmp, process.env.PORT_FILE);
});

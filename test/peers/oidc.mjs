// A real OAuth2 authorization server for the integration tests: oidc-provider
// on loopback, with the clients the tests use.  It is the provider's own code
// that answers token requests; this file only configures it, registers the
// password grant (which oidc-provider leaves to its users), and counts.
//
// Env: CLIENT_SECRET (every confidential client's secret), USER_PASSWORD
// (alice's, for the password grant), ACCESS_TTL (seconds, default 3600),
// OIDC_PORT (0: any), PORT_FILE (the bound port is written there),
// TLS_CERT and TLS_KEY (serve https).
//
// GET /_count -> {"token": requests at the token endpoint, "by_grant": {...},
// "revoke": requests at the revocation endpoint, "grants_revoked": grants
// oidc-provider revoked (a rotated refresh token used again), "in_flight":
// token requests being answered now}; POST /_reset zeroes them.
// GET /_issued -> one line per access token issued: the md5 of the token and
// when it expires (epoch seconds), so that a test can tell whether a token
// it was handed had expired, without the token leaving the test's database.
// TOKEN_DELAY_MS holds each token response that long after the request was
// handled (a slow network back), so that a test can stop a client that the
// provider has answered (a rotated refresh token spent) before it reads it.
import http from 'node:http';
import https from 'node:https';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const env = process.env;
const secret = env.CLIENT_SECRET || randomBytes(24).toString('hex');
const accessTtl = Number(env.ACCESS_TTL || 3600);
const tokenDelay = Number(env.TOKEN_DELAY_MS || 0);
const redirect = ['http://127.0.0.1/callback'];
const code = { grant_types: ['authorization_code', 'refresh_token'], redirect_uris: redirect };

const clients = [
  { client_id: 'tv-code', client_secret: secret, ...code, token_endpoint_auth_method: 'client_secret_basic' },
  { client_id: 'tv-code-post', client_secret: secret, ...code, token_endpoint_auth_method: 'client_secret_post' },
  { client_id: 'tv-cc', client_secret: secret, grant_types: ['client_credentials'], redirect_uris: [],
    response_types: [], scope: 'api:read' },
  { client_id: 'tv-pw', client_secret: secret, grant_types: ['password', 'refresh_token'], redirect_uris: [],
    response_types: [] },
  // refresh tokens that do not rotate, so a load generator can replay one (bench/worker_throughput)
  { client_id: 'tv-pw-keep', client_secret: secret, grant_types: ['password', 'refresh_token'], redirect_uris: [],
    response_types: [] },
];

// oidc-provider's own memory adapter is an LRU of 1000 entries: with
// thousands of auths (bench/worker_throughput) it forgets live grants and
// answers invalid_grant.  This one forgets only what has expired.
const stores = new Map();
class MemoryStore {
  constructor(name) {
    if (!stores.has(name)) stores.set(name, new Map());
    this.items = stores.get(name);
    this.grants = stores.get('_grants') ?? new Map();
    stores.set('_grants', this.grants);
  }

  async upsert(id, payload, expiresIn) {
    this.items.set(id, { payload, exp: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
    if (payload.grantId) {
      const ids = this.grants.get(payload.grantId) ?? [];
      ids.push([this.items, id]);
      this.grants.set(payload.grantId, ids);
    }
  }

  async find(id) {
    const item = this.items.get(id);
    if (!item) return undefined;
    if (item.exp < Date.now()) { this.items.delete(id); return undefined; }
    return item.payload;
  }

  async findByUid(uid) {
    for (const [id, item] of this.items) if (item.payload.uid === uid) return this.find(id);
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [id, item] of this.items) if (item.payload.userCode === userCode) return this.find(id);
    return undefined;
  }

  async consume(id) {
    const item = this.items.get(id);
    if (item) item.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { this.items.delete(id); }

  async revokeByGrantId(grantId) {
    for (const [items, id] of this.grants.get(grantId) ?? []) items.delete(id);
    this.grants.delete(grantId);
  }
}

let counts;
let inFlight = 0;
const issued = [];
const reset = () => { counts = { token: 0, by_grant: {}, revoke: 0, grants_revoked: 0 }; };
reset();

const tls = env.TLS_CERT ? { cert: readFileSync(env.TLS_CERT), key: readFileSync(env.TLS_KEY) } : null;
let handler = (req, res) => { res.writeHead(503); res.end(); };
const server = tls ? https.createServer(tls, (q, s) => handler(q, s)) : http.createServer((q, s) => handler(q, s));

server.listen(Number(env.OIDC_PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    adapter: MemoryStore,
    clients,
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'offline_access', 'api:read'],
    features: {
      devInteractions: { enabled: true },   // the login and consent pages a test drives as a browser
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
    },
    pkce: { required: () => true },
    // rotation on every refresh; oidc-provider revokes the whole grant when a
    // used refresh token comes back
    rotateRefreshToken: (ctx) => ctx.oidc.client.clientId !== 'tv-pw-keep',
    issueRefreshToken: async (ctx, client, source) => client.grantTypeAllowed('refresh_token')
      && source.scopes.has('offline_access'),
    ttl: {
      AccessToken: accessTtl,
      ClientCredentials: accessTtl,
      RefreshToken: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
  });
  provider.registerGrantType('password', passwordGrant(provider), ['username', 'password', 'scope']);
  provider.on('grant.success', (ctx) => countGrant(ctx));
  provider.on('grant.error', (ctx) => countGrant(ctx));
  provider.on('grant.revoked', () => { counts.grants_revoked += 1; });
  provider.on('access_token.saved', (t) => issued.push(
    `${createHash('md5').update(t.jti).digest('hex')} ${t.exp ?? (t.iat ?? Math.floor(Date.now() / 1000)) + accessTtl}`));

  const callback = provider.callback();
  handler = (req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/_count') return json(res, { ...counts, in_flight: inFlight });
    if (path === '/_reset') { reset(); return json(res, {}); }
    if (path === '/_issued') { res.writeHead(200, { 'content-type': 'text/plain' }); return res.end(issued.map((l) => `${l}\n`).join('')); }
    if (path === '/token/revocation') counts.revoke += 1;
    if (path !== '/token') return callback(req, res);
    counts.token += 1;
    inFlight += 1;
    res.on('close', () => { inFlight -= 1; });
    if (tokenDelay > 0) {
      // answered at once (a refresh token is spent now), the answer held back
      const end = res.end.bind(res);
      res.end = (...args) => { setTimeout(() => end(...args), tokenDelay); return res; };
    }
    return callback(req, res);
  };
  if (env.PORT_FILE) {
    writeFileSync(`${env.PORT_FILE}.tmp`, String(port));
    renameSync(`${env.PORT_FILE}.tmp`, env.PORT_FILE);
  }
  console.log(`oidc peer listening on ${issuer}`);
});

function json(res, body) {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function countGrant(ctx) {
  const g = ctx.oidc?.params?.grant_type || 'unknown';
  counts.by_grant[g] = (counts.by_grant[g] || 0) + 1;
}

const sameString = (a, b) => {
  const x = Buffer.from(String(a)); const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
};

// The resource owner password grant (RFC 6749 4.3): one user, alice.  The
// grant and tokens are oidc-provider's own models, so its refresh_token
// grant, rotation and revocation treat them like any other.
function passwordGrant(provider) {
  return async (ctx) => {
    const { client, params } = ctx.oidc;
    if (params.username !== 'alice' || !env.USER_PASSWORD || !sameString(params.password, env.USER_PASSWORD)) {
      throw new errors.InvalidGrant('invalid resource owner credentials');
    }
    const scope = (params.scope || 'openid').split(' ').filter((s) => ['openid', 'offline_access'].includes(s)).join(' ');
    const grant = new provider.Grant({ accountId: 'alice', clientId: client.clientId });
    grant.addOIDCScope(scope);
    const grantId = await grant.save();
    const at = new provider.AccessToken({ accountId: 'alice', client, grantId, gty: 'password', scope });
    const body = { access_token: await at.save(), token_type: 'Bearer', expires_in: at.expiration, scope };
    if (scope.split(' ').includes('offline_access')) {
      const rt = new provider.RefreshToken({ accountId: 'alice', client, grantId, gty: 'password', scope, rotations: 0 });
      body.refresh_token = await rt.save();
    }
    ctx.body = body;
  };
}

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { server.close(); server.closeAllConnections?.(); process.exit(0); });
}

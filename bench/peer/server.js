// The peer of our benchmarks: the reference Node.js OpenID provider (`oidc-provider`,
// OpenID Certified) configured like ours, with a sign-in that does the same work as ours
// (argon2id password check with the same parameters, then a TOTP code accepted once).
//
// Storage: in memory when one process serves (the default): a plain Map with expiry, because
// oidc-provider's own development adapter is an LRU of 1,000 entries that would evict codes
// and tokens under benchmark load; or a small Redis adapter when PEER_WORKERS > 1 (node
// cluster), because cluster workers share no memory and a code minted by one worker must be
// redeemable at another.
//
// Environment:
//   PEER_PORT (default 3000), PEER_HOST (default 127.0.0.1; only loopback is accepted)
//   PEER_WORKERS (default 1)  PEER_REDIS_URL (needed when PEER_WORKERS > 1)
//   PEER_CONFIG: path of a JSON file written by bench/run.py:
//     { "client": {client_id, client_secret, redirect_uri},
//       "password_hash": "$argon2id$...", "users": [{id, email, totp_secret}] }
import cluster from 'node:cluster';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import argon2 from 'argon2';
import Provider from 'oidc-provider';

const HOST = process.env.PEER_HOST || '127.0.0.1';
const PORT = Number(process.env.PEER_PORT || 3000);
const WORKERS = Number(process.env.PEER_WORKERS || 1);
const REDIS_URL = process.env.PEER_REDIS_URL || '';
const ISSUER = `http://${HOST}:${PORT}`;
const ACR_MFA = 'https://refeds.org/profile/mfa';
const API = 'urn:idp-bench:api';

if (!/^127\.|^localhost$|^::1$/.test(HOST)) {
  throw new Error('the benchmark peer only listens on loopback');
}

const config = JSON.parse(fs.readFileSync(process.env.PEER_CONFIG, 'utf8'));

// -------------------------------------------------------------------------------------------
// Signing keys, RS256 (ID tokens) and ES256 (JWT access tokens, as ours by default): made by
// the primary and handed to every worker, so all publish one JWKS.
function signingKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  return [
    { ...rsa.export({ format: 'jwk' }), kid: 'peer-rs256-1', alg: 'RS256', use: 'sig' },
    { ...ec.export({ format: 'jwk' }), kid: 'peer-es256-1', alg: 'ES256', use: 'sig' },
  ];
}

if (cluster.isPrimary && WORKERS > 1) {
  const keys = signingKeys();
  for (let i = 0; i < WORKERS; i += 1) {
    cluster.fork({ PEER_JWKS: JSON.stringify(keys) });
  }
  cluster.on('exit', (worker, code) => {
    console.error(`peer worker ${worker.process.pid} exited with ${code}`);
  });
} else {
  await serve();
}

async function serve() {
  const keys = process.env.PEER_JWKS ? JSON.parse(process.env.PEER_JWKS) : signingKeys();

  // -----------------------------------------------------------------------------------------
  // Accounts: a fixed set of test users sharing one precomputed argon2id hash
  // (m=19456, t=2, p=1: the same parameters as ours), each with its own TOTP secret.
  const byId = new Map();
  const byEmail = new Map();
  for (const u of config.users) {
    const account = { ...u, key: base32Decode(u.totp_secret) };
    byId.set(u.id, account);
    byEmail.set(u.email.toLowerCase(), account);
  }
  const passwordHash = config.password_hash;

  let redis = null;
  let adapter = memoryAdapterFactory();
  if (WORKERS > 1) {
    if (!REDIS_URL) throw new Error('PEER_REDIS_URL is needed when PEER_WORKERS > 1');
    const { default: Redis } = await import('ioredis');
    redis = new Redis(REDIS_URL, { keyPrefix: 'peer:' });
    adapter = redisAdapterFactory(redis);
  }

  // A TOTP time step is accepted once per account (the same rule as ours), in memory for one
  // process, in Redis (compare-and-set) across cluster workers.
  const lastStep = new Map();
  async function acceptStep(accountId, step) {
    if (redis) {
      const ok = await redis.eval(
        "local c = tonumber(redis.call('GET', KEYS[1]) or '0') "
        + "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1], 'EX', 120) return 1 end return 0",
        1, `totp:${accountId}`, String(step),
      );
      return ok === 1;
    }
    if ((lastStep.get(accountId) || 0) >= step) return false;
    lastStep.set(accountId, step);
    return true;
  }

  const provider = new Provider(ISSUER, {
    adapter,
    clients: [{
      client_id: config.client.client_id,
      client_secret: config.client.client_secret,
      redirect_uris: [config.client.redirect_uri],
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid email profile offline_access',
    }],
    jwks: { keys },
    cookies: { keys: ['bench-peer-cookie-key-not-secret-0123456789'] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'updated_at'],
    },
    scopes: ['openid', 'email', 'profile', 'offline_access'],
    acrValues: [ACR_MFA],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      // Our access tokens are JWTs (RFC 9068). The peer issues JWT access tokens for
      // client_credentials through a resource indicator; for the user's grants it keeps its
      // default opaque tokens, the only kind its introspection endpoint accepts.
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => {
          if (oneOf) return oneOf;
          return ctx.oidc.params?.grant_type === 'client_credentials' ? API : undefined;
        },
        useGrantedResource: async () => false,
        getResourceServerInfo: async () => ({
          scope: 'api',
          audience: API,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 600,
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    // Rotated at every use, as ours (reuse of a rotated token revokes the grant: the default).
    rotateRefreshToken: () => true,
    // Ours issues a refresh token whenever the client may use the grant and asked for
    // offline_access; oidc-provider would otherwise also want prompt=consent.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Our client is first party: no consent page. Same here (oidc-provider's documented way).
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const found = await ctx.oidc.provider.Grant.find(grantId);
        if (found) return found;
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email profile offline_access');
      await grant.save();
      return grant;
    },
    findAccount: async (ctx, sub) => {
      const account = byId.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        claims: async () => ({
          sub,
          email: account.email,
          email_verified: true,
          name: account.name || account.email,
          updated_at: 1700000000,
        }),
      };
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: 600,
      AuthorizationCode: 60,
      ClientCredentials: 600,
      IdToken: 600,
      Interaction: 900,
      Grant: 7 * 24 * 3600,
      RefreshToken: 7 * 24 * 3600,
      Session: 12 * 3600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!doctype html><title>Error</title><h1>${escape(out.error)}</h1><p>${escape(out.error_description || '')}</p>`;
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));

  const callback = provider.callback();

  // -----------------------------------------------------------------------------------------
  // Sign-in pages: email address and password (argon2id), then the security code (TOTP).
  async function interaction(req, res) {
    const url = new URL(req.url, ISSUER);
    const [, , uid, step] = url.pathname.split('/');
    let details;
    try {
      details = await provider.interactionDetails(req, res);
    } catch (err) {
      return page(res, 400, 'Sign-in expired', '<p>Start again.</p>');
    }
    if (details.uid !== uid) return page(res, 400, 'Sign-in expired', '<p>Start again.</p>');
    const pending = details.result?.benchPending;

    if (req.method === 'GET') {
      if (step === 'code' && pending) return codePage(res, uid, '');
      return passwordPage(res, uid, '');
    }
    if (req.method !== 'POST') return page(res, 405, 'Method not allowed', '');
    const form = new URLSearchParams(await readBody(req));

    if (step === 'password') {
      const email = String(form.get('email') || '').trim().toLowerCase();
      const password = String(form.get('password') || '').normalize('NFKC');
      const account = byEmail.get(email);
      // Every test user shares one hash; an unknown account costs one verification too
      // (no enumeration by timing), as ours.
      const ok = await argon2.verify(passwordHash, password).catch(() => false);
      if (!account || !ok) return passwordPage(res, uid, 'Enter a correct email address and password.');
      details.result = { benchPending: { accountId: account.id } };
      await details.save(details.exp - Math.floor(Date.now() / 1000));
      res.writeHead(303, { Location: `/interaction/${uid}/code` });
      return res.end();
    }
    if (step === 'code') {
      if (!pending) return passwordPage(res, uid, 'Enter your email address and password first.');
      const account = byId.get(pending.accountId);
      const code = String(form.get('code') || '').replace(/\s/g, '');
      const step30 = verifyTotp(account.key, code);
      if (step30 === null || !(await acceptStep(account.id, step30))) {
        return codePage(res, uid, 'Enter the current security code from your authenticator app.');
      }
      return provider.interactionFinished(req, res, {
        login: {
          accountId: account.id,
          acr: ACR_MFA,
          amr: ['pwd', 'otp', 'mfa'],
          ts: Math.floor(Date.now() / 1000),
        },
      }, { mergeWithLastSubmission: false });
    }
    return page(res, 404, 'Not found', '');
  }

  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(req, res).catch((err) => {
        console.error(err);
        if (!res.headersSent) page(res, 500, 'Error', '');
      });
      return;
    }
    if (req.url === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{"status":"ok"}');
      return;
    }
    callback(req, res);
  });
  server.keepAliveTimeout = 65000;
  server.listen(PORT, HOST, () => {
    console.log(`peer oidc-provider listening on ${ISSUER} (pid ${process.pid}, ${redis ? 'redis' : 'in-memory'} adapter)`);
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers.

function passwordPage(res, uid, error) {
  return page(res, error ? 400 : 200, 'Sign in', `${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/password">
<label for="email">Email address</label><input id="email" name="email" type="email" autocomplete="username">
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password">
<button type="submit">Continue</button></form>`);
}

function codePage(res, uid, error) {
  return page(res, error ? 400 : 200, 'Security code', `${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/code">
<label for="code">Security code</label><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code">
<button type="submit">Continue</button></form>`);
}

function page(res, status, title, body) {
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Cache-Control': 'no-store',
    'Content-Security-Policy': "default-src 'self'; frame-ancestors 'none'",
    'Referrer-Policy': 'no-referrer',
  });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${body}</body></html>`);
}

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > 16384) { reject(new Error('body too large')); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function base32Decode(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0; let value = 0; const out = [];
  for (const ch of s.replace(/=+$/, '').toUpperCase()) {
    const idx = alphabet.indexOf(ch);
    if (idx < 0) throw new Error('bad base32');
    value = (value << 5) | idx; bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 0xff); bits -= 8; }
  }
  return Buffer.from(out);
}

// RFC 6238 (SHA1, 6 digits, 30 s), one step of drift either way: returns the matching step.
function verifyTotp(key, code) {
  if (!/^\d{6}$/.test(code)) return null;
  const now = Math.floor(Date.now() / 1000 / 30);
  for (const step of [now - 1, now, now + 1]) {
    const msg = Buffer.alloc(8);
    msg.writeBigUInt64BE(BigInt(step));
    const h = crypto.createHmac('sha1', key).update(msg).digest();
    const off = h[h.length - 1] & 0xf;
    const bin = ((h[off] & 0x7f) << 24) | (h[off + 1] << 16) | (h[off + 2] << 8) | h[off + 3];
    const expected = String(bin % 1000000).padStart(6, '0');
    if (crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(code))) return step;
  }
  return null;
}

// An unbounded in-memory adapter (one Map, entries expire), same contract as
// oidc-provider's development adapter without its 1,000-entry LRU limit.
function memoryAdapterFactory() {
  const store = new Map(); // key -> { payload, expiresAt }
  const grants = new Map(); // grantId -> Set of keys
  const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);
  const get = (key) => {
    const e = store.get(key);
    if (!e) return undefined;
    if (e.expiresAt && e.expiresAt <= Date.now()) { store.delete(key); return undefined; }
    return e.payload;
  };
  setInterval(() => {
    const now = Date.now();
    for (const [k, e] of store) if (e.expiresAt && e.expiresAt <= now) store.delete(k);
    for (const [g, keys] of grants) {
      for (const k of keys) if (!store.has(k)) keys.delete(k);
      if (keys.size === 0) grants.delete(g);
    }
  }, 10000).unref();
  return class MemoryAdapter {
    constructor(name) { this.name = name; }

    key(id) { return `${this.name}:${id}`; }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      store.set(key, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
      if (grantable.has(this.name) && payload.grantId) {
        if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
        grants.get(payload.grantId).add(key);
      }
      if (payload.uid) store.set(`uid:${payload.uid}`, { payload: id, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
      if (payload.userCode) store.set(`userCode:${payload.userCode}`, { payload: id, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
    }

    async find(id) { return get(this.key(id)); }

    async findByUid(uid) { const id = get(`uid:${uid}`); return id ? this.find(id) : undefined; }

    async findByUserCode(code) { const id = get(`userCode:${code}`); return id ? this.find(id) : undefined; }

    async destroy(id) { store.delete(this.key(id)); }

    async revokeByGrantId(grantId) {
      for (const k of grants.get(grantId) || []) store.delete(k);
      grants.delete(grantId);
    }

    async consume(id) {
      const payload = get(this.key(id));
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    }
  };
}

// A Redis adapter for cluster mode, after the shape of oidc-provider's example adapter.
function redisAdapterFactory(client) {
  const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);
  return class RedisAdapter {
    constructor(name) { this.name = name; }

    key(id) { return `${this.name}:${id}`; }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      const multi = client.multi();
      multi.set(key, JSON.stringify(payload));
      if (expiresIn) multi.expire(key, expiresIn);
      if (grantable.has(this.name) && payload.grantId) {
        const grantKey = `grant:${payload.grantId}`;
        multi.rpush(grantKey, key);
        const ttl = await client.ttl(grantKey);
        if (expiresIn > ttl) multi.expire(grantKey, expiresIn);
      }
      if (payload.userCode) {
        multi.set(`userCode:${payload.userCode}`, id);
        if (expiresIn) multi.expire(`userCode:${payload.userCode}`, expiresIn);
      }
      if (payload.uid) {
        multi.set(`uid:${payload.uid}`, id);
        if (expiresIn) multi.expire(`uid:${payload.uid}`, expiresIn);
      }
      await multi.exec();
    }

    async find(id) {
      const data = await client.get(this.key(id));
      return data ? JSON.parse(data) : undefined;
    }

    async findByUid(uid) {
      const id = await client.get(`uid:${uid}`);
      return id ? this.find(id) : undefined;
    }

    async findByUserCode(userCode) {
      const id = await client.get(`userCode:${userCode}`);
      return id ? this.find(id) : undefined;
    }

    async destroy(id) { await client.del(this.key(id)); }

    async revokeByGrantId(grantId) {
      const grantKey = `grant:${grantId}`;
      const tokens = await client.lrange(grantKey, 0, -1);
      const multi = client.multi();
      tokens.forEach((t) => multi.del(t));
      multi.del(grantKey);
      await multi.exec();
    }

    async consume(id) {
      // Atomic compare-and-set, so two workers cannot both redeem one code.
      const script = "local v = redis.call('GET', KEYS[1]) if not v then return 0 end "
        + "local p = cjson.decode(v) if p.consumed then return 0 end "
        + "p.consumed = tonumber(ARGV[1]) redis.call('SET', KEYS[1], cjson.encode(p), 'KEEPTTL') return 1";
      await client.eval(script, 1, this.key(id), String(Math.floor(Date.now() / 1000)));
    }
  };
}

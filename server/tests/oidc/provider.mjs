// A real OpenID provider for Tollgate's integration tests, on loopback:
// oidc-provider (an OpenID-certified implementation) issuing JWT access
// tokens through its resource-indicators feature to client-credentials
// clients, plus POST /test/mint, which signs claims the test chooses (the
// Cognito and Entra ID shapes, broken tokens) with this provider's own keys.
//
//   node provider.mjs --keys FILE [--port N]
//
// FILE holds the private keys (RS256, PS256 and ES256, one each); it is
// created when missing, so the same file means the same keys after a
// restart and a new file is a key rotation. Prints "listening URL" once it
// serves; the issuer is that URL. Stops on SIGTERM or when stdin closes (the
// test that started it is gone).
import http from 'node:http';
import fs from 'node:fs';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const keysFile = arg('keys');
if (!keysFile) {
  console.error('usage: node provider.mjs --keys FILE [--port N]');
  process.exit(2);
}
const port = Number(arg('port', '0'));

/** The API's resource indicator: the `aud` of every access token issued. */
export const AUDIENCE = 'urn:tollgate:api';

async function loadKeys() {
  if (fs.existsSync(keysFile)) return JSON.parse(fs.readFileSync(keysFile, 'utf8'));
  const keys = [];
  for (const alg of ['RS256', 'PS256', 'ES256']) {
    const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
    const jwk = await jose.exportJWK(privateKey);
    keys.push({ ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomBytes(4).toString('hex')}` });
  }
  const doc = { keys };
  fs.writeFileSync(keysFile, JSON.stringify(doc), { mode: 0o600 });
  return doc;
}

const jwks = await loadKeys();
const server = http.createServer();
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const clients = ['tg-user-1', 'tg-user-2', 'tg-user-3', 'tg-load'].map((id) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_post',
}));

const provider = new Provider(issuer, {
  jwks,
  clients,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'tasks',
        audience: AUDIENCE,
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

const privateKeys = new Map();
for (const k of jwks.keys) privateKeys.set(k.alg, { kid: k.kid, key: await jose.importJWK(k, k.alg) });

// POST /test/mint {alg?, claims, header?}: claims as given, `iss` and `iat`
// defaulting to this provider and now; `header` overrides the protected
// header (a foreign `kid`, say). Loopback only, like the whole process.
async function mint(req, res) {
  let body = '';
  for await (const chunk of req) body += chunk;
  try {
    const { alg = 'RS256', claims = {}, header = {} } = JSON.parse(body || '{}');
    const signer = privateKeys.get(alg);
    if (!signer) throw new Error(`no ${alg} key`);
    const payload = { iss: issuer, iat: Math.floor(Date.now() / 1000), ...claims };
    for (const [k, v] of Object.entries(payload)) if (v === null) delete payload[k];
    const token = await new jose.SignJWT(payload)
      .setProtectedHeader({ alg, kid: signer.kid, typ: 'JWT', ...header })
      .sign(signer.key);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token }));
  } catch (e) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(String(e));
  }
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.method === 'POST' && req.url === '/test/mint') return void mint(req, res);
  return callback(req, res);
});
console.log(`listening ${issuer}`);

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();

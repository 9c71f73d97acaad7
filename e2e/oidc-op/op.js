// A real OpenID Provider (the certified npm `oidc-provider`) for stepgate's upstream sign-in
// tests (crates/server/tests/upstream_oidc/). It signs in whoever the test says, with the
// `amr`, `acr` and age of authentication the test says, without a login form.
//
// Environment:
//   OP_PORT          port to listen on (127.0.0.1)
//   OP_REDIRECT_URI  the redirect URI(s, space-separated) of client `stepgate` (secret
//                    `stepgate-secret`)
//   OP_KEY_PEM       where to write the ES256 signing key (PKCS#8 PEM), so the test can sign
//                    tokens as the provider would (to forge ones with a wrong audience)
//   OP_POST_LOGOUT_URI  the client's post-logout redirect URI (RP-initiated logout), optional
//   OP_BACKCHANNEL_URI  the client's back-channel logout URI (sid required), optional
//   OP_PKJWT_JWK     a public JWK: adds client `stepgate-pkjwt`, which authenticates with
//                    private_key_jwt (ES256) under that key, optional
// Control (test only): POST /test/next {sub, amr, acr, auth_age} — who the next sign-in is;
//                      POST /test/disable {sub} — the account is disabled (its refresh
//                      tokens refused, its sign-ins too).
// Prints "op listening on <issuer>" when ready.

import crypto from 'node:crypto';
import fs from 'node:fs';
import Provider, { interactionPolicy } from 'oidc-provider';

const port = Number(process.env.OP_PORT || 0);
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'op-key-1', alg: 'ES256', use: 'sig' };
if (process.env.OP_KEY_PEM) {
  fs.writeFileSync(process.env.OP_KEY_PEM, privateKey.export({ type: 'pkcs8', format: 'pem' }));
}

const users = {
  'alice-sub': {
    preferred_username: 'alice', name: 'Alice Upstream', email: 'alice@corp.example',
    email_verified: true, groups: ['admins', 'staff'], department: 'finance',
  },
  'bob-sub': {
    preferred_username: 'bob', name: 'Bob Upstream', email: 'bob@corp.example',
    email_verified: false, groups: ['staff'], department: 'sales',
  },
};

let next = { sub: 'alice-sub', amr: ['pwd'], acr: undefined, auth_age: 0 };
const disabled = new Set();

// Every authorization request signs in again (the test says who), so one browser can sign in
// as different people or at different times; a resumed request is not asked again.
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'test_always', 'the test decides every sign-in',
  (ctx) => (ctx.oidc.result?.login ? interactionPolicy.Check.NO_NEED_TO_PROMPT
    : interactionPolicy.Check.REQUEST_PROMPT),
));

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'stepgate',
    client_secret: 'stepgate-secret',
    redirect_uris: process.env.OP_REDIRECT_URI.split(' '),
    response_types: ['code'],
    grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
    require_auth_time: true,
    ...(process.env.OP_POST_LOGOUT_URI
      ? { post_logout_redirect_uris: process.env.OP_POST_LOGOUT_URI.split(' ') } : {}),
    ...(process.env.OP_BACKCHANNEL_URI
      ? {
        backchannel_logout_uri: process.env.OP_BACKCHANNEL_URI.split(' ')[0],
        backchannel_logout_session_required: true,
      } : {}),
  }, ...(process.env.OP_PKJWT_JWK ? [{
    client_id: 'stepgate-pkjwt',
    redirect_uris: process.env.OP_REDIRECT_URI.split(' '),
    response_types: ['code'],
    grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks: { keys: [JSON.parse(process.env.OP_PKJWT_JWK)] },
    id_token_signed_response_alg: 'ES256',
    require_auth_time: true,
  }] : [])],
  jwks: { keys: [jwk] },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    profile: ['preferred_username', 'name', 'department'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false,
  acrValues: ['urn:corp:mfa', 'urn:corp:pwd'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  interactions: { policy, url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['stepgate-test-op-cookie-key'] },
  // The test's stepgate is on loopback, which oidc-provider's SSRF guard refuses for its
  // outgoing requests (back-channel logout): this provider is the test's, on loopback only.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  // A refresh token with every code (no offline_access needed), so stepgate can re-check.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  findAccount: async (ctx, sub) => (users[sub] && !disabled.has(sub) ? {
    accountId: sub,
    claims: async () => ({ sub, ...users[sub] }),
  } : undefined),
});

provider.use(async (ctx, nextMw) => {
  if (ctx.method === 'POST' && ctx.path === '/test/next') {
    const chunks = [];
    for await (const c of ctx.req) chunks.push(c);
    next = JSON.parse(Buffer.concat(chunks).toString());
    ctx.status = 204;
    return;
  }
  if (ctx.method === 'POST' && ctx.path === '/test/disable') {
    const chunks = [];
    for await (const c of ctx.req) chunks.push(c);
    disabled.add(JSON.parse(Buffer.concat(chunks).toString()).sub);
    ctx.status = 204;
    return;
  }
  if (ctx.method === 'GET' && ctx.path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params } = details;
    const result = {};
    if (prompt.name === 'login') {
      result.login = {
        accountId: next.sub,
        amr: next.amr,
        acr: next.acr,
        ts: Math.floor(Date.now() / 1000) - (next.auth_age || 0),
        remember: true,
      };
    }
    const accountId = result.login ? next.sub : details.session?.accountId;
    const grant = new provider.Grant({ accountId, clientId: params.client_id });
    grant.addOIDCScope(params.scope);
    result.consent = { grantId: await grant.save() };
    await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    return;
  }
  await nextMw();
});

provider.on('backchannel.error', (ctx, err, client) => {
  console.error(`op: back-channel logout to ${client.clientId} failed: ${err.message}`);
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`op listening on ${issuer}`);
});

// A real OpenID Connect provider (the certified npm package `oidc-provider`) for
// idsync's end-to-end tests and demo: one confidential client that may use the
// client_credentials grant, nothing else.
//
// usage: node oidc-provider.mjs --port PORT --client-secret SECRET
//            [--host 127.0.0.1] [--client-id idsync] [--scope "scim.read"]
//            [--auth-method client_secret_basic] [--ttl SECONDS]
// Every option can also come from the environment: OIDC_PORT, OIDC_HOST,
// OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_SCOPE, OIDC_AUTH_METHOD, OIDC_TTL.
// Prints "listening on http://HOST:PORT" once it accepts connections.
// The module is resolved from NODE_PATH or a node_modules beside/above the cwd;
// tests/peers/peers.py runs it with cwd .peers/node.
import { createRequire } from 'node:module';
import path from 'node:path';
import process from 'node:process';

function option(name, envName, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i !== -1 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (process.env[envName] !== undefined && process.env[envName] !== '') return process.env[envName];
  if (fallback === undefined) {
    console.error(`oidc-provider.mjs: --${name} (or ${envName}) is required`);
    process.exit(2);
  }
  return fallback;
}

const host = option('host', 'OIDC_HOST', '127.0.0.1');
const port = Number.parseInt(option('port', 'OIDC_PORT'), 10);
const clientId = option('client-id', 'OIDC_CLIENT_ID', 'idsync');
const clientSecret = option('client-secret', 'OIDC_CLIENT_SECRET');
const scope = option('scope', 'OIDC_SCOPE', 'scim.read');
const authMethod = option('auth-method', 'OIDC_AUTH_METHOD', 'client_secret_basic');
const ttl = Number.parseInt(option('ttl', 'OIDC_TTL', '600'), 10);

// Resolve oidc-provider from the working directory (.peers/node), not from this
// file's folder, which has no node_modules.
const require = createRequire(path.join(process.cwd(), 'noop.js'));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const issuer = `http://${host}:${port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: authMethod,
      scope,
    },
  ],
  scopes: ['openid', 'offline_access', ...scope.split(/\s+/).filter(Boolean)],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    introspection: { enabled: true },
  },
  ttl: { ClientCredentials: ttl },
});
provider.proxy = false;

// Log every token request outcome: the tests read the log when something fails.
provider.on('grant.success', (ctx) => console.log(`token issued to ${ctx.oidc.client?.clientId}`));
provider.on('grant.error', (ctx, err) => console.log(`token refused: ${err.error} (${err.error_description})`));
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = provider.listen(port, host, () => {
  console.log(`listening on ${issuer}`);
});
server.on('error', (err) => {
  console.error(`oidc-provider.mjs: cannot listen on ${host}:${port}: ${err.message}`);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}

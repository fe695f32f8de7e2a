/**
 * `--web.config.file`: TLS and basic authentication for the agent's endpoints,
 * in the format of the Prometheus exporters (exporter-toolkit's web
 * configuration file), so that one file serves every exporter on a host:
 *
 * ```yaml
 * tls_server_config:
 *   cert_file: server.crt        # relative paths are relative to this file
 *   key_file: server.key
 *   client_ca_file: ca.crt       # optional: client certificates
 *   client_auth_type: RequireAndVerifyClientCert
 *   min_version: TLS12
 * basic_auth_users:
 *   prometheus: $2y$10$...       # bcrypt hash (htpasswd -nBC 10 '' | tr -d ':')
 * ```
 *
 * The keys sockleak does not implement are refused by name, never ignored: a
 * file written for another exporter must not silently serve with less than it
 * asks for. The yaml and bcryptjs packages are loaded by this module only,
 * which the agent imports only when a file is given.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { ConfigError, NotFoundError } from '../errors';

/** exporter-toolkit's client_auth_type values that sockleak implements. */
export type ClientAuthType = 'NoClientCert' | 'VerifyClientCertIfGiven' | 'RequireAndVerifyClientCert';

/** A loaded web configuration: what the HTTP server needs, files already read. */
export interface WebConfig {
  /** The file it came from, for messages. */
  file: string;
  /** Absent: plain HTTP. */
  tls?: {
    cert: Buffer;
    key: Buffer;
    /** Client CA bundle; present when clientAuth is not NoClientCert. */
    ca?: Buffer;
    clientAuth: ClientAuthType;
    minVersion: tls.SecureVersion;
  };
  /** Absent: no authentication. */
  auth?: BasicAuth;
}

/** Checks `Authorization: Basic ...` headers against bcrypt hashes. */
export interface BasicAuth {
  /** The user names, for messages. */
  readonly users: readonly string[];
  /** Whether the header names a user and the right password. */
  check(authorization: string | undefined): Promise<boolean>;
}

const TOP_KEYS = new Set(['tls_server_config', 'basic_auth_users']);
const TLS_KEYS = new Set(['cert_file', 'key_file', 'client_ca_file', 'client_auth_type', 'min_version']);
/** Keys exporter-toolkit knows that sockleak does not implement: refused with their own reason. */
const NOT_IMPLEMENTED: Record<string, string> = {
  http_server_config: 'HTTP/2 and custom headers are not implemented',
  rate_limit: 'rate limiting is not implemented',
  max_version: 'only min_version is implemented',
  cipher_suites: "Node's default cipher suites are used",
  curve_preferences: "Node's default curves are used",
  prefer_server_cipher_suites: "Node's default cipher order is used",
  client_allowed_sans: 'client certificates are checked against client_ca_file only',
  cert: 'give the certificate as cert_file',
  key: 'give the key as key_file',
};
const CLIENT_AUTH: Record<string, ClientAuthType | undefined> = {
  NoClientCert: 'NoClientCert',
  VerifyClientCertIfGiven: 'VerifyClientCertIfGiven',
  RequireAndVerifyClientCert: 'RequireAndVerifyClientCert',
  RequestClientCert: undefined,
  RequireAnyClientCert: undefined,
};
const MIN_VERSIONS: Record<string, tls.SecureVersion> = { TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' };

/** Successful checks remembered, so that every scrape does not pay a bcrypt compare, slow by design (docs/deploy.md). */
const CACHE_SIZE = 64;

type Yaml = typeof import('yaml');
type Bcrypt = typeof import('bcryptjs');

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(file: string, where: string, value: Record<string, unknown>, known: Set<string>): void {
  for (const key of Object.keys(value)) {
    if (known.has(key)) continue;
    const why = NOT_IMPLEMENTED[key];
    throw new ConfigError(`${file}: ${where}${key}: ${why ? `not supported (${why})` : 'unknown key'}`);
  }
}

function stringField(file: string, where: string, obj: Record<string, unknown>, key: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ConfigError(`${file}: ${where}${key} must be a string`);
  return v;
}

function readRelative(file: string, key: string, name: string): Buffer {
  const full = path.resolve(path.dirname(file), name);
  try {
    return readFileSync(full);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError(`${file}: tls_server_config.${key}: cannot read ${full} (${code})`);
  }
}

function loadTls(file: string, raw: unknown): NonNullable<WebConfig['tls']> | undefined {
  if (raw === undefined || raw === null) return undefined;
  const where = 'tls_server_config.';
  if (!isPlainObject(raw)) throw new ConfigError(`${file}: tls_server_config must be a mapping`);
  checkKeys(file, where, raw, TLS_KEYS);
  const certFile = stringField(file, where, raw, 'cert_file');
  const keyFile = stringField(file, where, raw, 'key_file');
  if (!certFile || !keyFile) throw new ConfigError(`${file}: tls_server_config needs both cert_file and key_file`);
  const caFile = stringField(file, where, raw, 'client_ca_file');
  const authName = stringField(file, where, raw, 'client_auth_type');
  // exporter-toolkit's rule: a client CA with no auth type means client certificates are required.
  const clientAuth = authName === undefined ? (caFile ? 'RequireAndVerifyClientCert' : 'NoClientCert') : CLIENT_AUTH[authName];
  if (!clientAuth) {
    const known = authName !== undefined && Object.hasOwn(CLIENT_AUTH, authName);
    throw new ConfigError(
      `${file}: ${where}client_auth_type: ${known ? `'${authName}' is not supported` : `unknown value '${authName}'`} (use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)`,
    );
  }
  if (clientAuth !== 'NoClientCert' && !caFile) throw new ConfigError(`${file}: ${where}client_auth_type ${clientAuth} needs client_ca_file`);
  const versionName = stringField(file, where, raw, 'min_version') ?? 'TLS12';
  const minVersion = MIN_VERSIONS[versionName];
  if (!minVersion) throw new ConfigError(`${file}: ${where}min_version must be TLS12 or TLS13, got '${versionName}'`);
  const out = {
    cert: readRelative(file, 'cert_file', certFile),
    key: readRelative(file, 'key_file', keyFile),
    ...(caFile && { ca: readRelative(file, 'client_ca_file', caFile) }),
    clientAuth,
    minVersion,
  };
  try {
    // Mismatched key and certificate, or files that are not PEM: said now, not at the first handshake.
    tls.createSecureContext({ cert: out.cert, key: out.key, ...(out.ca && { ca: out.ca }) });
  } catch (err) {
    throw new ConfigError(`${file}: tls_server_config: ${err instanceof Error ? err.message : String(err)}`);
  }
  return out;
}

/**
 * Basic auth against bcrypt hashes. A user that does not exist costs a bcrypt
 * compare too, so that timing does not tell which names exist.
 */
function basicAuth(file: string, raw: unknown): BasicAuth | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isPlainObject(raw)) throw new ConfigError(`${file}: basic_auth_users must be a mapping of user: bcrypt-hash`);
  const hashes = new Map<string, string>();
  for (const [user, hash] of Object.entries(raw)) {
    if (typeof hash !== 'string' || !/^\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
      throw new ConfigError(`${file}: basic_auth_users.${user}: not a bcrypt hash (make one with: htpasswd -nBC 10 '' | tr -d ':')`);
    }
    if (user.includes(':')) throw new ConfigError(`${file}: basic_auth_users.${user}: a user name cannot contain ':'`);
    hashes.set(user, hash);
  }
  if (hashes.size === 0) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const bcrypt = require('bcryptjs') as Bcrypt;
  // At the cost of a real hash, for unknown names to take as long as known ones.
  const decoy = bcrypt.hashSync('sockleak decoy', bcrypt.getRounds(hashes.values().next().value!));
  // Digests of "user:password" that matched, oldest first; a changed file means a restart, so no invalidation.
  const good = new Map<string, Buffer>();
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  return {
    users: [...hashes.keys()],
    async check(authorization) {
      const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization ?? '');
      if (!m) return false;
      const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) return false;
      const user = decoded.slice(0, colon);
      const password = decoded.slice(colon + 1);
      const key = digest(decoded);
      const cached = good.get(user);
      if (cached && timingSafeEqual(cached, key)) return true;
      const hash = hashes.get(user);
      const ok = (await bcrypt.compare(password, hash ?? decoy)) && hash !== undefined;
      if (ok) {
        good.delete(user);
        good.set(user, key);
        if (good.size > CACHE_SIZE) good.delete(good.keys().next().value!);
      }
      return ok;
    },
  };
}

/**
 * Reads and checks a web configuration file. Throws NotFoundError when the
 * file is missing, ConfigError (one line naming the file and key) for anything
 * wrong inside it or in the files it names.
 */
export function loadWebConfig(file: string): WebConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(`--web.config.file ${file}: no such file`);
    throw new ConfigError(`--web.config.file ${file}: cannot read it (${code ?? String(err)})`);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const yaml = require('yaml') as Yaml;
  let doc: unknown;
  try {
    doc = yaml.parse(text, { uniqueKeys: true, prettyErrors: false });
  } catch (err) {
    const first = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    throw new ConfigError(`${file}: not valid YAML: ${first}`);
  }
  if (doc === null || doc === undefined) doc = {};
  if (!isPlainObject(doc)) throw new ConfigError(`${file}: must be a YAML mapping (tls_server_config, basic_auth_users)`);
  checkKeys(file, '', doc, TOP_KEYS);
  const tlsConfig = loadTls(file, doc.tls_server_config);
  const auth = basicAuth(file, doc.basic_auth_users);
  return { file, ...(tlsConfig && { tls: tlsConfig }), ...(auth && { auth }) };
}

/** Whether `host` only accepts connections from this machine. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host) || /^::ffff:127\./i.test(host);
}

/**
 * What is unprotected when the agent listens on `host`: undefined on loopback
 * or with both TLS and authentication (a password, or verified client
 * certificates), else a sentence for the start-up line.
 */
export function exposure(host: string, port: number, web: WebConfig | undefined): string | undefined {
  if (isLoopback(host)) return undefined;
  const address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const tlsOn = web?.tls !== undefined;
  const authOn = web?.auth !== undefined || web?.tls?.clientAuth === 'RequireAndVerifyClientCert';
  if (tlsOn && authOn) return undefined;
  const missing = !tlsOn && !authOn ? 'without TLS or authentication' : !tlsOn ? 'without TLS (passwords cross the network in clear)' : 'without authentication';
  return `serving /metrics and /stream ${missing} on ${address}; see --web.config.file`;
}

/**
 * `sockleak agent --web.config.file`, for real: the agent runs as a CLI process
 * (as root), with a throwaway CA and certificates made by openssl in a temp
 * dir, and is asked by real HTTPS clients: right password, wrong password,
 * none, plain HTTP, a client that does not trust the CA, client certificates.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { ExitCode } from '../src/errors';
import { exposure } from '../src/agent/web-config';
import { CLI, runCli, startAgentProcess } from './helpers';

const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-web-'));
const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups.reverse()) c();
  rmSync(dir, { recursive: true, force: true });
});

const file = (name: string): string => path.join(dir, name);
const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });

/** A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by it, and a self-signed stranger. */
function makeCertificates(): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=sockleak test CA');
  openssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  writeFileSync(file('server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext');
  openssl('req', ...ec, '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=prometheus');
  writeFileSync(file('client.ext'), 'extendedKeyUsage=clientAuth\n');
  openssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.crt', '-days', '2', '-extfile', 'client.ext');
  openssl('req', '-x509', ...ec, '-keyout', 'stranger.key', '-out', 'stranger.crt', '-days', '2', '-subj', '/CN=stranger');
}
makeCertificates();

const PASSWORD = 'correct horse battery staple';
// htpasswd writes $2y$ hashes; the algorithm is the one of $2b$.
const HASH = bcrypt.hashSync(PASSWORD, 10).replace(/^\$2b\$/, '$2y$');

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** GET over HTTPS; resolves with the reply, rejects with the TLS or socket error. */
function get(port: number, pathname: string, options: https.RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: pathname, agent: false, ca: CA, ...options }, (res) => {
      let body = '';
      // /stream never ends: the first bytes are enough.
      res.on('data', (d: Buffer) => {
        body += d.toString('latin1');
        if (pathname === '/stream') res.destroy();
      });
      const done = (): void => resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      res.on('end', done);
      res.on('close', done);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
  });
}

const CA = readFileSync(file('ca.crt'));
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

test('TLS and basic auth: right password 200, wrong or none 401, plain HTTP and an untrusting client fail, /healthz open', async () => {
  writeFileSync(
    file('web.yml'),
    `# as an exporter's file would be\ntls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: ${HASH}\n`,
  );
  const agent = await startAgentProcess(['--listen', '0.0.0.0:0', '--web.config.file', file('web.yml')]);
  try {
    assert.match(agent.stderr(), /agent on https:\/\/0\.0\.0\.0:\d+ /);
    assert.doesNotMatch(agent.stderr(), /without TLS|without authentication/, 'TLS and auth: no warning');

    const ok = await get(agent.port, '/metrics', { headers: { Authorization: basic('prometheus', PASSWORD) } });
    assert.equal(ok.status, 200);
    assert.match(ok.body, /^sockleak_close_wait_leaked_sockets \d+$/m);
    // The second one is answered from the cache of successful checks, the same way.
    assert.equal((await get(agent.port, '/metrics', { headers: { Authorization: basic('prometheus', PASSWORD) } })).status, 200);

    const wrong = await get(agent.port, '/metrics', { headers: { Authorization: basic('prometheus', 'wrong password') } });
    assert.equal(wrong.status, 401);
    assert.match(String(wrong.headers['www-authenticate']), /^Basic realm="sockleak"/);
    assert.doesNotMatch(wrong.body, /sockleak_/);
    // A cached success for the right password must not let a wrong one through.
    assert.equal((await get(agent.port, '/metrics', { headers: { Authorization: basic('prometheus', `${PASSWORD}x`) } })).status, 401);
    assert.equal((await get(agent.port, '/metrics', { headers: { Authorization: basic('nobody', PASSWORD) } })).status, 401);
    assert.equal((await get(agent.port, '/metrics')).status, 401);
    assert.equal((await get(agent.port, '/stream')).status, 401);

    const stream = await get(agent.port, '/stream', { headers: { Authorization: basic('prometheus', PASSWORD) } });
    assert.equal(stream.status, 200);
    assert.match(String(stream.headers['content-type']), /^application\/x-protobuf/);

    assert.equal((await get(agent.port, '/healthz')).status, 200, 'liveness probes need no password');

    await assert.rejects(
      new Promise((resolve, reject) => http.get({ host: '127.0.0.1', port: agent.port, path: '/metrics', agent: false }, resolve).on('error', reject)),
      /socket hang up|ECONNRESET|EPROTO/,
      'plain HTTP against the TLS port',
    );
    await assert.rejects(get(agent.port, '/metrics', { ca: undefined }), /self[- ]signed|unable to (get|verify)/, 'a client that does not trust the CA');
    assert.equal(await agent.stop(), 0);
  } finally {
    await agent.stop();
  }
});

test('client certificates: RequireAndVerifyClientCert takes the CA-signed one, refuses none and a stranger; VerifyClientCertIfGiven also takes none', async () => {
  writeFileSync(
    file('mtls.yml'),
    `tls_server_config:\n  cert_file: ${file('server.crt')}\n  key_file: ${file('server.key')}\n  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n`,
  );
  const client = { cert: readFileSync(file('client.crt')), key: readFileSync(file('client.key')) };
  const stranger = { cert: readFileSync(file('stranger.crt')), key: readFileSync(file('stranger.key')) };
  const agent = await startAgentProcess(['--listen', '127.0.0.1:0', '--web.config.file', file('mtls.yml')]);
  try {
    assert.equal((await get(agent.port, '/metrics', client)).status, 200);
    await assert.rejects(get(agent.port, '/metrics'), 'no client certificate');
    await assert.rejects(get(agent.port, '/metrics', stranger), 'a certificate the CA did not sign');
  } finally {
    await agent.stop();
  }

  // VerifyClientCertIfGiven: none is fine, a given one must verify.
  writeFileSync(file('mtls.yml'), readFileSync(file('mtls.yml'), 'utf8').replace('RequireAndVerifyClientCert', 'VerifyClientCertIfGiven'));
  const lenient = await startAgentProcess(['--listen', '127.0.0.1:0', '--web.config.file', file('mtls.yml')]);
  try {
    assert.equal((await get(lenient.port, '/metrics')).status, 200);
    assert.equal((await get(lenient.port, '/metrics', client)).status, 200);
    await assert.rejects(get(lenient.port, '/metrics', stranger), 'a certificate the CA did not sign');
  } finally {
    await lenient.stop();
  }
});

test('listening beyond loopback without a web config: one start-up line says so', async () => {
  const agent = await startAgentProcess(['--listen', '0.0.0.0:0']);
  try {
    const lines = agent.stderr().split('\n').filter((l) => /without TLS/.test(l));
    assert.deepEqual(lines, [`sockleak: serving /metrics and /stream without TLS or authentication on 0.0.0.0:${agent.port}; see --web.config.file`]);
    assert.doesNotMatch(agent.stderr(), /without CAP_/, 'root has every capability: nothing lost');
  } finally {
    await agent.stop();
  }
  assert.equal(exposure('127.0.0.1', 9466, undefined), undefined, 'loopback: nothing to say');
  assert.equal(exposure('::1', 9466, undefined), undefined);
  assert.match(exposure('::', 9466, undefined) ?? '', /without TLS or authentication on \[::\]:9466/);
});

test('a bad web config is one line and exit 78 (66 for a missing file), before any BPF is loaded', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['unknown.yml', 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  certfile: x\n', /tls_server_config\.certfile: unknown key$/],
    ['toplevel.yml', 'basic_auth_user:\n  a: b\n', /basic_auth_user: unknown key$/],
    ['h2.yml', 'http_server_config:\n  http2: true\n', /http_server_config: not supported/],
    ['hash.yml', 'basic_auth_users:\n  prometheus: plaintext\n', /basic_auth_users\.prometheus: not a bcrypt hash/],
    ['nokey.yml', 'tls_server_config:\n  cert_file: server.crt\n', /needs both cert_file and key_file/],
    ['missing-cert.yml', 'tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n', /cert_file: cannot read .*nope\.crt \(ENOENT\)/],
    ['mismatch.yml', 'tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n', /tls_server_config: .*key values mismatch/],
    ['auth-type.yml', 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n', /needs client_ca_file/],
    ['version.yml', 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS10\n', /min_version must be TLS12 or TLS13/],
    ['yaml.yml', 'tls_server_config: [\n', /not valid YAML/],
    ['dup.yml', 'basic_auth_users:\n  a: x\nbasic_auth_users:\n  b: y\n', /not valid YAML/],
  ];
  for (const [name, text, want] of cases) {
    writeFileSync(file(name), text);
    const r = runCli(['agent', '--listen', '127.0.0.1:0', '--web.config.file', file(name)]);
    assert.equal(r.code, ExitCode.CONFIG, `${name}: ${r.stderr}`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `${name}: one line, got ${r.stderr}`);
    assert.match(lines[0]!, want, name);
    assert.ok(lines[0]!.startsWith(`sockleak: ${file(name)}: `), `${name} is named: ${lines[0]}`);
  }
  const missing = runCli(['agent', '--listen', '127.0.0.1:0', '--web.config.file', file('absent.yml')]);
  assert.equal(missing.code, ExitCode.NO_INPUT);
  assert.equal(missing.stderr, `sockleak: --web.config.file ${file('absent.yml')}: no such file\n`);
});

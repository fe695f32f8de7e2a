/**
 * The npm package: packed from this checkout (built by scripts/setup.sh),
 * installed into an empty prefix by a PATH that holds node and nothing else
 * (no compiler, make, python or bpftool), then run through its own #! line as
 * root and compared with the checkout's command on sockets and events the test
 * makes.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { CLI, ROOT, waitFor } from './helpers';

const NPM = path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');

let dir: string;
/** A directory with `node` and `sh` (npm runs scripts with it) and nothing else: the whole PATH of everything the package runs. */
let nodeOnly: string;
let prefix: string;
let installed: string;
let packageDir: string;
let packed: string[];
let tarball: string;

/** npm 12 runs a package's install script only when allowed; npm 11 warns, older ones ignore the flag. */
const INSTALL_FLAGS = ['--no-audit', '--no-fund', '--prefer-offline', '--allow-scripts=sockleak'];

/** This process's environment without what an outer npm (npm test) set for its own scripts. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_|^SOCKLEAK_/i.test(k)));
  return { ...env, ...extra };
}

/** What the installed command sees: PATH is node (and sh) alone. */
const bareEnv = (): NodeJS.ProcessEnv => cleanEnv({ PATH: nodeOnly });

before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-pack-'));
  nodeOnly = path.join(dir, 'path');
  prefix = path.join(dir, 'prefix');
  mkdirSync(nodeOnly);
  symlinkSync(process.execPath, path.join(nodeOnly, 'node'));
  symlinkSync('/bin/sh', path.join(nodeOnly, 'sh'));

  // setup.sh built everything; prepack would rebuild dist/ under this very test run.
  const pack = spawnSync(process.execPath, [NPM, 'pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
    cwd: ROOT,
    env: cleanEnv(),
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(pack.status, 0, pack.stderr);
  const [info] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  assert.ok(info);
  packed = info.files.map((f) => f.path);
  tarball = path.join(dir, info.filename);

  const install = spawnSync(
    process.execPath,
    [NPM, 'install', '-g', '--prefix', prefix, ...INSTALL_FLAGS, tarball],
    { cwd: dir, env: bareEnv(), encoding: 'utf8', timeout: 120_000 },
  );
  assert.equal(install.status, 0, `${install.stdout}\n${install.stderr}`);
  installed = path.join(prefix, 'bin', 'sockleak');
  packageDir = path.join(prefix, 'lib', 'node_modules', 'sockleak');
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the tarball holds what run time and a rebuild need, and no tests, benches, CI or BPF sources', () => {
  for (const need of [
    'package.json',
    'LICENSE',
    'README.md',
    'bin/sockleak.js',
    'build/Release/sockleak.node',
    'dist/src/index.js',
    'dist/src/index.d.ts',
    'dist/src/cli/main.js',
    'proto/sockleak/v1/sockleak.proto',
    'examples/incident-1.js',
    'docs/img/watch-table.svg',
    'scripts/install.js',
    'binding.gyp',
    'native/addon.cc',
    'bpf/sockleak.h',
    'bpf/.output/trace.skel.h',
    'bpf/.output/scan-light.lskel.h',
    'bpf/.output/programs-id.h',
  ]) {
    assert.ok(packed.includes(need), `${need} missing from the tarball`);
  }
  const unwanted = packed.filter((f) =>
    /^(test|bench|\.ci|dist\/test|dist\/bench|build\/Release\/obj\.target|node_modules)\/|\.bpf\.[co]$|\.map$/.test(f),
  );
  assert.deepEqual(unwanted, []);
});

test('installed without a compiler, it did not compile: the addon is the one packed', () => {
  assert.deepEqual(readFileSync(path.join(packageDir, 'build', 'Release', 'sockleak.node')), readFileSync(path.join(ROOT, 'build', 'Release', 'sockleak.node')));
  assert.equal(existsSync(path.join(packageDir, 'build', 'Makefile')), false);
  assert.equal(existsSync(path.join(packageDir, 'build', 'Release', 'obj.target')), false);
  for (const tool of ['cc', 'gcc', 'g++', 'clang', 'make', 'python3', 'bpftool']) {
    assert.notEqual(spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { env: bareEnv() }).status, 0, `${tool} on the test's PATH`);
  }
  assert.equal(readFileSync(installed, 'utf8').split('\n')[0], '#!/usr/bin/env node');
});

test('the installed command starts through its #! line with node alone on PATH', () => {
  const r = spawnSync(installed, ['--version'], { env: bareEnv(), encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
  assert.equal(r.stderr, '');
});

/** A socket as both commands must report it; what moves with the clock left out. */
function stable(s: Record<string, unknown>): Record<string, unknown> {
  const { stateAgeMs: _a, keepaliveProbeInMs: _p, keepaliveReapByMs: _r, ...rest } = s;
  return rest;
}

test("snapshot --json: the installed command reports the test's sockets as the checkout's does", async () => {
  // A listener, an established pair and a CLOSE_WAIT socket (the server closed, this client never does).
  const server = net.createServer((s) => (s.remotePort === closing?.localPort ? s.end() : undefined));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  let closing: net.Socket | undefined;
  const established = net.connect(port, '127.0.0.1');
  await once(established, 'connect');
  closing = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await once(closing, 'end');
  try {
    const ours = (cmd: string, env: NodeJS.ProcessEnv): { sockets: Array<Record<string, unknown>>; stderr: string } => {
      const r = spawnSync(cmd, ['snapshot', '--json', '--state', 'all'], { env, encoding: 'utf8', timeout: 60_000, maxBuffer: 256 << 20 });
      assert.equal(r.status, 0, r.stderr);
      const sockets = (JSON.parse(r.stdout) as { sockets: Array<Record<string, unknown>> }).sockets;
      return {
        sockets: sockets
          .filter((s) => [s.local, s.remote].includes(`127.0.0.1:${port}`))
          .map(stable)
          .sort((a, b) => String(a.cookie).localeCompare(String(b.cookie))),
        stderr: r.stderr,
      };
    };
    const checkout = ours(CLI, process.env);
    const pkg = ours(installed, bareEnv());
    // The same fallback lines, if this kernel refuses programs: the same BPF objects met the same kernel.
    assert.equal(pkg.stderr, checkout.stderr);
    const mine = checkout.sockets;
    const theirs = pkg.sockets;
    const states = mine.map((s) => s.state).sort();
    assert.ok(states.includes('CLOSE_WAIT') && states.includes('LISTEN') && states.includes('ESTABLISHED'), states.join());
    const closeWait = mine.find((s) => s.state === 'CLOSE_WAIT');
    assert.deepEqual((closeWait?.owners as Array<{ pid: number }>).map((o) => o.pid), [process.pid]);
    assert.deepEqual(theirs, mine);
  } finally {
    established.destroy();
    closing.destroy();
    server.close();
  }
});

/** node -e: waits for a line on stdin, then makes and closes `n` loopback connections one after another. */
const WORKLOAD = `
const net = require('node:net');
process.stdin.once('data', async () => {
  const srv = net.createServer((s) => { s.resume(); s.on('end', () => s.end()); });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  for (let i = 0; i < Number(process.argv[1]); i++) {
    await new Promise((r) => { const c = net.connect(srv.address().port, '127.0.0.1', () => c.end()); c.resume(); c.on('close', r); });
    await new Promise((r) => setTimeout(r, 20));
  }
  srv.close();
  process.stdout.write('done\\n');
});
process.stdout.write('ready\\n');
`;

test('trace --count: the installed command sees the events the checkout sees, on the same workload', async () => {
  const workload = spawn(process.execPath, ['-e', WORKLOAD, '10'], { stdio: ['pipe', 'pipe', 'inherit'] });
  await once(workload.stdout, 'data');
  const count = 40;
  const trace = (cmd: string, env: NodeJS.ProcessEnv): ChildProcessWithoutNullStreams =>
    spawn(cmd, ['trace', '--pid', String(workload.pid), '--json', '--count', String(count)], { env });
  const tracers = [trace(CLI, process.env), trace(installed, bareEnv())];
  const outputs = tracers.map((t) => {
    const out = { stdout: '', stderr: '', code: null as number | null };
    t.stdout.on('data', (b: Buffer) => (out.stdout += b));
    t.stderr.on('data', (b: Buffer) => (out.stderr += b));
    t.on('exit', (code) => (out.code = code));
    return out;
  });
  try {
    await waitFor(() => outputs.every((o) => o.stderr.includes('sockleak: tracing')), 30_000, 'both tracers attached');
    workload.stdin.write('go\n');
    await waitFor(() => outputs.every((o) => o.code !== null), 30_000, `both tracers done after ${count} events`);
  } finally {
    for (const t of tracers) t.kill('SIGKILL');
    workload.kill('SIGKILL');
  }
  const events = outputs.map((o) => {
    assert.equal(o.code, 0, o.stderr);
    const lines = o.stdout.trim().split('\n');
    assert.equal(lines.length, count, o.stdout);
    // Each tracer's program stamps its own copy of the event: the time is the one field that differs.
    return lines.map((l) => JSON.stringify({ ...(JSON.parse(l) as object), tsNs: undefined })).sort();
  });
  assert.ok(events[0]!.some((e) => e.includes('"type":"connect"')) && events[0]!.some((e) => e.includes('"newState":"CLOSE_WAIT"')));
  assert.deepEqual(events[1], events[0]);
});

test('the package entry is its library: public API only, and no prom-client or protobufjs until used', () => {
  const probe = `
    const lib = require('sockleak');
    const loaded = () => Object.keys(require.cache).filter((k) => /node_modules\\/(prom-client|protobufjs)\\//.test(k)).length;
    const out = { exports: Object.keys(lib).length, heavy: loaded(), version: require('sockleak/package.json').version };
    try { require('sockleak/dist/src/kernel/addon'); out.deep = 'allowed'; } catch (e) { out.deep = e.code; }
    out.recordType = lib.RECORD_TYPE;
    out.encoded = lib.encodeRecord({}).length;
    out.heavyAfter = loaded();
    out.startAgent = typeof lib.startAgent + '/' + typeof lib.Agent;
    process.stdout.write(JSON.stringify(out));
  `;
  const checkout = path.join(dir, 'checkout');
  mkdirSync(checkout);
  symlinkSync(ROOT, path.join(checkout, 'sockleak'));
  for (const modules of [path.join(prefix, 'lib', 'node_modules'), checkout]) {
    const r = spawnSync(process.execPath, ['-e', probe], { cwd: dir, env: cleanEnv({ NODE_PATH: modules }), encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.ok(Number(out.exports) > 20, modules);
    assert.equal(out.heavy, 0, `prom-client or protobufjs loaded by require('sockleak') from ${modules}`);
    assert.equal(out.deep, 'ERR_PACKAGE_PATH_NOT_EXPORTED');
    assert.equal(out.recordType, 'sockleak.v1.Record');
    assert.ok(Number(out.heavyAfter) > 0, 'encodeRecord loaded protobufjs');
    assert.equal(out.startAgent, 'function/function');
  }
});

/**
 * libbpf.so.1 really absent, for one process: an overlay on the library
 * directory whose upper layer holds a whiteout for it, in a mount namespace of
 * its own.
 */
function withoutLibbpf(command: string[]): { status: number | null; stderr: string } | undefined {
  const libdir = '/usr/lib/x86_64-linux-gnu';
  if (!existsSync(path.join(libdir, 'libbpf.so.1'))) return undefined;
  const upper = path.join(dir, 'upper');
  const work = path.join(dir, 'work');
  mkdirSync(upper, { recursive: true });
  mkdirSync(work, { recursive: true });
  // overlayfs's whiteout: a 0:0 character device hides the lower file.
  if (!existsSync(path.join(upper, 'libbpf.so.1'))) assert.equal(spawnSync('mknod', [path.join(upper, 'libbpf.so.1'), 'c', '0', '0']).status, 0);
  const script = `mount -t overlay overlay -o lowerdir=${libdir},upperdir=${upper},workdir=${work} ${libdir} || exit 99; PATH=${nodeOnly} exec "$@"`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', ...command], {
    env: cleanEnv(),
    encoding: 'utf8',
    timeout: 30_000,
  });
  return r.status === 99 ? undefined : { status: r.status, stderr: r.stderr };
}

test('libbpf missing: one line naming the packages and exit 72, from the command and from npm install', (t) => {
  const run = withoutLibbpf([installed, 'snapshot']);
  if (!run) return t.skip('cannot hide libbpf.so.1 here (no overlayfs in a mount namespace)');
  assert.equal(run.status, 72, run.stderr);
  assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
  assert.match(run.stderr, /^sockleak: libbpf\.so\.1 not found: .*apt-get install libbpf1 libelf1 zlib1g\)\n$/);

  const install = withoutLibbpf([path.join(nodeOnly, 'node'), NPM, 'install', '-g', '--prefix', path.join(dir, 'prefix-2'), ...INSTALL_FLAGS, tarball]);
  assert.ok(install);
  assert.equal(install.status, 72, install.stderr);
  assert.match(install.stderr, /^npm error sockleak install: libbpf\.so\.1 not found: .*libbpf1 libelf1 zlib1g\)$/m);
});

test('a prebuilt addon that does not load, and no toolchain to compile one: the install script says what to install, exit 69', () => {
  const copy = path.join(dir, 'broken', 'sockleak');
  cpSync(packageDir, copy, { recursive: true, verbatimSymlinks: true });
  writeFileSync(path.join(copy, 'build', 'Release', 'sockleak.node'), 'not an ELF file');
  const r = spawnSync(path.join(nodeOnly, 'node'), [path.join(copy, 'scripts', 'install.js')], { env: bareEnv(), encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 69, r.stderr);
  assert.match(r.stderr, /^sockleak install: the prebuilt addon does not load here \(.*sockleak\.node: (file too short|invalid ELF header)\) and compiling it needs c\+\+, make, python3.*apt-get install g\+\+ make python3 libbpf-dev.*\)\n$/);
  assert.equal(existsSync(path.join(copy, 'build', 'Makefile')), false);
});

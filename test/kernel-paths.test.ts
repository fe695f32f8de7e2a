/**
 * Kernels differ by build: `sockleak features` loads every program and
 * predicts the way each command takes; the commands, told nothing (an empty
 * probe cache), must meet the same refusals at load and print the same
 * fallback lines. Run on whatever kernel the suite runs on (the host, each VM
 * of the matrix), and again with refusals forced by SOCKLEAK_REFUSE.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { CLI, runCli, sleep } from './helpers';

interface Prediction {
  commands: Array<{ command: string; works: boolean; fallbacks: Array<{ what: string }> }>;
  programs: Array<{ object: string; program: string; loaded: boolean; code?: string; reason?: string }>;
  probe: { cached: boolean; cacheFile: string };
}

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-cache-'));
  dirs.push(dir);
  return dir;
}

/** The `what` of each fallback line (`sockleak: WHAT refused (...)`) on stderr. */
function fallbackLines(stderr: string): string[] {
  return [...stderr.matchAll(/^sockleak: (\S+) refused \(/gm)].map((m) => m[1]!).sort();
}

function predict(env: NodeJS.ProcessEnv): Prediction {
  const r = runCli(['features', '--json'], { env });
  assert.ok(r.code === 0 || r.code === 69, `features: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Prediction;
}

/**
 * Starts a long-running command, waits for `ready` on stderr and for the
 * fallback lines `expected` (its first scan notes its own after `ready`; at
 * most 20 s), stops it with SIGINT; its stderr.
 */
async function runUntil(args: string[], env: NodeJS.ProcessEnv, ready: RegExp, expected: readonly string[]): Promise<string> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = once(child, 'exit');
  try {
    const until = Date.now() + 30_000;
    while (!ready.test(stderr) && child.exitCode === null && Date.now() < until) await sleep(50);
    assert.match(stderr, ready, `${args[0]} started`);
    const all = Date.now() + 20_000;
    while (expected.some((what) => !fallbackLines(stderr).includes(what)) && child.exitCode === null && Date.now() < all) await sleep(50);
  } finally {
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
  return stderr;
}

/**
 * Each command's fallback lines, with a fresh empty cache (it finds refusals
 * by loading); a command predicted not to work must say so with exit 69.
 */
async function observe(env: NodeJS.ProcessEnv, prediction: Prediction): Promise<Map<string, string[]>> {
  const fresh = (): NodeJS.ProcessEnv => ({ ...env, SOCKLEAK_CACHE_DIR: tempDir() });
  const seen = new Map<string, string[]>();
  const runOnce = (command: string, args: string[], code = 0): void => {
    const r = runCli(args, { env: fresh() });
    assert.equal(r.code, code, `${command}: exit ${r.code}: ${r.stderr}`);
    seen.set(command, fallbackLines(r.stderr));
  };
  runOnce('snapshot', ['snapshot', '--json']);
  runOnce('ports', ['ports', '--json']);
  // A command that leaks one socket (its peer closed) for longer than the threshold (exit 3): run scans for its owner.
  const leak = [
    'import socket, time',
    'l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)',
    'c = socket.create_connection(l.getsockname()); a, _ = l.accept(); a.close(); time.sleep(6)',
  ].join('\n');
  runOnce('run', ['run', '--threshold', '1s', '--', 'python3', '-c', leak], 3);
  const predicted = (command: string): string[] => prediction.commands.find((c) => c.command === command)?.fallbacks.map((f) => f.what) ?? [];
  seen.set('watch', fallbackLines(await runUntil(['watch', '--json'], fresh(), /watching/, predicted('watch'))));
  // The agent's first scan notes the scanner's ways before it says it serves.
  seen.set('agent', fallbackLines(await runUntil(['agent', '--listen', '127.0.0.1:0'], fresh(), /agent on/, predicted('agent'))));
  if (!prediction.commands.find((c) => c.command === 'trace')?.works) {
    const r = runCli(['trace', '--count', '1'], { env: fresh() });
    assert.equal(r.code, 69, `trace, predicted not to work: exit ${r.code}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    return seen;
  }
  // trace: loopback connections make the event it stops after.
  const server = net.createServer((s) => s.destroy()).listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const tracing = spawn(process.execPath, [CLI, 'trace', '--json', '--count', '1'], { env: { ...process.env, ...fresh() }, stdio: ['ignore', 'ignore', 'pipe'] });
  let traceErr = '';
  tracing.stderr.setEncoding('utf8').on('data', (d: string) => (traceErr += d));
  const traced = once(tracing, 'exit');
  const poke = setInterval(() => net.connect(port, '127.0.0.1').on('error', () => undefined).on('connect', function (this: net.Socket) {
    this.destroy();
  }), 200);
  const timer = setTimeout(() => tracing.kill('SIGKILL'), 30_000);
  const [code] = await traced;
  clearInterval(poke);
  clearTimeout(timer);
  server.close();
  assert.equal(code, 0, `trace: exit ${code}: ${traceErr}`);
  seen.set('trace', fallbackLines(traceErr));
  return seen;
}


async function checkPredictions(t: { diagnostic(message: string): void }, env: NodeJS.ProcessEnv): Promise<void> {
  const cache = tempDir();
  const prediction = predict({ ...env, SOCKLEAK_CACHE_DIR: cache });
  assert.equal(prediction.probe.cached, false, 'an empty cache: probed now');
  assert.ok(readdirSync(cache).some((f) => /^probe-[0-9a-f]+\.json$/.test(f)), 'the probe is cached');
  assert.equal(predict({ ...env, SOCKLEAK_CACHE_DIR: cache }).probe.cached, true, 'the second features reads the cache');
  const refused = prediction.programs.filter((p) => !p.loaded);
  t.diagnostic(`refused here: ${refused.map((p) => `${p.object}/${p.program} (${p.code})`).join(', ') || 'nothing'}`);
  const observed = await observe(env, prediction);
  for (const [command, lines] of observed) {
    const predicted = prediction.commands.find((c) => c.command === command);
    assert.ok(predicted?.works, `${command}: predicted to work`);
    assert.deepEqual(lines, predicted.fallbacks.map((f) => f.what).sort(), `${command}: the fallbacks features predicted`);
  }
}

test("features predicts each command's fallbacks, which the commands meet by loading (this kernel as it is)", async (t) => {
  await checkPredictions(t, {});
});

test('features predicts each command\'s fallbacks with refusals forced (SOCKLEAK_REFUSE)', async (t) => {
  await checkPredictions(t, { SOCKLEAK_REFUSE: 'scan_files,new_leaks,tp_accept_cast,census_ehash,light' });
});

test('a refusal the kernel gives is reported with its errno and the verifier\'s words, not hidden by a loader', () => {
  const prediction = predict({ SOCKLEAK_CACHE_DIR: tempDir() });
  for (const p of prediction.programs.filter((v) => !v.loaded)) {
    assert.match(p.code ?? '', /^E[A-Z0-9]+$/, `${p.program}: an errno name`);
    assert.notEqual(p.code, 'ENOSPC', `${p.program}: the log is big enough not to hide the kernel's answer`);
    assert.ok((p.reason ?? '').length > 0, `${p.program}: a reason`);
  }
});

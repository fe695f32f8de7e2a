/**
 * `sockleak run` and `checkSocketLeaks`, for real: commands that leak (or do
 * not) under the CLI, real BPF, and the truth (pid, fds, remotes) from the
 * command itself (fixtures/leaky-client.py).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { checkSocketLeaks } from '../src/run/check-leaks';
import { ExitCode, SocketLeakError } from '../src/errors';
import type { RunResult } from '../src/run/run';
import { CLI, ROOT, sleep, waitFor } from './helpers';

const CLIENT = path.join(ROOT, 'test', 'fixtures', 'leaky-client.py');
const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-run-'));
const pids = new Set<number>(); // every process a test starts, killed at the end even when it fails

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

after(() => {
  for (const pid of pids) killQuietly(pid);
  rmSync(dir, { recursive: true, force: true });
});

interface Truth {
  pid: number;
  fds: number[];
  remotes: string[];
  daemon?: number;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The fixture's own report (first stdout line), when it printed one. */
  truth: Truth | undefined;
  json: RunResult | undefined;
  junit: string | undefined;
}

/** `sockleak run ARGS` without blocking this process (checkSocketLeaks and servers keep running). */
async function sockleakRun(args: string[], options: { reports?: boolean; onStdout?: (text: string) => void; pidOut?: (pid: number) => void } = {}): Promise<Run> {
  const tag = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const jsonFile = path.join(dir, `${tag}.json`);
  const junitFile = path.join(dir, `${tag}.xml`);
  const reports = options.reports === false ? [] : ['--report', jsonFile, '--junit', junitFile];
  const [head, rest] = args.includes('--') ? [args.slice(0, args.indexOf('--')), args.slice(args.indexOf('--'))] : [[], args];
  const child = spawn(process.execPath, [CLI, 'run', ...reports, ...head, ...rest], { stdio: ['ignore', 'pipe', 'pipe'] });
  pids.add(child.pid!);
  options.pidOut?.(child.pid!);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    options.onStdout?.(stdout);
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  const first = stdout.split('\n')[0];
  const truth = first?.startsWith('{') ? (JSON.parse(first) as Truth) : undefined;
  if (truth?.daemon) pids.add(truth.daemon);
  const read = (file: string): string | undefined => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
  };
  const jsonText = read(jsonFile);
  return { code, stdout, stderr, truth, json: jsonText ? (JSON.parse(jsonText) as RunResult) : undefined, junit: read(junitFile) };
}

const client = (...args: string[]): string[] => ['--', 'python3', CLIENT, ...args];

/** Parses JUnit XML with a real XML parser (python's), returning what CI would show. */
function parseJunit(xml: string): { tests: number; failures: number; cases: Array<{ name: string; failure: string | null; text: string }> } {
  const script = `
import json, sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
suite = root.find('testsuite')
cases = [{"name": c.get("name"), "failure": c.find("failure").get("message") if c.find("failure") is not None else None,
          "text": c.find("failure").text if c.find("failure") is not None else ""} for c in suite.iter("testcase")]
print(json.dumps({"tests": int(suite.get("tests")), "failures": int(suite.get("failures")), "cases": cases}))`;
  const r = spawnSync('python3', ['-c', script], { input: xml, encoding: 'utf8' });
  assert.equal(r.status, 0, `JUnit XML does not parse: ${r.stderr}`);
  return JSON.parse(r.stdout) as ReturnType<typeof parseJunit>;
}

test('a command that leaves W sockets in CLOSE_WAIT past the threshold: exit 3, exactly W leaks with its fds, in --report and --junit', async () => {
  const W = 4;
  const r = await sockleakRun(['--threshold', '1s', ...client('--leak', String(W), '--hold', '3')]);
  assert.equal(r.code, ExitCode.LEAKED, r.stderr);
  const truth = r.truth!;
  const json = r.json!;
  assert.deepEqual(json.command, ['python3', CLIENT, '--leak', String(W), '--hold', '3']);
  assert.equal(json.exitCode, 0);
  assert.equal(json.signal, null);
  assert.equal(json.thresholdMs, 1000);
  assert.equal(json.leaks.length, W, `exactly ${W} leaks:\n${r.stderr}`);
  assert.deepEqual(
    json.leaks.map((l) => l.owners[0]!.fd).sort((a, b) => a - b),
    [...truth.fds].sort((a, b) => a - b),
    'the fds the command itself reported',
  );
  for (const leak of json.leaks) {
    assert.equal(leak.state, 'CLOSE_WAIT');
    assert.deepEqual(leak.owners.map((o) => o.pid), [truth.pid]);
    assert.equal(leak.owners[0]!.comm, 'python3');
    assert.equal(leak.creator?.pid, truth.pid, 'creator observed');
    assert.ok(leak.creator.tid > 0);
    assert.ok(truth.remotes.includes(leak.remote));
    assert.match(leak.local, /^127\.0\.0\.1:\d+$/);
    assert.equal(leak.reason, 'threshold');
    assert.ok(leak.heldMs >= 1000 && leak.heldMs < 10_000, `heldMs ${leak.heldMs}`);
    assert.match(leak.cookie, /^[1-9]\d*$/);
    assert.equal(leak.keepalive, false);
  }
  for (const fd of truth.fds) assert.match(r.stderr, new RegExp(`│ ${truth.pid} +│ python3 +│ ${fd} +│`), `summary names fd ${fd}`);
  assert.match(r.stderr, /exit 3: leaked sockets/);

  const junit = parseJunit(r.junit!);
  assert.equal(junit.tests, W);
  assert.equal(junit.failures, W);
  for (const c of junit.cases) {
    assert.match(c.name, new RegExp(`^leaked socket: python3\\[${truth.pid}\\] fd \\d+ -> 127\\.0\\.0\\.1:\\d+$`));
    assert.match(c.failure!, /stayed in CLOSE_WAIT/);
    assert.match(c.text, /created by python3/);
  }
});

test('the same command fixed (closes on EOF): exit 0, no leaks; --junit has one passing case', async () => {
  const r = await sockleakRun(['--threshold', '1s', ...client('--leak', '4', '--hold', '2', '--fixed')]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.json!.leaks, []);
  assert.equal(r.json!.exitCode, 0);
  assert.match(r.stderr, /no leaked sockets/);
  const junit = parseJunit(r.junit!);
  assert.deepEqual(junit, { tests: 1, failures: 0, cases: [{ name: 'socket leaks', failure: null, text: '' }] });
});

test('a daemon (double fork + setsid) that outlives the command holding CLOSE_WAIT sockets is reported', async () => {
  const r = await sockleakRun(client('--leak', '2', '--daemon')); // default threshold 5 s: only outliving counts
  const truth = r.truth!;
  assert.ok(truth.daemon && truth.daemon !== truth.pid);
  try {
    assert.equal(r.code, ExitCode.LEAKED, r.stderr);
    const json = r.json!;
    assert.equal(json.leaks.length, 2, r.stderr);
    assert.deepEqual(json.outlivingPids, [truth.daemon]);
    for (const leak of json.leaks) {
      assert.equal(leak.reason, 'outlived');
      assert.deepEqual(leak.owners.map((o) => o.pid), [truth.daemon], 'held by the daemon, not the command');
      assert.equal(leak.creator?.pid, truth.pid, 'created by the command before it forked');
      assert.ok(leak.heldMs < 5000);
    }
    assert.deepEqual(json.leaks.map((l) => l.owners[0]!.fd).sort(), [...truth.fds].sort(), 'inherited fds');
    assert.match(r.stderr, /outlived the command/);
  } finally {
    killQuietly(truth.daemon!);
  }
});

test("the command's own failure passes through: exit 7 with and without leaks", async () => {
  const [leaky, clean] = [
    await sockleakRun(['--threshold', '1s', ...client('--leak', '1', '--hold', '3', '--exit', '7')]),
    await sockleakRun(['--threshold', '1s', ...client('--leak', '1', '--fixed', '--exit', '7')], { reports: false }),
  ];
  assert.equal(leaky.code, 7, leaky.stderr);
  assert.equal(leaky.json!.exitCode, 7);
  assert.equal(leaky.json!.leaks.length, 1, 'the leak is still reported');
  assert.equal(clean.code, 7, clean.stderr);
  assert.match(clean.stderr, /no leaked sockets.*exited with 7/);
});

test('--allow suppresses leaks to matching remotes, and only those', async () => {
  const r = await sockleakRun([
    '--threshold', '1s', '--allow', '127.0.0.2:*', '--allow', '[::1]',
    ...client('--leak', '2', '--to', '127.0.0.1', '--to', '127.0.0.2', '--hold', '3'),
  ]);
  assert.equal(r.code, ExitCode.LEAKED, r.stderr);
  const json = r.json!;
  assert.equal(json.allowed, 2);
  assert.equal(json.leaks.length, 2, r.stderr);
  for (const leak of json.leaks) assert.match(leak.remote, /^127\.0\.0\.1:/);
  assert.match(r.stderr, /2 more matched --allow/);
});

test('--time-wait-budget: connections the tree closed first, against the budget', async () => {
  const over = await sockleakRun(['--time-wait-budget', '5', ...client('--leak', '0', '--active-closes', '20')]);
  assert.equal(over.code, ExitCode.LEAKED, over.stderr);
  const tw = over.json!.timeWait!;
  assert.ok(tw.produced >= 20, `produced ${tw.produced}`);
  assert.equal(tw.exceeded, true);
  assert.equal(tw.byDestination[0]!.pid, over.truth!.pid);
  assert.deepEqual(over.json!.leaks, []);
  assert.equal(parseJunit(over.junit!).failures, 1);

  const within = await sockleakRun(['--time-wait-budget', '1000', ...client('--leak', '0', '--active-closes', '20')], { reports: false });
  assert.equal(within.code, 0, within.stderr);
});

test('signals sockleak receives go to the command; its exit code comes back', async () => {
  const script = "import signal,sys,time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\nprint('ready', flush=True)\ntime.sleep(30)";
  let sockleakPid = 0;
  let sent = false;
  const running = sockleakRun(['--', 'python3', '-c', script], {
    reports: false,
    pidOut: (pid) => (sockleakPid = pid),
    onStdout: (out) => {
      if (sent || !out.includes('ready')) return;
      sent = true;
      process.kill(sockleakPid, 'SIGTERM'); // to sockleak, not to the command
    },
  });
  const r = await running;
  assert.equal(r.code, 42, r.stderr);
  const killed = await sockleakRun(['sh', '-c', 'kill -KILL $$'], { reports: false });
  assert.equal(killed.code, 128 + 9, killed.stderr);
  assert.match(killed.stderr, /killed by SIGKILL/);
});

test('bad command lines: no command 64, not found 127, not executable 126, bad --allow 64, unwritable report 66', async () => {
  const script = path.join(dir, 'not-executable.sh');
  writeFileSync(script, '#!/bin/sh\nexit 0\n');
  chmodSync(script, 0o644);
  const cases: Array<[string[], number, RegExp]> = [
    [[], ExitCode.USAGE, /missing required argument 'command'/],
    [['--', 'no-such-command-xyz'], 127, /command not found: no-such-command-xyz/],
    [['--', script], 126, /permission denied/],
    [['--allow', '10.0.0.1:99999', '--', 'true'], ExitCode.USAGE, /--allow '10\.0\.0\.1:99999'/],
    [['--allow', '1.2.3.4:80:90', '--', 'true'], ExitCode.USAGE, /brackets/],
    [['--time-wait-budget', 'x', '--', 'true'], ExitCode.USAGE, /--time-wait-budget/],
    [['--junit', '/nonexistent-dir/x.xml', '--', 'true'], ExitCode.NO_INPUT, /cannot write --junit/],
  ];
  for (const [args, code, message] of cases) {
    const r = await sockleakRun(args, { reports: false });
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    if (code === ExitCode.USAGE) assert.match(r.stderr, /^sockleak run: .* \(see 'sockleak run --help'\)\n$/);
  }
});

test("the command's own flags reach it untouched, with or without --", async () => {
  const r = await sockleakRun(['python3', '-c', 'import sys; print(sys.argv[1:])', '--json', '--threshold'], { reports: false });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), "['--json', '--threshold']");
});

test('run through its #! line, the command gets NODE_EXTRA_CA_CERTS as sockleak got it', () => {
  const run = (env: NodeJS.ProcessEnv) =>
    spawnSync(CLI, ['run', '--', 'sh', '-c', 'printf "[%s]" "${NODE_EXTRA_CA_CERTS-unset}"'], {
      encoding: 'utf8',
      env,
      timeout: 60_000,
    });
  // A file that does not exist: node only warns about it on stderr.
  const certs = path.join(dir, 'no-such-certs.pem');
  const withCerts = run({ ...process.env, NODE_EXTRA_CA_CERTS: certs });
  assert.equal(withCerts.status, 0, withCerts.stderr);
  assert.equal(withCerts.stdout.trim(), `[${certs}]`);

  const { NODE_EXTRA_CA_CERTS: _, ...without } = process.env;
  const none = run(without);
  assert.equal(none.status, 0, none.stderr);
  assert.equal(none.stdout.trim(), '[unset]');
});

/** A server in this process whose connections the test can close from the server side. */
async function server(): Promise<{ port: number; accepted: net.Socket[]; close: () => Promise<void> }> {
  const accepted: net.Socket[] = [];
  const srv = net.createServer((s) => accepted.push(s));
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: (srv.address() as net.AddressInfo).port,
    accepted,
    close: () => new Promise<void>((resolve) => srv.close(() => resolve())),
  };
}

test('checkSocketLeaks: throws SocketLeakError for a leaking async fn, returns the value of a clean one', { timeout: 60_000 }, async () => {
  const srv = await server();
  const sockets: net.Socket[] = [];
  try {
    const value = await checkSocketLeaks(
      async () => {
        const c = net.connect({ port: srv.port, host: '127.0.0.1' });
        sockets.push(c);
        await new Promise((resolve) => c.once('connect', resolve));
        await waitFor(() => srv.accepted.length === 1);
        srv.accepted[0]!.destroy();
        await new Promise((resolve) => c.once('close', resolve)); // allowHalfOpen off: node closes on EOF
        return 'clean';
      },
      { thresholdMs: 500 },
    );
    assert.equal(value, 'clean');

    let local = '';
    const err = await checkSocketLeaks(
      async () => {
        const c = net.connect({ port: srv.port, host: '127.0.0.1', allowHalfOpen: true }); // never ends on EOF: CLOSE_WAIT
        sockets.push(c);
        c.on('end', () => undefined);
        await new Promise((resolve) => c.once('connect', resolve));
        local = `${c.localAddress}:${c.localPort}`;
        await waitFor(() => srv.accepted.length === 2);
        srv.accepted[1]!.destroy();
        await new Promise((resolve) => c.once('end', resolve));
      },
      { thresholdMs: 500 },
    ).then(
      () => assert.fail('a leak must throw'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof SocketLeakError, String(err));
    assert.equal(err.exitCode, ExitCode.LEAKED);
    assert.equal(err.leaks.length, 1, err.message);
    const leak = err.leaks[0]!;
    assert.equal(leak.local, local);
    assert.equal(leak.remote, `127.0.0.1:${srv.port}`);
    assert.deepEqual(leak.owners.map((o) => o.pid), [process.pid]);
    assert.equal(leak.creator?.pid, process.pid);
    assert.ok(leak.heldMs >= 500);
    assert.match(err.message, /1 socket leaked .*127\.0\.0\.1/);

    // The same leak is not charged to the next check: it predates it.
    assert.equal(await checkSocketLeaks(() => 7, { thresholdMs: 200 }), 7);
    // An allowed remote does not count.
    await checkSocketLeaks(
      async () => {
        const c = net.connect({ port: srv.port, host: '127.0.0.1', allowHalfOpen: true });
        sockets.push(c);
        c.on('end', () => undefined);
        await new Promise((resolve) => c.once('connect', resolve));
        await waitFor(() => srv.accepted.length === 3);
        srv.accepted[2]!.destroy();
        await sleep(700);
      },
      { thresholdMs: 300, allow: ['127.0.0.0/8'] },
    );
  } finally {
    for (const s of sockets) s.destroy();
    for (const s of srv.accepted) s.destroy();
    await srv.close();
  }
});

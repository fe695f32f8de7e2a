/**
 * The acceptance tests again with no BPF at all (SOCKLEAK_REFUSE=bpf in the
 * CLI's environment): snapshot, ports, watch and run from sock_diag and /proc,
 * against real sockets and the truth the holders report; and the scans without
 * BPF (native/diag-scan.cc) record for record against the BPF iterators.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, afterEach, test } from 'node:test';
import { loadAddon } from '../src/kernel/addon';
import { SOCK, SOCK_SIZE } from '../src/generated/layout';
import type { PortsSnapshot } from '../src/ports/ports';
import type { RunResult } from '../src/run/run';
import type { Snapshot } from '../src/sockets';
import type { LeakRecord, ResolvedRecord } from '../src/watch-records';
import { CLI, ROOT, runCli, sleep, startBackend, startHolder, waitFor, type Backend, type Holder } from './helpers';

const NO_BPF = { SOCKLEAK_REFUSE: 'bpf' };
/** The one stderr line that says what the path without BPF cannot see. */
const FALLBACK_LINE = /^sockleak: bpf refused \(SOCKLEAK_REFUSE=bpf\): /;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const clean of cleanups.splice(0)) await clean();
});
after(async () => {
  for (const clean of cleanups.splice(0)) await clean();
});

async function holder(): Promise<Holder> {
  const h = await startHolder();
  cleanups.push(() => h.kill());
  return h;
}

async function backends(hosts: string[]): Promise<Backend[]> {
  const started = await Promise.all(hosts.map(startBackend));
  cleanups.push(() => Promise.all(started.map((b) => b.remove().catch(() => undefined))));
  return started;
}

function fallbackLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => FALLBACK_LINE.test(l));
}

/** The first incident in miniature: W threads of one client, one connection each to N backends; one backend goes away. */
async function incident(W: number): Promise<{ client: Holder; dead: Backend; truth: Array<{ tid: number; fd: number; remote: string }> }> {
  const bs = await backends(['127.0.0.2', '127.0.0.3', '127.0.0.4']);
  const client = await holder();
  const { conns } = await client.request<{ conns: Array<{ tid: number; fd: number; remote: string }> }>({
    op: 'threads',
    count: W,
    targets: bs.map((b) => [b.host, b.port]),
  });
  await waitFor(() => bs.every((b) => b.accepted.length === W), 5000, 'accepts');
  const dead = bs[1]!;
  await dead.remove();
  return { client, dead, truth: conns.filter((c) => c.remote === dead.remote) };
}

/** `sockleak ARGS` in the background, its stdout as JSON lines. */
function startCli(args: string[]): { child: ChildProcessWithoutNullStreams; lines: unknown[]; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...NO_BPF } });
  const lines: unknown[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  readline.createInterface({ input: child.stdout }).on('line', (line) => lines.push(JSON.parse(line)));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  cleanups.push(() => {
    child.kill('SIGKILL');
    return exited;
  });
  return { child, lines, stderr: () => stderr, exited };
}

test('no BPF: snapshot --json finds exactly the W leaks of the first incident, owners (pid, fd) as the holder says, one fallback line', async () => {
  const W = 8;
  const { client, dead, truth } = await incident(W);
  await sleep(100); // the FINs have arrived: CLOSE_WAIT
  const r = runCli(['snapshot', '--json'], { env: NO_BPF });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fallbackLines(r.stderr).length, 1, `one line naming the fallback:\n${r.stderr}`);
  const snap = JSON.parse(r.stdout) as Snapshot;
  const mine = snap.sockets.filter((s) => s.owners.some((o) => o.pid === client.pid));
  assert.equal(mine.length, W, 'exactly W CLOSE_WAIT sockets held by the client');
  for (const s of mine) {
    assert.equal(s.state, 'CLOSE_WAIT');
    assert.equal(s.remote, dead.remote);
    assert.deepEqual(s.owners.map((o) => [o.pid, o.comm]), [[client.pid, 'python3']]);
    assert.equal(s.creator, null, 'no creator without the tracer');
    assert.ok(s.stateAgeMs !== null && s.ageEstimated, 'age estimated from tcp_info');
  }
  assert.deepEqual(
    mine.map((s) => s.owners[0]!.fd).sort((a, b) => a - b),
    truth.map((c) => c.fd).sort((a, b) => a - b),
    'the right fds',
  );
  // The BPF path's answer is the same set of sockets and owners.
  const bpf = runCli(['snapshot', '--json']);
  assert.equal(bpf.code, 0, bpf.stderr);
  const viaBpf = (JSON.parse(bpf.stdout) as Snapshot).sockets.filter((s) => s.owners.some((o) => o.pid === client.pid));
  const key = (s: Snapshot['sockets'][number]): string => `${s.cookie} ${s.local} ${s.remote} ${s.owners.map((o) => `${o.pid}/${o.fd}`).join(',')}`;
  assert.deepEqual(mine.map(key).sort(), viaBpf.map(key).sort());
});

test('no BPF: watch --json reports the leaks with creator unknown, and resolved when the holder closes them', async () => {
  const W = 6;
  const watch = startCli(['watch', '--json', '--threshold', '1s']);
  await waitFor(() => /watching for CLOSE_WAIT/.test(watch.stderr()), 10_000, 'watch to start');
  const { client, dead, truth } = await incident(W);
  const leaks = (): LeakRecord[] =>
    (watch.lines as LeakRecord[]).filter((r) => r.type === 'leak' && r.owners.some((o) => o.pid === client.pid));
  await waitFor(() => leaks().length >= W, 10_000, `${W} leak records`);
  await sleep(700); // nothing more may arrive
  assert.equal(leaks().length, W, 'exactly W leaks');
  for (const leak of leaks()) {
    assert.equal(leak.remote, dead.remote);
    assert.equal(leak.creator, null, 'creator unknown without the tracer');
    assert.ok(leak.stateAgeMs !== null && leak.stateAgeMs >= 1000, `age ${leak.stateAgeMs}`);
    assert.equal(leak.ageEstimated, false, 'entered CLOSE_WAIT while watched');
  }
  assert.deepEqual(
    leaks().map((l) => l.owners[0]!.fd).sort((a, b) => a - b),
    truth.map((c) => c.fd).sort((a, b) => a - b),
  );
  client.kill(); // its sockets close with it
  const cookies = new Set(leaks().map((l) => l.cookie));
  await waitFor(
    () => (watch.lines as ResolvedRecord[]).filter((r) => r.type === 'resolved' && cookies.has(r.cookie)).length === W,
    10_000,
    'resolved records',
  );
  watch.child.kill('SIGINT');
  await watch.exited;
  assert.equal(fallbackLines(watch.stderr()).length, 1, `one line naming the fallback:\n${watch.stderr()}`);
  assert.match(fallbackLines(watch.stderr())[0]!, /creators/);
});

test('no BPF: ports --json counts the same ports per namespace as the BPF path', async () => {
  // Some TIME_WAIT and ESTABLISHED of our own, to a destination of our own.
  const [b] = await backends(['127.0.0.5']);
  const client = await holder();
  for (let i = 0; i < 5; i++) {
    const { fd } = await client.request<{ fd: number }>({ op: 'connect', host: b!.host, port: b!.port });
    if (i < 2) await client.request({ op: 'close', fd }); // closed first: TIME_WAIT once the backend closes too
  }
  const compared = (snap: PortsSnapshot): unknown =>
    snap.netns.map((ns) => ({ ...ns, byRemote: ns.byRemote.map(({ nextFreeInMs: _, ...r }) => r) }));
  // Sockets of other tests come and go: compare runs made back to back, until two agree (a few tries).
  let last: [unknown, unknown] = [undefined, undefined];
  for (let attempt = 0; attempt < 5; attempt++) {
    const diag = runCli(['ports', '--json'], { env: NO_BPF });
    const bpf = runCli(['ports', '--json']);
    assert.equal(diag.code, 0, diag.stderr);
    assert.equal(bpf.code, 0, bpf.stderr);
    assert.equal(fallbackLines(diag.stderr).length, 1, `one line naming the fallback:\n${diag.stderr}`);
    last = [compared(JSON.parse(diag.stdout) as PortsSnapshot), compared(JSON.parse(bpf.stdout) as PortsSnapshot)];
    try {
      assert.deepEqual(last[0], last[1]);
      return;
    } catch {
      await sleep(200);
    }
  }
  assert.deepEqual(last[0], last[1], 'per-netns port counts of both paths');
});

test('no BPF: run reports the leaking command\'s CLOSE_WAIT sockets (exit 3), with their fds', async () => {
  const client = path.join(ROOT, 'test', 'fixtures', 'leaky-client.py');
  const json = path.join(os.tmpdir(), `sockleak-nobpf-${process.pid}.json`);
  cleanups.push(() => rmSync(json, { force: true }));
  const run = startCli(['run', '--threshold', '1s', '--report', json, '--', 'python3', client, '--leak', '3', '--hold', '6']);
  const code = await run.exited;
  assert.equal(code, 3, run.stderr());
  const result = JSON.parse(readFileSync(json, 'utf8')) as RunResult;
  const truth = run.lines[0] as { pid: number; fds: number[] };
  assert.equal(result.leaks.length, 3, JSON.stringify(result.leaks));
  assert.deepEqual(
    result.leaks.map((l) => [l.owners[0]?.pid, l.owners[0]?.fd]).sort(),
    truth.fds.map((fd) => [truth.pid, fd]).sort(),
  );
  for (const l of result.leaks) assert.equal(l.creator, null);
  assert.equal(fallbackLines(run.stderr()).length, 1, `one line naming the fallback:\n${run.stderr()}`);
});

test('DiagScanFiles and the BPF scan_files give the same owners, cookies, states and endpoints', async () => {
  const W = 6;
  const { client, truth } = await incident(W);
  await client.request({ op: 'dup', fd: truth[0]!.fd }); // a socket held twice: two records
  await sleep(100);
  const { Scanner } = loadAddon();
  const bpf = new Scanner({ refused: [] });
  const diag = new Scanner({ refused: ['bpf'] });
  cleanups.push(() => {
    bpf.close();
    diag.close();
  });
  const owners = (buf: Buffer): string[] => {
    const out: string[] = [];
    for (let at = 0; at + SOCK_SIZE <= buf.length; at += SOCK_SIZE) {
      if (buf.readUInt32LE(at + SOCK.pid.offset) !== client.pid) continue;
      const field = (f: { offset: number; size: number }): string => buf.subarray(at + f.offset, at + f.offset + f.size).toString('hex');
      out.push(
        [SOCK.pid, SOCK.fd, SOCK.cookie, SOCK.state, SOCK.family, SOCK.saddr, SOCK.daddr, SOCK.sport, SOCK.dport, SOCK.netns_ino, SOCK.flags, SOCK.comm, SOCK.uid, SOCK.recv_q, SOCK.send_q]
          .map(field)
          .join(' '),
      );
    }
    return out.sort();
  };
  // Both paths, all states and CLOSE_WAIT only, with the other's scan in between (sockets of others may change, ours do not).
  for (const stateMask of [0, 1 << 8]) {
    const viaBpf = owners(await bpf.scan({ kind: 'files', stateMask }));
    const viaDiag = owners(await diag.scan({ kind: 'files', stateMask }));
    assert.ok(viaBpf.length >= (stateMask ? W : 3 * W), `the client's sockets found (${viaBpf.length})`);
    assert.deepEqual(viaDiag, viaBpf, `mask ${stateMask}`);
  }
  const one = owners(await diag.scan({ kind: 'files', pid: client.pid, stateMask: 0 }));
  assert.deepEqual(one, owners(await bpf.scan({ kind: 'files', pid: client.pid, stateMask: 0 })), 'one process');
});

/**
 * examples/incident-1.js, the README's demo, checked with the real tool: its
 * deleted backends must leave exactly W CLOSE_WAIT sockets each in the demo's
 * process, one per worker thread, and nothing else.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { Readable } from 'node:stream';
import { afterEach, test } from 'node:test';
import { forcedRefusals } from '../src/kernel/fallbacks';
import { watch } from '../src/watch/leak-engine';
import { snapshot } from '../src/scan/snapshot';
import type { LeakRecord, WatchRecord } from '../src/watch-records';
import { ROOT, sleep, waitFor } from './helpers';

const DEMO = path.join(ROOT, 'examples', 'incident-1.js');

/** Creators come from the tracer; without BPF (SOCKLEAK_REFUSE=bpf) leaks come from scans and creators are unknown. */
const traced = !forcedRefusals().includes('bpf');

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** Runs the demo, collecting its stdout lines. */
function startDemo(args: string[]): { child: ChildProcessByStdio<null, Readable, Readable>; lines: string[] } {
  const child = spawn(process.execPath, [DEMO, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  readline.createInterface({ input: child.stdout }).on('line', (l) => lines.push(l));
  child.stderr.on('data', (d: Buffer) => process.stderr.write(d));
  cleanups.push(() => void child.kill('SIGKILL'));
  return { child, lines };
}

/** Runs a leak engine in the background, collecting every record. */
function recorder(options: Parameters<typeof watch>[0]): { records: WatchRecord[] } {
  const watcher = watch(options);
  const records: WatchRecord[] = [];
  const pumping = (async () => {
    for await (const r of watcher) records.push(r);
  })();
  cleanups.push(async () => {
    await watcher.close();
    await pumping;
  });
  return { records };
}

test('incident-1.js: each deleted backend leaves exactly W CLOSE_WAIT leaks in the demo, created by W distinct threads, held by its fds', async () => {
  const W = 4;
  const deletions = 2;
  const watcher = recorder({ thresholdMs: 1000, tickMs: 100 }); // attached before the demo connects: creators known
  const demo = startDemo(['--threads', String(W), '--backends', '3', '--delete-every', '1s', '--deletions', String(deletions)]);
  const pid = demo.child.pid!;
  const deletedLines = (): string[] => demo.lines.filter((l) => l.includes(' deleted backend '));
  await waitFor(() => deletedLines().length === deletions, 15_000, `${deletions} deletions`);
  assert.match(demo.lines[0]!, new RegExp(`^svc-a pid ${pid}: ${W} worker threads, each connected to 3 backends .* watch --pid ${pid} --threshold 2s$`));
  const deleted = new Set(deletedLines().map((l) => /deleted backend (\S+):/.exec(l)![1]));

  const mine = (): LeakRecord[] => watcher.records.filter((r): r is LeakRecord => r.type === 'leak' && r.owners.some((o) => o.pid === pid));
  await waitFor(() => mine().length >= W * deletions, 10_000, `${W * deletions} leak records`);
  await sleep(1500); // the live backends' sockets are never in CLOSE_WAIT: nothing more may arrive
  const leaks = mine();
  assert.equal(leaks.length, W * deletions, 'exactly W leaks per deleted backend');
  assert.deepEqual(new Set(leaks.map((l) => l.remote)), deleted, 'to the deleted backends only');
  const creators = new Set<number>();
  for (const remote of deleted) {
    const to = leaks.filter((l) => l.remote === remote);
    assert.equal(to.length, W, `${remote}: one per thread`);
    if (!traced) continue;
    const tids = new Set(to.map((l) => l.creator?.tid));
    assert.equal(tids.size, W, `${remote}: created by ${W} distinct threads`);
    to.forEach((l) => creators.add(l.creator!.tid));
  }
  for (const leak of leaks) {
    assert.equal(leak.state, 'CLOSE_WAIT');
    assert.equal(leak.keepalive, false, 'keepalive off: never reaped');
    assert.equal(leak.owners.length, 1);
    assert.deepEqual({ pid: leak.owners[0]!.pid, comm: leak.owners[0]!.comm }, { pid, comm: 'svc-a' });
    assert.match(readlinkSync(`/proc/${pid}/fd/${leak.owners[0]!.fd}`), /^socket:\[\d+\]$/, 'the owning fd is a socket of the demo');
    if (!traced) continue;
    assert.equal(leak.creator?.pid, pid);
    assert.notEqual(leak.creator.tid, pid, 'a worker thread, not the main one');
    assert.ok(existsSync(`/proc/${pid}/task/${leak.creator.tid}`), 'the creator is a live thread of the demo');
  }
  assert.equal(new Set(leaks.map((l) => l.owners[0]!.fd)).size, W * deletions, 'one fd each');
  if (traced) assert.equal(creators.size, W, 'the same W worker threads made the connections to every backend');

  // snapshot, from the iterators alone, finds the same sockets.
  const snap = await snapshot({ pid });
  assert.deepEqual(new Set(snap.sockets.map((s) => s.cookie)), new Set(leaks.map((l) => l.cookie)));

  // Ctrl-C: a clean stop, and the restart frees every leak.
  demo.child.kill('SIGINT');
  const [code] = (await once(demo.child, 'exit')) as [number | null];
  assert.equal(code, 0);
  assert.match(demo.lines.at(-1)!, new RegExp(`stopped; the kernel frees its ${W * deletions} CLOSE_WAIT sockets`));
  const cookies = new Set(leaks.map((l) => l.cookie));
  await waitFor(() => watcher.records.filter((r) => r.type === 'resolved' && cookies.has(r.cookie)).length === W * deletions, 10_000, 'resolved records');
});

test('incident-1.js: bad input is one line on stderr and exit 64', () => {
  for (const args of [['--threads', '0'], ['--delete-every', 'soon'], ['--frobnicate'], ['extra']]) {
    const r = spawnSync(process.execPath, [DEMO, ...args], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 64, args.join(' '));
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^incident-1: [^\n]+\n$/, `one line: ${r.stderr}`);
  }
});

/**
 * The CLOSE_WAIT acceptance tests: real processes holding real sockets, real
 * BPF, and the truth (fds, thread ids) from the holder process itself.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { after, afterEach, test } from 'node:test';
import { groupSockets } from '../src/cli/leak-groups';
import { forcedRefusals } from '../src/kernel/fallbacks';
import { watch } from '../src/watch/leak-engine';
import type { FdClosedRecord, LeakRecord, ResolvedRecord, WatchRecord } from '../src/watch-records';
import { snapshot } from '../src/scan/snapshot';
import type { SocketInfo } from '../src/sockets';
import { cgroupFields, processCgroupPath } from '../src/scan/cgroups';
import { listenNeverAccepting, sleep, startBackend, startHolder, waitFor, type Holder } from './helpers';

/** The cgroup fields of this test's children's owners: they stay in the test's cgroup. */
const HERE = ((path) => (path === null ? {} : cgroupFields(path)))(processCgroupPath(process.pid));

/**
 * Whether leaks come from the tracer. scripts/test-fallbacks.sh runs this file
 * again on each forced path; without BPF (SOCKLEAK_REFUSE=bpf) the engine
 * polls scans and cannot know creators or closes: those assertions hold where
 * the path can know them, and every other one holds on every path.
 */
const traced = !forcedRefusals().includes('bpf');

const holders: Holder[] = [];
after(() => holders.forEach((h) => h.kill()));

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function holder(): Promise<Holder> {
  const h = await startHolder();
  holders.push(h);
  return h;
}

/** Watchers still running: stopped after each test, passed or failed, so a failure never hangs the file. */
const running = new Set<() => Promise<void>>();
afterEach(async () => {
  for (const stop of running) await stop();
  running.clear();
});

/** Runs a watcher in the background, collecting every record. */
function recorder(options: Parameters<typeof watch>[0]): { records: WatchRecord[]; stop: () => Promise<void> } {
  const watcher = watch(options);
  const records: WatchRecord[] = [];
  const pumping = (async () => {
    for await (const r of watcher) records.push(r);
  })();
  const stop = async (): Promise<void> => {
    running.delete(stop);
    await watcher.close();
    await pumping;
  };
  running.add(stop);
  return { records, stop };
}

const leaksTo = (records: WatchRecord[], remote: string): LeakRecord[] =>
  records.filter((r): r is LeakRecord => r.type === 'leak' && r.remote === remote);

test('the first incident in miniature: W threads x N backends, one backend removed -> exactly W leaks, one per thread', async () => {
  const W = 16;
  const backends = await Promise.all(['127.0.0.2', '127.0.0.3', '127.0.0.4'].map(startBackend));
  const watcher = recorder({ thresholdMs: 1000, tickMs: 100 });
  const client = await holder();
  const { conns } = await client.request<{ conns: Array<{ tid: number; fd: number; remote: string }> }>({
    op: 'threads',
    count: W,
    targets: backends.map((b) => [b.host, b.port]),
  });
  await waitFor(() => backends.every((b) => b.accepted.length === W), 5000, 'accepts');
  const dead = backends[1]!;
  await dead.remove();

  await waitFor(() => leaksTo(watcher.records, dead.remote).length >= W, 8000, `${W} leak records`);
  await sleep(600); // nothing more may arrive
  const leaks = leaksTo(watcher.records, dead.remote);
  const truth = conns.filter((c) => c.remote === dead.remote);
  assert.equal(leaks.length, W, 'exactly W CLOSE_WAIT leaks for the removed backend');
  const clientLeaks = watcher.records.filter((r) => r.type === 'leak' && r.owners.some((o) => o.pid === client.pid));
  assert.equal(clientLeaks.length, W, 'no leak for the live backends');
  for (const leak of leaks) {
    assert.equal(leak.state, 'CLOSE_WAIT');
    assert.deepEqual(leak.owners.map((o) => o.pid), [client.pid]);
    assert.equal(leak.owners[0]!.comm, 'python3');
    assert.equal(leak.ageEstimated, false, 'entered CLOSE_WAIT while watched: exact age');
    assert.ok(leak.stateAgeMs !== null && leak.stateAgeMs >= 1000, `age ${leak.stateAgeMs}`);
    assert.equal(leak.keepalive, false);
    assert.equal(leak.keepaliveProbeInMs, null, 'keepalive off: never reaped');
    if (!traced) continue;
    assert.ok(leak.creator, 'creator observed');
    assert.equal(leak.creator.pid, client.pid);
    assert.ok(existsSync(`/proc/${client.pid}/task/${leak.creator.tid}`), 'creator tid is a thread of the client');
  }
  assert.deepEqual(
    leaks.map((l) => l.owners[0]!.fd).sort((a, b) => a - b),
    truth.map((c) => c.fd).sort((a, b) => a - b),
    'the right fds',
  );
  if (traced) {
    assert.deepEqual(
      new Set(leaks.map((l) => l.creator!.tid)),
      new Set(truth.map((c) => c.tid)),
      'one leak per worker thread, by native thread id',
    );
    const byFd = new Map(truth.map((c) => [c.fd, c.tid]));
    for (const leak of leaks) assert.equal(leak.creator!.tid, byFd.get(leak.owners[0]!.fd), 'each fd created by its own thread');
  }

  // The grouped operator view: one group, W sockets, W threads (where creators are known).
  const groups = groupSockets(leaks);
  assert.equal(groups.length, 1);
  assert.equal(groups[0]!.count, W);
  if (traced) assert.equal(groups[0]!.threads, W);
  assert.equal(groups[0]!.pid, client.pid);

  // snapshot agrees (same set, ages estimated).
  const snap = await snapshot({ pid: client.pid });
  const snapToDead = snap.sockets.filter((s) => s.remote === dead.remote);
  assert.deepEqual(new Set(snapToDead.map((s) => s.cookie)), new Set(leaks.map((l) => l.cookie)));
  assert.equal(snap.sockets.length, W, 'only the removed backend is in CLOSE_WAIT');

  // The leaking process dies: every leak resolves.
  client.kill();
  const cookies = new Set(leaks.map((l) => l.cookie));
  await waitFor(
    () => watcher.records.filter((r) => r.type === 'resolved' && cookies.has(r.cookie)).length >= W,
    8000,
    'resolved records',
  );
  await watcher.stop();
  await Promise.all(backends.filter((b) => b !== dead).map((b) => b.remove()));
});

test('a server that never closes what it accepted: each leak names the thread that accepted it as its creator', async () => {
  const N = 4;
  const watcher = recorder({ thresholdMs: 1000, tickMs: 100 });
  const server = await holder();
  const { port } = await server.request<{ port: number }>({ op: 'serve', host: '127.0.0.9', count: N });
  const clients = await Promise.all(
    Array.from({ length: N }, async () => {
      const s = net.connect(port, '127.0.0.9');
      s.on('error', () => undefined);
      await once(s, 'connect');
      return s;
    }),
  );
  const { tid, conns } = await server.request<{ tid: number; conns: Array<{ fd: number; remote: string }> }>({ op: 'accepted' });
  assert.notEqual(tid, server.pid, 'the acceptor is a thread of its own');
  for (const s of clients) s.destroy(); // the clients hang up; the server never closes

  const held = (): LeakRecord[] =>
    watcher.records.filter((r): r is LeakRecord => r.type === 'leak' && r.owners.some((o) => o.pid === server.pid));
  await waitFor(() => held().length >= N, 8000, `${N} leak records`);
  const fdOf = new Map(conns.map((c) => [c.remote, c.fd]));
  for (const leak of held()) {
    assert.deepEqual(leak.owners, [{ pid: server.pid, comm: 'python3', fd: fdOf.get(leak.remote), ...HERE }]);
    if (!traced) continue;
    assert.ok(leak.creator, 'creator observed at accept()');
    assert.equal(leak.creator.pid, server.pid);
    assert.equal(leak.creator.tid, tid, 'the accepting thread, not the main one');
  }
  assert.equal(held().length, N);
  await watcher.stop();
});

/** n short connections to `backend`, one after the other: each takes socket cookies (and slots) of its own. */
async function churn(backend: { host: string; port: number }, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const s = net.connect(backend.port, backend.host);
    s.on('error', () => undefined);
    await once(s, 'connect');
    s.end();
    await once(s, 'close');
  }
}

test('long-lived leaks whose slots later sockets took (in ESTABLISHED and in CLOSE_WAIT) are reported with their creators and resolved', { skip: !traced && 'the tracer\'s slots: no tracer on this path' }, async () => {
  const W = 4;
  const [backend, busy] = await Promise.all(['127.0.0.5', '127.0.0.6'].map(startBackend));
  // 4 slots: every few sockets take a live one's slot, which moves it to the creators / close_wait hashes.
  const watcher = recorder({ thresholdMs: 1000, tickMs: 100, socketSlots: 4 });
  const client = await holder();
  const { conns } = await client.request<{ conns: Array<{ tid: number; fd: number; remote: string }> }>({
    op: 'threads',
    count: W,
    targets: [[backend!.host, backend!.port]],
  });
  await waitFor(() => backend!.accepted.length === W, 5000, 'accepts');
  await churn(busy!, 32); // moves the live, ESTABLISHED sockets out of their slots
  await backend!.remove();
  await churn(busy!, 32); // and any that entered CLOSE_WAIT in a slot

  await waitFor(() => leaksTo(watcher.records, backend!.remote).length >= W, 8000, `${W} leak records`);
  await sleep(400);
  const leaks = leaksTo(watcher.records, backend!.remote);
  assert.equal(leaks.length, W, 'each leak reported once');
  assert.equal(leaksTo(watcher.records, busy!.remote).length, 0, 'the short connections are not leaks');
  for (const leak of leaks) {
    assert.equal(leak.ageEstimated, false, 'entered CLOSE_WAIT while watched: exact age');
    assert.ok(leak.creator, 'creator kept across the move');
    assert.equal(leak.creator.pid, client.pid);
  }
  assert.deepEqual(
    new Set(leaks.map((l) => l.creator!.tid)),
    new Set(conns.map((c) => c.tid)),
    'one leak per worker thread, by native thread id',
  );

  client.kill();
  const cookies = new Set(leaks.map((l) => l.cookie));
  await waitFor(() => watcher.records.filter((r) => r.type === 'resolved' && cookies.has(r.cookie)).length >= W, 8000, 'resolved records');
  const resolved = watcher.records.filter((r): r is ResolvedRecord => r.type === 'resolved' && cookies.has(r.cookie));
  for (const r of resolved) assert.ok(r.closedBy?.pid === client.pid || r.how === 'gone', `resolved by the client: ${JSON.stringify(r)}`);
  await watcher.stop();
  await busy!.remove();
});

test('a leak created before sockleak starts: snapshot finds owner and fd, with an estimated age', async () => {
  const backend = await startBackend('127.0.0.5');
  const h = await holder();
  const { fd } = await h.request<{ fd: number }>({ op: 'connect', host: backend.host, port: backend.port });
  await waitFor(() => backend.accepted.length === 1);
  await backend.remove();
  await sleep(1500);
  const snap = await snapshot({ pid: h.pid });
  assert.equal(snap.sockets.length, 1);
  const s = snap.sockets[0]!;
  assert.equal(s.state, 'CLOSE_WAIT');
  assert.equal(s.remote, backend.remote);
  assert.deepEqual(s.owners, [{ pid: h.pid, comm: 'python3', fd, ...HERE }]);
  assert.equal(s.creator, null, 'not observed');
  assert.equal(s.ageEstimated, true);
  assert.ok(s.stateAgeMs! >= 1400 && s.stateAgeMs! < 5000, `estimated age ${s.stateAgeMs}`);
  assert.match(s.cookie, /^[1-9][0-9]*$/);
  assert.ok(!Number.isNaN(Date.parse(snap.takenAt)));

  // watch started now reports it too, age estimated.
  const w = recorder({ thresholdMs: 500, tickMs: 100 });
  await waitFor(() => leaksTo(w.records, backend.remote).length === 1, 5000, 'pre-existing leak reported');
  const leak = leaksTo(w.records, backend.remote)[0]!;
  assert.equal(leak.cookie, s.cookie);
  assert.equal(leak.ageEstimated, true);
  await w.stop();
  h.kill();
});

test('fork: the parent closes its copy, the child keeps it -> the child is the only owner', async () => {
  const backend = await startBackend('127.0.0.6');
  const h = await holder();
  const { fd } = await h.request<{ fd: number }>({ op: 'connect', host: backend.host, port: backend.port });
  const { child } = await h.request<{ child: number }>({ op: 'fork' });
  holders.push({ pid: child, request: async () => ({}) as never, kill: () => killQuietly(child) });
  await waitFor(() => backend.accepted.length === 1);
  await backend.remove();
  const w = recorder({ thresholdMs: 300, tickMs: 100 });
  await waitFor(() => leaksTo(w.records, backend.remote).length === 1, 5000, 'leak');
  const leak = leaksTo(w.records, backend.remote)[0]!;
  assert.deepEqual(new Set(leak.owners.map((o) => o.pid)), new Set([h.pid, child]), 'both hold it before the close');

  await h.request({ op: 'close', fd });
  if (traced) {
    await waitFor(() => w.records.some((r) => r.type === 'fd-closed' && r.cookie === leak.cookie), 5000, 'fd-closed record');
    const closed = w.records.find((r): r is FdClosedRecord => r.type === 'fd-closed' && r.cookie === leak.cookie)!;
    assert.deepEqual(closed.closedBy.pid, h.pid);
    assert.equal(closed.closedBy.fd, fd);
    assert.deepEqual(closed.stillHeldBy, [{ pid: child, comm: 'python3', fd, ...HERE }]);
  } else {
    await sleep(1000); // a few polls: none may resolve it
  }
  assert.ok(!w.records.some((r) => r.type === 'resolved' && r.cookie === leak.cookie), 'the parent close did not free it');

  const snap = await snapshot({});
  const mine = snap.sockets.find((s) => s.cookie === leak.cookie)!;
  // Seen once on a loaded CI machine (owners []), never reproduced: if it comes back, say what a
  // second look finds, to tell a missed fd in iter/task_file from a lost merge.
  const second = mine.owners.length === 1 ? '' : JSON.stringify((await snapshot({ pid: child })).sockets.map((s) => [s.cookie, s.owners]));
  assert.deepEqual(mine.owners, [{ pid: child, comm: 'python3', fd, ...HERE }], `owner is the child only (a second look, pid ${child}: ${second})`);
  await w.stop();
  killQuietly(child);
  h.kill();
});

test('rescans follow holders that come and go without a close(): a fork adds one, its exit takes it away', async () => {
  const backend = await startBackend('127.0.0.7');
  const h = await holder();
  await h.request({ op: 'connect', host: backend.host, port: backend.port });
  await waitFor(() => backend.accepted.length === 1);
  await backend.remove();
  const watcher = watch({ thresholdMs: 300, tickMs: 100, rescanMs: 300 });
  const pumping = (async () => {
    for await (const _ of watcher); // records are not the point here: the engine's state is
  })();
  const stop = async (): Promise<void> => {
    running.delete(stop);
    await watcher.close();
    await pumping;
  };
  running.add(stop);
  const pids = (): number[] => (watcher.current().find((l) => l.remote === backend.remote)?.owners ?? []).map((o) => o.pid).sort();
  await waitFor(() => pids().length === 1, 5000, 'leak');
  const { child } = await h.request<{ child: number }>({ op: 'fork' });
  holders.push({ pid: child, request: async () => ({}) as never, kill: () => killQuietly(child) });
  await waitFor(() => pids().includes(child), 5000, 'the child as a second holder, found by a rescan');
  assert.deepEqual(pids(), [h.pid, child].sort());
  killQuietly(child); // exit closes its fds without close(): no event, only a rescan sees it
  await waitFor(() => pids().length === 1, 5000, 'the child gone, found by a rescan');
  assert.deepEqual(pids(), [h.pid]);
  await stop();
  h.kill();
});

test('dup: closing one of two fds does not free the socket; closing the second does, and says which close', async () => {
  const backend = await startBackend('127.0.0.7');
  const h = await holder();
  const { fd } = await h.request<{ fd: number }>({ op: 'connect', host: backend.host, port: backend.port });
  const { fd: fd2 } = await h.request<{ fd: number }>({ op: 'dup', fd });
  await waitFor(() => backend.accepted.length === 1);
  await backend.remove();
  const w = recorder({ thresholdMs: 300, tickMs: 100 });
  await waitFor(() => leaksTo(w.records, backend.remote).length === 1, 5000, 'leak');
  const leak = leaksTo(w.records, backend.remote)[0]!;
  assert.deepEqual(leak.owners.map((o) => o.fd).sort(), [fd, fd2].sort());

  await h.request({ op: 'close', fd });
  if (traced) {
    await waitFor(() => w.records.some((r) => r.type === 'fd-closed' && r.cookie === leak.cookie), 5000, 'fd-closed');
    const first = w.records.find((r): r is FdClosedRecord => r.type === 'fd-closed' && r.cookie === leak.cookie)!;
    assert.equal(first.cookie, leak.cookie);
    assert.equal(first.closedBy.fd, fd);
    assert.deepEqual(first.stillHeldBy, [{ pid: h.pid, comm: 'python3', fd: fd2, ...HERE }]);
  } else {
    await sleep(1000); // a few polls: the socket is still held, no resolution
  }
  assert.ok(!w.records.some((r) => r.type === 'resolved' && r.cookie === leak.cookie), 'one close of two did not free it');

  await h.request({ op: 'close', fd: fd2 });
  await waitFor(() => w.records.some((r) => r.type === 'resolved' && r.cookie === leak.cookie), 5000, 'resolved');
  const resolved = w.records.find((r): r is ResolvedRecord => r.type === 'resolved' && r.cookie === leak.cookie)!;
  assert.equal(resolved.cookie, leak.cookie);
  // Without the tracer, a poll finds the socket gone; it cannot say which close.
  assert.equal(resolved.how, traced ? 'close' : 'gone');
  if (traced) assert.deepEqual({ pid: resolved.closedBy!.pid, fd: resolved.closedBy!.fd }, { pid: h.pid, fd: fd2 });
  assert.ok(resolved.heldMs >= 300);
  await w.stop();
  h.kill();
});

test('a socket closed promptly after the FIN is never reported', async () => {
  const backend = await startBackend('127.0.0.8');
  const w = recorder({ thresholdMs: 1000, tickMs: 100 });
  await sleep(300);
  const h = await holder();
  const { fd } = await h.request<{ fd: number }>({ op: 'connect', host: backend.host, port: backend.port });
  await waitFor(() => backend.accepted.length === 1);
  await backend.remove();
  await sleep(100);
  await h.request({ op: 'close', fd });
  await sleep(2000);
  assert.deepEqual(leaksTo(w.records, backend.remote), []);
  await w.stop();
  h.kill();
});

test('IPv6 loopback leaks are found and formatted [addr]:port', async (t) => {
  let backend;
  try {
    backend = await startBackend('::1');
  } catch {
    t.skip('no IPv6 loopback');
    return;
  }
  const h = await holder();
  const { fd } = await h.request<{ fd: number }>({ op: 'connect', host: '::1', port: backend.port });
  await waitFor(() => backend.accepted.length === 1);
  await backend.remove();
  await sleep(200);
  const snap = await snapshot({ pid: h.pid });
  assert.equal(snap.sockets.length, 1);
  assert.equal(snap.sockets[0]!.family, 6);
  assert.equal(snap.sockets[0]!.remote, `[::1]:${backend.port}`);
  assert.match(snap.sockets[0]!.local, /^\[::1\]:\d+$/);
  assert.equal(snap.sockets[0]!.owners[0]!.fd, fd);
  h.kill();
});

for (const [family, host, local] of [
  ['IPv4', '127.0.0.6', (port: number) => `127.0.0.6:${port}`],
  // sock_diag's census dumps IPv6 only where the netns counts IPv6 sockets: this makes one.
  ['IPv6', '::1', (port: number) => `[::1]:${port}`],
] as const) {
  test(`a server that stops accepting (${family}): connections closed by their peers in its backlog are CLOSE_WAIT with no owner`, async (t) => {
    // Nobody holds these (no fd before accept()), so only iter/tcp can describe
    // them: snapshot must not take its quick path, which skips iter/tcp when
    // the census finds every socket in the asked states held by some process.
    const listener = await listenNeverAccepting(host);
    if (!listener) {
      t.skip(`no ${family} loopback`);
      return;
    }
    try {
      const port = listener.port;
      const clients = await Promise.all(
        [1, 2, 3].map(async () => {
          const c = net.connect({ host, port });
          await once(c, 'connect');
          return c;
        }),
      );
      const peers = clients.map((c) => `${family === 'IPv6' ? `[${c.localAddress}]` : c.localAddress}:${c.localPort}`);
      clients.forEach((c) => c.destroy());
      let found: SocketInfo[] = [];
      const until = Date.now() + 5000;
      while ((found = (await snapshot()).sockets.filter((s) => peers.includes(s.remote))).length < 3 && Date.now() < until) await sleep(50);
      assert.equal(found.length, 3, 'the three backlog sockets');
      for (const s of found) {
        assert.equal(s.state, 'CLOSE_WAIT');
        assert.deepEqual(s.owners, [], 'in the backlog, not accepted: no fd anywhere');
        assert.equal(s.local, local(port));
      }
    } finally {
      listener.kill();
    }
  });
}

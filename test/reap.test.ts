/**
 * `sockleak reap`: real leaked sockets of a real process, destroyed by the real
 * kernel (bpf_sock_destroy, and the sock_diag fallback), checked against the
 * socket table (snapshot and ss) and against what the owner sees.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, test } from 'node:test';
import { ExitCode, KernelUnsupportedError } from '../src/errors';
import { probeFeatures } from '../src/kernel/features';
import { executeReap, planReap, reap, type ReapReport } from '../src/reap/reap';
import { snapshot } from '../src/scan/snapshot';
import { ROOT, runCli, sleep, startBackend, startHolder, waitFor, type Backend, type Holder } from './helpers';

const holders: Holder[] = [];
const servers: net.Server[] = [];
const dir = mkdtempSync(path.join(tmpdir(), 'sockleak-reap-'));
after(() => {
  holders.forEach((h) => h.kill());
  servers.forEach((s) => s.close());
  rmSync(dir, { recursive: true, force: true });
});
/** Linux 6.5+: reap destroys by BPF iterator; before, through the sock_diag fallback. */
const HAS_KFUNC = probeFeatures().some((f) => f.name === 'kfunc/bpf_sock_destroy' && f.available);
const AUTO_METHOD = HAS_KFUNC ? 'bpf_sock_destroy' : 'sock_diag';

async function holder(): Promise<Holder> {
  const h = await startHolder();
  holders.push(h);
  return h;
}

/** Connects `count` sockets from the holder to `backend`, then closes the backend: CLOSE_WAIT leaks. */
async function leak(h: Holder, backend: Backend, count = 1, op = 'connect'): Promise<Conn[]> {
  const conns: Conn[] = [];
  for (let i = 0; i < count; i++) {
    // connect_from port 0: bind() picks a port no other socket uses, so it can be bound again later.
    const c = await h.request<{ fd: number; local: string }>({ op, host: backend.host, port: backend.port, local_port: 0 });
    conns.push({ ...c, remote: backend.remote });
  }
  await waitFor(() => backend.accepted.length === count, 5000, 'accepts');
  await backend.remove();
  await waitFor(() => closeWait(conns).size === count, 5000, 'CLOSE_WAIT');
  return conns;
}

/** The kernel's socket table as ss shows it, independently of sockleak: "local>peer" -> cookie (decimal). */
function ss(state: string, peerHost: string): Map<string, string> {
  // Filtered by peer: the machine may hold many more sockets than a test should read.
  const r = spawnSync('ss', ['-tnHe', 'state', state, 'dst', peerHost], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const table = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const [local, peer] = line.trim().split(/\s+/).filter((f) => /:\d+$/.test(f));
    const cookie = /\bsk:([0-9a-f]+)/.exec(line)?.[1];
    if (local && peer && cookie) table.set(`${local}>${peer}`, BigInt(`0x${cookie}`).toString());
  }
  return table;
}

/** A connection the holder made, as ss names it. */
interface Conn {
  fd: number;
  local: string;
  remote: string;
}

/** The CLOSE_WAIT sockets among these connections: "local>peer" -> cookie. */
function closeWait(conns: readonly Conn[]): Map<string, string> {
  const table = new Map([...new Set(conns.map((c) => c.remote.replace(/:\d+$/, '')))].flatMap((host) => [...ss('close-wait', host)]));
  return new Map(conns.flatMap((c) => {
    const cookie = table.get(`${c.local}>${c.remote}`);
    return cookie ? [[`${c.local}>${c.remote}`, cookie] as const] : [];
  }));
}

test('old CLOSE_WAIT leaks to one remote are destroyed; a younger one and another remote stay; dry run changes nothing', async () => {
  const old = await startBackend('127.0.42.1');
  const other = await startBackend('127.0.42.2');
  const h = await holder();
  const oldConns = await leak(h, old, 3);
  const otherConns = await leak(h, other);
  const leakedAt = Date.now();
  // The threshold must exceed how long one CLI run takes on this machine (the young socket's age when it lists).
  let started = Date.now();
  const none = runCli(['reap', '--pid', String(h.pid), '--remote', '127.0.42.99']);
  assert.equal(none.code, 0, none.stderr);
  assert.match(none.stdout, /no matching sockets/);
  const thresholdMs = Math.min(20_000, Math.max(2000, Math.ceil(2.5 * (Date.now() - started))));
  await sleep(leakedAt + thresholdMs + 300 - Date.now());
  const filters = ['--pid', String(h.pid), '--remote', '127.0.42.1', '--older-than', `${thresholdMs}ms`];
  const before = closeWait([...oldConns, ...otherConns]);
  assert.equal(before.size, 4);

  // Dry run: the grouped table, what would be closed, and nothing touched.
  const dry = runCli(['reap', ...filters]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, new RegExp(`CLOSE_WAIT\\s*│\\s*${old.remote}\\s*│\\s*3\\s*│`), 'one group of 3 to the old remote');
  assert.doesNotMatch(dry.stdout, new RegExp(other.remote));
  assert.match(dry.stdout, /would close 3 sockets; add --yes/);
  const listing = await reap({ pid: h.pid, remote: '127.0.42.1', olderThanMs: thresholdMs }, { dryRun: true });
  assert.deepEqual(new Set(listing.sockets.map((s) => s.cookie)), new Set(closeWait(oldConns).values()));
  assert.deepEqual(closeWait([...oldConns, ...otherConns]), before, 'dry runs changed nothing');

  // A younger leak to the same remote, then act.
  const young = await startBackend('127.0.42.1');
  const youngConns = await leak(h, young);
  const audit = path.join(dir, 'audit.jsonl');
  started = Date.now();
  const run = runCli(['reap', ...filters, '--yes', '--json', '--audit', audit]);
  assert.equal(run.code, 0, run.stderr);
  assert.ok(Date.now() - started < thresholdMs, 'the run was quick enough for the young socket to stay young');
  const report = JSON.parse(run.stdout) as ReapReport;
  assert.equal(report.method, AUTO_METHOD);
  assert.deepEqual(new Set(report.results.map((r) => r.cookie)), new Set(oldConns.map((c) => before.get(`${c.local}>${c.remote}`))), 'the listed old ones');
  for (const r of report.results) {
    assert.equal(r.outcome, 'destroyed', JSON.stringify(r));
    assert.deepEqual(r.owners.map((o) => o.pid), [h.pid]);
  }
  assert.equal(closeWait(oldConns).size, 0, 'the old ones are gone from the kernel table (ss)');
  assert.equal(closeWait([...youngConns, ...otherConns]).size, 2, 'the young one and the other remote remain (ss)');
  const snap = await snapshot({ pid: h.pid });
  assert.deepEqual(
    new Set(snap.sockets.map((s) => s.local)),
    new Set([...youngConns, ...otherConns].map((c) => c.local)),
    'snapshot agrees',
  );

  // The owner's fd stays open. Reads return end-of-file at once, as before (the peer had closed);
  // its next write fails, once with ECONNABORTED, then EPIPE, where an untouched one would still succeed.
  const reaped = oldConns[0]!.fd;
  assert.deepEqual(await h.request({ op: 'recv', fd: reaped, timeout: 5 }), { eof: true });
  assert.deepEqual(await h.request({ op: 'send', fd: reaped }), { error: 'ECONNABORTED' });
  assert.deepEqual(await h.request({ op: 'send', fd: reaped }), { error: 'EPIPE' });
  assert.deepEqual(await h.request({ op: 'send', fd: youngConns[0]!.fd }), { sent: 1 }, 'untouched: the write goes out');

  // The audit: who, filters, and one line per socket with its owner and outcome.
  const lines = readFileSync(audit, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const head = lines[0] as { type: string; run: string; actor: { uid: number }; filters: { remote: string; pid: number }; destroyed: number };
  assert.equal(head.type, 'reap');
  assert.equal(head.actor.uid, 0);
  assert.deepEqual([head.filters.remote, head.filters.pid, head.destroyed], ['127.0.42.1', h.pid, 3]);
  const perSocket = lines.slice(1) as Array<{ type: string; run: string; cookie: string; outcome: string; owners: Array<{ pid: number }> }>;
  assert.deepEqual(new Set(perSocket.map((l) => l.cookie)), new Set(report.results.map((r) => r.cookie)));
  for (const l of perSocket) assert.deepEqual([l.type, l.run, l.outcome, l.owners[0]?.pid], ['reap-socket', head.run, 'destroyed', h.pid]);
  h.kill();
});

for (const method of ['bpf', 'sock_diag'] as const) {
  test(`${method}: a socket closed and its port reused between listing and acting is not touched`, async (t) => {
    const backend = await startBackend(method === 'bpf' ? '127.0.42.3' : '127.0.42.4');
    const h = await holder();
    const conns = await leak(h, backend, 1, 'connect_from');
    const conn = conns[0]!;
    const plan = await planReap({ pid: h.pid, remote: backend.remote });
    assert.deepEqual(plan.sockets.map((s) => s.cookie), [...closeWait(conns).values()]);
    const listed = plan.sockets[0]!;
    if (method === 'bpf' && !HAS_KFUNC) {
      // Before Linux 6.5: asking for the BPF path names what is missing, and touches nothing (the default falls back).
      await assert.rejects(executeReap(plan, { method, audit: { file: path.join(dir, 'nokfunc.jsonl') } }), (err) =>
        err instanceof KernelUnsupportedError && /bpf_sock_destroy/.test(err.message),
      );
      assert.deepEqual([...closeWait(conns).values()], [listed.cookie]);
      h.kill();
      t.skip('no bpf_sock_destroy on this kernel: the sock_diag variant covers the rest');
      return;
    }

    // Between listing and acting: the owner closes it, and a new connection takes the same 4-tuple.
    await h.request({ op: 'close', fd: conn.fd });
    await waitFor(() => !ss('all', backend.host).has(`${conn.local}>${conn.remote}`), 5000, 'old socket gone');
    const accepted: net.Socket[] = [];
    const server = net.createServer((s) => {
      s.on('error', () => undefined);
      accepted.push(s);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(backend.port, backend.host, resolve));
    const reused = await h.request<{ fd: number; local?: string; error?: string }>({
      op: 'connect_from',
      host: backend.host,
      port: backend.port,
      local_port: Number(conn.local.split(':')[1]),
    });
    assert.equal(reused.error, undefined);
    assert.equal(reused.local, conn.local, 'same local port, same remote');
    await waitFor(() => accepted.length === 1, 5000, 'accept');
    accepted[0]!.destroy();
    server.close();
    await waitFor(() => closeWait(conns).size === 1, 5000, 'the new socket in CLOSE_WAIT');
    const newCookie = [...closeWait(conns).values()][0];
    assert.ok(newCookie && newCookie !== listed.cookie, 'a new socket, a new cookie');

    const audit = { file: path.join(dir, `reuse-${method}.jsonl`) };
    const stale = await executeReap(plan, { method, audit });
    assert.equal(stale.method, method === 'bpf' ? 'bpf_sock_destroy' : 'sock_diag');
    assert.deepEqual(stale.results.map((r) => [r.cookie, r.outcome, r.reason]), [[listed.cookie, 'skipped', 'not-found']]);
    assert.deepEqual([...closeWait(conns).values()], [newCookie], 'the new socket is untouched');

    // A fresh listing names the new socket, and this method destroys it.
    const fresh = await executeReap(await planReap({ pid: h.pid, remote: backend.remote }), { method, audit });
    assert.deepEqual(fresh.results.map((r) => [r.cookie, r.outcome]), [[newCookie, 'destroyed']]);
    assert.equal(closeWait(conns).size, 0);
    assert.deepEqual(await h.request({ op: 'send', fd: reused.fd }), { error: 'ECONNABORTED' });
    h.kill();
  });
}

test('ESTABLISHED only with --allow-established: a thread blocked in recv() wakes with an error, the peer gets an RST', async () => {
  const backend = await startBackend('127.0.42.5');
  const h = await holder();
  const { fd } = await h.request<{ fd: number }>({ op: 'connect', host: backend.host, port: backend.port });
  await waitFor(() => backend.accepted.length === 1, 5000, 'accept');
  const peerClosed = new Promise<string>((resolve) => {
    backend.accepted[0]!.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    backend.accepted[0]!.on('close', () => resolve('close'));
  });
  const filters = ['--state', 'established', '--pid', String(h.pid), '--remote', backend.remote];
  const refused = runCli(['reap', ...filters, '--yes']);
  assert.equal(refused.code, ExitCode.USAGE);
  assert.match(refused.stderr, /^sockleak reap: .*ESTABLISHED.*--allow-established/);

  const blocked = h.request<{ error?: string; eof?: boolean }>({ op: 'recv', fd, timeout: 20 });
  await sleep(200); // the holder is now blocked in select()
  const audit = path.join(dir, 'established.jsonl');
  const run = runCli(['reap', ...filters, '--allow-established', '--yes', '--audit', audit]);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /destroyed/);
  assert.match(run.stdout, new RegExp(`closed 1 of 1 sockets with ${AUTO_METHOD}`));
  assert.match(run.stdout, /ECONNABORTED/, 'explains what the owner will see');
  const started = Date.now();
  assert.deepEqual(await blocked, { error: 'ECONNABORTED' });
  assert.ok(Date.now() - started < 5000, 'woken at once, not by the timeout');
  assert.equal(await peerClosed, 'ECONNRESET');
  h.kill();
  await backend.remove();
});

/** A holder.py in a network namespace of its own (loopback up), speaking the same JSON lines. */
async function holderInNewNetns(): Promise<Holder> {
  const script = path.join(ROOT, 'test', 'fixtures', 'holder.py');
  const child = spawn('unshare', ['-n', 'sh', '-c', `ip link set lo up && exec python3 ${script}`], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async <T>(): Promise<T> => {
    const line = await lines.next();
    if (line.done) throw new Error('holder in netns exited');
    return JSON.parse(line.value) as T;
  };
  const { pid } = await next<{ pid: number }>();
  const h: Holder = {
    pid,
    request: <T>(cmd: Record<string, unknown>) => {
      child.stdin.write(`${JSON.stringify(cmd)}\n`);
      return next<T>();
    },
    kill: () => child.kill('SIGKILL'),
  };
  holders.push(h);
  return h;
}

/** In `pid`'s netns: a server on 127.0.0.1 that accepts `count` connections and closes each at once. */
function closingServerIn(pid: number, count: number): Promise<number> {
  const code = `import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\nfor _ in range(${count}):\n  c,_=s.accept()\n  c.close()\ntime.sleep(2)`;
  const server = spawn('nsenter', ['-t', String(pid), '-n', 'python3', '-c', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    server.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    server.once('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
}

test('sockets in another network namespace: found, destroyed in their namespace (both methods)', async () => {
  const h = await holderInNewNetns();
  const netns = Number(/\[(\d+)\]/.exec(readlinkSync(`/proc/${h.pid}/ns/net`))?.[1]);
  assert.notEqual(netns, Number(/\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/net'))?.[1]), 'a namespace of its own');
  const port = await closingServerIn(h.pid, 2);
  const conns: Array<{ fd: number; local: string }> = [];
  for (let i = 0; i < 2; i++) conns.push(await h.request({ op: 'connect', host: '127.0.0.1', port }));
  const inNetns = (): string => spawnSync('nsenter', ['-t', String(h.pid), '-n', 'ss', '-tnH', 'state', 'close-wait'], { encoding: 'utf8' }).stdout;
  await waitFor(() => conns.every((c) => inNetns().includes(c.local)), 5000, 'CLOSE_WAIT in the namespace');
  const audit = { file: path.join(dir, 'netns.jsonl') };
  const plan = await planReap({ pid: h.pid });
  assert.deepEqual(new Set(plan.sockets.map((s) => s.netns)), new Set([netns]));
  assert.equal(plan.sockets.length, 2);
  // A copy of a listing is not a listing: only what planReap() returned can be acted on.
  await assert.rejects(executeReap({ ...plan, sockets: [] }, { audit }), /planReap/);
  // One socket by each method.
  const bySockDiag = await executeReap(await planReap({ pid: h.pid, max: 1 }), { method: 'sock_diag', audit });
  assert.deepEqual(bySockDiag.results.map((r) => [r.outcome, r.netns]), [['destroyed', netns]]);
  const byAuto = await executeReap(await planReap({ pid: h.pid }), { audit });
  assert.equal(byAuto.method, AUTO_METHOD);
  assert.deepEqual(byAuto.results.map((r) => [r.outcome, r.netns]), [['destroyed', netns]]);
  assert.ok(conns.every((c) => !inNetns().includes(c.local)), 'both gone from the namespace (ss inside it)');
  for (const c of conns) assert.deepEqual(await h.request({ op: 'send', fd: c.fd }), { error: 'ECONNABORTED' });
  h.kill();
});

test('refusals: no narrowing filter, unsafe states, bad values -> 64; not root -> 77', () => {
  const usage: string[][] = [
    ['reap'],
    ['reap', '--yes'],
    ['reap', '--state', 'close-wait', '--max', '5'],
    ['reap', '--older-than', '0s'],
    ['reap', '--state', 'listen', '--pid', String(process.pid)],
    ['reap', '--state', 'time-wait', '--older-than', '1m'],
    ['reap', '--state', 'all', '--older-than', '1m'],
    ['reap', '--older-than', '1m', '--max', '0'],
    ['reap', '--remote', 'backend.example:80'],
    ['reap', '--remote', '10.0.0.0/33'],
    ['reap', '--remote', '*'],
    ['reap', '--remote', ':*'],
    ['reap', '--remote', '0.0.0.0/0'],
  ];
  for (const args of usage) {
    const r = runCli(args);
    assert.equal(r.code, ExitCode.USAGE, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^sockleak reap: .* \(see 'sockleak reap --help'\)$/m);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
  assert.match(runCli(['reap']).stderr, /narrow it with --older-than, --pid or --remote/);
  for (const args of [['reap', '--older-than', '1h'], ['reap', '--older-than', '1h', '--yes']]) {
    const r = runCli(args, { asUser: 65534 });
    assert.equal(r.code, ExitCode.NO_PERMISSION, r.stderr);
    assert.match(r.stderr, /^sockleak: permission denied: .*CAP_BPF/);
  }
});

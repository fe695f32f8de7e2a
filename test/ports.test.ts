/**
 * The second incident (TIME_WAIT fills the ephemeral range, connect() fails with
 * EADDRNOTAVAIL) in a network namespace of its own with a 200-port range: real
 * sockets, real BPF, and the truth from the client itself (its failure count).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess, type ChildProcessByStdio } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { ExitCode, NotFoundError, UsageError } from '../src/errors';
import type { PortFailureRecord, PortRecord } from '../src/ports/port-watcher';
import type { PortPressureRecord } from '../src/ports/port-pressure';
import { watchWithPorts, type WatchStreamRecord } from '../src/watch/port-watch';
import { ports, type PortsSnapshot } from '../src/ports/ports';
import { SocketScanner } from '../src/scan/scan';
import type { WatchRecord } from '../src/watch-records';
import { CLI, ROOT, runCli, waitFor } from './helpers';

const CHURN = path.join(ROOT, 'test', 'fixtures', 'port-churn.py');
const SERVER_PORT = 8080;
const DESTINATION = `127.0.0.1:${SERVER_PORT}`;
/** A fixture that says nothing for this long is stuck: fail, do not hang. */
const LINE_TIMEOUT_MS = 60_000;

function sh(args: string[]): string {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** A process started inside the namespace; its JSON lines on stdout, its stderr passed through. */
interface InNetns {
  child: ChildProcessByStdio<null, Readable, null>;
  line<T>(): Promise<T>;
  /** Everything it printed so far. */
  lines: string[];
}

function startIn(ns: string, argv: string[]): InNetns {
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let read = 0;
  readline.createInterface({ input: child.stdout }).on('line', (l) => {
    lines.push(l);
    waiters.shift()?.();
  });
  return {
    child,
    lines,
    line: <T>() =>
      new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${argv.join(' ')}: no line within ${LINE_TIMEOUT_MS} ms`)), LINE_TIMEOUT_MS);
        const take = (): void => {
          clearTimeout(timer);
          resolve(JSON.parse(lines[read++]!) as T);
        };
        if (read < lines.length) return take();
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`${argv.join(' ')} exited (${code}) before printing`));
        });
        waiters.push(take);
      }),
  };
}

/** What port-churn.py's client says of itself. */
interface Truth {
  pid: number;
  connected: number;
  /** Distinct local ports it got. */
  ports: number;
  /** Its own count of EADDRNOTAVAIL. */
  failures: number;
  other: number;
}

function isFailure(r: WatchStreamRecord, pid: number): r is PortFailureRecord {
  return r.type === 'connect-failure' && r.pid === pid;
}

test('the second incident in miniature: a 200-port range fills with TIME_WAIT, connect() fails, sockleak counts every failure', { timeout: 300_000 }, async (t) => {
  const ns = `sockleak-test-${randomBytes(4).toString('hex')}`;
  const started: InNetns[] = [];
  let watcher: ReturnType<typeof watchWithPorts> | undefined;
  let cliWatch: ChildProcess | undefined;
  t.after(async () => {
    for (const p of started) p.child.kill('SIGKILL');
    cliWatch?.kill('SIGKILL');
    await watcher?.close();
    spawnSync('ip', ['netns', 'del', ns]);
  });
  sh(['ip', 'netns', 'add', ns]);
  sh(['ip', 'netns', 'exec', ns, 'sh', '-c',
    'echo "40000 40199" > /proc/sys/net/ipv4/ip_local_port_range && echo 0 > /proc/sys/net/ipv4/tcp_tw_reuse && ip link set lo up']);

  // The watcher runs before the first connection.
  watcher = watchWithPorts({ thresholdMs: 60_000, ports: { intervalMs: 250 } });
  const records: Array<WatchStreamRecord> = [];
  const collecting = (async () => {
    for await (const r of watcher) records.push(r);
  })();

  const server = startIn(ns, ['python3', CHURN, 'server', String(SERVER_PORT)]);
  started.push(server);
  const { pid: serverPid } = await server.line<{ pid: number }>();
  const netns = Number(/\[(\d+)\]/.exec(readlinkSync(`/proc/${serverPid}/ns/net`))![1]);
  /** Runs a client to completion: connects until the range is full (again), then `extra` more attempts. */
  const fill = async (extra: number): Promise<Truth> => {
    const client = startIn(ns, ['python3', CHURN, 'client', '127.0.0.1', String(SERVER_PORT), String(extra)]);
    started.push(client);
    return client.line<Truth>();
  };
  const truth = await fill(20);
  assert.equal(truth.ports, 200, `the client used every port of the range: ${JSON.stringify(truth)}`);
  assert.ok(truth.failures >= 1 && truth.other === 0, JSON.stringify(truth));

  // The kernel's census of that netns (what the port watcher checks before scanning): its range, read by CO-RE, and the 200 ports.
  const scanner = new SocketScanner();
  const census = await scanner.census(netns, `/proc/${serverPid}/ns/net`).finally(() => scanner.close());
  assert.deepEqual(census && [census.portRange, census.portsUsed, census.listeningPorts], [[40000, 40199], 200, 0]);

  // Snapshot (library) while the TIME_WAIT is fresh: the range, tw_reuse and counts of that netns.
  const before = Date.now();
  const snap = await ports({ netns });
  t.diagnostic(`ports({netns}) took ${Date.now() - before} ms`);
  assert.equal(snap.netns.length, 1);
  const here = snap.netns[0]!;
  assert.equal(here.netns, netns);
  assert.deepEqual(here.portRange, [40000, 40199]);
  assert.equal(here.twReuse, 0);
  assert.equal(here.usablePorts, 200);
  const dest = here.byRemote.find((r) => r.remote === DESTINATION);
  assert.ok(dest, JSON.stringify(here.byRemote));
  assert.equal(dest.timeWait, truth.ports, 'every port of the range holds a TIME_WAIT to the server');
  assert.equal(dest.free, 0);
  assert.equal(dest.established, 0);
  assert.ok(dest.nextFreeInMs !== null && dest.nextFreeInMs > 0 && dest.nextFreeInMs <= 60_000, `next free in ${dest.nextFreeInMs}`);
  assert.equal(here.byRemote.length, 1, 'the server side (port 8080) is not an outgoing destination');
  assert.equal(here.bySource.find((s) => s.source === '127.0.0.1')?.timeWait, truth.ports);

  // Live: port pressure for the destination, attributed to the client.
  await waitFor(() => records.some((r) => r.type === 'port-pressure' && r.netns === netns), 45_000, 'a port-pressure record');
  const pressure = records.find((r): r is PortPressureRecord => r.type === 'port-pressure' && r.netns === netns)!;
  assert.equal(pressure.remote, DESTINATION);
  assert.deepEqual(pressure.range, [40000, 40199]);
  assert.equal(pressure.twReuse, 0);
  assert.equal(pressure.usable, 200);
  assert.ok(pressure.timeWait >= 160, `timeWait ${pressure.timeWait}`);
  assert.deepEqual(pressure.closers.map((c) => [c.pid, c.comm]), [[truth.pid, 'python3']]);
  assert.ok(pressure.ratePerSec > 0, `rate ${pressure.ratePerSec}`);
  assert.ok(pressure.exhaustInSec !== null && pressure.exhaustInSec <= 1, `exhaustInSec ${pressure.exhaustInSec}`);
  assert.ok(pressure.remedies.some((r) => /tcp_tw_reuse=1/.test(r)), 'tcp_tw_reuse is off here: suggested');
  assert.ok(pressure.remedies.some((r) => /reuse connections/.test(r)) && pressure.remedies.some((r) => /ip_local_port_range/.test(r)));

  // The CLI snapshot, after a refill (on a loaded machine the first TIME_WAITs may have expired by now).
  const refill = await fill(0);
  const cli = runCli(['ports', '--json', '--netns', String(netns)]);
  assert.equal(cli.code, 0, cli.stderr);
  const doc = JSON.parse(cli.stdout) as PortsSnapshot;
  assert.ok(!Number.isNaN(Date.parse(doc.takenAt)));
  assert.deepEqual(doc.netns.map((n) => [n.netns, n.portRange, n.twReuse]), [[netns, [40000, 40199], 0]]);
  assert.deepEqual(doc.netns[0]!.byRemote.map((r) => [r.remote, r.timeWait, r.free]), [[DESTINATION, 200, 0]]);
  const tty = runCli(['ports', '--netns', String(netns)]);
  assert.equal(tty.code, 0, tty.stderr);
  assert.match(tty.stdout, /ports 40000-40199 \(200 usable\), tcp_tw_reuse=0 \(off\)/);
  assert.match(tty.stdout, /127\.0\.0\.1:8080: no free port \(200 TIME_WAIT\)/);

  // Every EADDRNOTAVAIL the client counted, no more, no less (after the tracer's last events).
  await watcher.close();
  await collecting;
  assert.equal(watcher.counters().lost, 0n, 'nothing lost: the counts below are exact');
  const failures = records.filter((r) => isFailure(r, truth.pid));
  assert.equal(failures.reduce((n, r) => n + r.count, 0), truth.failures, 'library: failures == the client\'s own count');
  for (const f of failures) {
    assert.deepEqual([f.errno, f.remote, f.netns, f.comm, f.tid], ['EADDRNOTAVAIL', DESTINATION, netns, 'python3', truth.pid]);
  }
  const refillFailures = records.filter((r) => isFailure(r, refill.pid)).reduce((n, r) => n + r.count, 0);
  assert.equal(refillFailures, refill.failures, 'and the refill client\'s');

  // `sockleak watch --json`, after the fact: a second client finds the range still full (or fills it again).
  const watching = spawn(process.execPath, [CLI, 'watch', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  cliWatch = watching;
  let cliOut = '';
  let cliErr = '';
  watching.stdout.on('data', (d: Buffer) => (cliOut += d.toString()));
  watching.stderr.on('data', (d: Buffer) => (cliErr += d.toString()));
  await waitFor(() => /watching/.test(cliErr), 20_000, 'sockleak watch to start');
  const truth2 = await fill(20);
  const parsed = (): Array<WatchRecord | PortRecord> =>
    cliOut.split('\n').slice(0, -1).map((l) => JSON.parse(l) as WatchRecord | PortRecord);
  await waitFor(() => parsed().some((r) => r.type === 'port-pressure' && r.netns === netns), 45_000, 'watch --json: port-pressure');
  watching.kill('SIGINT');
  await new Promise((resolve) => watching.once('exit', resolve));
  const cliRecords = parsed();
  assert.equal(
    cliRecords.filter((r) => isFailure(r, truth2.pid)).reduce((n, r) => n + r.count, 0),
    truth2.failures,
    'sockleak watch --json: failures == the second client\'s own count',
  );
  const cliPressure = cliRecords.find((r): r is PortPressureRecord => r.type === 'port-pressure' && r.netns === netns)!;
  assert.deepEqual([cliPressure.remote, cliPressure.free, cliPressure.range], [DESTINATION, 0, [40000, 40199]]);
  assert.match(cliErr, / 0 lost/);
});

test('ports bad input: malformed --netns/--top -> 64, unknown netns -> 66 (CLI and library)', async () => {
  for (const bad of ['abc', '0', '-1', '99999999999', 'net:[x]', '']) {
    const r = runCli(['ports', '--netns', bad]);
    assert.equal(r.code, ExitCode.USAGE, `--netns '${bad}': ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /^sockleak ports: --netns: .* \(see 'sockleak ports --help'\)$/m);
  }
  assert.equal(runCli(['ports', '--top', '0']).code, ExitCode.USAGE);
  const unknown = runCli(['ports', '--netns', '1']);
  assert.equal(unknown.code, ExitCode.NO_INPUT, unknown.stderr);
  assert.equal(unknown.stderr, 'sockleak: no network namespace with inode 1 (no process is in it)\n');
  const own = Number(/\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/net'))![1]);
  assert.equal(runCli(['ports', '--netns', `net:[${own}]`]).code, 0, 'the readlink form is accepted');
  await assert.rejects(ports({ netns: 1 }), NotFoundError);
  await assert.rejects(ports({ netns: 0 }), UsageError);
  await assert.rejects(ports({ netns: 2 ** 32 }), UsageError);
});

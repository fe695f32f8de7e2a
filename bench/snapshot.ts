/**
 * Snapshot benchmark: K CLOSE_WAIT sockets held by P processes (incident 1 in
 * miniature), then how long each tool takes to list them, and whether it finds
 * every one with its owner (pid, fd).
 *
 * A listener on several 127.0.0.x addresses accepts and closes at once; each
 * holder connects K/P times (round-robin over the listeners, so the ephemeral
 * ports suffice) and never closes, so its sockets go CLOSE_WAIT. Holders write
 * the truth, one "local remote fd" line per socket.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeScan, SocketScanner } from '../src/scan/scan';
import { JsonLines, sleep, start, stop, timed } from './children';
import type { Peers } from './peers';
import { readSysctl, type Restorer } from './system';
import { fmtInt, median, type Table } from './table';
import type { TracerContext } from './tracers';

export interface Owner {
  pid: number;
  fd: number;
}

/** One socket as a tool reports it. key = "local remote", both "addr:port". */
export interface Observed {
  key: string;
  owners: Owner[];
}

/** A way to list CLOSE_WAIT sockets and their owners. */
interface SnapshotTool {
  name: string;
  needs: readonly string[];
  command(ctx: TracerContext): string[];
  parse(stdout: string): Observed[];
  /** When the command fails, the row says "not available yet" instead of failing (a command still being written). */
  optional?: boolean;
}

/** `ss -tanp state close-wait`: Recv-Q Send-Q Local Peer users:(("comm",pid=P,fd=F),...) */
export function parseSs(stdout: string): Observed[] {
  const out: Observed[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^\s*\d+\s+\d+\s+(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const owners = [...m[3]!.matchAll(/pid=(\d+),fd=(\d+)/g)].map((o) => ({ pid: Number(o[1]), fd: Number(o[2]) }));
    out.push({ key: `${m[1]} ${m[2]}`, owners });
  }
  return out;
}

/** `lsof -nPi`: COMMAND PID USER FD TYPE DEVICE SIZE/OFF NODE NAME, NAME = "l->r (STATE)"; CLOSE_WAIT only. */
export function parseLsof(stdout: string): Observed[] {
  const byKey = new Map<string, Owner[]>();
  for (const line of stdout.split('\n')) {
    const m = /^\S+\s+(\d+)\s+\S+\s+(\d+)\S*\s+IPv[46]\s.*\sTCP\s+(\S+)->(\S+)\s+\(CLOSE_WAIT\)\s*$/.exec(line);
    if (!m) continue;
    const key = `${m[3]} ${m[4]}`;
    const owners = byKey.get(key) ?? [];
    owners.push({ pid: Number(m[1]), fd: Number(m[2]) });
    byKey.set(key, owners);
  }
  return [...byKey].map(([key, owners]) => ({ key, owners }));
}

interface SnapshotJson {
  sockets: Array<{ state: string; local: string; remote: string; owners?: Array<{ pid: number; fd: number }> }>;
}

/** `sockleak snapshot --json`: {"takenAt":..,"sockets":[{"state","local","remote","owners":[{pid,comm,fd}]}]} */
export function parseSockleakSnapshot(stdout: string): Observed[] {
  const snap = JSON.parse(stdout) as SnapshotJson;
  return snap.sockets
    .filter((s) => s.state === 'CLOSE_WAIT')
    .map((s) => ({ key: `${s.local} ${s.remote}`, owners: (s.owners ?? []).map((o) => ({ pid: o.pid, fd: o.fd })) }));
}

/** The tool the kernel scan is paired with, round by round, and the ratios are taken against. */
const SS = 'ss -tanp state close-wait';

export const SNAPSHOT_TOOLS: readonly SnapshotTool[] = [
  { name: SS, needs: ['ss'], command: (c) => [c.tool('ss'), '-tanp', 'state', 'close-wait'], parse: parseSs },
  { name: 'lsof -nPi', needs: ['lsof'], command: (c) => [c.tool('lsof'), '-nPi'], parse: parseLsof },
  {
    name: 'sockleak snapshot --json',
    needs: [],
    command: (c) => [c.cli, 'snapshot', '--json'], // as npx runs it: through its #! line
    parse: parseSockleakSnapshot,
    optional: true,
  },
];

export interface Agreement {
  found: number;
  ownersOk: number;
  extra: number;
}

/**
 * Compares a tool's sockets with the truth by (local, remote), and owners by
 * (pid, fd). Only the scenario's destinations count. With `required` (the keys
 * still in CLOSE_WAIT after every tool ran), a holder socket outside it is
 * neither found nor extra: it left CLOSE_WAIT at some point of the rounds.
 */
export function compare(
  truth: ReadonlyMap<string, Owner>,
  destinations: ReadonlySet<string>,
  observed: Observed[],
  required?: ReadonlySet<string>,
): Agreement {
  let found = 0;
  let ownersOk = 0;
  let extra = 0;
  for (const o of observed) {
    const remote = o.key.split(' ')[1] ?? '';
    if (!destinations.has(remote)) continue;
    const want = truth.get(o.key);
    if (!want) {
      extra++;
      continue;
    }
    if (required && !required.has(o.key)) continue;
    found++;
    if (o.owners.some((w) => w.pid === want.pid && w.fd === want.fd)) ownersOk++;
  }
  return { found, ownersOk, extra };
}

export interface Scenario {
  destinations: Set<string>;
  truth: Map<string, Owner>;
  held: number;
  failedConnects: number;
  processes: number;
  cleanup(): Promise<void>;
}

/** Makes `sockets` CLOSE_WAIT sockets spread over `holders` processes. */
export async function createCloseWait(bin: string, sockets: number, holders: number, nDest: number, restorer: Restorer): Promise<Scenario> {
  const children: ReturnType<typeof start>[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockleak-bench-'));
  const cleanup = async (): Promise<void> => {
    await Promise.all(children.map((c) => stop(c, 'SIGKILL', 5_000)));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    // Each holder socket takes an ephemeral port per destination; keep each range under half full.
    const perDest = Math.ceil(sockets / nDest);
    const [lo, hi] = readSysctl('net.ipv4.ip_local_port_range').split(/\s+/).map(Number) as [number, number];
    if (hi - lo + 1 < 2 * perDest) restorer.setSysctl('net.ipv4.ip_local_port_range', `${Math.min(lo, 10000)} ${Math.max(hi, 65000)}`);

    const addrs = Array.from({ length: nDest }, (_, i) => `127.0.0.${i + 2}`);
    const listener = start(bin, ['listen', String(sockets), ...addrs], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(listener);
    const lines = new JsonLines(listener);
    const { listeners } = await lines.next<{ listeners: string[] }>(10_000, 'closewait listen');

    const per = Math.floor(sockets / holders);
    const reports = Array.from({ length: holders }, (_, i) => {
      const count = per + (i < sockets % holders ? 1 : 0);
      const holder = start(bin, ['hold', String(count), path.join(dir, `truth.${i}`), ...listeners], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.push(holder);
      return new JsonLines(holder).next<{ pid: number; held: number; failed: number }>(300_000, 'closewait hold');
    });
    const held = await Promise.all(reports);
    const total = held.reduce((s, h) => s + h.held, 0);
    const failedConnects = held.reduce((s, h) => s + h.failed, 0);
    // The listener says when it has closed them all; after that the FINs are processed on loopback at once.
    if (total === sockets) await lines.next(60_000, 'closewait listen (closed)');
    await sleep(500);

    const truth = new Map<string, Owner>();
    held.forEach((h, i) => {
      for (const line of fs.readFileSync(path.join(dir, `truth.${i}`), 'utf8').split('\n')) {
        const [local, remote, fd] = line.split(' ');
        if (local && remote && fd) truth.set(`${local} ${remote}`, { pid: h.pid, fd: Number(fd) });
      }
    });
    return { destinations: new Set(listeners), truth, held: total, failedConnects, processes: holders, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

export interface SnapshotSize {
  sockets: number;
  holders: number;
}

export interface SnapshotOptions {
  closewait: string;
  sizes: readonly SnapshotSize[];
  /** Timed runs of each tool per size (median reported). */
  reps: number;
  destinations: number;
  ctx: TracerContext;
  peers: Peers;
  restorer: Restorer;
  log(line: string): void;
}

interface ToolRun {
  tool: string;
  /** Set when the tool could not run. */
  unavailable?: string;
  wallMs: number[];
  /** Peak RSS of each run, KiB (GNU time), when measured. */
  rssKiB: number[];
  /** What the last run reported; compared with the truth once every tool has run. */
  observed?: Observed[];
  agreement?: Agreement;
}

/**
 * sockleak's scan in-process, the BPF objects already loaded: the kernel's
 * part and the decoding's. One figure per round (the median of that round's
 * scans), taken right after the round's ss, so that each pair of figures
 * saw the same moment of this shared machine.
 */
interface KernelScan {
  kernelMs: number[];
  decodeMs: number[];
  tcpScans: number;
  /** Scans where some netns's census came from sock_diag (census_ehash could not answer). */
  diagCensuses: number;
}

/** In-process scans per round; their median is the round's figure. */
const KERNEL_SCANS_PER_ROUND = 5;

export interface SizeResult {
  size: SnapshotSize;
  held: number;
  failedConnects: number;
  tools: ToolRun[];
  kernelScan?: KernelScan;
  /** TIME_WAIT sockets on the machine when the tools ran (every walk of the established hash passes them). */
  timeWait?: number;
  /** Holder sockets still in CLOSE_WAIT (per ss) after every tool ran: a tool cannot find more. */
  stillAtEnd?: number;
  error?: string;
}

/** TIME_WAIT sockets of this network namespace, from /proc/net/sockstat ("TCP: ... tw N"). */
function timeWaitSockets(): number | undefined {
  const tw = /^TCP:.* tw (\d+)/m.exec(fs.readFileSync('/proc/net/sockstat', 'utf8'))?.[1];
  return tw === undefined ? undefined : Number(tw);
}

/** A run of `tool` before its first repetition: unavailable if a peer it needs is missing. */
function newRun(tool: SnapshotTool, o: SnapshotOptions): ToolRun {
  const missing = tool.needs.filter((t) => !o.peers.has(t));
  if (missing.length) return { tool: tool.name, unavailable: `${missing.join(', ')} not installed`, wallMs: [], rssKiB: [] };
  return { tool: tool.name, wallMs: [], rssKiB: [] };
}

/** One timed repetition of `tool` into `run`; the last one's output is kept, to check against the truth. */
async function runOnce(tool: SnapshotTool, run: ToolRun, o: SnapshotOptions, last: boolean): Promise<void> {
  const [cmd, ...args] = tool.command(o.ctx);
  const gnuTime = o.peers.get('time');
  const rssFile = path.join(os.tmpdir(), `sockleak-bench-rss.${process.pid}`);
  // GNU time adds a little time of its own: the peak RSS (wait4's ru_maxrss) is worth it.
  const r = gnuTime ? await timed(gnuTime, ['-f', '%M', '-o', rssFile, cmd!, ...args]) : await timed(cmd!, args);
  if (r.code !== 0) {
    const why = r.stderr.trim().split('\n')[0] ?? `exit ${r.code}`;
    run.unavailable = `${tool.optional ? 'not available yet' : 'failed'} (exit ${r.code}: ${why})`;
    return;
  }
  run.wallMs.push(r.wallMs);
  if (gnuTime) run.rssKiB.push(Number(fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop()));
  if (!last) return;
  try {
    run.observed = tool.parse(r.stdout);
  } catch (err) {
    run.unavailable = `output not understood: ${(err as Error).message}`;
  }
}

/**
 * One round's kernel scan into `result`: the CLOSE_WAIT scan `sockleak
 * snapshot` makes, timed from inside (its lastStats), then decoded as
 * snapshot() does. Each scan starts after a pause: the previous one's decoding
 * leaves garbage, and V8 collects it on helper threads that would otherwise
 * take the CPUs the kernel scan runs on.
 */
async function kernelScanRound(scanner: SocketScanner, result: KernelScan): Promise<void> {
  const kernelMs: number[] = [];
  const decodeMs: number[] = [];
  for (let i = 0; i < KERNEL_SCANS_PER_ROUND; i++) {
    await sleep(100);
    const raw = await scanner.scanRaw({ states: ['CLOSE_WAIT'] });
    kernelMs.push(scanner.lastStats.kernelMs);
    result.tcpScans = Math.max(result.tcpScans, scanner.lastStats.tcpScans);
    if (scanner.lastStats.diagCensuses) result.diagCensuses++;
    const t0 = performance.now();
    decodeScan(raw);
    decodeMs.push(performance.now() - t0);
  }
  result.kernelMs.push(median(kernelMs));
  result.decodeMs.push(median(decodeMs));
}

/**
 * Waits (up to 65 s, TCP_TIMEWAIT_LEN and a margin) for TIME_WAIT sockets left
 * by earlier work to expire: every walk of the established hash passes them,
 * ss's sock_diag dump and sockleak's census alike, and how many there are would otherwise depend on
 * what ran last. The scenario's own (the listener's closed ends) remain.
 */
async function drainTimeWait(log: (line: string) => void): Promise<void> {
  const left = timeWaitSockets() ?? 0;
  if (left === 0) return;
  log(`snapshot: waiting for ${fmtInt(left)} TIME_WAIT sockets left by earlier work to expire`);
  for (let waited = 0; waited < 65_000 && (timeWaitSockets() ?? 0) > 0; waited += 1000) await sleep(1000);
}

export async function runSnapshot(o: SnapshotOptions): Promise<SizeResult[]> {
  const results: SizeResult[] = [];
  for (const size of o.sizes) {
    await drainTimeWait(o.log);
    o.log(`snapshot: creating ${fmtInt(size.sockets)} CLOSE_WAIT sockets over ${size.holders} processes`);
    let scenario: Scenario | undefined;
    try {
      scenario = await createCloseWait(o.closewait, size.sockets, size.holders, o.destinations, o.restorer);
      const result: SizeResult = { size, held: scenario.held, failedConnects: scenario.failedConnects, tools: [] };
      result.timeWait = timeWaitSockets();
      // Repetitions interleaved (each tool once, then again): a burst of load
      // on this shared machine then weighs on every tool alike.
      // sockleak's kernel scan in-process, each round too, right after ss.
      const runs = SNAPSHOT_TOOLS.map((tool) => ({ tool, run: newRun(tool, o) }));
      const kernel: KernelScan = { kernelMs: [], decodeMs: [], tcpScans: 0, diagCensuses: 0 };
      const scanner = new SocketScanner();
      try {
        for (let i = 0; i < o.reps; i++) {
          o.log(`snapshot: ${fmtInt(size.sockets)}: round ${i + 1} of ${o.reps}`);
          for (const { tool, run } of runs) {
            if (!run.unavailable) await runOnce(tool, run, o, i === o.reps - 1);
            if (tool.name === SS) await kernelScanRound(scanner, kernel);
          }
        }
      } finally {
        scanner.close();
      }
      result.tools = runs.map((r) => r.run);
      result.kernelScan = kernel;
      // The holder sockets still in CLOSE_WAIT after every tool ran are the ones each must have found
      // (at 100k a few are reset within the minute the rounds take: see stillAtEnd's note).
      let required: Set<string> | undefined;
      if (o.peers.has('ss')) {
        const r = await timed(o.ctx.tool('ss'), ['-tanp', 'state', 'close-wait']);
        const { truth } = scenario;
        if (r.code === 0) required = new Set(parseSs(r.stdout).map((x) => x.key).filter((key) => truth.has(key)));
      }
      result.stillAtEnd = required?.size;
      for (const run of result.tools) if (run.observed) run.agreement = compare(scenario.truth, scenario.destinations, run.observed, required);
      results.push(result);
    } catch (err) {
      results.push({ size, held: 0, failedConnects: 0, tools: [], error: (err as Error).message });
      o.log(`snapshot: ${(err as Error).message}`);
    } finally {
      await scenario?.cleanup();
    }
  }
  return results;
}

export function snapshotTable(results: SizeResult[], reps: number): Table {
  const rows: string[][] = [];
  const notes: string[] = [];
  for (const r of results) {
    const label = [fmtInt(r.size.sockets), String(r.size.holders)];
    if (r.error) {
      rows.push([...label, '—', '—', '—', '—', '—', '—']);
      notes.push(`error at ${fmtInt(r.size.sockets)}: ${r.error}`);
      continue;
    }
    if (r.held !== r.size.sockets) notes.push(`${fmtInt(r.size.sockets)}: only ${fmtInt(r.held)} sockets made (${r.failedConnects} connects failed)`);
    if (r.stillAtEnd !== undefined && r.stillAtEnd !== r.held) {
      notes.push(
        `${fmtInt(r.size.sockets)}: ${fmtInt(r.held - r.stillAtEnd)} of the holders' sockets were not in CLOSE_WAIT at the end (per a last ss: ` +
          'reset by the listener side when its orphans die, ~60 s after the sockets were made); found / K counts the other ones',
      );
    }
    for (const t of r.tools) {
      if (t.unavailable) {
        rows.push([...label, t.tool, '—', '—', '—', '—', t.unavailable]);
        continue;
      }
      const a = t.agreement;
      rows.push([
        ...label,
        t.tool,
        fmtInt(median(t.wallMs)),
        t.rssKiB.length ? fmtInt(Math.max(...t.rssKiB) / 1024) : '—',
        a ? `${fmtInt(a.found)} / ${fmtInt(r.stillAtEnd ?? r.held)}` : '—',
        a ? fmtInt(a.ownersOk) : '—',
        a ? fmtInt(a.extra) : '—',
      ]);
    }
    const k = r.kernelScan;
    if (k) {
      const ss = r.tools.find((t) => t.tool === SS && !t.unavailable);
      const kernel = median(k.kernelMs);
      rows.push([...label, 'sockleak: its kernel scan alone', fmtInt(kernel), '—', '—', '—', '—']);
      if (ss) {
        const sockleak = r.tools.find((t) => t.tool.startsWith('sockleak') && !t.unavailable);
        // Round by round: ss and the kernel scan of one round ran at the same moment.
        const ratios = ss.wallMs.flatMap((ms, i) => (k.kernelMs[i] ? [ms / k.kernelMs[i]!] : []));
        notes.push(
          `${fmtInt(r.size.sockets)}: sockleak's kernel scan ${median(ratios).toFixed(1)}× faster than ss -tanp (median of the rounds' ratios: ${ratios.map((x) => x.toFixed(1)).join(', ')})` +
            (sockleak ? `; end to end ${(median(ss.wallMs) / median(sockleak.wallMs)).toFixed(2)}× ss's speed` : '') +
            `; in-process decode ${fmtInt(median(k.decodeMs))} ms; iter/tcp needed in ${k.tcpScans} netns` +
            (k.diagCensuses ? `; sock_diag's census instead of the walk in ${k.diagCensuses} scans` : '') +
            (r.timeWait !== undefined ? `; ${fmtInt(r.timeWait)} TIME_WAIT sockets on the machine` : ''),
        );
      }
    }
  }
  return {
    title: `Snapshot: K CLOSE_WAIT sockets over P processes, wall time (median of ${reps}) and what each tool finds`,
    headers: ['K sockets', 'P processes', 'tool', 'wall ms', 'peak RSS MB', 'found / K', 'owner (pid, fd) right', 'extra'],
    numeric: [true, true, false, true, true, true, true, false],
    rows,
    notes: [
      'found / K: sockets reported with the (local, remote) of a socket the holders made, of those still in CLOSE_WAIT after every tool ran (a last ss); owner right: with the holder\'s pid and fd.',
      'Wall time is from spawn to exit, including start-up (for sockleak, Node\'s ~50 ms). Peak RSS: GNU time (wait4 ru_maxrss).',
      `Kernel scan alone: sockleak's iter/task_file beside its census of the established hash (and iter/tcp where the census finds unowned sockets), timed inside the bench's process with the BPF objects loaded, ${KERNEL_SCANS_PER_ROUND} times in each round right after ss (the round's figure is their median); the end-to-end row includes start-up, loading BPF, decoding and printing JSON.`,
      ...notes,
    ],
  };
}

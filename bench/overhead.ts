/**
 * Overhead per connection (the method of shared/BENCHMARKING.md): CPU time per
 * unit of work, which repeats within a few percent here, not throughput, which
 * swings widely on these shared VMs (docs/benchmarks.md, Method).
 *
 * One run = start the tracer, wait until it is attached and idle (its start-up
 * done), read its programs' run_time_ns/run_cnt and its utime+stime, run the churn (a fixed number of
 * connections), wait until the tracer has caught up (its CPU time stops
 * moving), read both again, stop it (SIGINT) and parse the totals it prints.
 *   bpf  = Σ Δrun_time_ns of its programs / connections
 *   user = Δ(utime+stime) of the tracer process / connections
 *   base = churn's own CPU (getrusage) / connections − bpf (BPF runs mostly in churn's context)
 *   overhead = (bpf + user) / base
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { listPrograms, programDeltas, programsHeldBy, type ProgramStat } from './bpf-stats';
import { collect, exited, JsonLines, sleep, start, stop } from './children';
import type { Peers } from './peers';
import { machineBusyNs, processCpuNs } from './system';
import { fmtFixed, fmtInt, fmtPercent, median, type Table } from './table';
import type { TracerContext, TracerRow, TracerTotals } from './tracers';

export interface OverheadOptions {
  churn: string;
  bpftool: string;
  setpriv: string | undefined;
  connections: number;
  threads: number;
  reps: number;
  tracers: readonly TracerRow[];
  ctx: TracerContext;
  peers: Peers;
  tracefs: boolean;
  log(line: string): void;
}

interface ChurnReport {
  pid: number;
  connections: number;
  failed: number;
  wallNs: number;
  userNs: number;
  sysNs: number;
}

/** One measured run of one row. */
export interface Sample {
  connections: number;
  failed: number;
  wallNs: number;
  churnCpuNs: number;
  bpfNs: number;
  userNs: number;
  programs: ProgramStat[];
  totals: TracerTotals | undefined;
  /** CPUs' worth of busy time on the machine during the churn that was neither the churn's nor the tracer's. */
  otherCpus: number;
  /** Run time of BPF programs not the tracer's (someone else's tracer) during the churn. */
  otherBpfNs: number;
}

export interface RowResult {
  name: string;
  /** Indexed by repetition; undefined where that run failed. */
  samples: Array<Sample | undefined>;
  skipped?: string;
  errors: string[];
  /** The control row (TracerRow.floor). */
  floor?: boolean;
}

export interface OverheadResult {
  untraced: RowResult;
  rows: RowResult[];
  connections: number;
  threads: number;
  reps: number;
}

/** Runs the churn, and measures what else kept the machine busy meanwhile (other people's work on a shared VM). */
async function churnWithBackground(
  o: OverheadOptions,
  tracer?: { pid: number; ids: Set<number> },
): Promise<{ churn: ChurnReport; otherCpus: number; otherBpfNs: number }> {
  const tracerCpu = (): number => (tracer ? processCpuNs(tracer.pid) : 0);
  const p0 = listPrograms(o.bpftool);
  const m0 = machineBusyNs();
  const t0 = tracerCpu();
  const churn = await runChurn(o.churn, o.connections, o.threads);
  const other = machineBusyNs() - m0 - (churn.userNs + churn.sysNs) - (tracerCpu() - t0);
  const p1 = listPrograms(o.bpftool);
  const foreign = [...p1.keys()].filter((id) => !tracer?.ids.has(id));
  const otherBpfNs = programDeltas(p0, p1, foreign).reduce((sum, p) => sum + p.runTimeNs, 0);
  return { churn, otherCpus: Math.max(0, other) / churn.wallNs, otherBpfNs };
}

async function runChurn(bin: string, connections: number, threads: number): Promise<ChurnReport> {
  const child = start(bin, [String(connections), String(threads)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const out = new JsonLines(child);
  // Generous: even a tracer that slows churn 20× must finish.
  const report = await out.next<ChurnReport>(60_000 + connections / 2, 'churn');
  await exited(child);
  if (report.failed > 0) throw new Error(`churn: ${report.failed} of ${connections} connections failed`);
  return report;
}

interface Attached {
  child: ChildProcess;
  pid: number;
  ids: Set<number>;
  stderr(): string;
}

const lastLine = (text: string): string => text.trim().split('\n').pop() ?? '';

/** Starts a tracer and resolves once it holds a stable set of new BPF programs (and said it is ready). */
async function attach(row: TracerRow, o: OverheadOptions): Promise<Attached> {
  const before = new Set(listPrograms(o.bpftool).keys());
  const argv = row.command(o.ctx);
  // --pdeathsig: if the benchmark dies, the tracer does not outlive it.
  const full = o.setpriv ? [o.setpriv, '--pdeathsig', 'SIGKILL', '--', ...argv] : argv;
  const devnull = fs.openSync('/dev/null', 'w');
  const child = start(full[0]!, full.slice(1), { stdio: ['ignore', devnull, 'pipe'] });
  fs.closeSync(devnull);
  const stderr = collect(child.stderr);
  const pid = row.costPid ? await row.costPid(child) : (child.pid ?? -1);

  const deadline = Date.now() + 60_000;
  let last = '';
  let stableSince = Date.now();
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${row.name} exited (${child.exitCode ?? child.signalCode}) while starting: ${lastLine(stderr())}`);
    }
    const held = [...programsHeldBy(pid)].filter((id) => !before.has(id)).sort((a, b) => a - b);
    const key = held.join(',');
    if (key !== last) {
      last = key;
      stableSince = Date.now();
    }
    const said = row.ready ? row.ready.test(stderr()) : true;
    if (held.length && said && Date.now() - stableSince >= 500) return { child, pid, ids: new Set(held), stderr };
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${row.name} did not attach within 60 s (programs held: ${key || 'none'}): ${lastLine(stderr())}`);
    }
    await sleep(100);
  }
}

/** Waits until the tracer's CPU time stops moving, i.e. it has consumed everything the churn produced. */
async function quiesce(pid: number, maxMs = 60_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let prev = processCpuNs(pid);
  let still = 0;
  while (still < 2 && Date.now() < deadline) {
    await sleep(250);
    const now = processCpuNs(pid);
    still = now === prev ? still + 1 : 0;
    prev = now;
  }
}

async function measureTracer(row: TracerRow, o: OverheadOptions): Promise<Sample> {
  const t = await attach(row, o);
  try {
    // Start-up work (sockleak seeds the CLOSE_WAIT sockets already there, reports
    // the old ones, takes a first port census) is not a per-connection cost: it
    // spilled into the window and was most of watch's "user ns/conn".
    await quiesce(t.pid);
    const b0 = listPrograms(o.bpftool);
    const u0 = processCpuNs(t.pid);
    const { churn, otherCpus, otherBpfNs } = await churnWithBackground(o, t);
    if (t.child.exitCode !== null || t.child.signalCode !== null) {
      throw new Error(`${row.name} died under load (${t.child.exitCode ?? t.child.signalCode}): ${lastLine(t.stderr())}`);
    }
    await quiesce(t.pid);
    const b1 = listPrograms(o.bpftool);
    const u1 = processCpuNs(t.pid);
    const how = await stop(t.child, row.stopSignal ?? 'SIGINT', 20_000);
    const programs = programDeltas(b0, b1, t.ids);
    const totals = row.totals?.(t.stderr());
    if (row.totals && !totals) o.log(`${row.name}: no totals on stderr (ended ${how}): ${lastLine(t.stderr())}`);
    return {
      connections: churn.connections,
      failed: churn.failed,
      wallNs: churn.wallNs,
      churnCpuNs: churn.userNs + churn.sysNs,
      bpfNs: programs.reduce((s, p) => s + p.runTimeNs, 0),
      userNs: u1 - u0,
      programs,
      totals,
      otherCpus,
      otherBpfNs,
    };
  } finally {
    await stop(t.child, 'SIGKILL', 5_000);
  }
}

async function measureUntraced(o: OverheadOptions): Promise<Sample> {
  const { churn, otherCpus, otherBpfNs } = await churnWithBackground(o);
  return {
    connections: churn.connections,
    failed: churn.failed,
    wallNs: churn.wallNs,
    churnCpuNs: churn.userNs + churn.sysNs,
    bpfNs: 0,
    userNs: 0,
    programs: [],
    totals: undefined,
    otherCpus,
    otherBpfNs,
  };
}

function skipReason(row: TracerRow, o: OverheadOptions): string | undefined {
  const missing = row.needs.filter((t) => !o.peers.has(t));
  if (missing.length) return `${missing.join(', ')} not installed`;
  if (row.needsTracefs && !o.tracefs) return 'tracefs could not be mounted';
  return undefined;
}

/** Runs every row `reps` times, interleaved (untraced, row 1, row 2, …, then again), so drift hits all rows alike. */
export async function runOverhead(o: OverheadOptions): Promise<OverheadResult> {
  const untraced: RowResult = { name: 'untraced', samples: [], errors: [] };
  const rows: RowResult[] = o.tracers.map((t) => {
    const skipped = skipReason(t, o);
    return { name: t.name, samples: [], errors: [], ...(skipped && { skipped }), ...(t.floor && { floor: true }) };
  });
  o.log(`overhead: warm-up churn`);
  await runChurn(o.churn, Math.min(o.connections, 20_000), o.threads);
  for (let rep = 0; rep < o.reps; rep++) {
    o.log(`overhead: run ${rep + 1}/${o.reps}: untraced`);
    untraced.samples[rep] = await measureUntraced(o);
    for (const [i, tracer] of o.tracers.entries()) {
      const row = rows[i]!;
      if (row.skipped) continue;
      o.log(`overhead: run ${rep + 1}/${o.reps}: ${tracer.name}`);
      try {
        row.samples[rep] = await measureTracer(tracer, o);
      } catch (err) {
        const message = (err as Error).message;
        row.errors.push(`run ${rep + 1}: ${message}`);
        o.log(`overhead: ${message}`);
      }
    }
  }
  return { untraced, rows, connections: o.connections, threads: o.threads, reps: o.reps };
}

/** How much other people's work disturbed the runs: medians over every sample of every row. */
export function background(r: OverheadResult): { otherCpus: number; otherBpfNsPerConn: number } {
  const all = [r.untraced, ...r.rows].flatMap((row) => present(row.samples));
  return { otherCpus: median(all.map((s) => s.otherCpus)), otherBpfNsPerConn: median(all.map((s) => s.otherBpfNs / s.connections)) };
}

/** Per-connection figures of one sample, in ns; `runs`: BPF program runs per connection. */
function perConn(s: Sample): { churn: number; bpf: number; user: number; base: number; overhead: number; rate: number; runs: number } {
  const n = s.connections;
  const bpf = s.bpfNs / n;
  const user = s.userNs / n;
  const base = s.churnCpuNs / n - bpf;
  const runs = s.programs.reduce((a, p) => a + p.runCount, 0) / n;
  return { churn: s.churnCpuNs / n, bpf, user, base, overhead: (bpf + user) / base, rate: n / (s.wallNs / 1e9), runs };
}

/**
 * What bpf_stats charges a program run that does nothing (ns): the control
 * row's run time per run, median over its samples; undefined without it.
 */
function floorNsPerRun(r: OverheadResult): number | undefined {
  const figs = present(r.rows.find((row) => row.floor)?.samples ?? [])
    .map(perConn)
    .filter((f) => f.runs > 0);
  return figs.length ? median(figs.map((f) => f.bpf / f.runs)) : undefined;
}

function present(samples: Array<Sample | undefined>): Sample[] {
  return samples.filter((s): s is Sample => s !== undefined);
}

const dashes = (n: number): string[] => Array.from({ length: n }, () => '—');

export function overheadTables(r: OverheadResult): Table[] {
  const untracedBase = median(present(r.untraced.samples).map((s) => perConn(s).base));
  const floor = floorNsPerRun(r);
  const cost: Table = {
    title: `Overhead per connection: loopback churn, ${fmtInt(r.connections)} connections per run, ${r.threads} client threads, medians of ${r.reps} runs`,
    headers: [
      'tracer',
      'conn/s',
      '× untraced',
      'churn CPU ns/conn',
      'base ns/conn',
      'BPF ns/conn',
      'user ns/conn',
      'overhead',
      'overhead on untraced base',
      'BPF above floor ns/conn',
      'overhead above floor',
    ],
    numeric: [false, true, true, true, true, true, true, true, true, true, true],
    rows: [],
    notes: [
      "overhead = (BPF + user) / base; base = churn CPU per connection − BPF (BPF runs mostly in the churn's context).",
      `overhead on untraced base = (BPF + user) / the untraced base (${fmtInt(untracedBase)} ns): a cross-check for when BPF time includes work that is not the tracer's (see Method).`,
      floor === undefined
        ? 'above floor: — (the empty-program row did not run).'
        : `floor: what bpf_stats itself charges every program run, ${fmtInt(floor)} ns here: the empty program's run time per run (two sched_clock() reads around each run while stats are on). ` +
          'BPF above floor = BPF − floor × the row\'s program runs per connection; overhead above floor = (that + user) / base: what the tracer adds with stats off, as in production.',
      '× untraced = throughput ÷ the untraced run of the same repetition (for reference only: ±30% noise here).',
    ],
  };
  const accounting: Table = {
    title: 'Events, losses and background load (same runs)',
    headers: ['tracer', 'events/conn', 'lost', 'map-full', 'recursion misses', 'other load (CPUs)', 'other BPF ns/conn', 'runs'],
    numeric: [false, true, true, true, true, true, true, true],
    rows: [],
    notes: [
      'events/conn, lost, map-full: what the tracer itself reports at exit (sockleak only); lost and map-full summed over all runs.',
      'recursion misses: BPF runs the kernel skipped because the same program was already running on that CPU (a state change',
      'nested in an interrupt); the tracer never sees those events and cannot count them. Summed over all runs and programs.',
      "other load: busy CPU time on the machine during the churn that was neither the churn's nor the tracer's, in CPUs (median).",
      "other BPF: run time of BPF programs that are not the row's own (someone else's tracer) during the churn, per connection",
      '(median); part of it runs in the churn and inflates its CPU. Both should be near 0 for clean figures.',
    ],
  };
  for (const row of [r.untraced, ...r.rows]) {
    if (row.skipped) {
      cost.rows.push([row.name, ...dashes(cost.headers.length - 1)]);
      accounting.rows.push([row.name, ...dashes(accounting.headers.length - 2), `skipped: ${row.skipped}`]);
      continue;
    }
    cost.notes.push(...row.errors.map((e) => `error: ${row.name}: ${e}`));
    const samples = present(row.samples);
    if (!samples.length) {
      cost.rows.push([row.name, ...dashes(cost.headers.length - 1)]);
      accounting.rows.push([row.name, ...dashes(accounting.headers.length - 2), '0']);
      continue;
    }
    const figs = samples.map(perConn);
    const m = (f: (x: ReturnType<typeof perConn>) => number): number => median(figs.map(f));
    // Throughput ratio: paired with the untraced run of the same repetition.
    const ratios = row.samples.flatMap((s, rep) => {
      const u = r.untraced.samples[rep];
      return s && u ? [perConn(s).rate / perConn(u).rate] : [];
    });
    const traced = row !== r.untraced;
    cost.rows.push([
      row.name,
      fmtInt(m((f) => f.rate)),
      traced ? fmtFixed(median(ratios), 2) : '1',
      fmtInt(m((f) => f.churn)),
      fmtInt(m((f) => f.base)),
      traced ? fmtInt(m((f) => f.bpf)) : '—',
      traced ? fmtInt(m((f) => f.user)) : '—',
      traced ? fmtPercent(m((f) => f.overhead)) : '—',
      traced ? fmtPercent(m((f) => (f.bpf + f.user) / untracedBase)) : '—',
      // (the floor row's own is 0 by definition)
      traced && !row.floor && floor !== undefined ? fmtInt(m((f) => f.bpf - floor * f.runs)) : '—',
      traced && !row.floor && floor !== undefined ? fmtPercent(m((f) => (f.bpf - floor * f.runs + f.user) / f.base)) : '—',
    ]);
    const withTotals = samples.filter((s) => s.totals);
    const sum = (f: (t: TracerTotals) => bigint): string => String(withTotals.reduce((a, s) => a + f(s.totals!), 0n));
    const misses = samples.reduce((a, s) => a + s.programs.reduce((b, p) => b + p.recursionMisses, 0), 0);
    accounting.rows.push([
      row.name,
      withTotals.length ? fmtFixed(median(withTotals.map((s) => Number(s.totals!.emitted) / s.connections)), 1) : '—',
      withTotals.length ? sum((t) => t.lost) : '—',
      withTotals.length ? sum((t) => t.mapFull) : '—',
      traced ? fmtInt(misses) : '—',
      fmtFixed(median(samples.map((s) => s.otherCpus)), 2),
      fmtInt(median(samples.map((s) => s.otherBpfNs / s.connections))),
      String(samples.length),
    ]);
  }

  const programs: Table = {
    title: 'In-kernel cost by BPF program (medians per connection)',
    headers: ['tracer', 'program', 'runs/conn', 'ns/run', 'ns/conn', 'recursion misses'],
    numeric: [false, false, true, true, true, true],
    rows: [],
    notes: ["Runs include every process on the machine (e.g. syscall hooks fire for all syscalls), not only the churn's."],
  };
  for (const row of r.rows) {
    const samples = present(row.samples);
    const names = [...new Set(samples.flatMap((s) => s.programs.map((p) => p.name)))];
    for (const name of names) {
      const per = samples.map((s) => {
        const ps = s.programs.filter((p) => p.name === name);
        const runs = ps.reduce((a, p) => a + p.runCount, 0);
        const ns = ps.reduce((a, p) => a + p.runTimeNs, 0);
        const misses = ps.reduce((a, p) => a + p.recursionMisses, 0);
        return { runs: runs / s.connections, nsPerRun: runs ? ns / runs : NaN, nsPerConn: ns / s.connections, misses };
      });
      programs.rows.push([
        row.name,
        name,
        fmtFixed(median(per.map((p) => p.runs)), 1),
        fmtInt(median(per.map((p) => p.nsPerRun))),
        fmtInt(median(per.map((p) => p.nsPerConn))),
        fmtInt(per.reduce((a, p) => a + p.misses, 0)),
      ]);
    }
  }
  return [cost, accounting, programs];
}

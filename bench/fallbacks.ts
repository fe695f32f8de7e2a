/**
 * `node dist/bench/fallbacks.js [--sockets N] [--holders P] [--reps R]`: what
 * each fallback path costs (docs/kernels.md, "Fallbacks"). N CLOSE_WAIT
 * sockets over P processes (bench/closewait.c, as the snapshot benchmark makes
 * them); then, for each path, forced with SOCKLEAK_REFUSE, side by side in one
 * run: `sockleak snapshot --json` (wall time, median of R, each round paired
 * with `ss -tanp state close-wait`; and whether every socket and owner was
 * found), and `sockleak watch --json --threshold 1s` (time until it has
 * reported all N leaks, then its CPU over 5 s of steady watching). Needs root.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { buildC, ROOT } from './build-c';
import { killAll, sleep, stop, timed } from './children';
import { compare, createCloseWait, parseSockleakSnapshot, type Scenario } from './snapshot';
import { processCpuNs, Restorer } from './system';
import { fmtFixed, fmtInt, median, renderText, type Table } from './table';

const CLI = path.join(ROOT, 'bin', 'sockleak.js');

/** The paths, from the fastest down: each a SOCKLEAK_REFUSE value ('' = whatever this kernel allows). */
const PATHS: ReadonlyArray<{ name: string; refuse: string }> = [
  { name: 'as this kernel allows', refuse: '' },
  { name: 'light skeletons refused: libbpf object', refuse: 'light' },
  { name: 'scan_files refused: bpf_rdonly_cast', refuse: 'scan_files' },
  { name: 'leak iterators refused: user-space walk', refuse: 'new_leaks' },
  { name: 'owner iterators refused: /proc + sock_diag', refuse: 'scan_files,scan_files_cast,scan_tcp,census_tcp' },
  { name: 'no BPF: sock_diag + /proc, watch by scans', refuse: 'bpf' },
];

function arg(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
}

interface WatchFigures {
  allReportedMs: number;
  cpuMsPerS: number;
  reported: number;
}

/** watch on one path: until `want` leak records, then 5 s of steady CPU. */
async function watchOnce(env: NodeJS.ProcessEnv, want: number): Promise<WatchFigures | string> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [CLI, 'watch', '--json', '--threshold', '1s'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let reported = 0;
  let allAt = 0;
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    if (line.includes('"type":"leak"') && ++reported === want) allAt = performance.now();
  });
  try {
    const until = Date.now() + 120_000;
    while (!allAt && child.exitCode === null && Date.now() < until) await sleep(50);
    if (!allAt) return `reported ${reported} of ${want}${child.exitCode !== null ? ` (exit ${child.exitCode}: ${stderr.trim().split('\n').pop()})` : ''}`;
    await sleep(1000);
    const cpu0 = processCpuNs(child.pid!);
    await sleep(5000);
    const cpuMsPerS = (processCpuNs(child.pid!) - cpu0) / 1e6 / 5;
    return { allReportedMs: allAt - t0, cpuMsPerS, reported };
  } finally {
    await stop(child, 'SIGINT', 10_000);
  }
}

async function main(): Promise<void> {
  const sockets = arg('--sockets', 10_000);
  const holders = arg('--holders', 50);
  const reps = arg('--reps', 5);
  const restorer = new Restorer();
  let scenario: Scenario | undefined;
  const table: Table = {
    title: `Fallback paths at ${fmtInt(sockets)} CLOSE_WAIT sockets over ${holders} processes (snapshot: median of ${reps}, each round beside ss -tanp)`,
    headers: ['path (SOCKLEAK_REFUSE)', 'snapshot ms', 'ss ms', 'found / owners', 'watch: all reported', 'watch CPU ms/s'],
    numeric: [false, true, true, true, true, true],
    rows: [],
    notes: ['watch: from its start until it printed every leak (all older than its 1 s threshold), then its CPU over 5 s of watching'],
  };
  try {
    const closewait = buildC('gcc', 'closewait');
    scenario = await createCloseWait(closewait, sockets, holders, 10, restorer);
    for (const p of PATHS) {
      const env = { SOCKLEAK_REFUSE: p.refuse };
      const snap: number[] = [];
      const ss: number[] = [];
      let agreement = '';
      for (let i = 0; i < reps; i++) {
        await sleep(200);
        const s = await timed('ss', ['-tanp', 'state', 'close-wait']);
        ss.push(s.wallMs);
        await sleep(200);
        const r = await timedEnv(env);
        if (r.code !== 0) {
          agreement = `failed: ${r.stderr.trim().split('\n').pop()}`;
          break;
        }
        snap.push(r.wallMs);
        if (i === reps - 1) {
          const a = compare(scenario.truth, scenario.destinations, parseSockleakSnapshot(r.stdout));
          agreement = `${fmtInt(a.found)} / ${fmtInt(a.ownersOk)}`;
        }
      }
      const w = await watchOnce(env, scenario.held);
      table.rows.push([
        `${p.name} (${p.refuse || '-'})`,
        snap.length ? fmtFixed(median(snap), 0) : '-',
        fmtFixed(median(ss), 0),
        agreement,
        typeof w === 'string' ? w : `${fmtFixed(w.allReportedMs / 1000, 1)} s`,
        typeof w === 'string' ? '-' : fmtFixed(w.cpuMsPerS, 1),
      ]);
      process.stderr.write(`${table.rows.at(-1)!.join(' | ')}\n`);
    }
  } finally {
    await scenario?.cleanup();
    restorer.restore();
    killAll();
  }
  process.stdout.write(`${renderText(table)}\n`);
}

/** `sockleak snapshot --json` with `env`, timed from spawn to exit. */
async function timedEnv(env: NodeJS.ProcessEnv): Promise<Awaited<ReturnType<typeof timed>>> {
  const saved = process.env.SOCKLEAK_REFUSE;
  process.env.SOCKLEAK_REFUSE = env.SOCKLEAK_REFUSE;
  try {
    return await timed(CLI, ['snapshot', '--json']);
  } finally {
    if (saved === undefined) delete process.env.SOCKLEAK_REFUSE;
    else process.env.SOCKLEAK_REFUSE = saved;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/fallbacks: ${(err as Error).message}\n`);
  process.exitCode = 1;
});

/**
 * In-kernel cost of a tracer: each BPF program's run_time_ns and run_cnt
 * (kernel.bpf_stats_enabled=1), read with `bpftool -j prog show`. bpftool here
 * cannot say which process holds a program, so a tracer's programs are told
 * apart by id: those that appeared after it started, narrowed to those its own
 * file descriptors hold (/proc/PID/fdinfo of its bpf-prog and bpf_link fds), so a
 * program someone else loads meanwhile is not counted.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import type { Restorer } from './system';

export interface ProgramStat {
  id: number;
  name: string;
  runTimeNs: number;
  runCount: number;
  /** Runs skipped because the program was already running on that CPU (a nested hit): events it never saw. */
  recursionMisses: number;
}

interface BpftoolProg {
  id: number;
  name?: string;
  run_time_ns?: number;
  run_cnt?: number;
  recursion_misses?: number;
}

/** Every loaded program, by id. */
export function listPrograms(bpftool: string): Map<number, ProgramStat> {
  const r = spawnSync(bpftool, ['-j', 'prog', 'show'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`bpftool prog show failed: ${r.stderr.trim()}`);
  const progs = JSON.parse(r.stdout || '[]') as BpftoolProg[];
  return new Map(
    progs.map((p) => [
      p.id,
      { id: p.id, name: p.name ?? '?', runTimeNs: p.run_time_ns ?? 0, runCount: p.run_cnt ?? 0, recursionMisses: p.recursion_misses ?? 0 },
    ]),
  );
}

/** Ids of the programs a process holds, directly or through a link. Empty if it has exited. */
export function programsHeldBy(pid: number): Set<number> {
  const ids = new Set<number>();
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return ids;
  }
  for (const fd of fds) {
    try {
      const target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (target !== 'anon_inode:bpf-prog' && target !== 'anon_inode:bpf_link') continue;
      const id = /^prog_id:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
      if (id) ids.add(Number(id));
    } catch {
      // fd closed meanwhile
    }
  }
  return ids;
}

/** Turns kernel.bpf_stats_enabled on for the run (it costs two clock reads per program run). */
export function enableBpfStats(restorer: Restorer): void {
  restorer.setSysctl('kernel.bpf_stats_enabled', '1');
}

/**
 * Turns run-time accounting off: it adds two clock reads to every BPF program
 * run (the floor in docs/benchmarks.md, Method), which the snapshot's iterator (one run per open file) and the
 * agent's programs would pay and ss would not.
 */
export function disableBpfStats(restorer: Restorer): void {
  restorer.setSysctl('kernel.bpf_stats_enabled', '0');
}

/** Per-program deltas between two listings, for the given ids. */
export function programDeltas(before: Map<number, ProgramStat>, after: Map<number, ProgramStat>, ids: Iterable<number>): ProgramStat[] {
  const out: ProgramStat[] = [];
  for (const id of ids) {
    const a = after.get(id);
    if (!a) continue;
    const b = before.get(id);
    out.push({
      id,
      name: a.name,
      runTimeNs: a.runTimeNs - (b?.runTimeNs ?? 0),
      runCount: a.runCount - (b?.runCount ?? 0),
      recursionMisses: a.recursionMisses - (b?.recursionMisses ?? 0),
    });
  }
  return out.sort((x, y) => x.id - y.id);
}

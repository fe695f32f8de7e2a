/**
 * The machine-wide knobs the benchmark turns (sysctls, the tracefs mount) and
 * what it reads from /proc. Every change is recorded in a Restorer and undone
 * at the end, even on failure.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';

const sysctlPath = (name: string): string => `/proc/sys/${name.replace(/\./g, '/')}`;

export function readSysctl(name: string): string {
  return fs.readFileSync(sysctlPath(name), 'utf8').trim();
}

/** Undo actions for every change made to the machine, run last-in first-out. */
export class Restorer {
  private readonly undo: Array<{ what: string; action: () => void }> = [];

  /** Sets a sysctl, remembering the old value (undone last-in first-out, so the original comes back). */
  setSysctl(name: string, value: string): void {
    const old = readSysctl(name);
    if (old.replace(/\s+/g, ' ') === value) return;
    fs.writeFileSync(sysctlPath(name), value);
    this.undo.push({ what: `${name}=${old}`, action: () => fs.writeFileSync(sysctlPath(name), old) });
  }

  /** Registers any other undo action. */
  onRestore(what: string, action: () => void): void {
    this.undo.push({ what, action });
  }

  /** Undoes everything; never throws (reports what it could not undo on stderr). */
  restore(): void {
    while (this.undo.length) {
      const { what, action } = this.undo.pop()!;
      try {
        action();
      } catch (err) {
        process.stderr.write(`bench: could not restore ${what}: ${(err as Error).message}\n`);
      }
    }
  }
}

const TRACEFS = '/sys/kernel/tracing';

/**
 * tcpstates and bpftrace attach classic tracepoints, which need tracefs; a fresh
 * machine does not mount it (sockleak's tp_btf programs do not need it).
 * Mounts it when missing, and unmounts it at the end if it was us.
 */
export function ensureTracefs(restorer: Restorer): boolean {
  if (fs.existsSync(`${TRACEFS}/events`)) return true;
  const r = spawnSync('mount', ['-t', 'tracefs', 'nodev', TRACEFS], { encoding: 'utf8' });
  if (r.status !== 0 || !fs.existsSync(`${TRACEFS}/events`)) {
    process.stderr.write(`bench: cannot mount tracefs: ${r.stderr.trim()}\n`);
    return false;
  }
  restorer.onRestore('tracefs mount', () => {
    // Busy (someone else started using it) is fine: leave it mounted.
    spawnSync('umount', [TRACEFS]);
  });
  return true;
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime+stime of a whole process (all threads), in ns; /proc/PID/stat fields 14–15, in clock ticks. */
export function processCpuNs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // comm (field 2) may contain spaces and parentheses: fields after it start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so field N is fields[N - 3].
  const ticks = Number(fields[14 - 3]) + Number(fields[15 - 3]);
  return (ticks * 1e9) / CLK_TCK;
}

/** CPU time the whole machine spent busy (user, nice, system, irq, softirq, steal; all CPUs), in ns, from /proc/stat. */
export function machineBusyNs(): number {
  const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = cpu;
  return ((user + nice + system + irq + softirq + steal) * 1e9) / CLK_TCK;
}

/** The resolution of processCpuNs, for the docs. */
export const CPU_TICK_NS = 1e9 / CLK_TCK;

export interface MachineInfo {
  nproc: number;
  kernel: string;
  cpuModel: string;
  memGiB: number;
  os: string;
  node: string;
  date: string;
}

export function machineInfo(): MachineInfo {
  let osName = 'Linux';
  try {
    osName = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? osName;
  } catch {
    // keep the default
  }
  return {
    nproc: os.availableParallelism(),
    kernel: os.release(),
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    os: osName,
    node: process.version,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
  };
}

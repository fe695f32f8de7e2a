/** A process's file descriptors as /proc shows them: how many are open, and its RLIMIT_NOFILE soft limit. */
import { readFileSync, readdirSync } from 'node:fs';

/** Open fds and the soft limit of one process. */
export interface FdUsage {
  openFds: number;
  /** RLIMIT_NOFILE soft limit: open() gets EMFILE once no fd below it is free; null when unlimited. */
  fdLimit: number | null;
}

/** The soft `Max open files` of a /proc/PID/limits text; null when unlimited or absent. */
export function parseFdLimit(limits: string): number | null {
  const m = /^Max open files\s+(\S+)/m.exec(limits);
  if (!m || m[1] === 'unlimited') return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : null;
}

/** Reads /proc/PID/fd and /proc/PID/limits; undefined when the process is gone (or not ours to read). */
export function readFdUsage(pid: number, proc = '/proc'): FdUsage | undefined {
  try {
    const fdLimit = parseFdLimit(readFileSync(`${proc}/${pid}/limits`, 'latin1'));
    return { openFds: readdirSync(`${proc}/${pid}/fd`).length, fdLimit };
  } catch {
    return undefined;
  }
}

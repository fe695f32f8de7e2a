/** A process's file descriptors as /proc shows them: how many are open, and its RLIMIT_NOFILE soft limit. */
import { readFileSync, readdirSync, statSync } from 'node:fs';

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

/**
 * Open fds of a process: since Linux 6.2 the size stat() gives /proc/PID/fd is the count, a
 * constant-time answer where listing the directory takes time in proportion to the fds; before
 * 6.2 the size is 0 and the entries are counted.
 */
function countFds(dir: string): number {
  return statSync(dir).size || readdirSync(dir).length;
}

/** PF_EXITING (include/linux/sched.h): do_exit() has begun, its fds are being closed. */
const PF_EXITING = 0x4;

/**
 * Whether a /proc/PID/stat line is of a process that is exiting: a zombie, or past PF_EXITING,
 * when exit closes its fds one by one while /proc still lists it (a count read then is not its own).
 */
export function statExiting(stat: string): boolean {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0] ?? '';
  return state === 'Z' || state === 'X' || (Number(fields[6]) & PF_EXITING) !== 0;
}

/** Reads /proc/PID/fd and /proc/PID/limits; undefined when the process is gone or exiting (or not ours to read). */
export function readFdUsage(pid: number, proc = '/proc'): FdUsage | undefined {
  try {
    const exiting = (): boolean => statExiting(readFileSync(`${proc}/${pid}/stat`, 'latin1'));
    if (exiting()) return undefined;
    const fdLimit = parseFdLimit(readFileSync(`${proc}/${pid}/limits`, 'latin1'));
    const openFds = countFds(`${proc}/${pid}/fd`);
    // Asked again after the count: exit sets PF_EXITING before it closes the fds, so a count it
    // raced with (one fd short of the limit, read on an emulated 6.1) is caught here.
    return exiting() ? undefined : { openFds, fdLimit };
  } catch {
    return undefined;
  }
}

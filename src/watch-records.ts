/**
 * What the leak engine (leak-watcher.ts) reports, the records of `watch`,
 * `run` and the agent: a leak, a leak resolved, a holder's close of a leak
 * others still hold. Declared once; the CLI, the agent's wire mapping and the
 * library are written against them.
 */
import type { Owner, SocketInfo } from './sockets';

/** A socket that stayed in CLOSE_WAIT longer than the threshold. */
export interface LeakRecord extends SocketInfo {
  type: 'leak';
}

/** Who closed a socket: fd is null when the socket went without a close() (exit, exec, dup2, close_range). */
export interface Closer {
  pid: number;
  tid: number;
  comm: string;
  fd: number | null;
}

/** A reported leak is gone. */
export interface ResolvedRecord {
  type: 'resolved';
  cookie: string;
  local: string;
  remote: string;
  /** The task whose close freed it; null when it went without one of the holders acting (reset, keepalive). */
  closedBy: Closer | null;
  /** close: a close() freed it; exit: the last holder exited or replaced the fd; peer: reset or timer; gone: found missing by a rescan. */
  how: 'close' | 'exit' | 'peer' | 'gone';
  /** How long it had been in CLOSE_WAIT. */
  heldMs: number;
}

/** A holder closed its fd of a reported leak, but others still hold the socket. */
export interface FdClosedRecord {
  type: 'fd-closed';
  cookie: string;
  remote: string;
  closedBy: Closer;
  stillHeldBy: Owner[];
}

export type WatchRecord = LeakRecord | ResolvedRecord | FdClosedRecord;

/** When a socket `stateAgeMs` old at `atMs` entered CLOSE_WAIT, ISO 8601; null when its age is unknown. */
export function closeWaitAt(stateAgeMs: number | null, atMs: number): string | null {
  return stateAgeMs === null ? null : new Date(atMs - stateAgeMs).toISOString();
}

/**
 * A record as `watch --json` writes it: a leak with `closeWaitAt` (when it entered CLOSE_WAIT) beside its
 * age, so a reader can group leaks and date when each group began without the time of the line.
 */
export function withCloseWaitAt<T extends { type: string }>(record: T, atMs = Date.now()): T | (T & { closeWaitAt: string | null }) {
  if (record.type !== 'leak') return record;
  return { ...record, closeWaitAt: closeWaitAt((record as unknown as LeakRecord).stateAgeMs, atMs) };
}

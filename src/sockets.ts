/** Per-socket facts as sockleak reports them: the types snapshot, watch and the agent share. */
import type { TcpState } from './tcp-states';

/** A (process, fd) that holds a socket now. */
export interface Owner {
  pid: number;
  comm: string;
  fd: number;
  /** The process's cgroup v2 path (/proc/PID/cgroup), when it could be read. */
  cgroup?: string;
  /** The container ID its cgroup path names (64 hex digits; src/cgroup-path.ts). */
  containerId?: string;
  /** The Kubernetes pod UID its cgroup path names. */
  podUid?: string;
}

/** Whether two owners are the same holder: the same fd of the same process. */
export function sameOwner(a: Owner, b: Owner): boolean {
  return a.pid === b.pid && a.fd === b.fd;
}

/** Who created a socket (connect() or accept() returned it), when sockleak saw it happen. */
export interface Creator {
  pid: number;
  tid: number;
  comm: string;
  /** The creating task's cgroup v2 path at creation time, when known; `(gone)` when that cgroup was removed since. */
  cgroup?: string;
  /** The container ID its cgroup path names. */
  containerId?: string;
  /** The Kubernetes pod UID its cgroup path names. */
  podUid?: string;
  /**
   * Where in the code the creating connect() or accept() was called, innermost
   * first, the first frame the function that called it (with --stacks, and
   * always in run). Absent when no stack was captured.
   */
  stack?: Frame[];
  /** The stack was cut short: a frame could not be walked or named soundly (no frame pointers), or the caller frame is unknown. */
  stackTruncated?: boolean;
}

/** One frame of a creator's stack. */
export interface Frame {
  /** The return (or call) address in the process, hex (`0x55d0c2a1b2c3`). */
  addr: string;
  /** The function, or `??` when no symbol covers the address. */
  symbol: string;
  /** Source file and line, where debug info (DWARF) names them. */
  file?: string;
  line?: number;
  /** The mapped file the address lies in (`/usr/lib/x86_64-linux-gnu/libc.so.6`), `[perf-map]` for JIT code. */
  module: string;
}

/** One TCP socket. `--json` output of snapshot and the leak records of watch carry exactly these fields. */
export interface SocketInfo {
  /** Socket cookie (decimal string): the identity of the socket everywhere in sockleak. */
  cookie: string;
  state: TcpState;
  family: 4 | 6;
  local: string;
  remote: string;
  netns: number;
  /** Every (pid, fd) holding the socket now; empty for orphans (TIME_WAIT, closed but not yet gone). */
  owners: Owner[];
  creator: Creator | null;
  /** Unread bytes in the receive queue (LISTEN: accept backlog). */
  recvQ: number;
  /** Unacknowledged bytes in the send queue (LISTEN: max backlog). */
  sendQ: number;
  /** SO_KEEPALIVE on. With it off, nothing ever reaps a CLOSE_WAIT socket. */
  keepalive: boolean;
  /** ms until the next keepalive probe, which reaps the socket if the peer host answers (null: keepalive off). */
  keepaliveProbeInMs: number | null;
  /** ms after which keepalive reaps it even if the peer host is gone (probe + probes × interval). */
  keepaliveReapByMs: number | null;
  /** How long the socket has been in `state`; null when unknown. */
  stateAgeMs: number | null;
  /** True when stateAgeMs is an estimate from the kernel's per-socket timestamps, not an observed transition. */
  ageEstimated: boolean;
  /** uid owning the socket. */
  uid: number;
}

/** `sockleak snapshot --json`. */
export interface Snapshot {
  takenAt: string;
  sockets: SocketInfo[];
  /** Events lost while building it (0 for a pure scan). */
  lost: number;
}

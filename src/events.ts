/**
 * Typed trace events, decoded from struct sl_event (bpf/sockleak.h). The JSON
 * output of `sockleak trace --json` is exactly these objects.
 */
import type { TcpState } from './tcp-states';

/** Who `pid`/`tid`/`comm` are: the task that made the call, or only the one interrupted. */
export type EventContext = 'task' | 'softirq' | 'kthread';

interface EventBase {
  /** Socket cookie as a decimal string: sockleak's socket identity. "0" if the kernel had none yet. */
  cookie: string;
  family: 4 | 6;
  /** Local endpoint, `a.b.c.d:port` or `[v6]:port`. */
  local: string;
  /** Remote endpoint. */
  remote: string;
  /** Inode of the socket's network namespace. */
  netns: number;
  /** Process id (kernel tgid) of the current task. */
  pid: number;
  /** Thread id of the current task. */
  tid: number;
  comm: string;
  /** CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns). */
  tsNs: number;
}

/** A TCP state change. `pid` is the socket's owner only when `context` is 'task'. */
export interface StateEvent extends EventBase {
  type: 'state';
  oldState: TcpState;
  newState: TcpState;
  context: EventContext;
}

/** close(fd) of a TCP socket, with its return value. */
export interface CloseEvent extends EventBase {
  type: 'close';
  fd: number;
  ret: number;
  /** State of the socket when close() was entered. */
  state: TcpState;
}

/**
 * connect(fd) returned; `ret` is 0 or -errno (-115 EINPROGRESS for non-blocking).
 * For -99 EADDRNOTAVAIL (no free port) `remote` is the address that was asked for.
 */
export interface ConnectEvent extends EventBase {
  type: 'connect';
  fd: number;
  ret: number;
  state: TcpState;
}

/** bind(fd) failed with EADDRINUSE (leak mode only); `remote` is the address that was asked for. */
export interface BindEvent extends EventBase {
  type: 'bind';
  fd: number;
  ret: number;
  state: TcpState;
}

/** accept()/accept4() returned `fd`. */
export interface AcceptEvent extends EventBase {
  type: 'accept';
  fd: number;
  ret: number;
  state: TcpState;
}

export type TraceEvent = StateEvent | CloseEvent | ConnectEvent | AcceptEvent | BindEvent;

/** Counts that prove nothing was lost silently. */
export interface TraceCounters {
  /** Records the kernel wrote to the ring buffer. */
  emitted: bigint;
  /** Records dropped because the ring buffer was full (kernel) or the reader's queue was (user space). */
  lost: bigint;
  /** Insertions refused by a full, bounded BPF map. */
  mapFull: bigint;
  /**
   * Program runs the kernel skipped because the same sockleak program was
   * already running on that CPU (a state change inside an interrupt that hit
   * the program): events never seen, counted by the kernel (recursion misses).
   */
  missed: bigint;
}

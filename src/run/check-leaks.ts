/**
 * `checkSocketLeaks(fn)`: a socket-leak assertion for Node test suites. Runs
 * `fn`, then waits until every socket this process left in CLOSE_WAIT has
 * either been closed or crossed the threshold, and throws SocketLeakError
 * listing the ones that crossed it. Sockets already in CLOSE_WAIT before `fn`
 * started are not `fn`'s leaks and are ignored.
 */
import { SocketLeakError, UsageError } from '../errors';
import { LeakLog, type LeakedSocket } from './leak-log';
import { startLeakEngine } from '../watch/leak-engine';
import { matchesAnyRemote, parseRemotePattern } from '../remote-pattern';
import { SocketScanner } from '../scan/scan';

/** Options of checkSocketLeaks(); every field is optional. */
export interface CheckLeaksOptions {
  /** How long a socket may stay in CLOSE_WAIT after the peer closed it, in ms. Default 1000. */
  thresholdMs?: number;
  /** Remote patterns of expected leaks (same syntax as `sockleak run --allow`). */
  allow?: readonly string[];
  /** How long to wait after `fn` for FINs still in flight before concluding "nothing pending", in ms. Default 200. */
  settleMs?: number;
  /** How often the kernel is asked for leaks, in ms. Default 100. */
  tickMs?: number;
  btfPath?: string;
}

/** Past threshold + this, a socket still pending was missed by the kernel (map full): stop waiting. */
const GIVE_UP_MS = 10_000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function describe(leaks: readonly LeakedSocket[], thresholdMs: number): string {
  const lines = leaks.map((l) => {
    const fds = l.owners.map((o) => `fd ${o.fd}`).join(', ') || 'no fd';
    const creator = l.creator ? `, created by ${l.creator.comm}[${l.creator.pid}/${l.creator.tid}]` : '';
    return `${l.local} -> ${l.remote} (${fds}) in CLOSE_WAIT ${(l.heldMs / 1000).toFixed(1)}s${creator}`;
  });
  const n = leaks.length;
  return `${n} socket${n === 1 ? '' : 's'} leaked (CLOSE_WAIT longer than ${thresholdMs} ms): ${lines.join('; ')}`;
}

/**
 * Runs `fn` and checks that this process leaked no socket while it ran: any
 * socket left in CLOSE_WAIT longer than `thresholdMs` (the peer closed, this
 * process never did) makes it throw SocketLeakError (exitCode 3), whose
 * `leaks` lists them. Returns what `fn` returns; if `fn` throws, rethrows that.
 * Needs root or CAP_BPF + CAP_PERFMON, like everything sockleak does.
 */
export async function checkSocketLeaks<T>(fn: () => T | Promise<T>, options: CheckLeaksOptions = {}): Promise<T> {
  const thresholdMs = options.thresholdMs ?? 1000;
  const tickMs = options.tickMs ?? 100;
  const settleMs = options.settleMs ?? 200;
  for (const [name, v] of [['thresholdMs', thresholdMs], ['settleMs', settleMs]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new UsageError(`${name} must be an integer >= 0, got ${v}`);
  }
  const allow = (options.allow ?? []).map((p) => parseRemotePattern(p));
  const pid = process.pid;
  const btf = options.btfPath !== undefined ? { btfPath: options.btfPath } : {};
  const scanner = new SocketScanner(btf);
  try {
    const closeWait = async (): Promise<string[]> => [...(await scanner.scan({ pid, states: ['CLOSE_WAIT'] })).keys()];
    // This process as a one-process tree: only its sockets are scanned, however busy the host.
    const watcher = startLeakEngine({ thresholdMs, tickMs, followTree: true, ...btf });
    const log = new LeakLog(watcher);
    let leaks: LeakedSocket[];
    let value: T;
    try {
      watcher.addTreeRoot(pid);
      const before = new Set(await closeWait()); // after the watcher attached: anything newer is in its map
      value = await fn();
      const endedAt = Date.now();
      // Every socket fn left in CLOSE_WAIT is either closed or reported within threshold + a tick.
      for (;;) {
        await sleep(tickMs);
        if (Date.now() - endedAt < settleMs) continue;
        const pending = (await closeWait()).filter((c) => !before.has(c) && !log.has(c));
        if (pending.length === 0 || Date.now() - endedAt > thresholdMs + GIVE_UP_MS) break;
      }
      const open = watcher.current();
      await watcher.close();
      await log.done;
      const mine = (l: LeakedSocket): boolean => l.owners.some((o) => o.pid === pid) || l.creator?.pid === pid;
      leaks = log.sockets(open, thresholdMs).filter((l) => mine(l) && !before.has(l.cookie) && !matchesAnyRemote(allow, l.remote));
    } finally {
      await watcher.close();
      await log.done.catch(() => undefined);
    }
    if (leaks.length > 0) throw new SocketLeakError(describe(leaks, thresholdMs), leaks);
    return value;
  } finally {
    scanner.close();
  }
}

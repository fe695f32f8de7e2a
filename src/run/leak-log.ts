/**
 * The leak records of one leak engine's run, kept by socket: what `run` and
 * `checkSocketLeaks` report once the watched code is done.
 */
import type { LeakEngine } from '../watch/leak-engine';
import { closeWaitAt, type LeakRecord, type ResolvedRecord } from '../watch-records';
import type { SocketInfo } from '../sockets';

/** A leaked socket: its facts when found, and how long it stayed in CLOSE_WAIT. */
export interface LeakedSocket extends SocketInfo {
  /** When it entered CLOSE_WAIT (ISO 8601; estimated when ageEstimated): the oldest of a group dates when it began. */
  closeWaitAt: string | null;
  /** ms the socket spent in CLOSE_WAIT (until it was closed, or until the report). */
  heldMs: number;
  /** threshold: in CLOSE_WAIT longer than the threshold; outlived: still held by a descendant when the command exited. */
  reason: 'threshold' | 'outlived';
}

/** Drains a watcher in the background: each socket's first leak record, and its resolution if it came. */
export class LeakLog {
  private readonly leaks = new Map<string, LeakRecord>();
  /** When each socket's first leak record came, ms. */
  private readonly reportedAt = new Map<string, number>();
  private readonly resolved = new Map<string, ResolvedRecord>();
  /** Settles when the watcher's iterator ends (after close()). */
  readonly done: Promise<void>;

  /** `onLeak` sees every leak record as it comes (the fd forecaster of `run`). */
  constructor(watcher: LeakEngine, onLeak?: (record: LeakRecord) => void) {
    this.done = (async () => {
      for await (const r of watcher) {
        if (r.type === 'leak') onLeak?.(r);
        if (r.type === 'leak' && !this.leaks.has(r.cookie)) {
          this.leaks.set(r.cookie, r);
          this.reportedAt.set(r.cookie, Date.now());
        }
        else if (r.type === 'resolved') this.resolved.set(r.cookie, r);
      }
    })();
  }

  /** True once a leak record for this socket came. */
  has(cookie: string): boolean {
    return this.leaks.has(cookie);
  }

  /**
   * Every leak reported so far; `open` (watcher.current()) gives the age of
   * those not resolved yet. A leak reported younger than `thresholdMs` came
   * from LeakWatcher.flush(): still held when the command exited.
   */
  sockets(open: readonly LeakRecord[], thresholdMs: number): LeakedSocket[] {
    const ages = new Map(open.map((l) => [l.cookie, l.stateAgeMs]));
    return [...this.leaks.values()].map(({ type: _leak, ...info }) => ({
      ...info,
      closeWaitAt: closeWaitAt(info.stateAgeMs, this.reportedAt.get(info.cookie)!),
      heldMs: this.resolved.get(info.cookie)?.heldMs ?? ages.get(info.cookie) ?? info.stateAgeMs ?? 0,
      reason: (info.stateAgeMs ?? thresholdMs) < thresholdMs ? ('outlived' as const) : ('threshold' as const),
    }));
  }
}

/**
 * The leak engine without a tracer: every poll scans the CLOSE_WAIT sockets
 * (close-wait-scan.ts; the scanner is itself on sock_diag and /proc where BPF
 * is unusable) and compares with the last poll. A socket seen in CLOSE_WAIT
 * longer than the threshold is a leak, with its owners and fds from the scan
 * and no creator; its age counts from the poll that first saw it (from its
 * last packet, flagged estimated, for one already there at start, as the
 * tracer's seeded ones are). A leak a poll no longer finds in CLOSE_WAIT is
 * resolved ('gone'): who closed it, and when within the poll, is unknown.
 * Records and table are the tracer's engine's (watch-records.ts, leak-table.ts).
 */
import { matchesWhere } from '../cgroup-path';
import { monotonicNowNs } from '../clock';
import { CloseWaitScanner, ownerOf } from '../scan/close-wait-scan';
import { cookieKey, cookieText, type CookieKey } from '../cookie-map';
import type { TraceCounters } from '../events';
import { noteFallback } from '../kernel/fallbacks';
import type { LeakEngine } from './engine-api';
import type { WatchOptions } from './leak-watcher';
import { OpenLeaks } from './open-leaks';
import { ProcTree } from './proc-tree';
import { ProcessTree } from './process-tree';
import { sameOwner, type Owner } from '../sockets';
import type { ResolvedRecord, WatchRecord } from '../watch-records';

/** A CLOSE_WAIT socket not (yet) reported: when it entered, as far as the polls know. */
interface Waiting {
  enteredNs: number;
  estimated: boolean;
  /** The last poll that saw it. */
  poll: number;
  /** Not the watcher's (another pid, outside the tree) or evicted: never reported. */
  ignored: boolean;
}

/** How often to poll when not told: a quarter of the threshold, within 250 ms .. 5 s. */
export function defaultPollMs(thresholdMs: number): number {
  return Math.min(5000, Math.max(250, Math.round(thresholdMs / 4)));
}

function sameOwners(a: readonly Owner[], b: readonly Owner[]): boolean {
  return a.length === b.length && a.every((o) => b.some((p) => sameOwner(o, p)));
}

export class ScanWatcher extends OpenLeaks implements LeakEngine {
  private readonly scanner: CloseWaitScanner;
  private readonly thresholdNs: number;
  private readonly pollMs: number;
  private readonly waiting = new Map<CookieKey, Waiting>();
  /** Records not yet taken by the iterator; leaks (slots) become records when taken. */
  private polls = 0;
  /** When the last poll started (CLOCK_MONOTONIC ns): a socket it did not see in CLOSE_WAIT entered it since. */
  private lastPollNs = monotonicNowNs();
  private emitted = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The poll running now, if one is. */
  private polling: Promise<void> | undefined;
  readonly firstStep: Promise<void>;
  private firstStepOver: () => void = () => undefined;

  /** `refused`: what could not be used and why, for the one line noted. Options are validated by the caller (leak-engine.ts). */
  constructor(
    private readonly options: WatchOptions,
    refused: { what: string; why: string },
  ) {
    super();
    this.thresholdNs = (options.thresholdMs ?? 30_000) * 1e6;
    this.pollMs = options.tickMs ?? defaultPollMs(options.thresholdMs ?? 30_000);
    // Noted before the scanner opens: its own note of the same refusal then adds no second line.
    noteFallback({
      what: refused.what,
      why: refused.why,
      instead: `polling CLOSE_WAIT sockets every ${this.pollMs} ms`,
      lost: 'creators of leaks, who closed them, connect() failures and active closes; leaks are seen at poll granularity',
    });
    this.scanner = new CloseWaitScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
    this.tree = options.followTree ? new ProcessTree(new ProcTree()) : undefined;
    this.firstStep = new Promise((resolve) => (this.firstStepOver = resolve));
    this.timer = setTimeout(() => void this.tick(), 0);
  }

  /** Stops following an open leak without a record; it is not reported again. */
  evict(cookie: CookieKey): void {
    const key = typeof cookie === 'string' ? cookieKey(cookie) : cookie;
    const s = this.slotOf(key);
    if (s < 0) return;
    this.waiting.set(key, { enteredNs: this.leaks.enteredNs(s), estimated: false, poll: this.polls, ignored: true });
    this.leaks.remove(s);
  }

  hooks(): undefined {
    return undefined;
  }

  /** No tracer counts active closes. */
  activeCloses(): Buffer {
    return Buffer.alloc(0);
  }

  /** Records handed out; nothing is lost between polls, but nothing is seen between them either. */
  counters(): TraceCounters {
    return { emitted: BigInt(this.emitted), lost: 0n, mapFull: 0n, missed: 0n };
  }

  /** Reports now every matching socket in CLOSE_WAIT, whatever its age (`sockleak run`, when the command exits). */
  async flush(): Promise<void> {
    while (this.polling) await this.polling;
    if (this.ended) return;
    await this.poll(0);
  }

  protected override emit(record: WatchRecord | number): void {
    this.emitted++;
    super.emit(record);
  }


  /**
   * One poll, then the next one after pollMs, or after 10 times the poll's cost
   * if that is longer (a scan visits every socket), but never longer than the
   * threshold: a leak that lives a threshold or two is seen, whatever a poll
   * costs (on a slow machine, more CPU rather than a missed leak).
   */
  private async tick(): Promise<void> {
    if (this.ended || this.polling) return;
    const started = performance.now();
    try {
      await this.poll(this.thresholdNs);
    } catch (err) {
      this.failure = err;
      void this.close();
    } finally {
      this.firstStepOver();
    }
    const backoffMs = Math.max(this.pollMs, 10 * (performance.now() - started));
    if (!this.ended) this.timer = setTimeout(() => void this.tick(), Math.min(backoffMs, this.thresholdNs / 1e6));
  }

  private poll(thresholdNs: number): Promise<void> {
    const run = this.step(thresholdNs).finally(() => (this.polling = undefined));
    this.polling = run;
    return run;
  }

  private matches(owners: readonly Owner[]): boolean {
    const pid = this.options.pid;
    return (
      (pid === undefined || owners.some((o) => o.pid === pid)) && matchesWhere(this.options.where, owners, null) && (this.tree?.holdsOrCreated(owners, null) ?? true)
    );
  }

  private async step(thresholdNs: number): Promise<void> {
    const poll = ++this.polls;
    const t = this.leaks;
    const nowNs = monotonicNowNs();
    const sinceNs = this.lastPollNs;
    this.lastPollNs = nowNs;
    // Sockets already in CLOSE_WAIT at start are aged from their last packet (a tree starts new).
    const seeding = poll === 1 && !this.options.followTree;
    /** Owners this poll found, by slot: open leaks and the ones it found new (tentative). */
    const found = new Map<number, Owner[]>();
    const fresh: number[] = [];
    const pids = this.tree?.alive();
    await this.scanner.every((cookie, sock) => {
      let s = t.slotOf(cookie);
      if (s < 0) {
        let w = this.waiting.get(cookie);
        if (!w) {
          // From its last packet (the FIN, for an idle socket): at start an estimate;
          // later, no earlier than the last poll, which did not see it in CLOSE_WAIT.
          // Polls far apart (a slow machine backs off) then still age it right.
          const ageMs = sock.decoder.stateAgeMs(sock.at);
          const fromPacketNs = ageMs !== null ? nowNs - ageMs * 1e6 : nowNs;
          w = seeding
            ? { enteredNs: fromPacketNs, estimated: ageMs !== null, poll, ignored: false }
            : { enteredNs: Math.min(nowNs, Math.max(sinceNs, fromPacketNs)), estimated: false, poll, ignored: false };
          this.waiting.set(cookie, w);
        }
        w.poll = poll;
        if (w.ignored || nowNs - w.enteredNs < thresholdNs) return;
        s = t.add(cookie, sock, null, w.estimated, w.enteredNs);
        this.waiting.delete(cookie);
        fresh.push(s);
      }
      let owners = found.get(s);
      if (!owners) found.set(s, (owners = []));
      const owner = ownerOf(sock, this.scanner.strings, this.scanner.cgroups);
      if (owner && !owners.some((o) => sameOwner(o, owner))) owners.push(owner);
    }, pids);
    if (this.ended) return;
    for (const s of t.slots()) {
      const owners = found.get(s);
      if (!owners) this.resolve(s);
      else if (!sameOwners(owners, t.owners(s))) t.setOwners(s, owners);
    }
    for (const s of fresh) {
      const owners = found.get(s)!;
      if (owners.length) t.setOwners(s, owners);
      if (!this.matches(owners)) {
        this.waiting.set(t.cookieKey(s), { enteredNs: t.enteredNs(s), estimated: false, poll, ignored: true });
        t.remove(s);
        continue;
      }
      t.report(s);
      this.emit(s);
    }
    for (const [cookie, w] of this.waiting) if (w.poll !== poll) this.waiting.delete(cookie); // left CLOSE_WAIT
  }

  /** A leak the poll did not find in CLOSE_WAIT any more. */
  private resolve(s: number): void {
    const t = this.leaks;
    const record: ResolvedRecord = { type: 'resolved', cookie: cookieText(t.cookieKey(s)), local: t.local(s), remote: t.remote(s), closedBy: null, how: 'gone', heldMs: this.ageMs(s) };
    t.remove(s);
    this.emit(record);
  }

  /** Stops polling; the iterator ends after the records already produced. */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.firstStepOver();
    clearTimeout(this.timer);
    await this.polling?.catch(() => undefined);
    this.scanner.close();
    this.wake?.();
  }
}

/**
 * The read side of a leak engine's open leaks, written once for both engines
 * (leak-watcher.ts, scan-watcher.ts): each keeps its leaks in a LeakTable
 * (leak-table.ts), reads them the same way and hands its records out through
 * the same async iterator; only how they get there differs.
 */
import type { CgroupFields } from '../scan/cgroups';
import { monotonicNowNs } from '../clock';
import { cookieKey, type CookieKey } from '../cookie-map';
import { Fifo } from '../fifo';
import { UsageError } from '../errors';
import { LeakTable } from './leak-table';
import type { ProcessTree } from './process-tree';
import type { Owner } from '../sockets';
import type { LeakRecord, WatchRecord } from '../watch-records';

/** A cookie given as text or as a key, as a key. */
export function keyOf(cookie: CookieKey): CookieKey {
  return typeof cookie === 'string' ? cookieKey(cookie) : cookie;
}

/** An engine's open leaks, read from its table; a leak is open once reported (its slot no longer tentative) until resolved or evicted. */
export abstract class OpenLeaks implements AsyncIterable<WatchRecord> {
  protected readonly leaks = new LeakTable();
  /** Set by close(): the iterator ends once the records already made are taken. */
  protected ended = false;
  /** What stopped the engine; the iterator throws it once the records before it are taken. */
  protected failure: unknown;
  /** Wakes the iterator waiting for a record (set while it waits). */
  protected wake: (() => void) | undefined;
  /** followTree: the tree and its members (set by the engine's constructor). */
  protected tree: ProcessTree | undefined;

  /** followTree: adds `pid` to the tree; add it before it forks, or its children escape. */
  addTreeRoot(pid: number): void {
    if (!this.tree) throw new UsageError('addTreeRoot() needs the followTree option');
    this.tree.addRoot(pid);
  }

  /** followTree: processes of the tree alive now. Each call also remembers them as members. */
  treePids(): number[] {
    return this.tree?.alive() ?? [];
  }

  /** followTree: every process seen in the tree since the start (alive or not), as far as polling saw. */
  treeMembers(): ReadonlySet<number> {
    return this.tree?.members() ?? new Set();
  }

  /** Records to hand out, in order: a leak as its slot (its record is made when taken), the rest made. */
  protected readonly out = new Fifo<WatchRecord | number>();

  /** Queues a record (or a leak's slot) and wakes the iterator. */
  protected emit(record: WatchRecord | number): void {
    this.out.push(record);
    this.wake?.();
  }

  /** The next record to hand out, made now if it is a leak; undefined when none waits. */
  protected next(): WatchRecord | undefined {
    const item = this.out.shift();
    if (typeof item !== 'number') return item;
    const record = this.leaks.record(item, this.ageMs(item));
    this.leaks.taken(item);
    return record;
  }

  /** Stops the engine; the iterator ends after the records already produced. */
  abstract close(): Promise<void>;

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchRecord> {
    try {
      for (;;) {
        const next = this.next();
        if (next) {
          yield next;
          continue;
        }
        if (this.failure) throw this.failure;
        if (this.ended) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
      }
    } finally {
      await this.close();
    }
  }

  /** Leaks currently open (reported and not resolved). */
  current(): LeakRecord[] {
    return [...this.leaks.slots()].map((s) => this.leaks.record(s, this.ageMs(s)));
  }

  /** Open leaks' cookies in report order, listed now and pulled lazily (leaks gone meanwhile are skipped). */
  openCookies(): Iterable<CookieKey> {
    return this.leaks.openCookies();
  }

  /** The oldest-reported open leak; undefined when none is open. */
  oldestReported(): CookieKey | undefined {
    const s = this.leaks.first();
    return s < 0 ? undefined : this.leaks.cookieKey(s);
  }

  /**
   * Calls `each` for every holder of every open leak (pid and comm, no object
   * made; `first` is false for a leak's second holder on), and with pid -1 for
   * a leak without one: what per-process and per-container counts read.
   */
  forEachHolder(each: (pid: number, comm: string, first: boolean, place: CgroupFields | undefined) => void): void {
    const t = this.leaks;
    for (const s of t.slots()) {
      const n = t.ownerCount(s);
      if (n === 0) each(-1, '', true, undefined);
      for (let i = 0; i < n; i++) each(t.ownerPidAt(s, i), t.ownerCommAt(s, i), i === 0, t.ownerPlaceAt(s, i));
    }
  }

  /** Open leaks per remote endpoint (see LeakTable.countByRemote()). */
  countByRemote(): Map<string, number> {
    return this.leaks.countByRemote();
  }

  /** The earliest CLOCK_MONOTONIC ns an open leak entered CLOSE_WAIT; undefined when none is open. */
  oldestEnteredNs(): number | undefined {
    let min: number | undefined;
    for (const s of this.leaks.slots()) min = Math.min(min ?? Infinity, this.leaks.enteredNs(s));
    return min;
  }

  /** Leaks open now: how many. */
  get size(): number {
    return this.leaks.size;
  }

  /** One open leak (cookie as text or cookieKey()) as a full record, made now; undefined when it is not (or no longer) open. */
  leak(cookie: CookieKey): LeakRecord | undefined {
    const s = this.slotOf(cookie);
    return s < 0 ? undefined : this.leaks.record(s, this.ageMs(s));
  }

  /** The holders of an open leak now; undefined when it is not open. */
  owners(cookie: CookieKey): readonly Owner[] | undefined {
    const s = this.slotOf(cookie);
    return s < 0 ? undefined : this.leaks.owners(s);
  }

  /** When an open leak entered CLOSE_WAIT, CLOCK_MONOTONIC ns (estimated for pre-existing ones); undefined when it is not open. */
  enteredNs(cookie: CookieKey): number | undefined {
    const s = this.slotOf(cookie);
    return s < 0 ? undefined : this.leaks.enteredNs(s);
  }

  /** The slot of a reported, open leak; -1 otherwise. */
  protected slotOf(cookie: CookieKey): number {
    const s = this.leaks.slotOf(keyOf(cookie));
    return s >= 0 && !this.leaks.isTentative(s) ? s : -1;
  }

  /** How long a slot's leak has been in CLOSE_WAIT, in ms, now. */
  protected ageMs(slot: number): number {
    return Math.max(0, Math.round((monotonicNowNs() - this.leaks.enteredNs(slot)) / 1e6));
  }
}

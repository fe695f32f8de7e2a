/**
 * The agent's per-socket state: which CLOSE_WAIT leaks are open now, bounded.
 *
 * The leak engine keeps each leak's details (compactly, see leak-watcher.ts);
 * this index keeps only which leaks the agent's records have announced, in
 * report order: one Set entry per leak (~30 bytes: cookies are kept as
 * numbers, cookieKey()). At `maxSockets` the
 * oldest-reported leak is evicted (counted) from here and from the engine,
 * whose kernel map then forgets it; resolved leaks leave at once.
 */
import { cookieKey, type CookieKey } from '../close-wait-scan';
import { monotonicNowNs } from '../clock';
import type { LeakRecord, WatchRecord } from '../leak-watcher';
import type { Owner, SocketInfo } from '../sockets';

/** Where the index reads leaks' details: the engine (LeakWatcher, PortAwareWatcher). */
export interface LeakSource {
  /** The open leak as a full record; undefined when the engine no longer has it. */
  leak(cookie: CookieKey): LeakRecord | undefined;
  /** Its holders now; undefined when the engine no longer has it. */
  owners(cookie: CookieKey): readonly Owner[] | undefined;
  /** CLOCK_MONOTONIC ns it entered CLOSE_WAIT; undefined when the engine no longer has it. */
  enteredNs(cookie: CookieKey): number | undefined;
  /** The index dropped it: the engine stops following it. */
  evict(cookie: CookieKey): void;
}

/** Leaked sockets held by one process (a socket held by two processes counts for each). */
export interface ProcessLeaks {
  /** Process id as a label value; `other` for the sum beyond the top K, `none` for leaks without a known holder. */
  pid: string;
  comm: string;
  count: number;
}

export class LeakIndex {
  /** Cookies; insertion order is report order: the first entry is the oldest reported. */
  private readonly entries = new Set<CookieKey>();
  private evicted = 0;

  /** `maxSockets`: the most leaks tracked at once; beyond it the oldest reported is evicted. */
  constructor(
    private readonly maxSockets: number,
    private readonly source: LeakSource,
  ) {}

  /** Applies one engine record. */
  apply(record: WatchRecord): void {
    switch (record.type) {
      case 'leak': {
        const key = cookieKey(record.cookie);
        this.entries.delete(key);
        this.entries.add(key);
        while (this.entries.size > this.maxSockets) {
          const oldest = this.entries.values().next();
          if (oldest.done) break;
          this.entries.delete(oldest.value);
          this.source.evict(oldest.value);
          this.evicted++;
        }
        return;
      }
      case 'resolved':
        this.entries.delete(cookieKey(record.cookie));
        return;
      case 'fd-closed': // the engine updated the owners it keeps
        return;
    }
  }

  /** Leaks tracked now. */
  get size(): number {
    return this.entries.size;
  }

  /** Leaks dropped because `maxSockets` was reached. */
  get evictions(): number {
    return this.evicted;
  }

  /** The open leaks as sockets with their age now, oldest reported first; made one by one, as iterated. */
  *sockets(): Generator<SocketInfo> {
    for (const cookie of this.entries) {
      const record = this.source.leak(cookie);
      if (!record) continue; // resolved in the engine, its record still on the way
      const { type: _type, ...socket } = record;
      yield socket;
    }
  }

  /** Age in ms of the longest-held open leak; 0 when there is none. */
  oldestAgeMs(): number {
    const nowNs = monotonicNowNs();
    let entered = nowNs;
    for (const cookie of this.entries) entered = Math.min(entered, this.source.enteredNs(cookie) ?? nowNs);
    return Math.max(0, Math.round((nowNs - entered) / 1e6));
  }

  /**
   * Leaks per holding process, the `top` largest, then one `other` entry
   * summing the rest (present only when there is a rest): bounded label sets.
   */
  byProcess(top: number): ProcessLeaks[] {
    const counts = new Map<number, ProcessLeaks>(); // by pid; -1: no holder
    for (const cookie of this.entries) {
      const owners = this.source.owners(cookie);
      if (!owners) continue;
      if (owners.length === 0) {
        bump(counts, -1, '(no process)');
        continue;
      }
      const first = owners[0]!;
      if (owners.length === 1) bump(counts, first.pid, first.comm);
      else for (const o of new Map(owners.map((o) => [o.pid, o])).values()) bump(counts, o.pid, o.comm); // each process once
    }
    const sorted = [...counts.values()].sort((a, b) => b.count - a.count || Number(a.pid) - Number(b.pid));
    const shown = sorted.slice(0, top);
    const rest = sorted.slice(top).reduce((n, p) => n + p.count, 0);
    if (sorted.length > top) shown.push({ pid: 'other', comm: 'other', count: rest });
    return shown;
  }
}

function bump(counts: Map<number, ProcessLeaks>, pid: number, comm: string): void {
  const p = counts.get(pid);
  if (p) p.count++;
  else counts.set(pid, { pid: pid < 0 ? 'none' : String(pid), comm, count: 1 });
}

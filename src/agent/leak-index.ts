/**
 * The agent's view of the open CLOSE_WAIT leaks, bounded.
 *
 * The leak engine keeps each leak in one slot of its table (leak-table.ts,
 * ~130 bytes a leak, in report order); this index keeps nothing per leak: it
 * reads the engine, and enforces `maxSockets`: beyond it the oldest-reported
 * leak is evicted (counted) from the engine, whose kernel map then forgets it.
 * Resolved leaks leave the engine at once.
 */
import { monotonicNowNs } from '../clock';
import type { WatchRecord } from '../watch-records';
import type { SocketInfo } from '../sockets';
import type { LeakEngine } from '../watch/engine-api';

/** Where the index reads leaks: the engine (LeakWatcher, PortAwareWatcher). */
export type LeakSource = Pick<LeakEngine, 'size' | 'leak' | 'openCookies' | 'oldestReported' | 'forEachHolder' | 'countByRemote' | 'oldestEnteredNs' | 'evict'>;

/** Leaked sockets held by one process (a socket held by two processes counts for each). */
export interface ProcessLeaks {
  /** Process id as a label value; `other` for the sum beyond the top K, `none` for leaks without a known holder. */
  pid: string;
  comm: string;
  count: number;
}

/** Leaked sockets held in one container (a socket held from two containers counts for each). */
export interface ContainerLeaks {
  /** Container ID (64 hex digits) as a label value; `other` for the sum beyond the top K, `none` for holders in no container (or no holder). */
  container: string;
  /** The pod UID its cgroup names; '' when none (and for `other`, `none`). */
  podUid: string;
  count: number;
}

/** Leaked sockets to one remote endpoint. */
export interface RemoteLeaks {
  /** `a.b.c.d:port`, `[v6]:port`; `other` for the sum beyond the top K. */
  remote: string;
  count: number;
}

export class LeakIndex {
  private evicted = 0;

  /** `maxSockets`: the most leaks tracked at once; beyond it the oldest reported is evicted. */
  constructor(
    private readonly maxSockets: number,
    private readonly source: LeakSource,
  ) {}

  /** Applies one engine record: a new leak may push the oldest out. */
  apply(record: WatchRecord): void {
    if (record.type !== 'leak') return; // resolved ones already left the engine; fd-closed changed its owners there
    while (this.source.size > this.maxSockets) {
      const oldest = this.source.oldestReported();
      if (oldest === undefined) break;
      this.source.evict(oldest);
      this.evicted++;
    }
  }

  /** Leaks tracked now. */
  get size(): number {
    return this.source.size;
  }

  /** Leaks dropped because `maxSockets` was reached. */
  get evictions(): number {
    return this.evicted;
  }

  /** The open leaks as sockets with their age now, oldest reported first; made one by one, as iterated. */
  *sockets(): Generator<SocketInfo> {
    for (const cookie of this.source.openCookies()) {
      const record = this.source.leak(cookie);
      if (!record) continue; // resolved since the iteration started
      const { type: _type, ...socket } = record;
      yield socket;
    }
  }

  /** Age in ms of the longest-held open leak; 0 when there is none. */
  oldestAgeMs(): number {
    const nowNs = monotonicNowNs();
    return Math.max(0, Math.round((nowNs - (this.source.oldestEnteredNs() ?? nowNs)) / 1e6));
  }

  /**
   * Leaks per holding process, the `top` largest, then one `other` entry
   * summing the rest (present only when there is a rest): bounded label sets.
   */
  byProcess(top: number): ProcessLeaks[] {
    const counts = new Map<number, ProcessLeaks>(); // by pid; -1: no holder
    const leakPids: number[] = []; // this leak's processes so far (one array for all): a process holding it twice counts once
    this.source.forEachHolder((pid, comm, first) => {
      if (first) leakPids.length = 0;
      else if (leakPids.includes(pid)) return;
      leakPids.push(pid);
      const p = counts.get(pid);
      if (p) p.count++;
      else counts.set(pid, { pid: pid < 0 ? 'none' : String(pid), comm: pid < 0 ? '(no process)' : comm, count: 1 });
    });
    const sorted = [...counts.values()].sort((a, b) => b.count - a.count || Number(a.pid) - Number(b.pid));
    const shown = sorted.slice(0, top);
    const rest = sorted.slice(top).reduce((n, p) => n + p.count, 0);
    if (sorted.length > top) shown.push({ pid: 'other', comm: 'other', count: rest });
    return shown;
  }

  /**
   * Leaks per container of their holders (from the cgroups the leak engine
   * read), the `top` largest, then `other` summing the rest: bounded label sets.
   */
  byContainer(top: number): ContainerLeaks[] {
    const counts = new Map<string, ContainerLeaks>();
    const leakContainers: string[] = []; // this leak's containers so far: a container holding it twice counts once
    this.source.forEachHolder((_pid, _comm, first, place) => {
      if (first) leakContainers.length = 0;
      const container = place?.containerId ?? 'none';
      if (leakContainers.includes(container)) return;
      leakContainers.push(container);
      const c = counts.get(container);
      if (c) c.count++;
      else counts.set(container, { container, podUid: place?.podUid ?? '', count: 1 });
    });
    const sorted = [...counts.values()].sort((a, b) => b.count - a.count || (a.container < b.container ? -1 : 1));
    const shown = sorted.slice(0, top);
    if (sorted.length > top) shown.push({ container: 'other', podUid: '', count: sorted.slice(top).reduce((n, c) => n + c.count, 0) });
    return shown;
  }

  /** Leaks per remote endpoint, the `top` largest, then one `other` entry summing the rest (present only when there is a rest). */
  byRemote(top: number): RemoteLeaks[] {
    const sorted = [...this.source.countByRemote()].map(([remote, count]) => ({ remote, count })).sort((a, b) => b.count - a.count || (a.remote < b.remote ? -1 : 1));
    const shown = sorted.slice(0, top);
    if (sorted.length > top) shown.push({ remote: 'other', count: sorted.slice(top).reduce((n, r) => n + r.count, 0) });
    return shown;
  }
}

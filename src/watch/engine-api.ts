/** The API both leak engines give (LeakWatcher's: see there for each member), apart from how they are made. */
import type { CgroupFields } from '../scan/cgroups';
import type { TraceCounters } from '../events';
import type { CookieKey } from '../cookie-map';
import type { Owner } from '../sockets';
import type { TracerHooks } from '../trace/tracer';
import type { LeakRecord, WatchRecord } from '../watch-records';

/** The leak engines' common API. */
export interface LeakEngine extends AsyncIterable<WatchRecord> {
  readonly firstStep: Promise<void>;
  /** Open leaks now. */
  readonly size: number;
  current(): LeakRecord[];
  /** The open leak as a full record; undefined when the engine no longer has it. */
  leak(cookie: CookieKey): LeakRecord | undefined;
  owners(cookie: CookieKey): readonly Owner[] | undefined;
  enteredNs(cookie: CookieKey): number | undefined;
  /** Open leaks' cookies, oldest reported first, listed when the iteration starts; pulled lazily. */
  openCookies(): Iterable<CookieKey>;
  /** The oldest-reported open leak; undefined when none is open. */
  oldestReported(): CookieKey | undefined;
  /** Every holder of every open leak (`first`: a leak's first holder), pid -1 for a leak without one. */
  forEachHolder(each: (pid: number, comm: string, first: boolean, place: CgroupFields | undefined) => void): void;
  /** Open leaks per remote endpoint. */
  countByRemote(): Map<string, number>;
  /** Earliest CLOCK_MONOTONIC ns an open leak entered CLOSE_WAIT; undefined when none is open. */
  oldestEnteredNs(): number | undefined;
  /** Stops following an open leak without a record (a bounded consumer dropped it). */
  evict(cookie: CookieKey): void;
  addTreeRoot(pid: number): void;
  treePids(): number[];
  treeMembers(): ReadonlySet<number>;
  /** How the tracer hooks syscalls; undefined without one. */
  hooks(): TracerHooks | undefined;
  activeCloses(): Buffer;
  counters(): TraceCounters;
  flush(): Promise<void>;
  close(): Promise<void>;
}


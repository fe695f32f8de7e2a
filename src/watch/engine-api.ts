/** The API both leak engines give (LeakWatcher's: see there for each member), apart from how they are made. */
import type { TraceCounters } from '../events';
import type { CookieKey } from '../cookie-map';
import type { Owner } from '../sockets';
import type { TracerHooks } from '../trace/tracer';
import type { LeakRecord, WatchRecord } from '../watch-records';

/** The leak engines' common API. */
export interface LeakEngine extends AsyncIterable<WatchRecord> {
  readonly firstStep: Promise<void>;
  readonly size: number;
  current(): LeakRecord[];
  leak(cookie: CookieKey): LeakRecord | undefined;
  owners(cookie: CookieKey): readonly Owner[] | undefined;
  enteredNs(cookie: CookieKey): number | undefined;
  openCookies(): Iterable<CookieKey>;
  oldestReported(): CookieKey | undefined;
  forEachHolder(each: (pid: number, comm: string, first: boolean) => void): void;
  countByRemote(): Map<string, number>;
  oldestEnteredNs(): number | undefined;
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


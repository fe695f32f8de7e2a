/**
 * What `watch`, `run`, `checkSocketLeaks` and the agent read leaks from: the
 * tracer's engine (leak-watcher.ts), or, where the tracer cannot load (no
 * usable BPF, or its core programs refused), successive scans
 * (scan-watcher.ts), which see the same leaks at poll granularity without
 * their creators. startLeakEngine() picks one and notes a fallback.
 */
import type { CookieKey } from './close-wait-scan';
import { KernelUnsupportedError, PermissionError } from './errors';
import type { TraceCounters } from './events';
import { isForcedRefused } from './fallbacks';
import { LeakWatcher, validate, type WatchOptions } from './leak-watcher';
import { bpfUnusable, canReadEveryProcess, requireProcess } from './preflight';
import { ScanWatcher } from './scan-watcher';
import type { Owner } from './sockets';
import type { TracerHooks } from './tracer';
import type { LeakRecord, WatchRecord } from './watch-records';

/** The leak engines' common API (LeakWatcher's; see there for each member). */
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

/**
 * The tracer's engine, or the scans' where BPF is unusable (SOCKLEAK_REFUSE=bpf,
 * no CAP_BPF, no BTF) or the kernel refuses the tracer, as long as /proc is
 * readable. Throws the typed errors of bad options, and PermissionError when
 * neither way is open (not root).
 */
export function startLeakEngine(options: WatchOptions = {}): LeakEngine {
  validate(options);
  if (options.pid !== undefined) requireProcess(options.pid);
  const why = bpfUnusable(options.btfPath, isForcedRefused('bpf'));
  if (why) return new ScanWatcher(options, { what: 'bpf', why });
  try {
    return new LeakWatcher(options);
  } catch (err) {
    // The kernel refused the tracer: lockdown's EPERM reads as a permission error.
    const refused = err instanceof KernelUnsupportedError || (err instanceof PermissionError && canReadEveryProcess());
    if (!refused) throw err;
    return new ScanWatcher(options, { what: 'tracer', why: err.message });
  }
}

/**
 * Starts watching for CLOSE_WAIT leaks: with the tracer where the kernel lets
 * it load, else by successive scans (creators unknown; noted as a fallback).
 * Throws a SockleakError subclass on bad options or environment.
 */
export function watch(options: WatchOptions = {}): LeakEngine {
  return startLeakEngine(options);
}

/**
 * What `watch`, `run`, `checkSocketLeaks` and the agent read leaks from: the
 * tracer's engine (leak-watcher.ts), or, where the tracer cannot load (no
 * usable BPF, or its core programs refused), successive scans
 * (scan-watcher.ts), which see the same leaks at poll granularity without
 * their creators. startLeakEngine() picks one and notes a fallback.
 */
import { KernelUnsupportedError, PermissionError } from '../errors';
import { isForcedRefused } from '../kernel/fallbacks';
import { LeakWatcher, validate, type WatchOptions } from './leak-watcher';
import { bpfUnusable, canReadEveryProcess, requireProcess } from '../kernel/preflight';
import { ScanWatcher } from './scan-watcher';
import type { LeakEngine } from './engine-api';

export type { LeakEngine } from './engine-api';

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

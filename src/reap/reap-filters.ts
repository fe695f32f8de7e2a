/**
 * What `sockleak reap` may touch: the filters, their defaults, and the refusals
 * that keep one careless command from tearing down a service's live traffic.
 */
import { UsageError } from '../errors';
import { REAP_LIMITS } from '../generated/layout';
import { parseRemotePattern, type RemotePattern } from '../remote-pattern';
import type { TcpState } from '../tcp-states';

/** Which sockets to reap. At least one of olderThanMs, pid or remote is required. */
export interface ReapFilters {
  /**
   * States to reap; default ['CLOSE_WAIT']. ESTABLISHED and LISTEN are refused
   * unless allowEstablished / allowListen; TIME_WAIT (no owner, gone within
   * 60 s by itself) and CLOSE (nothing left to release) always are.
   */
  states?: readonly TcpState[];
  /**
   * Only sockets that have processed no packet for at least this long (ms),
   * from the kernel's per-socket timestamp: for CLOSE_WAIT, how long it has
   * been in CLOSE_WAIT (the age snapshot shows).
   */
  olderThanMs?: number;
  /** Only sockets this process holds. */
  pid?: number;
  /** Only sockets to these peers: the grammar of remote-pattern.ts (`10.0.3.7:9000`, `10.0.0.0/8`, `[fd00::7]:9000`, `*:5432`). */
  remote?: string;
  /** At most this many sockets (the oldest first); default 1000, at most 65536. */
  max?: number;
  /** Allow ESTABLISHED in `states` (live connections: their owner loses them mid-use). */
  allowEstablished?: boolean;
  /** Allow LISTEN in `states` (the server stops accepting on that socket). */
  allowListen?: boolean;
}

/** The filters as applied, defaults filled in: what the report and the audit line show. */
export interface AppliedReapFilters {
  states: TcpState[];
  olderThanMs: number | null;
  pid: number | null;
  remote: string | null;
  max: number;
  allowEstablished: boolean;
  allowListen: boolean;
}

/** Default for `max`. */
export const REAP_DEFAULT_MAX = 1000;
/** Most sockets one run may name: SL_REAP_MAX in bpf/sockleak.h, the bound of the request map. */
export const REAP_MAX = REAP_LIMITS.MAX;

const NEVER: Partial<Record<TcpState, string>> = {
  TIME_WAIT: 'TIME_WAIT sockets have no owner to fix and leave by themselves within 60 s',
  CLOSE: 'CLOSE sockets are already torn down; nothing is left to release',
  NEW_SYN_RECV: 'NEW_SYN_RECV entries are half-open requests, not sockets',
  UNKNOWN: 'unknown state',
};

/** Validates and completes the filters; throws UsageError with the reason for every refusal. */
export function applyReapFilters(filters: ReapFilters): { applied: AppliedReapFilters; remote: RemotePattern | null } {
  const states: TcpState[] = [...new Set<TcpState>(filters.states ?? ['CLOSE_WAIT'])];
  if (states.length === 0) throw new UsageError('reap: name at least one state (default close-wait)');
  for (const state of states) {
    const never = NEVER[state];
    if (never) throw new UsageError(`reap refuses ${state}: ${never}`);
    if (state === 'ESTABLISHED' && !filters.allowEstablished) {
      throw new UsageError('reap refuses ESTABLISHED sockets (live connections) unless --allow-established is given too');
    }
    if (state === 'LISTEN' && !filters.allowListen) {
      throw new UsageError('reap refuses LISTEN sockets (a server would stop accepting) unless --allow-listen is given too');
    }
  }
  const { olderThanMs, pid } = filters;
  if (olderThanMs !== undefined && (!Number.isSafeInteger(olderThanMs) || olderThanMs < 0)) {
    throw new UsageError(`olderThanMs must be a whole number of ms >= 0, got ${olderThanMs}`);
  }
  if (pid !== undefined && (!Number.isInteger(pid) || pid < 1)) throw new UsageError(`pid must be a positive integer, got ${pid}`);
  const max = filters.max ?? REAP_DEFAULT_MAX;
  if (!Number.isInteger(max) || max < 1 || max > REAP_MAX) throw new UsageError(`--max must be an integer in 1..${REAP_MAX}, got ${max}`);
  const remote = filters.remote !== undefined ? parseRemotePattern(filters.remote, { flag: '--remote' }) : null;
  if (!(olderThanMs !== undefined && olderThanMs > 0) && pid === undefined && !remote?.narrows) {
    throw new UsageError(
      `refusing to reap every ${states.join('/')} socket on the machine${remote ? ` (--remote '${remote.text}' is every peer)` : ''}: narrow it with --older-than, --pid or --remote`,
    );
  }
  return {
    applied: {
      states,
      olderThanMs: olderThanMs ?? null,
      pid: pid ?? null,
      remote: remote?.text ?? null,
      max,
      allowEstablished: filters.allowEstablished === true,
      allowListen: filters.allowListen === true,
    },
    remote,
  };
}

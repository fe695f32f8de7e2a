/** `snapshot()`: every TCP socket now (CLOSE_WAIT by default), with owners, ages and keepalive. */
import { filtersCgroup, inCgroup, type CgroupFilter } from '../cgroup-path';
import { UsageError } from '../errors';
import { decodeScan, SocketScanner, type RawScan } from './scan';
import { snapshotJson } from './snapshot-json';
import type { Snapshot } from '../sockets';
import type { TcpState } from '../tcp-states';

export interface SnapshotOptions {
  /** States to include; default ['CLOSE_WAIT']; 'all' for every state. */
  states?: readonly TcpState[] | 'all';
  /** Only sockets this process holds. */
  pid?: number;
  /** Only sockets held from this cgroup (or under it) and container (`--cgroup`, `--container`). */
  where?: CgroupFilter;
  /** Only sockets known to have been in their state at least this long (ms). */
  olderThanMs?: number;
  btfPath?: string;
}

/** Takes a snapshot with the BPF iterators: sockets that predate sockleak included, ages estimated. */
export async function snapshot(options: SnapshotOptions = {}): Promise<Snapshot> {
  checkOptions(options);
  const scanner = new SocketScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
  try {
    return snapshotOf(await snapshotScan(scanner, options), options);
  } finally {
    scanner.close();
  }
}

/** The one scan of a snapshot, and when it was taken (see snapshotScan()). */
export interface SnapshotScan {
  takenAt: string;
  raw: RawScan;
}

/**
 * The scan a snapshot with these options needs (their states and pid), on
 * `scanner`, which stays open: the CLI starts the default one before it has
 * parsed its arguments (cli/head-start.ts), then keeps it if they ask for the
 * same (sameScan()).
 */
export async function snapshotScan(scanner: SocketScanner, options: SnapshotOptions): Promise<SnapshotScan> {
  const states = scanStates(options);
  const takenAt = new Date().toISOString();
  const raw = await scanner.scanRaw({
    ...(states && { states }),
    ...(options.pid !== undefined && { pid: options.pid }),
  });
  return { takenAt, raw };
}

/** True if snapshots with options `a` and `b` need the same scan. */
export function sameScan(a: SnapshotOptions, b: SnapshotOptions): boolean {
  const [sa, sb] = [scanStates(a), scanStates(b)];
  const sameStates = sa === undefined || sb === undefined ? sa === sb : sa.length === sb.length && sa.every((s) => sb.includes(s));
  return sameStates && a.pid === b.pid;
}

/** A snapshot from its scan: decoded, and filtered by age. */
export function snapshotOf({ takenAt, raw }: SnapshotScan, options: SnapshotOptions): Snapshot {
  checkOptions(options);
  const { olderThanMs } = options;
  let sockets = [...decodeScan(raw).values()];
  if (olderThanMs !== undefined) sockets = sockets.filter((s) => s.stateAgeMs !== null && s.stateAgeMs >= olderThanMs);
  const { where } = options;
  if (where && filtersCgroup(where)) sockets = sockets.filter((s) => s.owners.some((o) => inCgroup(where, o)));
  return { takenAt, sockets, lost: 0 };
}

/**
 * A snapshot from its scan as the JSON text of the result (`{"takenAt","sockets","lost"}`
 * and a newline) as UTF-8, in chunks, made from the scan's records without a SocketInfo
 * per socket (snapshot-json.ts): what `snapshot --json` prints.
 */
export function snapshotJsonOf({ takenAt, raw }: SnapshotScan, options: SnapshotOptions): Iterable<Buffer> {
  checkOptions(options);
  return snapshotJson(raw, takenAt, options.olderThanMs, options.where);
}

/** The states a snapshot scans; undefined for all. */
function scanStates(options: SnapshotOptions): readonly TcpState[] | undefined {
  return options.states === 'all' ? undefined : (options.states ?? ['CLOSE_WAIT']);
}

function checkOptions({ olderThanMs }: SnapshotOptions): void {
  if (olderThanMs !== undefined && (!Number.isFinite(olderThanMs) || olderThanMs < 0)) {
    throw new UsageError(`olderThanMs must be >= 0, got ${olderThanMs}`);
  }
}

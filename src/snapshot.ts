/** `snapshot()`: every TCP socket now (CLOSE_WAIT by default), with owners, ages and keepalive. */
import { UsageError } from './errors';
import { decodeScan, SocketScanner, type RawScan } from './scan';
import { snapshotJson } from './snapshot-json';
import type { Snapshot } from './sockets';
import type { TcpState } from './tcp-states';

export interface SnapshotOptions {
  /** States to include; default ['CLOSE_WAIT']; 'all' for every state. */
  states?: readonly TcpState[] | 'all';
  /** Only sockets this process holds. */
  pid?: number;
  /** Only sockets known to have been in their state at least this long (ms). */
  olderThanMs?: number;
  btfPath?: string;
}

/** Takes a snapshot with the BPF iterators: sockets that predate sockleak included, ages estimated. */
export async function snapshot(options: SnapshotOptions = {}): Promise<Snapshot> {
  checkOptions(options);
  return snapshotWith(new SocketScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {}), options);
}

/**
 * snapshot() with a scanner the caller opened, and closes it: the CLI opens
 * one before it has even parsed its arguments, so that the BPF load overlaps
 * that (cli/head-start.ts). `options.btfPath` is the scanner's business.
 */
export async function snapshotWith(scanner: SocketScanner, options: SnapshotOptions = {}): Promise<Snapshot> {
  const { takenAt, raw } = await scanOnce(scanner, options);
  const { olderThanMs } = options;
  let sockets = [...decodeScan(raw).values()];
  if (olderThanMs !== undefined) sockets = sockets.filter((s) => s.stateAgeMs !== null && s.stateAgeMs >= olderThanMs);
  return { takenAt, sockets, lost: 0 };
}

/**
 * snapshotWith() as the JSON text of its result (`{"takenAt","sockets","lost"}`
 * and a newline) as UTF-8, in chunks, made from the scan's records without a SocketInfo
 * per socket (snapshot-json.ts): what `snapshot --json` prints.
 */
export async function snapshotJsonWith(scanner: SocketScanner, options: SnapshotOptions = {}): Promise<Iterable<Buffer>> {
  const { takenAt, raw } = await scanOnce(scanner, options);
  return snapshotJson(raw, takenAt, options.olderThanMs);
}

/** The one scan of a snapshot, and when it was taken; closes the scanner. */
async function scanOnce(scanner: SocketScanner, options: SnapshotOptions): Promise<{ takenAt: string; raw: RawScan }> {
  try {
    checkOptions(options);
    const states = options.states === 'all' ? undefined : (options.states ?? ['CLOSE_WAIT']);
    const takenAt = new Date().toISOString();
    const raw = await scanner.scanRaw({
      ...(states && { states }),
      ...(options.pid !== undefined && { pid: options.pid }),
    });
    return { takenAt, raw };
  } finally {
    scanner.close();
  }
}

function checkOptions({ olderThanMs }: SnapshotOptions): void {
  if (olderThanMs !== undefined && (!Number.isFinite(olderThanMs) || olderThanMs < 0)) {
    throw new UsageError(`olderThanMs must be >= 0, got ${olderThanMs}`);
  }
}

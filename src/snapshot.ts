/** `snapshot()`: every TCP socket now (CLOSE_WAIT by default), with owners, ages and keepalive. */
import { UsageError } from './errors';
import { SocketScanner } from './scan';
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
  const { olderThanMs } = options;
  if (olderThanMs !== undefined && (!Number.isFinite(olderThanMs) || olderThanMs < 0)) {
    throw new UsageError(`olderThanMs must be >= 0, got ${olderThanMs}`);
  }
  const states = options.states === 'all' ? undefined : (options.states ?? ['CLOSE_WAIT']);
  const scanner = new SocketScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
  try {
    const takenAt = new Date().toISOString();
    const found = await scanner.scan({
      ...(states && { states }),
      ...(options.pid !== undefined && { pid: options.pid }),
    });
    let sockets = [...found.values()];
    if (olderThanMs !== undefined) sockets = sockets.filter((s) => s.stateAgeMs !== null && s.stateAgeMs >= olderThanMs);
    return { takenAt, sockets, lost: 0 };
  } finally {
    scanner.close();
  }
}

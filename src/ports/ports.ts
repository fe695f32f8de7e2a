/**
 * `ports()`: ephemeral ports per network namespace now — the range and
 * tcp_tw_reuse of each namespace, TIME_WAIT and ESTABLISHED per destination and
 * per source address, and the ports connect() still has per destination. TIME_WAIT
 * sockets are counted from the socket table (iter/tcp in every namespace that has
 * a process), not from events, so those that predate sockleak are included.
 */
import { NotFoundError, UsageError } from '../errors';
import { readPortSysctls, type PortSysctls } from './port-sysctls';
import { portUsage, type NetnsPorts, type PortSocket } from './port-usage';
import { networkNamespaces, SocketScanner } from '../scan/scan';

/** `sockleak ports --json`. */
export interface PortsSnapshot {
  takenAt: string;
  /** One entry per network namespace that has a process, by inode. */
  netns: NetnsPorts[];
}

export interface PortsOptions {
  /** Only this network namespace (inode, as `readlink /proc/PID/ns/net` shows it). */
  netns?: number;
  btfPath?: string;
  /** Reuse a loaded scanner; by default one is loaded and closed. */
  scanner?: SocketScanner;
  /** Count these sockets, by netns inode, a scan just made (the agent passes the port watcher's), instead of scanning. */
  scanned?: ReadonlyMap<number, Iterable<PortSocket>>;
}

/** Checks a netns inode given by a caller: UsageError if malformed. */
export function validateNetns(netns: number): void {
  if (!Number.isInteger(netns) || netns <= 0 || netns > 0xffffffff) throw new UsageError(`netns must be an inode number (1..4294967295), got ${netns}`);
}

/**
 * Snapshot of ephemeral-port use. Throws UsageError for a malformed `netns`,
 * NotFoundError when no process is in it, and the scanner's typed errors.
 */
export async function ports(options: PortsOptions = {}): Promise<PortsSnapshot> {
  if (options.netns !== undefined) validateNetns(options.netns);
  const spaces = networkNamespaces();
  if (options.netns !== undefined && !spaces.has(options.netns)) {
    throw new NotFoundError(`no network namespace with inode ${options.netns} (no process is in it)`);
  }
  const wanted = [...spaces].filter(([ino]) => options.netns === undefined || ino === options.netns).sort(([a], [b]) => a - b);
  const takenAt = new Date().toISOString();
  let groups: ReadonlyMap<number, Iterable<PortSocket>>;
  let sysctls: Array<PortSysctls | undefined>;
  if (options.scanned) {
    groups = options.scanned;
    sysctls = await Promise.all(wanted.map(([, path]) => readPortSysctls(path)));
  } else {
    const scanner = options.scanner ?? new SocketScanner(options.btfPath !== undefined ? { btfPath: options.btfPath } : {});
    try {
      // One iter/tcp per namespace: every socket of it, owned or not; owners are not needed here.
      const scans = (async () => {
        const out = new Map<number, PortSocket[]>();
        for (const [ino, path] of wanted) {
          const found = await scanner.scanNetns(path);
          if (found) out.set(ino, found); // else: its last process exited meanwhile
        }
        return out;
      })();
      [groups, sysctls] = await Promise.all([scans, Promise.all(wanted.map(([, path]) => readPortSysctls(path)))]);
    } finally {
      if (!options.scanner) scanner.close();
    }
  }
  const result: NetnsPorts[] = [];
  wanted.forEach(([ino], i) => {
    const settings = sysctls[i];
    const found = groups.get(ino) ?? (options.scanned ? [] : undefined);
    if (settings && found) result.push(portUsage(ino, found, settings)); // else: its last process exited meanwhile
  });
  if (options.netns !== undefined && result.length === 0) {
    throw new NotFoundError(`network namespace ${options.netns} went away during the snapshot`);
  }
  return { takenAt, netns: result };
}

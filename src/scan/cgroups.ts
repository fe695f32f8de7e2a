/**
 * The cgroup path of a process (/proc/PID/cgroup's v2 line, or a v1 one on a
 * v1-only host: cgroupPathIn) or the cgroup v2 path of a
 * cgroup id (what bpf_get_current_cgroup_id() returns: the inode number of the
 * cgroup's directory in the cgroup2 mount), with the container and pod it
 * names (cgroup-path.ts).
 */
import { closeSync, openSync, readFileSync, readSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cgroupPlace } from '../cgroup-path';

/** A process's or a socket creator's cgroup, as owners and creators carry it. */
export interface CgroupFields {
  /** cgroup v2 path, from the cgroup2 root (`/system.slice/docker-<id>.scope`); on a v1-only host a v1 one (cgroupPathIn). */
  cgroup: string;
  /** The container ID the path names (64 hex digits). */
  containerId?: string;
  /** The Kubernetes pod UID the path names. */
  podUid?: string;
}

/** A creator's `cgroup` when its cgroup was removed before sockleak named it. */
export const CGROUP_GONE = '(gone)';

/** The fields for a cgroup path: the container and pod only where the path names them. */
export function cgroupFields(path: string): CgroupFields {
  const { containerId, podUid } = cgroupPlace(path);
  return { cgroup: path, ...(containerId !== null && { containerId }), ...(podUid !== null && { podUid }) };
}

/**
 * The cgroup path of process `pid` (cgroupPathIn); null when it is gone or
 * in no cgroup at all.
 */
export function processCgroupPath(pid: number): string | null {
  let text: string;
  let fd = -1;
  try {
    // open, read, close into one buffer: a snapshot reads this for every holding process (readFileSync adds an fstat and a buffer each).
    fd = openSync(`/proc/${pid}/cgroup`, 'r');
    text = CGROUP_BUF.toString('latin1', 0, readSync(fd, CGROUP_BUF, 0, CGROUP_BUF.length, 0));
  } catch {
    return null;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  return cgroupPathIn(text);
}

/** v1 hierarchies that every runtime and systemd place a process in, in the order they are asked. */
const V1_PREFERRED = ['name=systemd', 'pids', 'memory', 'cpu,cpuacct'];

/**
 * The path a /proc/PID/cgroup text places its process at: the cgroup v2 line
 * (`0::PATH`, on v2 and hybrid hosts); on a v1-only host, that of the
 * `name=systemd` hierarchy, else pids, memory or cpu (container runtimes put
 * a container under the same path in each; the first line, often rdma's or
 * misc's, may say `/` of a container's process). null without a line.
 */
export function cgroupPathIn(text: string): string | null {
  const lines = text.split('\n').filter((l) => l.length > 0);
  const hierarchy = (l: string): string => l.slice(l.indexOf(':') + 1, l.indexOf(':', l.indexOf(':') + 1));
  const line =
    lines.find((l) => l.startsWith('0::')) ??
    V1_PREFERRED.map((name) => lines.find((l) => hierarchy(l) === name)).find((l) => l !== undefined) ??
    lines[0];
  if (line === undefined) return null;
  return line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1).replace(/ \(deleted\)$/, '');
}

/** /proc/PID/cgroup is a line per hierarchy (a dozen on v1 hybrids): PATH_MAX covers the paths. */
const CGROUP_BUF = Buffer.alloc(16384);

/** This process's cgroup2 mount point, read once: mounts do not move under a running sockleak. */
let ownMount: string | null | undefined;

/** Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid systems); null without one. */
export function cgroup2Mount(): string | null {
  if (ownMount !== undefined) return ownMount;
  ownMount = null;
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'latin1').split('\n')) {
      // Fields: id parent major:minor root mount-point options [optional...] - fstype source super-options
      const [left, right] = line.split(' - ');
      if (right?.startsWith('cgroup2 ')) return (ownMount = left!.split(' ')[4]!.replace(/\\040/g, ' '));
    }
  } catch {
    // No /proc: no cgroups to name.
  }
  return ownMount;
}

const ofScan = new WeakMap<object, CgroupNames>();

/**
 * The holders' cgroups of one scan (its raw records), read once: every view
 * made from the same scan (snapshot's JSON and its objects) names the same
 * cgroup for a process, even one that moved or exited in between.
 */
export function scanCgroups(scan: object): CgroupNames {
  let names = ofScan.get(scan);
  if (!names) ofScan.set(scan, (names = new CgroupNames()));
  return names;
}

/** Re-walks of the cgroup tree on a missing id, at most one this often: a gone cgroup stays gone. */
const REWALK_MS = 1000;

/**
 * Resolves pids and cgroup ids to CgroupFields, caching what it read. A pid's
 * entry lives as long as this object: callers make one per scan, because a
 * process can move to another cgroup (and a pid be reused) between scans, and
 * checking that costs the same read as resolving again.
 */
export class CgroupNames {
  private readonly byPid = new Map<number, CgroupFields | null>();
  private readonly byPath = new Map<string, CgroupFields>();
  private byId: Map<number, string> | undefined;
  private walkedAt = -Infinity;

  constructor(private readonly root: string | null = cgroup2Mount()) {}

  /** The cgroup of process `pid`; null when it cannot be read (gone, or no cgroup v2). */
  ofPid(pid: number): CgroupFields | null {
    let fields = this.byPid.get(pid);
    if (fields === undefined) {
      const path = processCgroupPath(pid);
      fields = path === null ? null : this.ofPath(path);
      this.byPid.set(pid, fields);
    }
    return fields;
  }

  /** The fields for a path, one object per distinct path. */
  ofPath(path: string): CgroupFields {
    let fields = this.byPath.get(path);
    if (!fields) this.byPath.set(path, (fields = cgroupFields(path)));
    return fields;
  }

  /**
   * The cgroup whose id (directory inode) is `id`; 'gone' when no directory
   * has it (removed since), null when there is no cgroup2 mount to look in.
   */
  ofId(id: number): CgroupFields | 'gone' | null {
    if (this.root === null) return null;
    let path = this.walked().get(id);
    // A path walked earlier may have been removed (or made again: another id) since.
    if (path !== undefined && !this.stillIs(path, id)) path = undefined;
    if (path === undefined && Date.now() - this.walkedAt >= REWALK_MS) path = this.walked(true).get(id);
    return path === undefined ? 'gone' : this.ofPath(path);
  }

  private stillIs(path: string, id: number): boolean {
    try {
      return statSync(join(this.root!, path)).ino === id;
    } catch {
      return false;
    }
  }

  /** id → path of every cgroup under the root, walked once and again on demand. */
  private walked(again = false): Map<number, string> {
    if (this.byId && !again) return this.byId;
    const byId = new Map<number, string>();
    const walk = (dir: string, path: string): void => {
      try {
        byId.set(statSync(dir).ino, path === '' ? '/' : path);
        for (const entry of readdirSync(dir, { withFileTypes: true })) {
          if (entry.isDirectory()) walk(join(dir, entry.name), `${path}/${entry.name}`);
        }
      } catch {
        // Removed while walked: it is gone, and so are its children.
      }
    };
    if (this.root !== null) walk(this.root, '');
    this.walkedAt = Date.now();
    this.byId = byId;
    return byId;
  }
}

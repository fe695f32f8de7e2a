/**
 * The process tree `sockleak run` follows, as a leak watcher sees it: the
 * kernel keeps the tree's live processes (tree.bpf.h, on fork and exit); this
 * remembers every process any poll saw in it, since a process often exits
 * before the leaks it made are reported.
 */
import type { Creator, Owner } from '../sockets';

/** Who keeps the tree's live processes: the tracer (in the kernel), or a /proc poller (proc-tree.ts) without BPF. */
export interface TreeSource {
  treeAdd(pid: number): void;
  treePids(): number[];
}

export class ProcessTree {
  private readonly seen = new Set<number>();

  constructor(private readonly tracer: TreeSource) {}

  /** Adds a root; add it before it forks, or its children escape. */
  addRoot(pid: number): void {
    this.tracer.treeAdd(pid);
    this.seen.add(pid);
  }

  /** The tree's processes alive now; each poll also remembers them as members. */
  alive(): number[] {
    const pids = this.tracer.treePids();
    for (const pid of pids) this.seen.add(pid);
    return pids;
  }

  /** Every process seen in the tree since the start, alive or not, as far as polling saw. */
  members(): ReadonlySet<number> {
    this.alive();
    return this.seen;
  }

  /** Whether a socket is the tree's: held, or created, by one of its members. */
  holdsOrCreated(owners: readonly Owner[], creator: Creator | null): boolean {
    return owners.some((o) => this.seen.has(o.pid)) || (creator !== null && this.seen.has(creator.pid));
  }
}

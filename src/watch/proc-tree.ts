/**
 * A process tree followed from /proc, where the tracer (tree.bpf.h, which sees
 * every fork and exit) cannot load: each poll reads every process's parent and
 * keeps the roots, their descendants, and every process once seen in the tree
 * even after it is reparented (a daemon whose parent exited). What it cannot
 * see: a process that forks and exits between two polls.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { TreeSource } from './process-tree';

/** Parent pid of `pid` from /proc/PID/stat; undefined once it is gone. */
function parentOf(pid: string): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ', 2)[1]);
  } catch {
    return undefined;
  }
}

export class ProcTree implements TreeSource {
  /** The tree's processes as of the last poll (and roots added since). */
  private members = new Set<number>();

  treeAdd(pid: number): void {
    this.members.add(pid);
  }

  /** The tree's processes alive now: members still running, and the children of any of them, to a fixed point. */
  treePids(): number[] {
    const children = new Map<number, number[]>();
    const alive = new Set<number>();
    for (const entry of readdirSync('/proc')) {
      if (entry.charCodeAt(0) < 49 || entry.charCodeAt(0) > 57) continue; // not a pid
      const ppid = parentOf(entry);
      if (ppid === undefined) continue;
      const pid = Number(entry);
      alive.add(pid);
      let list = children.get(ppid);
      if (!list) children.set(ppid, (list = []));
      list.push(pid);
    }
    const found = new Set<number>();
    const queue = [...this.members].filter((pid) => alive.has(pid));
    while (queue.length) {
      const pid = queue.pop()!;
      if (found.has(pid)) continue;
      found.add(pid);
      for (const child of children.get(pid) ?? []) queue.push(child);
    }
    this.members = found;
    return [...found];
  }
}

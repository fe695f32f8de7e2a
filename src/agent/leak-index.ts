/**
 * The agent's per-socket state: the CLOSE_WAIT leaks open now, bounded.
 *
 * It keeps the leak records the engine emitted by reference (the engine keeps
 * the same objects and updates their owners in place), plus one number per
 * socket, so tracking costs ~100 bytes per leak on top of the engine's own
 * record. At `maxSockets` the oldest-reported leak is evicted (and counted);
 * resolved leaks leave at once, so they never take room.
 */
import type { LeakRecord, WatchRecord } from '../leak-watcher';
import type { SocketInfo } from '../sockets';

interface Entry {
  record: LeakRecord;
  /** Unix ms the socket entered CLOSE_WAIT (from the record's age when it was reported). */
  enteredAtMs: number;
}

/** Leaked sockets held by one process (a socket held by two processes counts for each). */
export interface ProcessLeaks {
  /** Process id as a label value; `other` for the sum beyond the top K, `none` for leaks without a known holder. */
  pid: string;
  comm: string;
  count: number;
}

export class LeakIndex {
  /** Insertion order is report order: the first entry is the oldest reported. */
  private readonly entries = new Map<string, Entry>();
  private evicted = 0;

  /** `maxSockets`: the most leaks tracked at once; beyond it the oldest reported is evicted. */
  constructor(private readonly maxSockets: number) {}

  /** Applies one engine record; `nowMs` is when it was received. */
  apply(record: WatchRecord, nowMs: number): void {
    switch (record.type) {
      case 'leak':
        this.entries.delete(record.cookie);
        this.entries.set(record.cookie, { record, enteredAtMs: nowMs - (record.stateAgeMs ?? 0) });
        while (this.entries.size > this.maxSockets) {
          const oldest = this.entries.keys().next();
          if (oldest.done) break;
          this.entries.delete(oldest.value);
          this.evicted++;
        }
        return;
      case 'resolved':
        this.entries.delete(record.cookie);
        return;
      case 'fd-closed': {
        const entry = this.entries.get(record.cookie);
        if (entry) entry.record.owners = record.stillHeldBy;
        return;
      }
    }
  }

  /** Leaks tracked now. */
  get size(): number {
    return this.entries.size;
  }

  /** Leaks dropped because `maxSockets` was reached. */
  get evictions(): number {
    return this.evicted;
  }

  /** The open leaks as sockets with their age at `nowMs`, oldest reported first; copies made one by one, as iterated. */
  *sockets(nowMs: number): Generator<SocketInfo> {
    for (const { record, enteredAtMs } of this.entries.values()) {
      const { type: _type, ...socket } = record;
      yield { ...socket, stateAgeMs: Math.max(0, Math.round(nowMs - enteredAtMs)) };
    }
  }

  /** Age in ms of the longest-held open leak at `nowMs`; 0 when there is none. */
  oldestAgeMs(nowMs: number): number {
    let entered = nowMs;
    for (const e of this.entries.values()) if (e.enteredAtMs < entered) entered = e.enteredAtMs;
    return Math.max(0, nowMs - entered);
  }

  /**
   * Leaks per holding process, the `top` largest, then one `other` entry
   * summing the rest (present only when there is a rest): bounded label sets.
   */
  byProcess(top: number): ProcessLeaks[] {
    const counts = new Map<string, ProcessLeaks>();
    for (const { record } of this.entries.values()) {
      if (record.owners.length === 0) {
        bump(counts, 'none', '(no process)');
        continue;
      }
      const first = record.owners[0]!;
      if (record.owners.length === 1) bump(counts, String(first.pid), first.comm);
      else for (const o of new Map(record.owners.map((o) => [o.pid, o])).values()) bump(counts, String(o.pid), o.comm); // each process once
    }
    const sorted = [...counts.values()].sort((a, b) => b.count - a.count || Number(a.pid) - Number(b.pid));
    const shown = sorted.slice(0, top);
    const rest = sorted.slice(top).reduce((n, p) => n + p.count, 0);
    if (sorted.length > top) shown.push({ pid: 'other', comm: 'other', count: rest });
    return shown;
  }
}

function bump(counts: Map<string, ProcessLeaks>, pid: string, comm: string): void {
  const p = counts.get(pid);
  if (p) p.count++;
  else counts.set(pid, { pid, comm, count: 1 });
}

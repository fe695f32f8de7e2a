/** Human-readable renderings shared by the commands. */
import { shortContainerId } from '../cgroup-path';
import type { TraceEvent } from '../events';
import type { Owner } from '../sockets';

/** `14h3m`, `2m5s`, `850ms`: the two largest units. */
export function formatAge(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const s = Math.floor(ms / 1000);
  const units: Array<[string, number]> = [
    ['d', Math.floor(s / 86400)],
    ['h', Math.floor(s / 3600) % 24],
    ['m', Math.floor(s / 60) % 60],
    ['s', s % 60],
  ];
  const first = units.findIndex(([, n]) => n > 0);
  return units
    .slice(first, first + 2)
    .filter(([, n], i) => i === 0 || n > 0)
    .map(([u, n]) => `${n}${u}`)
    .join('');
}

/** Wall-clock time of a CLOCK_MONOTONIC timestamp, as HH:MM:SS.mmm. */
export function clockOf(tsNs: number, monotonicToEpochMs: number): string {
  return new Date(tsNs / 1e6 + monotonicToEpochMs).toISOString().slice(11, 23);
}

/** One line per event for people. */
export function formatEvent(ev: TraceEvent, monotonicToEpochMs: number): string {
  const when = clockOf(ev.tsNs, monotonicToEpochMs);
  const who = `${ev.comm}[${ev.pid}/${ev.tid}]`;
  const sock = `${ev.local} > ${ev.remote} cookie=${ev.cookie}`;
  switch (ev.type) {
    case 'state': {
      const ctx = ev.context === 'task' ? who : `(${ev.context} in ${who})`;
      return `${when} state   ${ev.oldState} -> ${ev.newState}  ${sock}  ${ctx}`;
    }
    case 'close':
      return `${when} close   fd=${ev.fd} ret=${ev.ret} [${ev.state}]  ${sock}  ${who}`;
    case 'connect':
      return `${when} connect fd=${ev.fd} ret=${ev.ret} [${ev.state}]  ${sock}  ${who}`;
    case 'accept':
      return `${when} accept  fd=${ev.fd} [${ev.state}]  ${sock}  ${who}`;
    case 'bind':
      return `${when} bind    fd=${ev.fd} ret=${ev.ret}  ${sock}  ${who}`;
  }
}

/** `svc-a[4242] fd 7 in container 0123456789ab, ...`: who holds a socket, for one-line messages; `no process` for none. */
export function formatHolders(owners: readonly Owner[]): string {
  return owners.map((o) => `${o.comm}[${o.pid}] fd ${o.fd}${o.containerId === undefined ? '' : ` in container ${shortContainerId(o.containerId)}`}`).join(', ') || 'no process';
}

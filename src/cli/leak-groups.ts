/**
 * The operator's view of many sockets: grouped per process and remote endpoint,
 * the `ss | awk | sort | uniq -c` of the first incident in one table.
 */
import { shortContainerId } from '../cgroup-path';
import type { SocketInfo } from '../sockets';
import { clockText, type ProcessForecastRecord } from '../forecast/fd-forecast';
import { formatCreatorStack } from '../stacks/format-stack';
import { formatAge } from './format';
import { newTable } from './table';

export interface LeakGroup {
  pid: number | null;
  comm: string;
  /** The holding process's container ID (else the creator's, for sockets no process holds), when its cgroup names one. */
  containerId: string | null;
  remote: string;
  state: string;
  count: number;
  /** Distinct creator threads, when creators were observed. */
  threads: number;
  fds: number[];
  oldestMs: number | null;
  oldestEstimated: boolean;
  /** When the group's oldest socket entered CLOSE_WAIT (ISO 8601): the time it began; estimated when oldestEstimated. */
  firstLeakAt: string | null;
  keepaliveOn: number;
  /** Soonest keepalive probe among them (ms), null if none has keepalive. */
  probeInMs: number | null;
  /** Where most of them were created (the creating connect()'s stack, one line), when stacks were captured. */
  createdAt?: string;
}

/** Groups sockets by holding process (one socket counts once per holding process) and remote; their ages are as of `nowMs`. */
export function groupSockets(sockets: readonly SocketInfo[], nowMs = Date.now()): LeakGroup[] {
  const groups = new Map<string, LeakGroup & { tids: Set<number>; sites: Map<string, number> }>();
  for (const s of sockets) {
    const holders = s.owners.length ? [...new Map(s.owners.map((o) => [o.pid, o])).values()] : [null];
    for (const owner of holders) {
      const key = `${owner?.pid ?? '-'}|${s.remote}|${s.state}`;
      let g = groups.get(key);
      if (!g) {
        g = {
          pid: owner?.pid ?? null,
          comm: owner?.comm ?? '(no process)',
          containerId: (owner ?? s.creator)?.containerId ?? null,
          remote: s.remote,
          state: s.state,
          count: 0,
          threads: 0,
          tids: new Set(),
          sites: new Map(),
          fds: [],
          oldestMs: null,
          oldestEstimated: false,
          firstLeakAt: null,
          keepaliveOn: 0,
          probeInMs: null,
        };
        groups.set(key, g);
      }
      g.count++;
      if (s.creator) g.tids.add(s.creator.tid);
      const site = formatCreatorStack(s.creator);
      if (site !== null) g.sites.set(site, (g.sites.get(site) ?? 0) + 1);
      for (const o of s.owners) if (o.pid === owner?.pid) g.fds.push(o.fd);
      if (s.stateAgeMs !== null && (g.oldestMs === null || s.stateAgeMs > g.oldestMs)) {
        g.oldestMs = s.stateAgeMs;
        g.oldestEstimated = s.ageEstimated;
      }
      if (s.keepalive) g.keepaliveOn++;
      if (s.keepaliveProbeInMs !== null && (g.probeInMs === null || s.keepaliveProbeInMs < g.probeInMs)) {
        g.probeInMs = s.keepaliveProbeInMs;
      }
    }
  }
  return [...groups.values()]
    .map(({ tids, sites, ...g }) => {
      const site = [...sites].sort((x, y) => y[1] - x[1])[0];
      return {
        ...g,
        threads: tids.size,
        fds: g.fds.sort((x, y) => x - y),
        firstLeakAt: g.oldestMs === null ? null : new Date(nowMs - g.oldestMs).toISOString(),
        ...(site && { createdAt: site[0] }),
      };
    })
    .sort((a, b) => b.count - a.count || (b.oldestMs ?? 0) - (a.oldestMs ?? 0));
}

/** `3-7,9,12`: a compact fd list, at most `max` ranges. */
export function fdRanges(fds: readonly number[], max = 4): string {
  const ranges: string[] = [];
  for (let i = 0; i < fds.length; ) {
    let j = i;
    while (j + 1 < fds.length && fds[j + 1] === fds[j]! + 1) j++;
    ranges.push(i === j ? `${fds[i]}` : `${fds[i]}-${fds[j]}`);
    i = j + 1;
  }
  return ranges.length > max ? `${ranges.slice(0, max).join(',')},…` : ranges.join(',') || '-';
}

function keepaliveText(g: LeakGroup): string {
  if (g.keepaliveOn === 0) return 'off: never reaped';
  const probe = g.probeInMs === null ? '' : `, probe in ${formatAge(g.probeInMs)}`;
  return g.keepaliveOn === g.count ? `on${probe}` : `${g.keepaliveOn}/${g.count} on${probe}`;
}

/**
 * Rows of the grouped table; the rest are summed on one line. A person reads the biggest groups
 * (they come first), and cli-table3's layout time grows with the square of the rows.
 */
export const MAX_TABLE_ROWS = 100;

/** The grouped table, with `extra` columns (e.g. growth per hour) appended. */
export function renderGroups(groups: readonly LeakGroup[], extra?: { head: string; cell: (g: LeakGroup) => string }): string {
  // Only where some group is in a container: a host without containers keeps its 100 columns.
  const containers = groups.some((g) => g.containerId !== null);
  const head = ['PID', 'COMM', ...(containers ? ['CONTAINER'] : []), 'STATE', 'REMOTE', 'COUNT', 'THREADS', 'FDS', 'OLDEST', 'KEEPALIVE'];
  if (extra) head.push(extra.head);
  const table = newTable(head);
  for (const g of groups.slice(0, MAX_TABLE_ROWS)) {
    const row = [
      g.pid === null ? '-' : String(g.pid),
      g.comm,
      ...(containers ? [g.containerId === null ? '-' : shortContainerId(g.containerId)] : []),
      g.state,
      g.remote,
      String(g.count),
      g.threads ? String(g.threads) : '?',
      fdRanges(g.fds),
      g.oldestMs === null ? '?' : `${g.oldestEstimated ? '~' : ''}${formatAge(g.oldestMs)}`,
      keepaliveText(g),
    ];
    if (extra) row.push(extra.cell(g));
    table.push(row);
  }
  // Stacks are too wide for a column: a line per group under the table.
  const sites = groups
    .slice(0, MAX_TABLE_ROWS)
    .filter((g) => g.createdAt !== undefined)
    .map((g) => `${g.pid ?? '-'} ${g.remote}: created at ${g.createdAt}`);
  const under = sites.length ? `\n${sites.join('\n')}` : '';
  const rest = groups.slice(MAX_TABLE_ROWS);
  if (!rest.length) return `${table.toString()}${under}`;
  const sockets = rest.reduce((n, g) => n + g.count, 0);
  return `${table.toString()}${under}\n… and ${rest.length} more groups (${sockets} sockets); --json lists every socket`;
}

/** One sentence per process, the diagnosis the first incident wanted on day one. */
export function summarize(groups: readonly LeakGroup[]): string[] {
  const byPid = new Map<string, LeakGroup[]>();
  for (const g of groups) {
    const key = `${g.pid ?? '-'}|${g.state}`;
    const list = byPid.get(key);
    if (list) list.push(g);
    else byPid.set(key, [g]);
  }
  const lines: string[] = [];
  for (const list of byPid.values()) {
    const first = list[0]!;
    const total = list.reduce((n, g) => n + g.count, 0);
    const remotes = list.map((g) => g.remote);
    const shown = remotes.length > 3 ? `${remotes.slice(0, 3).join(', ')} and ${remotes.length - 3} more` : remotes.join(', ');
    const oldest = list.reduce((max, g) => Math.max(max, g.oldestMs ?? 0), 0);
    const threads = list.reduce((max, g) => Math.max(max, g.threads), 0);
    const perThread = list.every((g) => g.threads > 0 && g.threads === g.count) ? ', one per creating thread' : '';
    const keepalive = list.every((g) => g.keepaliveOn === 0)
      ? 'keepalive off: the kernel will never reap them'
      : 'keepalive on for some: reaped after the keepalive probes';
    const where = first.containerId === null ? '' : ` in container ${shortContainerId(first.containerId)}`;
    const who = first.pid === null ? 'no process' : `pid ${first.pid} (${first.comm})${where}`;
    const site = list.find((g) => g.createdAt !== undefined)?.createdAt;
    const created = site !== undefined ? `, created at ${site}` : '';
    lines.push(
      `${who}${threads ? `, ${threads} threads,` : ''} holds ${total} ${first.state} socket${total === 1 ? '' : 's'} to ${shown}${perThread}${created}, oldest ${formatAge(oldest)}, ${keepalive}.`,
    );
  }
  return lines;
}

/** Forecast lines under the table: the processes of the biggest groups first; --json has every one. */
export const MAX_FORECAST_LINES = 10;

/**
 * One line per process of `groups` that has a forecast: its leak rate and fd
 * forecast, then when each of its groups began (`first leak 02:14:07 UTC to
 * 10.0.3.7:9000`), the incident's date; at most `max` groups named per line,
 * at most MAX_FORECAST_LINES lines.
 */
export function forecastLines(groups: readonly LeakGroup[], forecasts: readonly ProcessForecastRecord[], nowMs = Date.now(), max = 3): string[] {
  const byPid = new Map(forecasts.map((f) => [f.pid, f]));
  const lines: string[] = [];
  const seen = new Set<number>();
  for (const g of groups) {
    if (g.pid === null || seen.has(g.pid)) continue;
    seen.add(g.pid);
    const f = byPid.get(g.pid);
    if (!f) continue;
    if (lines.length === MAX_FORECAST_LINES) {
      lines.push('… more processes have forecasts: --json has every one');
      break;
    }
    const mine = groups
      .filter((x) => x.pid === g.pid && x.firstLeakAt !== null)
      .sort((a, b) => Date.parse(a.firstLeakAt!) - Date.parse(b.firstLeakAt!));
    const began = mine.slice(0, max).map((x) => `${clockText(Date.parse(x.firstLeakAt!), nowMs, x.oldestEstimated)} to ${x.remote}`);
    const more = mine.length > max ? `, and ${mine.length - max} more` : '';
    // The sentence ends with the process's first leak; the groups say which remote began when.
    const sentence = f.forecast.replace(/; first leak [^;]*$/, '');
    lines.push(`${sentence}${began.length ? `; first leak ${began.join(', ')}${more}` : ''}`);
  }
  return lines;
}

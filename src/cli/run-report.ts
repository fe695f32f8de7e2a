/** What `sockleak run` tells people (stderr) and machines (--json, --report): both from the same RunResult. */
import { shortContainerId } from '../cgroup-path';
import type { LeakedSocket, RunResult } from '../run/run';
import { formatCreatorStack } from '../stacks/format-stack';
import { formatAge, formatHolders } from './format';
import { newTable } from './table';

/**
 * The JSON document of --json (one line on stdout, so `| tail -n 1` takes it
 * after the command's own output) and of --report FILE (indented, for people
 * reading CI artifacts): `{"command","exitCode","signal","thresholdMs","leaks":[{...socket, heldMs, reason}],...}`.
 */
export function runJson(result: RunResult, indent?: number): string {
  return `${JSON.stringify(result, null, indent)}\n`;
}

/** One line per leak, for logs and JUnit details. */
export function leakLine(l: LeakedSocket): string {
  const holders = formatHolders(l.owners);
  const site = formatCreatorStack(l.creator);
  const creator = l.creator ? `created by ${l.creator.comm}[${l.creator.pid}/${l.creator.tid}]${site !== null ? ` at ${site}` : ''}` : 'creator not seen';
  const why = l.reason === 'outlived' ? 'still held after the command exited' : `in CLOSE_WAIT ${formatAge(l.heldMs)}`;
  return `${holders}: ${l.local} -> ${l.remote} ${why}, ${creator}`;
}

function commandText(result: RunResult): string {
  const text = result.command.join(' ');
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function leakTable(leaks: readonly LeakedSocket[]): string {
  // Only when some leak is held from a container: a run on a host keeps its columns.
  const containers = leaks.some((l) => l.owners.some((o) => o.containerId !== undefined));
  const table = newTable(['PID', 'COMM', ...(containers ? ['CONTAINER'] : []), 'FD', 'LOCAL', 'REMOTE', 'CLOSE_WAIT', 'CREATOR (pid/tid)', 'WHY']);
  for (const l of leaks) {
    const creator = l.creator ? `${l.creator.comm}[${l.creator.pid}/${l.creator.tid}]` : '?';
    const why = l.reason === 'outlived' ? 'outlived the command' : 'over threshold';
    const owners = l.owners.length ? l.owners : [null];
    for (const o of owners) {
      const container = o?.containerId === undefined ? '-' : shortContainerId(o.containerId);
      table.push([o ? String(o.pid) : '-', o?.comm ?? '(closed)', ...(containers ? [container] : []), o ? String(o.fd) : '-', l.local, l.remote, formatAge(l.heldMs), creator, why]);
    }
  }
  return table.toString();
}

/** The human summary, printed to stderr after the command exits. */
export function renderRunSummary(result: RunResult, exitCode: number): string {
  const exit = result.signal ? `was killed by ${result.signal} (${result.exitCode})` : `exited with ${result.exitCode}`;
  const lines: string[] = [];
  const threshold = formatAge(result.thresholdMs);
  const n = result.leaks.length;
  if (n === 0) lines.push(`sockleak: no leaked sockets (CLOSE_WAIT threshold ${threshold}); '${commandText(result)}' ${exit}`);
  else {
    lines.push(
      `sockleak: '${commandText(result)}' ${exit}; ${n} leaked socket${n === 1 ? '' : 's'} (CLOSE_WAIT longer than ${threshold}, or held by processes that outlived it):`,
    );
    lines.push(leakTable(result.leaks));
    // Stacks are too wide for a column: each distinct creating call site once, under the table.
    const sites = new Map<string, number>();
    for (const l of result.leaks) {
      const site = formatCreatorStack(l.creator);
      if (site !== null) sites.set(site, (sites.get(site) ?? 0) + 1);
    }
    for (const [site, count] of sites) lines.push(`sockleak: ${count} created at ${site}`);
  }
  for (const f of result.forecasts) lines.push(`sockleak: ${f.forecast}`);
  if (result.allowed) lines.push(`sockleak: ${result.allowed} more matched --allow and do not count`);
  if (result.outlivingPids.length) lines.push(`sockleak: processes still running after the command exited: ${result.outlivingPids.join(', ')}`);
  const tw = result.timeWait;
  if (tw) {
    lines.push(`sockleak: TIME_WAIT produced: ${tw.produced} (connections the command's processes closed first), budget ${tw.budget}${tw.exceeded ? ': EXCEEDED' : ''}`);
    if (tw.exceeded) {
      const table = newTable(['PID', 'COMM', 'REMOTE', 'TIME_WAIT']);
      for (const c of tw.byDestination.slice(0, 20)) table.push([String(c.pid), c.comm, c.remote, String(c.count)]);
      lines.push(table.toString());
      lines.push('sockleak: reuse connections (keep-alive) or let the peer close first');
    }
  }
  if (exitCode !== result.exitCode) lines.push(`sockleak: exit ${exitCode}: leaked sockets (the command itself succeeded)`);
  return `${lines.join('\n')}\n`;
}

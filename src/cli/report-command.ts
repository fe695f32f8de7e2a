/**
 * `sockleak report FILE...`: replays a recording offline (no root, no BPF, the
 * addon is never loaded) and prints what watch/snapshot/ports would have
 * printed at its end, and one line per agent run when it holds several.
 * Several files are read in order as one recording (`FILE.1 FILE` after a
 * rotation). A truncated or corrupt file still gets the report of what came
 * before the bad record (and of the files after it: each file starts with a
 * session); then the error (with its byte offset) and exit 65.
 */
import { DataError, ExitCode } from '../errors';
import { helpFooter } from './help';
import { readRecording } from '../recording/recording';
import { Replay, type ReplayResult, type ReplaySession } from '../recording/recording-replay';
import type { Snapshot } from '../sockets';
import { formatAge } from './format';
import { groupSockets, renderGroups, summarize } from './leak-groups';
import type { RegisterCommand } from './command';
import { write } from './output';
import { describePortRecord, renderNetns } from './ports-command';
import { newTable } from './table';

export interface ReportCommandOptions {
  json?: boolean;
}

const iso = (ms: number | null): string => (ms === null ? '?' : new Date(ms).toISOString());

function table(head: string[], rows: string[][]): string {
  const t = newTable(head);
  for (const row of rows) t.push(row);
  return t.toString();
}

/** `snapshot --json`'s shape: the leaks open at the end; port data under extra keys when recorded. */
export function reportJson(r: ReplayResult): Snapshot & Record<string, unknown> {
  return {
    takenAt: iso(r.lastMs),
    sockets: r.leaks,
    lost: Number(r.counters?.lost ?? 0n),
    ...(r.ports && { ports: r.ports }),
    ...(r.connectFailures.length > 0 && { connectFailures: r.connectFailures }),
    ...(r.portPressure.length > 0 && { portPressure: r.portPressure }),
    ...(r.forecasts.length > 0 && { forecasts: r.forecasts }),
    ...(r.sessions.some((x) => x.startedMs !== null) && { sessions: r.sessions.map(sessionJson) }),
  };
}

function sessionJson(x: ReplaySession): Record<string, unknown> {
  return {
    startedAt: iso(x.startedMs),
    pid: x.pid,
    host: x.host,
    version: x.version,
    thresholdMs: x.thresholdMs,
    continued: x.continued,
    from: iso(x.firstMs),
    to: iso(x.lastMs),
    records: x.records,
    leaksReported: x.leaksReported,
    resolved: x.resolved,
  };
}

/** One line per agent run, when there are several (or the one began in an earlier file). */
function sessionLines(r: ReplayResult): string[] {
  if (r.sessions.length < 2 && !r.sessions[0]?.continued) return [];
  return r.sessions.map((x, i) => {
    const who = x.pid === null ? 'before any session record' : `pid ${x.pid}${x.version ? `, sockleak ${x.version}` : ''}, started ${iso(x.startedMs)}`;
    const cont = x.continued ? ' (began before this file: see FILE.1)' : '';
    return `  run ${i + 1}: ${who}${cont}; ${iso(x.firstMs)} to ${iso(x.lastMs)} (${formatAge(x.lastMs - x.firstMs)}), ${x.records} records, ${x.leaksReported} leaks reported, ${x.resolved} resolved`;
  });
}

/** The port part, as `sockleak ports` and `watch` show it: the last Ports record, port-pressure records, failure totals. */
function portsText(r: ReplayResult): string[] {
  const out: string[] = [];
  if (r.ports) out.push(`ports at ${r.ports.takenAt}:`, ...r.ports.netns.map((ns) => renderNetns(ns)));
  out.push(...r.portPressure.map(describePortRecord));
  out.push(...r.forecasts.map((f) => f.forecast));
  if (r.connectFailures.length) {
    out.push('connect()/bind() failures during the recording:');
    const rows = r.connectFailures.map((f) => [String(f.pid), f.comm, f.type === 'bind-failure' ? 'bind' : 'connect', f.remote, f.errno, String(f.netns), String(f.count)]);
    out.push(table(['PID', 'COMM', 'CALL', 'ADDRESS', 'ERRNO', 'NETNS', 'COUNT'], rows));
  }
  return out;
}

/** The human report: the grouped leak table and sentences, ports, totals. */
export function reportText(file: string, r: ReplayResult): string {
  const span = r.firstMs !== null && r.lastMs !== null ? ` (${formatAge(r.lastMs - r.firstMs)})` : '';
  const threshold = r.thresholdMs === null ? '' : `; CLOSE_WAIT longer than ${formatAge(r.thresholdMs)} is a leak`;
  const runs = r.sessions.length > 1 ? ` in ${r.sessions.length} agent runs (the leaks open at the end are the last run's)` : '';
  const lines = [`recording ${file}: host ${r.host || '?'}, ${iso(r.firstMs)} to ${iso(r.lastMs)}${span}, ${r.records} records${runs}${threshold}`];
  lines.push(...sessionLines(r));
  if (r.leaks.length) {
    const groups = groupSockets(r.leaks);
    lines.push(renderGroups(groups), ...summarize(groups));
  }
  lines.push(`${r.leaks.length} leaks open at ${iso(r.lastMs)}; ${r.leaksReported} reported and ${r.resolved} resolved during the recording${r.sessions.length > 1 ? ' (a leak still open at a restart is reported again by the next run)' : ''}`);
  lines.push(...portsText(r));
  const c = r.counters;
  if (c) lines.push(`totals${r.sessions.length > 1 ? ' over the runs' : ''}: ${c.emitted} events, ${c.lost} lost, ${c.missed} missed, ${c.mapFull} map-full, ${c.evictions} evicted, ${c.streamDropped} dropped for slow subscribers`);
  if (r.gapRecords) lines.push(`this stream lost ${r.gapRecords} records while it was saved (its reader was too slow)`);
  if (r.unknown) lines.push(`${r.unknown} records of kinds this version does not know were skipped`);
  return `${lines.join('\n')}\n`;
}

/** Replays `file` into `replay`; the DataError that stopped it, if one did. */
function replayFile(replay: Replay, file: string): DataError | undefined {
  try {
    for (const { offset, record } of readRecording(file)) {
      try {
        replay.apply(record);
      } catch (err) {
        if (err instanceof DataError) throw new DataError(`${file}: corrupt record at byte offset ${offset} (${err.message})`);
        throw err;
      }
    }
  } catch (err) {
    if (!(err instanceof DataError)) throw err;
    return err;
  }
  return undefined;
}

export async function reportCommand(files: string | string[], options: ReportCommandOptions): Promise<number> {
  const list = typeof files === 'string' ? [files] : files;
  const replay = new Replay();
  const failures: DataError[] = [];
  for (const file of list) {
    const failure = replayFile(replay, file);
    if (failure) failures.push(failure);
  }
  const result = replay.result();
  if (result.records === 0 && failures.length === 0) failures.push(new DataError(`${list.join(', ')}: empty, no records`));
  await write(options.json ? `${JSON.stringify(reportJson(result))}\n` : reportText(list.join(' + '), result));
  // After the report of what was read: main prints it, exit 65.
  if (failures.length > 1) throw new DataError(`${failures[0]!.message}; and ${failures.length - 1} more: ${failures.slice(1).map((f) => f.message).join('; ')}`);
  if (failures[0]) throw failures[0];
  return 0;
}

export const registerReport: RegisterCommand = (cli, setResult) => {
  cli
    .command('report')
    .description('replay a recording (`sockleak agent --record`) offline: the leak and port report at its end, per agent run; no root needed')
    .argument('<file...>', 'the recording; several are read in order as one (FILE.1 FILE after a rotation)')
    .option('--json', 'the leaks open at the end as `snapshot --json` prints them, and `sessions` (the agent runs)')
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak report /var/lib/sockleak/rec.bin', 'the leaks open at the end of the recording, ports, totals'],
          ['sockleak report rec.bin.1 rec.bin', 'a recording rotated by --record-max-size, read as one'],
          ['sockleak report rec.bin --json > leaks.json', 'the same as `snapshot --json` would have printed'],
        ],
        [
          [ExitCode.DATA, 'a file is truncated or corrupt (the report of what came before is printed)'],
          [ExitCode.NO_INPUT, 'a file does not exist or cannot be read'],
        ],
      ),
    )
    .action((files: string[], opts: ReportCommandOptions) => setResult(reportCommand(files, opts)));
};

/**
 * `sockleak report FILE`: replays a recording offline (no root, no BPF, the
 * addon is never loaded) and prints what watch/snapshot/ports would have
 * printed at its end. A truncated or corrupt file still gets the report of
 * what came before the bad record; then the error (with its byte offset) and
 * exit 65.
 */
import { DataError, ExitCode } from '../errors';
import { helpFooter } from './help';
import { readRecording } from '../recording';
import { Replay, type ReplayResult } from '../recording-replay';
import type { Snapshot } from '../sockets';
import { formatAge } from './format';
import { groupSockets, renderGroups, summarize } from './leak-groups';
import type { RegisterCommand } from './main';
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
  };
}

/** The port part, as `sockleak ports` and `watch` show it: the last Ports record, port-pressure records, failure totals. */
function portsText(r: ReplayResult): string[] {
  const out: string[] = [];
  if (r.ports) out.push(`ports at ${r.ports.takenAt}:`, ...r.ports.netns.map((ns) => renderNetns(ns)));
  out.push(...r.portPressure.map(describePortRecord));
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
  const lines = [`recording ${file}: host ${r.host || '?'}, ${iso(r.firstMs)} to ${iso(r.lastMs)}${span}, ${r.records} records${threshold}`];
  if (r.leaks.length) {
    const groups = groupSockets(r.leaks);
    lines.push(renderGroups(groups), ...summarize(groups));
  }
  lines.push(`${r.leaks.length} leaks open at ${iso(r.lastMs)}; ${r.leaksReported} reported and ${r.resolved} resolved during the recording`);
  lines.push(...portsText(r));
  const c = r.counters;
  if (c) lines.push(`totals: ${c.emitted} events, ${c.lost} lost, ${c.mapFull} map-full, ${c.evictions} evicted, ${c.streamDropped} dropped for slow subscribers`);
  if (r.gapRecords) lines.push(`this stream lost ${r.gapRecords} records while it was saved (its reader was too slow)`);
  if (r.unknown) lines.push(`${r.unknown} records of kinds this version does not know were skipped`);
  return `${lines.join('\n')}\n`;
}

export async function reportCommand(file: string, options: ReportCommandOptions): Promise<number> {
  const replay = new Replay();
  let failure: DataError | undefined;
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
    failure = err;
  }
  const result = replay.result();
  if (result.records === 0 && !failure) failure = new DataError(`${file}: empty, no records`);
  await write(options.json ? `${JSON.stringify(reportJson(result))}\n` : reportText(file, result));
  if (failure) throw failure; // after the report of what was read: main prints it, exit 65
  return 0;
}

export const registerReport: RegisterCommand = (cli, setResult) => {
  cli
    .command('report')
    .description('replay a recording (`sockleak agent --record`) offline: the leak and port report at its end; no root needed')
    .argument('<file>', 'the recording')
    .option('--json', 'the leaks open at the end as `snapshot --json` prints them')
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak report /var/lib/sockleak/rec.bin', 'the leaks open at the end of the recording, ports, totals'],
          ['sockleak report rec.bin --json > leaks.json', 'the same as `snapshot --json` would have printed'],
        ],
        [
          [ExitCode.DATA, 'the file is truncated or corrupt (the report of what came before is printed)'],
          [ExitCode.NO_INPUT, 'the file does not exist or cannot be read'],
        ],
      ),
    )
    .action((file: string, opts: ReportCommandOptions) => setResult(reportCommand(file, opts)));
};

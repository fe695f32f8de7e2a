/** `sockleak watch`: CLOSE_WAIT leaks live, as a refreshing table or ndjson. */
import { watchWithPorts, type WatchStreamRecord } from '../watch/port-watch';
import { forecastLines, groupSockets, renderGroups, summarize, type LeakGroup } from './leak-groups';
import { formatAge, formatHolders } from './format';
import type { RegisterCommand } from './command';
import { describePortRecord } from './ports-command';
import { stdoutClosed, tracefsNote, write } from './output';
import { ExitCode } from '../errors';
import { withCloseWaitAt } from '../watch-records';
import { helpFooter } from './help';
import { arg, parseCgroupPrefix, parseContainerPrefix, parseDuration, parsePid, whereOf } from './parse';

export interface WatchCommandOptions {
  threshold?: number;
  pid?: number;
  cgroup?: string;
  container?: string;
  json?: boolean;
  stacks?: boolean;
}

function describe(r: WatchStreamRecord): string {
  switch (r.type) {
    case 'leak':
      return `leak: ${r.remote} held by ${formatHolders(r.owners)} for ${formatAge(r.stateAgeMs ?? 0)}`;
    case 'resolved':
      return `resolved: ${r.remote} after ${formatAge(r.heldMs)}, ${r.closedBy ? `closed by ${r.closedBy.comm}[${r.closedBy.pid}]${r.closedBy.fd === null ? ' (exit/exec)' : ` fd ${r.closedBy.fd}`}` : r.how}`;
    case 'fd-closed':
      return `fd closed: ${r.closedBy.comm}[${r.closedBy.pid}] closed fd ${r.closedBy.fd} of ${r.remote}, still held by ${r.stillHeldBy.map((o) => `${o.comm}[${o.pid}] fd ${o.fd}`).join(', ') || 'nobody known'}`;
    case 'forecast':
      return `forecast: ${r.forecast}`;
    default:
      return describePortRecord(r);
  }
}

export async function watchCommand(options: WatchCommandOptions): Promise<number> {
  const thresholdMs = options.threshold ?? 30_000;
  const watcher = watchWithPorts({ thresholdMs, ...(options.pid !== undefined && { pid: options.pid }), where: whereOf(options), ...(options.stacks && { stacks: true }) });
  const stop = (): void => void watcher.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const json = options.json === true;
  const started = Date.now();
  const firstSeen = new Map<string, number>(); // group key -> leaks reported since start
  const recent: string[] = [];
  let render: NodeJS.Timeout | undefined;
  if (!json) {
    render = setInterval(() => {
      const now = Date.now();
      const groups = groupSockets(watcher.current(), now);
      const hours = Math.max((Date.now() - started) / 3_600_000, 1 / 60);
      const growth = (g: LeakGroup): string => `${Math.round((firstSeen.get(`${g.pid}|${g.remote}`) ?? 0) / hours)}/h`;
      const lines = [...summarize(groups), ...forecastLines(groups, watcher.forecasts(), now)];
      const table = groups.length ? `${renderGroups(groups, { head: 'GROWTH', cell: growth })}\n${lines.join('\n')}` : 'no leaks';
      void write(`\x1b[H\x1b[2J${new Date().toISOString()}  CLOSE_WAIT longer than ${formatAge(thresholdMs)}\n${table}\n\n${recent.slice(-10).join('\n')}\n`);
    }, 1000);
  }
  process.stderr.write(`${tracefsNote(watcher.hooks())}sockleak: watching for CLOSE_WAIT longer than ${formatAge(thresholdMs)}; Ctrl-C to stop\n`);
  try {
    for await (const record of watcher) {
      if (json) await write(`${JSON.stringify(withCloseWaitAt(record))}\n`);
      else {
        recent.push(`${new Date().toISOString().slice(11, 19)} ${describe(record)}`);
        if (record.type === 'leak') {
          for (const o of record.owners.length ? record.owners : [{ pid: null }]) {
            const key = `${o.pid}|${record.remote}`;
            firstSeen.set(key, (firstSeen.get(key) ?? 0) + 1);
          }
        }
      }
      if (stdoutClosed()) await watcher.close();
    }
  } finally {
    clearInterval(render);
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  const c = watcher.counters();
  process.stderr.write(
    `sockleak: ${watcher.current().length} leaks open, ${c.emitted} events, ${c.lost} lost, ${c.missed} missed, ${c.mapFull} map-full\n`,
  );
  return 0;
}

export const registerWatch: RegisterCommand = (cli, setResult) => {
  cli
    .command('watch')
    .description('report sockets that stay in CLOSE_WAIT longer than a threshold, live, with owners and creators')
    .option('--threshold <duration>', 'how long in CLOSE_WAIT makes a leak (default 30s)', arg((t) => parseDuration(t, '--threshold')))
    .option('--pid <pid>', 'only leaks held or created by this process', arg(parsePid))
    .option('--cgroup <path>', 'only leaks held or created in this cgroup v2 path or under it', arg(parseCgroupPrefix))
    .option('--container <id>', 'only leaks held or created in a container whose ID starts so', arg(parseContainerPrefix))
    .option('--stacks', "where in the code each leak was made: the creating connect()'s user stack (costs a stack walk per connect())")
    .option('--json', 'ndjson of leak / resolved / fd-closed / connect-failure / port-pressure / forecast records instead of the live screen')
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak watch', 'a live screen of CLOSE_WAIT older than 30s, per process and remote, with growth per hour'],
          ['sockleak watch --threshold 5m --pid 1234', "only process 1234's leaks, after 5 minutes"],
          ['sockleak watch --stacks', 'also where each group was created: `created at open_backend (pool.c:88) <- worker_loop (pool.c:140)`'],
          ['sockleak watch --json | jq -c \'select(.type == "leak")\'', 'the leak records as ndjson, for a script or a log'],
        ],
        [[ExitCode.OK, 'stopped by Ctrl-C or SIGTERM'], ExitCode.NO_INPUT, ExitCode.UNAVAILABLE, ExitCode.NO_PERMISSION],
      ),
    )
    .action((opts: WatchCommandOptions) => setResult(watchCommand(opts)));
};

/** `sockleak snapshot`: every leaked (CLOSE_WAIT by default) socket now, grouped the way an operator thinks. */
import { snapshotJsonOf, snapshotOf } from '../scan/snapshot';
import type { Snapshot } from '../sockets';
import type { TcpState } from '../tcp-states';
import { takeSnapshotScan } from './head-start';
import type { RegisterCommand } from './command';
import { write } from './output';
import { ExitCode } from '../errors';
import { helpFooter } from './help';
import { arg, parseCgroupPrefix, parseContainerPrefix, parseDuration, parsePid, parseStates, whereOf } from './parse';

export interface SnapshotCommandOptions {
  state?: TcpState[] | 'all';
  pid?: number;
  olderThan?: number;
  cgroup?: string;
  container?: string;
  json?: boolean;
}

export async function snapshotCommand(options: SnapshotCommandOptions): Promise<number> {
  const request = {
    states: options.state ?? ['CLOSE_WAIT'],
    ...(options.pid !== undefined && { pid: options.pid }),
    ...(options.olderThan !== undefined && { olderThanMs: options.olderThan }),
    where: whereOf(options),
  };
  const scan = await takeSnapshotScan(request);
  if (options.json) {
    for (const chunk of snapshotJsonOf(scan, request)) await write(chunk);
    return 0;
  }
  const result = snapshotOf(scan, request);
  if (result.sockets.length === 0) {
    await write(`no matching sockets (${result.takenAt})\n`);
    return 0;
  }
  // The table's modules (cli-table3) are loaded only for the table: --json is timed against ss.
  const { groupSockets, renderGroups, summarize } = require('./leak-groups') as typeof import('./leak-groups');
  const groups = groupSockets(result.sockets);
  await write(`${renderGroups(groups)}\n${summarize(groups).join('\n')}\n`);
  await write(`${result.sockets.length} sockets at ${result.takenAt}; ages marked ~ are estimates from the kernel's last-packet time\n`);
  return 0;
}

export const registerSnapshot: RegisterCommand = (cli, setResult) => {
  cli
    .command('snapshot')
    .description('every leaked socket now (CLOSE_WAIT by default), with owners, ages and keepalive, grouped per process and remote')
    .option('--state <states>', 'close-wait (default), time-wait, established, ..., a comma list, or all', arg(parseStates))
    .option('--pid <pid>', 'only sockets held by this process', arg(parsePid))
    .option('--older-than <duration>', 'only sockets in their state at least this long (e.g. 5m)', arg((t) => parseDuration(t, '--older-than')))
    .option('--cgroup <path>', 'only sockets held by processes in this cgroup v2 path or under it', arg(parseCgroupPrefix))
    .option('--container <id>', 'only sockets held by processes in containers whose ID starts so', arg(parseContainerPrefix))
    .option('--json', 'print {"takenAt","sockets":[...],"lost"} as one JSON document')
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak snapshot', 'every CLOSE_WAIT socket, grouped per process and remote, with a sentence per group'],
          ['sockleak snapshot --older-than 1h --pid 1234', "process 1234's sockets in CLOSE_WAIT for an hour or more"],
          ['sockleak snapshot --state time-wait,close-wait --json', 'both states, as JSON'],
        ],
        [ExitCode.NO_INPUT, ExitCode.UNAVAILABLE, ExitCode.NO_PERMISSION],
      ),
    )
    .action((opts: SnapshotCommandOptions) => setResult(snapshotCommand(opts)));
};

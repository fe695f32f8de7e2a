/** `sockleak reap`: close leaked sockets without restarting their owner. Dry run unless --yes. */
import { ExitCode, UsageError } from '../errors';
import { reap, type ReapReport, type ReapSocketResult } from '../reap/reap';
import type { TcpState } from '../tcp-states';
import { groupSockets, renderGroups, summarize } from './leak-groups';
import type { RegisterCommand } from './command';
import { write } from './output';
import { arg, parseCount, parseDuration, parsePid, parseStates } from './parse';
import { newTable } from './table';
import { helpFooter } from './help';

export interface ReapCommandOptions {
  state?: TcpState[] | 'all';
  olderThan?: number;
  pid?: number;
  remote?: string;
  max?: number;
  allowEstablished?: boolean;
  allowListen?: boolean;
  yes?: boolean;
  json?: boolean;
  audit?: string;
}

const CONSEQUENCE =
  "What this means: each owner's fd stays open, but the socket behind it is gone. Its next send() fails with " +
  'ECONNABORTED (then EPIPE); a recv() blocked on a live connection wakes with ECONNABORTED, and a CLOSE_WAIT ' +
  'socket reads end-of-file as before. So the owner sees an error instead of hanging. The port and the kernel ' +
  'memory are released now, and the peer got an RST. The code that leaked them still leaks: find the missing close().';

const WHY: Record<string, (r: ReapSocketResult) => string> = {
  'not-found': () => 'not found: closed since the listing (its port may belong to a new socket now)',
  'state-changed': (r) => `no longer ${r.state}${r.stateNow ? ` (now ${r.stateNow})` : ''}`,
  active: () => 'active: it processed a packet after the listing, or is younger than --older-than',
  changed: () => 'changed: its peer or network namespace differ from the listing',
};

function owners(r: ReapSocketResult): string {
  if (r.owners.length === 0) return '(no process)';
  return r.owners.map((o) => `${o.pid} (${o.comm}) fd ${o.fd}`).join(', ');
}

function renderResults(report: ReapReport): string {
  const table = newTable(['RESULT', 'COOKIE', 'LOCAL', 'REMOTE', 'STATE', 'HELD BY', 'WHY']);
  for (const r of report.results) {
    const why = r.outcome === 'failed' ? `kernel refused: ${r.error}` : r.reason ? (WHY[r.reason]?.(r) ?? r.reason) : '';
    table.push([r.outcome, r.cookie, r.local, r.remote, r.state, owners(r), why]);
  }
  return table.toString();
}

function listingText(report: ReapReport): string {
  if (report.sockets.length === 0) return `no matching sockets (${report.listedAt}); nothing to close\n`;
  const groups = groupSockets(report.sockets);
  const cut =
    report.matched > report.sockets.length
      ? ` (${report.matched} matched; --max ${report.filters.max} keeps the oldest)`
      : '';
  return `${renderGroups(groups)}\n${summarize(groups).join('\n')}\n` + `${report.sockets.length} sockets listed at ${report.listedAt}${cut}\n`;
}

export async function reapCommand(options: ReapCommandOptions): Promise<number> {
  if (options.state === 'all') throw new UsageError('reap --state all is refused: name the states to reap (default close-wait)');
  const report = await reap(
    {
      ...(options.state !== undefined && { states: options.state }),
      ...(options.olderThan !== undefined && { olderThanMs: options.olderThan }),
      ...(options.pid !== undefined && { pid: options.pid }),
      ...(options.remote !== undefined && { remote: options.remote }),
      ...(options.max !== undefined && { max: options.max }),
      allowEstablished: options.allowEstablished === true,
      allowListen: options.allowListen === true,
    },
    { dryRun: options.yes !== true, ...(options.audit !== undefined && { audit: { file: options.audit } }) },
  );
  if (options.json) await write(`${JSON.stringify(report)}\n`);
  else if (report.dryRun) {
    await write(listingText(report));
    if (report.sockets.length > 0) await write(`would close ${report.sockets.length} sockets; add --yes to close them\n`);
  } else {
    const n = (o: ReapSocketResult['outcome']): number => report.results.filter((r) => r.outcome === o).length;
    if (report.results.length > 0) await write(`${renderResults(report)}\n`);
    await write(
      `closed ${n('destroyed')} of ${report.results.length} sockets` +
        (report.method ? ` with ${report.method}` : '') +
        ` (skipped ${n('skipped')}, failed ${n('failed')})` +
        (report.audit ? `; audit: ${report.audit.where}, run ${report.audit.run}` : '') +
        '\n',
    );
    const left = report.matched - report.sockets.length;
    if (left > 0) await write(`${left} more matched and were left alone (--max ${report.filters.max}); run again to close them\n`);
    if (report.fallbackReason) await write(`(bpf_sock_destroy unavailable: ${report.fallbackReason})\n`);
    if (n('destroyed') > 0) await write(`${CONSEQUENCE}\n`);
  }
  if (report.audit?.error) {
    process.stderr.write(`sockleak: the audit was not written: ${report.audit.error}\n`);
    return ExitCode.SOFTWARE;
  }
  return report.results.some((r) => r.outcome === 'failed') ? ExitCode.UNAVAILABLE : ExitCode.OK;
}

export const registerReap: RegisterCommand = (cli, setResult) => {
  cli
    .command('reap')
    .description('close leaked sockets without restarting their owner (dry run unless --yes); needs a narrowing filter')
    .option('--state <states>', 'close-wait (default), last-ack, fin-wait2, ... or a comma list', arg(parseStates))
    .option('--older-than <duration>', 'only sockets idle (for CLOSE_WAIT: in CLOSE_WAIT) at least this long, e.g. 1h', arg((t) => parseDuration(t, '--older-than')))
    .option('--pid <pid>', 'only sockets held by this process', arg(parsePid))
    .option('--remote <pattern>', 'only sockets to these peers, as run --allow takes them: 10.0.3.7:9000, 10.0.0.0/8, [fd00::7]:9000, *:5432')
    .option('--max <n>', 'close at most this many, the oldest first (default 1000)', arg((t) => parseCount(t, '--max', 65536)))
    .option('--allow-established', 'also allow --state established (live connections: their owner loses them)')
    .option('--allow-listen', 'also allow --state listen (the server stops accepting on that socket)')
    .option('--yes', 'close them (without it, only list what would be closed)')
    .option('--json', 'print the report as one JSON document')
    .option('--audit <file>', 'append the audit lines (JSON) to this file instead of the system journal')
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak reap --remote 10.0.3.7:9000 --older-than 1h', 'list the CLOSE_WAIT sockets to that peer idle for an hour (nothing is closed)'],
          ['sockleak reap --remote 10.0.3.7:9000 --older-than 1h --yes', 'close them'],
          ['sockleak reap --pid 1234 --state close-wait,last-ack --yes --json', "close process 1234's, report as JSON"],
        ],
        [
          [ExitCode.OK, 'listed, or closed every socket it tried'],
          ExitCode.NO_INPUT,
          [ExitCode.UNAVAILABLE, 'the kernel refused to close a socket (see the report)'],
          [ExitCode.SOFTWARE, 'the audit line was not written (or a bug)'],
          ExitCode.NO_PERMISSION,
        ],
      ),
    )
    .action((opts: ReapCommandOptions) => setResult(reapCommand(opts)));
};

/** `sockleak ports`: ephemeral ports per network namespace now; also how watch shows port records. */
import { ExitCode, UsageError } from '../errors';
import { helpFooter } from './help';
import type { PortRecord } from '../ports/port-watcher';
import type { NetnsPorts } from '../ports/port-usage';
import { ports, validateNetns } from '../ports/ports';
import { formatAge } from './format';
import type { RegisterCommand } from './command';
import { write } from './output';
import { arg, parseCount } from './parse';
import { newTable } from './table';

export interface PortsCommandOptions {
  netns?: number;
  json?: boolean;
  /** Destinations shown per namespace on a terminal. */
  top?: number;
}

/** A network namespace inode as `readlink /proc/PID/ns/net` shows it (the digits in `net:[4026531840]`). */
export function parseNetns(text: string): number {
  const digits = /^(?:net:\[)?([1-9][0-9]{0,9})\]?$/.exec(text)?.[1];
  const netns = Number(digits);
  if (!digits || netns > 0xffffffff) throw new UsageError(`--netns: '${text}' is not a namespace inode; use e.g. 4026531840 or net:[4026531840]`);
  validateNetns(netns);
  return netns;
}

const TW_REUSE = ['off', 'on', 'loopback only'] as const;

function header(ns: NetnsPorts): string {
  const [lo, hi] = ns.portRange;
  const excluded = [ns.reservedPorts && `${ns.reservedPorts} reserved`, ns.boundPorts && `${ns.boundPorts} listening`].filter(Boolean).join(', ');
  return (
    `netns ${ns.netns}: ports ${lo}-${hi} (${ns.usablePorts} usable${excluded ? `; ${excluded}` : ''}), ` +
    `tcp_tw_reuse=${ns.twReuse} (${TW_REUSE[ns.twReuse]}), ${ns.timeWait} TIME_WAIT, ${ns.established} ESTABLISHED`
  );
}

function pct(used: number, of: number): string {
  return of > 0 ? `${Math.round((100 * used) / of)}%` : '-';
}

/** The operator's view of one namespace: destinations by ports used, then source addresses. */
export function renderNetns(ns: NetnsPorts, top = 20): string {
  const lines = [header(ns)];
  if (ns.byRemote.length === 0 && ns.bySource.length === 0) return `${lines[0]}; no connections`;
  if (ns.byRemote.length) {
    const table = newTable(['REMOTE', 'TIME_WAIT', 'ESTAB', 'OTHER', 'FREE', 'USED', 'NEXT FREE']);
    for (const r of ns.byRemote.slice(0, top)) {
      table.push([
        r.remote,
        String(r.timeWait),
        String(r.established),
        String(r.other),
        String(r.free),
        pct(r.used, ns.usablePorts),
        r.nextFreeInMs === null ? '-' : `~${formatAge(r.nextFreeInMs)}`,
      ]);
    }
    lines.push(table.toString());
    if (ns.byRemote.length > top) lines.push(`... and ${ns.byRemote.length - top} more destinations (--json lists all)`);
    for (const r of ns.byRemote.filter((d) => d.free === 0)) {
      const back = r.nextFreeInMs === null ? '' : `; the oldest TIME_WAIT frees a port in ~${formatAge(r.nextFreeInMs)}`;
      lines.push(`${r.remote}: no free port (${r.timeWait} TIME_WAIT): connect() to it fails with EADDRNOTAVAIL${back}.`);
    }
  }
  if (ns.bySource.length) {
    const table = newTable(['SOURCE', 'TIME_WAIT', 'ESTAB']);
    for (const s of ns.bySource.slice(0, Math.min(top, 10))) table.push([s.source, String(s.timeWait), String(s.established)]);
    lines.push(table.toString());
  }
  return lines.join('\n');
}

/** One entry of watch's recent-events list for a connect-failure, bind-failure or port-pressure record. */
export function describePortRecord(r: PortRecord): string {
  switch (r.type) {
    case 'connect-failure':
      return `connect() failed with ${r.errno} ${r.count}x to ${r.remote}: ${r.comm}[${r.pid}/${r.tid}] netns ${r.netns} (no free ephemeral port)`;
    case 'bind-failure':
      return `bind() failed with ${r.errno} ${r.count}x for ${r.remote}: ${r.comm}[${r.pid}/${r.tid}] netns ${r.netns}`;
    case 'port-pressure': {
      const closers = r.closers.map((c) => `${c.comm}[${c.pid}] ${c.ratePerSec}/s`).join(', ') || 'closers unknown (before sockleak started?)';
      return [
        `port pressure: ${r.remote} netns ${r.netns}: ${r.timeWait} TIME_WAIT, ${r.free} of ${r.usable} ports free (range ${r.range[0]}-${r.range[1]}); active closes: ${closers}`,
        `  ${r.forecast}${r.recentFailures ? `; connect() failed ${r.recentFailures}x in the last 10s` : ''}`,
        ...r.remedies.map((remedy) => `  - ${remedy}`),
      ].join('\n');
    }
  }
}

export async function portsCommand(options: PortsCommandOptions): Promise<number> {
  const result = await ports({ ...(options.netns !== undefined && { netns: options.netns }) });
  if (options.json) {
    await write(`${JSON.stringify(result)}\n`);
    return 0;
  }
  const blocks = result.netns.map((ns) => renderNetns(ns, options.top));
  await write(`${blocks.join('\n\n')}\n${result.netns.length} network namespaces at ${result.takenAt}\n`);
  return 0;
}

export const registerPorts: RegisterCommand = (cli, setResult) => {
  cli
    .command('ports')
    .description('ephemeral ports per network namespace: range, tcp_tw_reuse, TIME_WAIT and free ports per destination')
    .option('--netns <inode>', 'only this network namespace (inode, as in readlink /proc/PID/ns/net)', arg(parseNetns))
    .option('--top <n>', 'destinations shown per namespace (default 20; --json lists all)', arg((t) => parseCount(t, '--top')))
    .option('--json', 'print {"takenAt","netns":[{netns,portRange,twReuse,timeWait,byRemote,bySource,...}]}')
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak ports', 'per namespace: the port range, TIME_WAIT and free ports per destination'],
          ['sockleak ports --netns $(readlink /proc/1234/ns/net)', "only the namespace of process 1234 (a container's)"],
          ['sockleak ports --json', 'every destination, as JSON'],
        ],
        [ExitCode.NO_INPUT, ExitCode.UNAVAILABLE, ExitCode.NO_PERMISSION],
      ),
    )
    .action((opts: PortsCommandOptions) => setResult(portsCommand(opts)));
};

/**
 * The sysctls that decide how many ephemeral ports connect() has, read for one
 * network namespace. /proc/sys/net shows the namespace of the reader (there is
 * no /proc/PID/sys), so another namespace's values are read by a short-lived
 * `nsenter --net=/proc/PID/ns/net grep` — one process per namespace.
 */
import { execFile } from 'node:child_process';
import { readFile, readlink } from 'node:fs/promises';
import { KernelUnsupportedError } from '../errors';

/** The port-allocation settings of one network namespace. */
export interface PortSysctls {
  /** net.ipv4.ip_local_port_range (used by IPv4 and IPv6 alike), inclusive. */
  portRange: [number, number];
  /** net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only (the default since Linux 4.19). */
  twReuse: 0 | 1 | 2;
  /** net.ipv4.tcp_tw_reuse_delay (Linux 6.13+; 1000 before): how old a TIME_WAIT must be to be reused. */
  twReuseDelayMs: number;
  /** net.ipv4.tcp_timestamps != 0: tcp_tw_reuse needs them. */
  timestamps: boolean;
  /** net.ipv4.ip_local_reserved_ports, as inclusive ranges. */
  reserved: Array<[number, number]>;
}

const DIR = '/proc/sys/net/ipv4';
const NAMES = ['ip_local_port_range', 'tcp_tw_reuse', 'ip_local_reserved_ports', 'tcp_tw_reuse_delay', 'tcp_timestamps'] as const;
type Name = (typeof NAMES)[number];

/** `1,2-4,10` (the ip_local_reserved_ports syntax) into inclusive ranges; empty text is no range. */
export function parsePortList(text: string): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (m) ranges.push([Number(m[1]), Number(m[2] ?? m[1])]);
  }
  return ranges;
}

function interpret(values: Map<Name, string>): PortSysctls | undefined {
  const range = values.get('ip_local_port_range')?.trim().split(/\s+/).map(Number);
  const reuse = Number(values.get('tcp_tw_reuse'));
  if (!range || range.length !== 2 || !range.every(Number.isInteger) || !(reuse === 0 || reuse === 1 || reuse === 2)) return undefined;
  const delay = Number(values.get('tcp_tw_reuse_delay') ?? '1000');
  return {
    portRange: [range[0]!, range[1]!],
    twReuse: reuse,
    twReuseDelayMs: Number.isFinite(delay) ? delay : 1000,
    timestamps: Number(values.get('tcp_timestamps') ?? '1') !== 0,
    reserved: parsePortList(values.get('ip_local_reserved_ports') ?? ''),
  };
}

async function readOwn(): Promise<Map<Name, string>> {
  const values = new Map<Name, string>();
  for (const name of NAMES) {
    try {
      values.set(name, await readFile(`${DIR}/${name}`, 'utf8'));
    } catch {
      // tcp_tw_reuse_delay is 6.13+: the default applies
    }
  }
  return values;
}

function readOther(netnsPath: string): Promise<Map<Name, string> | undefined> {
  // grep -H prints "path:value" per line, -s skips files this kernel lacks; one exec for all five.
  const args = [`--net=${netnsPath}`, 'grep', '-sH', '', ...NAMES.map((n) => `${DIR}/${n}`)];
  return new Promise((resolve, reject) => {
    execFile('nsenter', args, { timeout: 5000 }, (err, stdout) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new KernelUnsupportedError('nsenter (util-linux) not found: it reads the sysctls of other network namespaces'));
        return;
      }
      const values = new Map<Name, string>();
      for (const line of stdout.split('\n')) {
        const colon = line.indexOf(':');
        const name = line.slice(DIR.length + 1, colon) as Name;
        if (colon > 0 && NAMES.includes(name)) values.set(name, line.slice(colon + 1));
      }
      resolve(values.size ? values : undefined); // nothing: the namespace's last process exited
    });
  });
}

let ownNetns: Promise<string> | undefined;

/**
 * The port sysctls of the network namespace at `netnsPath` (/proc/PID/ns/net);
 * undefined when it can no longer be entered (its processes exited).
 */
export async function readPortSysctls(netnsPath: string): Promise<PortSysctls | undefined> {
  ownNetns ??= readlink('/proc/self/ns/net');
  let target: string;
  try {
    target = await readlink(netnsPath);
  } catch {
    return undefined;
  }
  const values = target === (await ownNetns) ? await readOwn() : await readOther(netnsPath);
  return values && interpret(values);
}

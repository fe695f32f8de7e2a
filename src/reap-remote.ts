/**
 * `sockleak reap --remote`: which peers a reap may touch.
 *
 *   REMOTE := ADDR [":" PORT] | CIDR [":" PORT]      IPv4: 10.0.3.7:9000, 10.0.0.0/8
 *           | "[" ADDR-or-CIDR "]" [":" PORT]        IPv6: [fd00::7]:9000, [fd00::/64]
 *           | IPv6 ADDR-or-CIDR                      without a port: ::1, fd00::/64
 *
 * IPv4 forms also match IPv4-mapped IPv6 peers (`[::ffff:10.0.3.7]`).
 */
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { UsageError } from './errors';

/** A parsed `--remote`; `matches` takes a remote as sockleak prints it (`a.b.c.d:port`, `[v6]:port`). */
export interface RemoteFilter {
  readonly text: string;
  matches(remote: string): boolean;
}

const MAPPED = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;

function parsePort(text: string | undefined, whole: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new UsageError(`--remote '${whole}': port must be 1..65535`);
  }
  return Number(text);
}

function hostList(host: string, whole: string): { list: BlockList; family: 4 | 6 } {
  const [addr = '', prefix, ...rest] = host.split('/');
  const family = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : undefined;
  if (family === undefined || rest.length > 0) {
    throw new UsageError(`--remote '${whole}': expected ADDR[:PORT] or CIDR, e.g. 10.0.3.7:9000, 10.0.0.0/8, [fd00::7]:9000`);
  }
  const max = family === 4 ? 32 : 128;
  if (prefix !== undefined && (!/^[0-9]{1,3}$/.test(prefix) || Number(prefix) > max)) {
    throw new UsageError(`--remote '${whole}': prefix length must be 0..${max}`);
  }
  const list = new BlockList();
  list.addSubnet(addr, prefix === undefined ? max : Number(prefix), family === 4 ? 'ipv4' : 'ipv6');
  return { list, family };
}

/** Parses `--remote`; throws UsageError with the reason when it is malformed. */
export function parseRemoteFilter(text: string): RemoteFilter {
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  let host: string;
  let portText: string | undefined;
  if (bracketed) {
    host = bracketed[1] ?? '';
    portText = bracketed[2];
  } else if (text.split(':').length === 2) {
    [host = '', portText] = text.split(':');
  } else {
    host = text; // IPv4 without a port, or IPv6 without brackets (and so without a port)
  }
  const { list, family } = hostList(host, text);
  if (bracketed && family === 4) throw new UsageError(`--remote '${text}': brackets are for IPv6 addresses`);
  const port = parsePort(portText, text);
  return {
    text,
    matches(remote) {
      const r = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(remote);
      if (!r || (port !== undefined && Number(r[3]) !== port)) return false;
      if (r[2] !== undefined) return family === 4 && list.check(r[2], 'ipv4');
      const v6 = r[1] ?? '';
      const mapped = MAPPED.exec(v6)?.[1];
      if (family === 4) return mapped !== undefined && list.check(mapped, 'ipv4');
      return list.check(v6, 'ipv6');
    },
  };
}

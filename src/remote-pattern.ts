/**
 * Remote-address patterns for `sockleak run --allow` and `checkSocketLeaks`:
 * which leaks are expected and not reported.
 *
 *   PATTERN := HOST [":" PORTS]          (no PORTS: any port)
 *   HOST    := "*" | IPv4 | IPv4 glob | IPv4 CIDR | "[" IPv6 | IPv6 glob | IPv6 CIDR "]"
 *   PORTS   := "*" | N | N "-" M
 *
 * Globs (`*` any run of characters, `?` one) match the address as sockleak
 * prints it (`10.0.0.*`, `[fd00:*]`; IPv6 in RFC 5952 form). IPv4 patterns also
 * match IPv4-mapped IPv6 remotes (`[::ffff:10.0.0.5]`).
 */
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { UsageError } from './errors';

/** A parsed pattern; `matches` takes a remote as sockleak prints it (`a.b.c.d:port`, `[v6]:port`). */
export interface RemotePattern {
  readonly text: string;
  matches(remote: string): boolean;
}

type HostMatcher = (host: string, family: 4 | 6) => boolean;

const MAPPED = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;

function globRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

function hostMatcher(host: string, family: 4 | 6, pattern: string): HostMatcher {
  const bad = (why: string): never => {
    throw new UsageError(`--allow '${pattern}': ${why}`);
  };
  const [addr = '', prefix, ...rest] = host.split('/');
  if (prefix !== undefined) {
    const bits = Number(prefix);
    const max = family === 4 ? 32 : 128;
    if (rest.length || !/^\d{1,3}$/.test(prefix) || bits > max) bad(`prefix length must be 0..${max}`);
    if (!(family === 4 ? isIPv4(addr) : isIPv6(addr))) bad(`'${addr}' is not an IPv${family} address`);
    return subnetMatcher(addr, bits, family);
  }
  if (/[*?]/.test(host)) {
    if (!(family === 4 ? /^[0-9.*?]+$/ : /^[0-9a-f:.*?]+$/i).test(host)) bad(`'${host}' is not an IPv${family} glob`);
    const re = globRegExp(host);
    return (h, f) => f === family && re.test(h);
  }
  if (!(family === 4 ? isIPv4(host) : isIPv6(host))) {
    bad(family === 4 && isIPv6(host) ? 'write IPv6 addresses in brackets, e.g. [::1]:80' : `'${host}' is not an IP address`);
  }
  return subnetMatcher(host, family === 4 ? 32 : 128, family);
}

function subnetMatcher(addr: string, bits: number, family: 4 | 6): HostMatcher {
  const list = new BlockList();
  list.addSubnet(addr, bits, family === 4 ? 'ipv4' : 'ipv6');
  return (h, f) => f === family && list.check(h, f === 4 ? 'ipv4' : 'ipv6');
}

function portMatcher(ports: string | undefined, pattern: string): (port: number) => boolean {
  if (ports === undefined || ports === '*') return () => true;
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(ports);
  const lo = Number(m?.[1]);
  const hi = m?.[2] === undefined ? lo : Number(m[2]);
  if (!m || hi > 65535 || lo > hi) throw new UsageError(`--allow '${pattern}': port must be *, N or N-M within 0..65535`);
  return (port) => port >= lo && port <= hi;
}

/** Parses one pattern; throws UsageError with the reason when it is malformed. */
export function parseRemotePattern(text: string): RemotePattern {
  const v6 = /^\[([^\]]+)\](?::([^:]+))?$/.exec(text);
  let host: HostMatcher;
  let ports: string | undefined;
  if (v6) {
    host = hostMatcher(v6[1] ?? '', 6, text);
    ports = v6[2];
  } else {
    const parts = text.split(':');
    if (parts.length > 2) throw new UsageError(`--allow '${text}': write IPv6 addresses in brackets, e.g. [::1]:80`);
    const [h = '', p] = parts;
    if (h === '') throw new UsageError(`--allow '${text}': empty host (use * for any host)`);
    host = h === '*' ? () => true : hostMatcher(h, 4, text);
    ports = p;
  }
  const port = portMatcher(ports, text);
  return {
    text,
    matches(remote) {
      const r = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(remote);
      if (!r) return false;
      if (!port(Number(r[3]))) return false;
      if (r[2] !== undefined) return host(r[2], 4);
      const v6host = r[1] ?? '';
      const mapped = MAPPED.exec(v6host)?.[1];
      return host(v6host, 6) || (mapped !== undefined && host(mapped, 4));
    },
  };
}

/** True when any pattern matches `remote`. */
export function matchesAnyRemote(patterns: readonly RemotePattern[], remote: string): boolean {
  return patterns.some((p) => p.matches(remote));
}

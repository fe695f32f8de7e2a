/**
 * Remote-address patterns: one grammar for `sockleak run --allow` (leaks that
 * are expected), `checkSocketLeaks({ allow })` and `sockleak reap --remote`
 * (the peers a reap may touch). docs/cli.md documents it for users.
 *
 *   PATTERN := HOST [":" PORTS]            no PORTS: any port
 *            | ":" PORTS                   any host (the same as *:PORTS)
 *            | IPv6 | IPv6 "/" BITS        IPv6 without brackets: never a port
 *   HOST    := "*" | IPv4 | IPv4 "/" BITS | IPv4 glob
 *            | "[" IPv6 | IPv6 "/" BITS | IPv6 glob "]"
 *   PORTS   := "*" | N | N "-" M           0..65535
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
  /**
   * False when it lets every peer of a family through at any port (`*`, `:*`,
   * `0.0.0.0/0`, `[::/0]`, `*.*.*.*`): as a filter that must narrow (reap), it
   * does not.
   */
  readonly narrows: boolean;
  matches(remote: string): boolean;
}

/** Options of parseRemotePattern. */
export interface RemotePatternOptions {
  /** The flag named in error messages; default `--allow`. */
  flag?: string;
}

type HostMatcher = (host: string, family: 4 | 6) => boolean;

const FORMS = 'use ADDR, ADDR:PORT, CIDR, CIDR:PORT, [IPv6]:PORT, *:PORT or :PORT';

const MAPPED = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;

function globRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

function hostMatcher(host: string, family: 4 | 6, bad: (why: string) => never): HostMatcher {
  const [addr = '', prefix, ...rest] = host.split('/');
  if (prefix !== undefined) {
    const max = family === 4 ? 32 : 128;
    if (rest.length || !/^\d{1,3}$/.test(prefix) || Number(prefix) > max) bad(`prefix length must be 0..${max}`);
    if (!(family === 4 ? isIPv4(addr) : isIPv6(addr))) bad(`'${addr}' is not an IPv${family} address`);
    return subnetMatcher(addr, Number(prefix), family);
  }
  if (/[*?]/.test(host)) {
    if (!(family === 4 ? /^[0-9.*?]+$/ : /^[0-9a-f:.*?]+$/i).test(host)) bad(`'${host}' is not an IPv${family} glob`);
    const re = globRegExp(host);
    return (h, f) => f === family && re.test(h);
  }
  if (!(family === 4 ? isIPv4(host) : isIPv6(host))) bad(`'${host}' is not an IP address (${FORMS})`);
  return subnetMatcher(host, family === 4 ? 32 : 128, family);
}

function subnetMatcher(addr: string, bits: number, family: 4 | 6): HostMatcher {
  const list = new BlockList();
  list.addSubnet(addr, bits, family === 4 ? 'ipv4' : 'ipv6');
  return (h, f) => f === family && list.check(h, f === 4 ? 'ipv4' : 'ipv6');
}

function portMatcher(ports: string | undefined, bad: (why: string) => never): ((port: number) => boolean) | undefined {
  if (ports === undefined || ports === '*') return undefined;
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(ports);
  const lo = Number(m?.[1]);
  const hi = m?.[2] === undefined ? lo : Number(m[2]);
  if (!m || hi > 65535 || lo > hi) bad('port must be *, N or N-M within 0..65535');
  return (port) => port >= lo && port <= hi;
}

/** An IPv6 address or CIDR written without brackets (so without a port): `::1`, `fd00::/64`. */
function isBareIPv6(text: string): boolean {
  const [addr = '', prefix, ...rest] = text.split('/');
  return isIPv6(addr) && rest.length === 0 && (prefix === undefined || /^\d{1,3}$/.test(prefix));
}

/** Parses one pattern; throws UsageError naming the flag and the reason when it is malformed. */
export function parseRemotePattern(text: string, options?: RemotePatternOptions): RemotePattern {
  // typeof: `patterns.map(parseRemotePattern)` passes the index here.
  const flag = typeof options === 'object' && options?.flag ? options.flag : '--allow';
  const bad = (why: string): never => {
    throw new UsageError(`${flag} '${text}': ${why}`);
  };
  let hostText: string;
  let family: 4 | 6 | 'any';
  let ports: string | undefined;
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    [, hostText = '', ports] = bracketed;
    family = 6;
    if (isIPv4(hostText.split('/')[0] ?? '')) bad('brackets are for IPv6 addresses');
  } else if (isBareIPv6(text)) {
    hostText = text;
    family = 6;
  } else {
    const parts = text.split(':');
    if (parts.length > 2) bad('write an IPv6 address with a port in brackets, e.g. [::1]:80');
    [hostText = '', ports] = parts;
    if (hostText === '' && ports === undefined) bad(`empty (${FORMS})`);
    family = hostText === '*' || hostText === '' ? 'any' : 4;
  }
  const host: HostMatcher = family === 'any' ? () => true : hostMatcher(hostText, family, bad);
  const port = portMatcher(ports, bad);
  const everyHost = family === 'any' || /\/0+$/.test(hostText) || /^[*?.:]+$/.test(hostText);
  return {
    text,
    narrows: !everyHost || port !== undefined,
    matches(remote) {
      const r = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(remote);
      if (!r) return false;
      if (port && !port(Number(r[3]))) return false;
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

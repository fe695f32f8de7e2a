/** Parsers for command-line values. Each throws UsageError with a one-line reason. */
import { InvalidArgumentError } from 'commander';
import { UsageError } from '../errors';
import { tcpStateNumber, type TcpState } from '../tcp-states';

/** Adapts a parser that throws UsageError to commander's argument parser contract. */
export function arg<T>(parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (err) {
      throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
    }
  };
}

/** A process id: a decimal integer in 1..2^30 (the kernel's PID_MAX_LIMIT is 2^22). */
export function parsePid(text: string): number {
  if (!/^[1-9][0-9]{0,9}$/.test(text)) throw new UsageError(`--pid must be a positive integer, got '${text}'`);
  const pid = Number(text);
  if (pid > 0x3fffffff) throw new UsageError(`--pid out of range: ${text}`);
  return pid;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration such as `500ms`, `30s`, `5m`, `1h30m`, `2d`; a bare number means seconds. Returns ms. */
export function parseDuration(text: string, flag = 'duration'): number {
  const bare = /^[0-9]{1,9}(\.[0-9]{1,3})?$/.exec(text);
  if (bare) return Math.round(Number(text) * 1000);
  const parts = text.match(/[0-9]{1,9}(?:ms|s|m|h|d)/g);
  if (!parts || parts.join('') !== text) {
    throw new UsageError(`${flag} must be a duration like 30s, 5m, 1h30m or 500ms, got '${text}'`);
  }
  let total = 0;
  for (const part of parts) {
    const [, n, unit] = /^([0-9]+)(ms|s|m|h|d)$/.exec(part) ?? [];
    total += Number(n) * (UNIT_MS[unit ?? 's'] ?? 1000);
  }
  if (!Number.isSafeInteger(total)) throw new UsageError(`${flag} too large: '${text}'`);
  return total;
}

/** A positive integer within bounds. */
export function parseCount(text: string, flag: string, max = 1 << 30): number {
  if (!/^[0-9]{1,10}$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new UsageError(`${flag} must be an integer in 1..${max}, got '${text}'`);
  }
  return Number(text);
}

/** `close-wait`, `CLOSE_WAIT`, `time-wait,established`, or `all` (undefined = every state). */
export function parseStates(text: string): TcpState[] | 'all' {
  if (text === 'all') return 'all';
  return text.split(',').map((part) => {
    // ASCII only: trim() and toUpperCase() would map Unicode spaces and look-alikes (ſ, ı, ligatures) onto names.
    const bare = part.replace(/^[ \t\n\r\v\f]+|[ \t\n\r\v\f]+$/g, '');
    const name = /^[A-Za-z0-9_-]+$/.test(bare) ? bare.toUpperCase().replace(/-/g, '_') : '';
    if (tcpStateNumber(name) === undefined || name === 'UNKNOWN' || name === 'NEW_SYN_RECV') {
      throw new UsageError(`unknown state '${part}': use close-wait, time-wait, established, listen, ... or all`);
    }
    return name as TcpState;
  });
}

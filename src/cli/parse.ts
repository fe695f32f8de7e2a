/** Parsers for command-line values. Each throws UsageError with a one-line reason. */
import type { CgroupFilter } from '../cgroup-path';
import { UsageError } from '../errors';
import { tcpStateNumber, type TcpState } from '../tcp-states';

/**
 * Wraps a value parser for commander. Parsers throw UsageError, whose message
 * already names the flag, the value and what is accepted; commander would wrap
 * an InvalidArgumentError in its own sentence saying the same thing again, so
 * the error passes through untouched and main.ts prints it once. (Kept as the
 * one way options get a parser, so a parser that throws something else can be
 * caught here later without touching every command.)
 */
export function arg<T>(parse: (text: string) => T): (text: string) => T {
  return (text) => parse(text);
}

/** A process id: a decimal integer in 1..2^30 (the kernel's PID_MAX_LIMIT is 2^22). */
export function parsePid(text: string): number {
  if (!/^[1-9][0-9]{0,9}$/.test(text) || Number(text) > 0x3fffffff) {
    throw new UsageError(`--pid: '${text}' is not a process id; use a positive integer`);
  }
  return Number(text);
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** What a duration may look like, in every error message about one. */
export const DURATION_FORMS = '1.5s, 500ms, 2m, 1h30m, 14h3m, 2d or a number of seconds (1.5)';

/**
 * A duration as people type it and as sockleak prints it (`14h3m`): parts of
 * `<number><unit>` with units ms, s, m, h, d (`1h30m`, `1.5s`, `500ms`), or a
 * bare number of seconds (`1.5`). Whole numbers up to 9 digits; a fraction of
 * up to 3 digits on s, m, h and d, which keeps every value a whole number of
 * milliseconds (so `ms` takes none). Returns ms.
 */
export function parseDuration(text: string, flag = 'duration'): number {
  const bad = (): never => {
    throw new UsageError(`${flag}: '${text}' is not a duration; use ${DURATION_FORMS}`);
  };
  if (/^[0-9]{1,9}(\.[0-9]{1,3})?$/.test(text)) return partMs(text, 1000);
  const parts = text.match(/[0-9]{1,9}(?:\.[0-9]{1,3})?(?:ms|s|m|h|d)/g);
  if (!parts || parts.join('') !== text) return bad();
  let total = 0;
  for (const part of parts) {
    const [, number = '', unit = ''] = /^([0-9.]+)(ms|s|m|h|d)$/.exec(part) ?? [];
    if (unit === 'ms' && number.includes('.')) bad();
    total += partMs(number, UNIT_MS[unit] ?? 1000);
  }
  if (!Number.isSafeInteger(total)) throw new UsageError(`${flag}: '${text}' is too long a duration`);
  return total;
}

/** `number` (digits, optionally `.` and up to 3 digits) times `unitMs`, in exact integer arithmetic. */
function partMs(number: string, unitMs: number): number {
  const [whole = '0', frac = ''] = number.split('.');
  return Number(whole) * unitMs + (Number(frac.padEnd(3, '0')) * unitMs) / 1000;
}

/**
 * Size units. The GNU coreutils convention (`dd`, `sort -S`, `df`): a bare
 * prefix is binary (`k`, `M`, `G` = 1024, 1024^2, 1024^3), `kB`/`MB`/`GB` are
 * SI (powers of 1000), `KiB`/`MiB`/`GiB` say binary outright. Case does not
 * matter (`mb` is `MB`: nobody means millibytes).
 */
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
};

/** What a size may look like, in every error message about one. */
export const SIZE_FORMS = '4096, 64k or 64KiB (x1024), 4MB (x1000^2), 4M or 4MiB (x1024^2), 1.5GiB';

/** A size in bytes: `4096`, `64k`, `4MiB`, `4MB`, `1.5G` (see SIZE_UNITS). Whole bytes: a fraction is rounded down. */
export function parseSize(text: string, flag = 'size'): number {
  const m = /^([0-9]{1,12})(?:\.([0-9]{1,3}))?([a-zA-Z]{0,3})$/.exec(text);
  const unit = SIZE_UNITS[(m?.[3] ?? '?').toLowerCase()];
  if (!m || unit === undefined || (m[2] !== undefined && unit === 1)) {
    throw new UsageError(`${flag}: '${text}' is not a size; use ${SIZE_FORMS}`);
  }
  const bytes = Number(m[1]) * unit + Math.floor((Number((m[2] ?? '').padEnd(3, '0')) * unit) / 1000);
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`${flag}: '${text}' is too large`);
  return bytes;
}

/** A positive integer within bounds. */
export function parseCount(text: string, flag: string, max = 1 << 30): number {
  if (!/^[0-9]{1,10}$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new UsageError(`${flag}: '${text}' is not a count; use an integer in 1..${max}`);
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
      throw new UsageError(`--state: '${part}' is not a TCP state; use close-wait, time-wait, established, listen, ..., a comma list, or all`);
    }
    return name as TcpState;
  });
}

/** `--cgroup`: an absolute cgroup v2 path, as /proc/PID/cgroup shows it; a trailing `/` is dropped. */
export function parseCgroupPrefix(text: string): string {
  if (!/^\/[\x21-\x7e]*$/.test(text) || /\/\.\.?(\/|$)|\/\//.test(text)) {
    throw new UsageError(`--cgroup: '${text}' is not a cgroup path; use an absolute path such as /system.slice or /kubepods.slice/kubepods-besteffort.slice`);
  }
  return text.length > 1 ? text.replace(/\/$/, '') : text;
}

/** `--container`: the start of a container ID, hex digits (`docker ps` shows 12). */
export function parseContainerPrefix(text: string): string {
  if (!/^[0-9a-fA-F]{1,64}$/.test(text)) {
    throw new UsageError(`--container: '${text}' is not a container ID; use its first hex digits (e.g. 4f2a9c1b0d3e) or all 64`);
  }
  return text.toLowerCase();
}

/** The `--cgroup` / `--container` filter of a command's options. */
export function whereOf(options: { cgroup?: string; container?: string }): CgroupFilter {
  return { ...(options.cgroup !== undefined && { cgroup: options.cgroup }), ...(options.container !== undefined && { container: options.container }) };
}

/**
 * Input fuzzing (issue 8): the flag-value parsers, the CLI itself and the
 * recording reader, over thousands of seeded random inputs. Nothing here loads
 * BPF in this process (the recording to corrupt comes from a real agent child).
 *
 * Properties: a parser returns exactly what an independent reference of the
 * documented grammar says, or throws UsageError (nothing else), and never takes
 * long; `main(argv)` returns a documented exit code, prints at most one
 * `sockleak:` line on stderr and never a stack trace.
 *
 * Reproduce a failure with the seed it prints: SOCKLEAK_FUZZ_SEED=<seed>.
 * Fuzz longer with SOCKLEAK_FUZZ_SCALE=<factor> (e.g. 100 for a few minutes).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { main } from '../src/cli/main';
import { parseCount, parseDuration, parsePid, parseStates } from '../src/cli/parse';
import { ExitCode, UsageError } from '../src/errors';
import { TCP_STATES } from '../src/tcp-states';
import { CLI, startBackend, startHolder, waitFor } from './helpers';

const SEED = Number(process.env.SOCKLEAK_FUZZ_SEED ?? 0x5eed_0008) >>> 0;
const SCALE = Math.max(1, Number(process.env.SOCKLEAK_FUZZ_SCALE ?? 1));
/** A parser call slower than this is taken for a hang (catastrophic backtracking, quadratic loops): linear in the length. */
const slowCallMs = (text: string): number => 50 + text.length * 0.005;

/** mulberry32: small, fast, good enough to explore inputs, and reproducible from its seed. */
class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

const DIGITS = '0123456789';
const ALPHABETS = [
  DIGITS,
  `${DIGITS}.`,
  `${DIGITS}msdh`,
  `${DIGITS}msdhMSDHxyz.,-_ `,
  'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-,',
  ' \t\n\r\v\f\0',
  // Unicode that case-maps or trims into ASCII (long s, dotless i, ligatures, NBSP, BOM), digits of other scripts, emoji.
  'ſıİﬁﬀﬅK\u00a0\u2028\ufeff٣१０ßé😀',
  '+-eExXoObB_0123456789.',
];

/** A random string, biased towards the shapes the parsers care about. */
function randomText(rng: Rng, valid: () => string): string {
  switch (rng.int(0, 5)) {
    case 0:
    case 1: {
      const alphabet = [...rng.pick(ALPHABETS)];
      const length = rng.chance(0.01) ? rng.int(1000, 50_000) : rng.int(0, 24);
      let s = '';
      for (let i = 0; i < length; i++) s += rng.pick(alphabet);
      return s;
    }
    case 2:
    case 3:
      return mutate(rng, valid());
    case 4:
      return valid();
    default:
      if (rng.chance(0.8)) return mutate(rng, `${valid()},${valid()}`);
      // long runs of valid pieces, then maybe one bad character: hangs show up here
      return Array.from({ length: rng.int(100, 5000) }, valid).join(rng.pick(['', ',', ''])) + (rng.chance(0.5) ? rng.pick(['!', ' ', 'x', '']) : '');
  }
}

/** A few random edits of a string: insert, delete, replace, duplicate, case flip. */
function mutate(rng: Rng, s: string): string {
  let out = [...s];
  for (let n = rng.int(1, 3); n > 0; n--) {
    const at = rng.int(0, out.length);
    const ch = rng.pick([...rng.pick(ALPHABETS)]);
    switch (rng.int(0, 4)) {
      case 0:
        out.splice(at, 0, ch);
        break;
      case 1:
        out.splice(at, 1);
        break;
      case 2:
        out[at] = ch;
        break;
      case 3:
        out = [...out, ...out];
        break;
      default:
        out = out.map((c) => (rng.chance(0.5) ? c.toUpperCase() : c.toLowerCase()));
    }
  }
  return out.join('');
}

/** What a parser did with one input. */
type Outcome<T> = { ok: true; value: T } | { ok: false };

/** Calls a parser: it must return or throw UsageError, quickly. */
function attempt<T>(label: string, text: string, parse: (text: string) => T): Outcome<T> {
  const once = (): { outcome: Outcome<T>; ms: number } => {
    const started = performance.now();
    try {
      const value = parse(text);
      return { outcome: { ok: true, value }, ms: performance.now() - started };
    } catch (err) {
      const ms = performance.now() - started;
      assert.ok(err instanceof UsageError, `${label}(${show(text)}) threw ${String(err)}, not a UsageError (seed ${SEED})`);
      assert.ok(err.message.length > 0);
      return { outcome: { ok: false }, ms };
    }
  };
  const first = once();
  // A slow call is timed again: a pause of the machine (GC, other load) does not repeat, a slow input does.
  let ms = first.ms;
  for (let retry = 0; retry < 3 && ms >= slowCallMs(text); retry++) ms = Math.min(ms, once().ms);
  assert.ok(ms < slowCallMs(text), `${label}(${show(text)}) took ${ms.toFixed(1)} ms (seed ${SEED})`);
  return first.outcome;
}

const show = (text: string): string => JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…(${text.length} chars)` : text);

function assertSame<T>(label: string, text: string, got: Outcome<T>, want: Outcome<T>): void {
  assert.deepEqual(got, want, `${label}(${show(text)}): got ${JSON.stringify(got)}, the documented grammar says ${JSON.stringify(want)} (seed ${SEED})`);
}

// ---- Reference implementations of the documented grammars (docs/commands.md, --help), written without the parsers' regexes.

const isAsciiDigits = (s: string): boolean => s.length > 0 && [...s].every((c) => c >= '0' && c <= '9');

/** --pid: a decimal integer without leading zeros, 1..2^30-1. */
function refPid(text: string): Outcome<number> {
  if (!isAsciiDigits(text) || text[0] === '0' || text.length > 10) return { ok: false };
  const n = BigInt(text);
  return n >= 1n && n <= 0x3fffffffn ? { ok: true, value: Number(n) } : { ok: false };
}

/** --count and other bounded integers: up to 10 decimal digits, 1..max. */
function refCount(text: string, max: number): Outcome<number> {
  if (!isAsciiDigits(text) || text.length > 10) return { ok: false };
  const n = BigInt(text);
  return n >= 1n && n <= BigInt(max) ? { ok: true, value: Number(n) } : { ok: false };
}

const UNIT_MS = new Map<string, bigint>([
  ['ms', 1n],
  ['s', 1000n],
  ['m', 60_000n],
  ['h', 3_600_000n],
  ['d', 86_400_000n],
]);

/**
 * Durations: `1.5` (seconds, up to 9 digits and 3 decimals) or `<1-9 digits>[.<1-3 digits>]<ms|s|m|h|d>`
 * repeated, e.g. 1h30m, 1.5s; `ms` takes no decimals (every value is whole ms).
 */
function refDuration(text: string): Outcome<number> {
  const [whole, frac, ...rest] = text.split('.');
  if (whole !== undefined && isAsciiDigits(whole) && whole.length <= 9 && rest.length === 0) {
    if (frac === undefined) return { ok: true, value: Number(whole) * 1000 };
    if (isAsciiDigits(frac) && frac.length <= 3) return { ok: true, value: Number(whole) * 1000 + Number(frac.padEnd(3, '0')) };
    // else: maybe parts with units, e.g. 1.5s
  }
  let total = 0n;
  let at = 0;
  if (text.length === 0) return { ok: false };
  const digitsAt = (): string => {
    let digits = '';
    while (at < text.length && text[at]! >= '0' && text[at]! <= '9') digits += text[at++];
    return digits;
  };
  while (at < text.length) {
    const digits = digitsAt();
    if (digits.length === 0 || digits.length > 9) return { ok: false };
    let decimals: string | undefined;
    if (text[at] === '.') {
      at++;
      decimals = digitsAt();
      if (decimals.length === 0 || decimals.length > 3) return { ok: false };
    }
    const unit = text.startsWith('ms', at) ? 'ms' : (text[at] ?? '');
    const ms = UNIT_MS.get(unit);
    if (ms === undefined || (unit === 'ms' && decimals !== undefined)) return { ok: false };
    at += unit.length;
    total += BigInt(digits) * ms + (BigInt((decimals ?? '').padEnd(3, '0')) * ms) / 1000n;
  }
  return total <= BigInt(Number.MAX_SAFE_INTEGER) ? { ok: true, value: Number(total) } : { ok: false };
}

/** The states a user may name (not the kernel's internal UNKNOWN and NEW_SYN_RECV). */
const NAMED_STATES = TCP_STATES.filter((s) => s !== 'UNKNOWN' && s !== 'NEW_SYN_RECV');

/** --state: `all`, or a comma list of state names, ASCII case-insensitive, `-` or `_`, ASCII white space around allowed. */
function refStates(text: string): Outcome<string[] | 'all'> {
  if (text === 'all') return { ok: true, value: 'all' };
  const out: string[] = [];
  for (const part of text.split(',')) {
    const name = part.replace(/^[ \t\n\r\v\f]+|[ \t\n\r\v\f]+$/g, '');
    const canonical = [...name].map((c) => (c >= 'a' && c <= 'z' ? String.fromCharCode(c.charCodeAt(0) - 32) : c === '-' ? '_' : c)).join('');
    if (!(NAMED_STATES as readonly string[]).includes(canonical)) return { ok: false };
    out.push(canonical);
  }
  return { ok: true, value: out };
}

// ---- Generators of documented-valid values (round trips).

function validPid(rng: Rng): string {
  return String(rng.chance(0.1) ? rng.pick([1, 0x3fffffff, 4194304]) : rng.int(1, 0x3fffffff));
}

function validDuration(rng: Rng): string {
  if (rng.chance(0.3)) {
    const whole = String(rng.int(0, rng.chance(0.2) ? 999_999_999 : 1000));
    return rng.chance(0.5) ? whole : `${whole}.${String(rng.int(0, 999)).slice(0, rng.int(1, 3))}`;
  }
  return Array.from({ length: rng.int(1, 4) }, () => {
    const unit = rng.pick([...UNIT_MS.keys()]);
    const decimals = unit !== 'ms' && rng.chance(0.3) ? `.${String(rng.int(0, 999)).slice(0, rng.int(1, 3))}` : '';
    return `${rng.int(0, rng.chance(0.1) ? 999_999_999 : 100)}${decimals}${unit}`;
  }).join('');
}

function validStates(rng: Rng): string {
  if (rng.chance(0.1)) return 'all';
  return Array.from({ length: rng.int(1, 4) }, () => {
    const s = rng.pick(NAMED_STATES);
    const spelled = rng.pick([s, s.toLowerCase(), s.toLowerCase().replace(/_/g, '-'), s.replace(/_/g, '-')]);
    return rng.chance(0.1) ? ` ${spelled} ` : spelled;
  }).join(',');
}

const ROUNDS = 4000 * SCALE;


/** Math.max of a possibly huge list (a spread would overflow the stack on a large recording). */
function maxOf(values: readonly number[]): number {
  return values.reduce((m, v) => Math.max(m, v), -Infinity);
}

test(`parsePid: ${ROUNDS} random inputs match the grammar, only UsageError, never slow`, () => {
  const rng = new Rng(SEED);
  for (let i = 0; i < ROUNDS; i++) {
    const text = randomText(rng, () => validPid(rng));
    assertSame('parsePid', text, attempt('parsePid', text, parsePid), refPid(text));
  }
  for (let i = 0; i < 500; i++) {
    const n = rng.int(1, 0x3fffffff);
    assert.equal(parsePid(String(n)), n, 'round trip');
  }
});

test(`parseCount: ${ROUNDS} random inputs and bounds match the grammar`, () => {
  const rng = new Rng(SEED + 1);
  for (let i = 0; i < ROUNDS; i++) {
    const max = rng.chance(0.5) ? 1 << 30 : rng.int(1, 100_000);
    const text = randomText(rng, () => String(rng.int(0, max + 1)));
    const got = attempt('parseCount', text, (t) => parseCount(t, '--count', max));
    assertSame(`parseCount[max ${max}]`, text, got, refCount(text, max));
  }
});

test(`parseDuration: ${ROUNDS} random inputs match the grammar; valid durations round-trip to exact ms`, () => {
  const rng = new Rng(SEED + 2);
  for (let i = 0; i < ROUNDS; i++) {
    const text = randomText(rng, () => validDuration(rng));
    assertSame('parseDuration', text, attempt('parseDuration', text, (t) => parseDuration(t, '--threshold')), refDuration(text));
  }
  let roundTrips = 0;
  for (let i = 0; i < 1000; i++) {
    const text = validDuration(rng);
    const want = refDuration(text);
    if (!want.ok) continue; // a sum past 2^53 ms: rejected, as the first loop checks
    assert.equal(parseDuration(text), want.value, `round trip of ${text}`);
    roundTrips++;
  }
  assert.ok(roundTrips > 900, `${roundTrips} round trips`);
  // The examples the help and docs/cli.md give.
  for (const [text, ms] of [['500ms', 500], ['30s', 30_000], ['5m', 300_000], ['1h30m', 5_400_000], ['2d', 172_800_000], ['1.5', 1500], ['0', 0], ['1.5s', 1500], ['14h3m', 50_580_000], ['0.25h', 900_000], ['1.5m30s', 120_000]] as const) {
    assert.equal(parseDuration(text), ms, text);
  }
});

test(`parseStates: ${ROUNDS} random ASCII inputs match the grammar, only UsageError, never slow`, () => {
  const rng = new Rng(SEED + 3);
  const ascii = (s: string): boolean => /^[\x00-\x7f]*$/.test(s);
  for (let i = 0; i < ROUNDS; i++) {
    const text = randomText(rng, () => validStates(rng));
    const got = attempt('parseStates', text, parseStates);
    if (ascii(text)) assertSame('parseStates', text, got, refStates(text));
  }
  for (let i = 0; i < 500; i++) {
    const text = validStates(rng);
    assert.deepEqual(parseStates(text), refStates(text).ok ? (refStates(text) as { value: unknown }).value : undefined, text);
  }
});

test(
  'parseStates: non-ASCII look-alikes are not state names (cloſe-wait, lıſten, NBSP around)',
  
  () => {
    for (const text of ['cloſe-wait', 'lıſten', 'ﬁn-wait1', '\u00a0listen', 'estab\u0131ished']) {
      assert.throws(() => parseStates(text), UsageError, text);
    }
  },
);

// ---- The CLI in-process: main(argv) with random argument vectors.

interface CliGrammar {
  /** Command name -> its flags (long and short spellings), taken from the CLI's own --help. */
  commands: Map<string, string[]>;
  globalFlags: string[];
}

/** Runs main() with stdout/stderr captured. Text only: the test runner's own (binary) reports pass through. */
async function captured(argv: string[]): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const out = { stdout: '', stderr: '' };
  const realOut = process.stdout.write.bind(process.stdout);
  const realErr = process.stderr.write.bind(process.stderr);
  const grab = (key: 'stdout' | 'stderr', real: typeof process.stdout.write) =>
    ((chunk: unknown, ...rest: unknown[]): boolean => {
      if (typeof chunk !== 'string') return (real as (c: unknown, ...r: unknown[]) => boolean)(chunk, ...rest);
      out[key] += chunk;
      const done = rest.find((r): r is () => void => typeof r === 'function');
      done?.();
      return true;
    }) as typeof process.stdout.write;
  process.stdout.write = grab('stdout', realOut);
  process.stderr.write = grab('stderr', realErr);
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    const code = await Promise.race([
      main(argv),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`main(${JSON.stringify(argv)}) did not settle in 10 s (seed ${SEED})`)), 10_000);
      }),
    ]);
    return { code, ...out, ms: performance.now() - started };
  } finally {
    clearTimeout(timer);
    process.stdout.write = realOut;
    process.stderr.write = realErr;
  }
}

/** Flags from a help text's Options: section, e.g. `-p, --pid <pid>` -> ['-p', '--pid']. */
function flagsOf(help: string): string[] {
  const section = help.split(/^Options:$/m)[1]?.split(/^\S.*:$/m)[0] ?? '';
  return [...section.matchAll(/^ {2}(-\S+?)(?:, (--\S+))?(?: |$)/gm)].flatMap((m) => [m[1]!, ...(m[2] ? [m[2]] : [])]);
}

/** The CLI's commands and flags, from its own help: a command added to main.ts is fuzzed with no change here. */
async function discoverGrammar(): Promise<CliGrammar> {
  const root = await captured(['--help']);
  assert.equal(root.code, ExitCode.OK);
  const names = [...(root.stdout.split(/^Commands:$/m)[1] ?? '').matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!);
  assert.ok(names.includes('trace') && names.includes('snapshot') && names.includes('watch'), `commands from --help: ${names.join(', ')}`);
  const commands = new Map<string, string[]>();
  for (const name of names.filter((n) => n !== 'help')) {
    const help = await captured([name, '--help']);
    assert.equal(help.code, ExitCode.OK, `${name} --help`);
    commands.set(name, flagsOf(help.stdout));
  }
  return { commands, globalFlags: flagsOf(root.stdout) };
}

/** A random argument: flag values of every kind, good and bad, and junk. */
function randomValue(rng: Rng): string {
  return rng.pick([
    () => validPid(rng),
    () => validDuration(rng),
    () => validStates(rng),
    () => String(rng.int(-5, 70000)),
    () => randomText(rng, () => validDuration(rng)).slice(0, 64),
    () => rng.pick(['', '-', '--', '-1', '0', 'all', '127.0.0.1:0', '[::1]:80', 'nonexistent-file', '/dev/null', '/proc/self/status', '%s%n', '${HOME}', '$(id)']),
  ])();
}

function randomArgv(rng: Rng, grammar: CliGrammar): string[] {
  const names = [...grammar.commands.keys()];
  const argv: string[] = [];
  if (rng.chance(0.1)) argv.push(rng.pick(grammar.globalFlags));
  const command = rng.chance(0.85) ? rng.pick(names) : rng.chance(0.5) ? mutate(rng, rng.pick(names)) : randomValue(rng);
  argv.push(command);
  const flags = grammar.commands.get(command) ?? [...grammar.commands.values()].flat();
  for (let n = rng.int(0, 5); n > 0; n--) {
    const roll = rng.next();
    if (roll < 0.55) {
      const flag = rng.pick(flags.filter((f) => f !== '-h' && f !== '--help'));
      if (flag === undefined) continue;
      if (rng.chance(0.3) && flag.startsWith('--')) argv.push(`${flag}=${randomValue(rng)}`);
      else argv.push(flag, ...(rng.chance(0.8) ? [randomValue(rng)] : []));
    } else if (roll < 0.7) argv.push(`--${mutate(rng, 'pid')}`);
    else if (roll < 0.75) argv.push(rng.pick(['-h', '--help', '-V', '--version']));
    else argv.push(randomValue(rng));
  }
  return argv;
}

const hasControl = (s: string): boolean => /[\x00-\x1f\x7f]/.test(s);
const DOCUMENTED_CODES = new Set<number>(Object.values(ExitCode).filter((c) => c !== ExitCode.SOFTWARE));
const ARGV_ROUNDS = 400 * SCALE;

test(`main(argv): ${ARGV_ROUNDS} random argument vectors -> a documented exit code, one stderr line, no stack trace`, async () => {
  // Valid commands must not really run: no kernel BTF means every command that would load BPF
  // stops at its preflight (exit 69); an empty PATH and a scratch cwd keep `run` and file-writing flags harmless.
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'sockleak-fuzz-'));
  const saved = { btf: process.env.SOCKLEAK_BTF, path: process.env.PATH, cwd: process.cwd() };
  process.env.SOCKLEAK_BTF = path.join(scratch, 'no-such-btf');
  process.env.PATH = scratch;
  process.chdir(scratch);
  writeFileSync(path.join(scratch, 'garbage'), Buffer.from('\x08\x96\x01not a recording'));
  try {
    const grammar = await discoverGrammar();
    const rng = new Rng(SEED + 4);
    const seen = new Map<number, number>();
    for (let i = 0; i < ARGV_ROUNDS; i++) {
      const argv = randomArgv(rng, grammar);
      const r = await captured(argv);
      const what = `main(${JSON.stringify(argv)}) -> ${r.code}, stderr ${JSON.stringify(r.stderr)} (seed ${SEED}, round ${i})`;
      seen.set(r.code, (seen.get(r.code) ?? 0) + 1);
      assert.ok(DOCUMENTED_CODES.has(r.code), `undocumented exit code: ${what}`);
      assert.doesNotMatch(r.stderr, /^\s+at |internal error|TypeError|RangeError|ReferenceError/m, `stack trace or internal error: ${what}`);
      if (r.code === ExitCode.OK) {
        assert.doesNotMatch(r.stderr, /error/i, what);
      } else if (r.stderr === '') {
        // A report command (features) says what is missing on stdout, with its exit code.
        assert.notEqual(r.stdout, '', `an exit code without a word: ${what}`);
      } else {
        // Errors are one line starting `sockleak:` (`sockleak CMD:` for usage errors), whatever the values echo; a command may print a one-line banner first.
        const lines = r.stderr.trimEnd().split('\n');
        assert.ok(lines.length <= 2, `one error line expected: ${what}`);
        assert.match(lines.at(-1)!, r.code === ExitCode.USAGE ? /^sockleak( [a-z]+)?: .* \(see 'sockleak( [a-z]+)? --help'\)$/ : /^sockleak: /, what);
        assert.ok(!hasControl(r.stderr.trimEnd()), `control characters reach the terminal: ${what}`);
      }
    }
    // The fuzz must have explored both sides: usage errors and vectors that got as far as the preflight.
    assert.ok((seen.get(ExitCode.USAGE) ?? 0) > ARGV_ROUNDS / 10, `usage errors: ${JSON.stringify([...seen])}`);
    assert.ok((seen.get(ExitCode.UNAVAILABLE) ?? 0) > 0, `some vectors reached the BTF preflight: ${JSON.stringify([...seen])}`);
  } finally {
    process.chdir(saved.cwd);
    process.env.PATH = saved.path;
    if (saved.btf === undefined) delete process.env.SOCKLEAK_BTF;
    else process.env.SOCKLEAK_BTF = saved.btf;
    rmSync(scratch, { recursive: true, force: true });
  }
});

test('main(argv): a positional argument a command does not take is a usage error, not ignored', async () => {
  const saved = process.env.SOCKLEAK_BTF;
  process.env.SOCKLEAK_BTF = '/nonexistent/vmlinux';
  try {
    for (const argv of [['trace', '1234'], ['snapshot', 'extra'], ['watch', '30s']]) {
      assert.equal((await captured(argv)).code, ExitCode.USAGE, argv.join(' '));
    }
  } finally {
    if (saved === undefined) delete process.env.SOCKLEAK_BTF;
    else process.env.SOCKLEAK_BTF = saved;
  }
});

test(
  'main(argv): a value with a newline or an escape sequence still gives one error line, with the characters escaped',
  
  async () => {
    for (const bad of ['1\n2', '\x1b[31mred', 'a\rb']) {
      const r = await captured(['trace', '--pid', bad]);
      assert.equal(r.code, ExitCode.USAGE);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, JSON.stringify(r.stderr));
      assert.ok(!hasControl(r.stderr.trimEnd()), JSON.stringify(r.stderr));
    }
  },
);

test('main(argv): a misspelt flag or command gives one error line (the suggestion on the same line)', async () => {
  for (const argv of [['trace', '--pdi', '3'], ['tarce']]) {
    const r = await captured(argv);
    assert.equal(r.code, ExitCode.USAGE);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, JSON.stringify(r.stderr));
  }
});

// ---- The recording reader (`sockleak report FILE`): truncated, bit-flipped and random files.

/** Where each length-delimited record starts, and the end: read independently of src/recording/recording.ts. */
function recordBoundaries(data: Buffer): number[] {
  const starts: number[] = [];
  let at = 0;
  while (at < data.length) {
    starts.push(at);
    let len = 0;
    let shift = 0;
    let b: number;
    do {
      b = data[at++]!;
      len += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80);
    at += len;
  }
  assert.equal(at, data.length, 'the recording is well formed');
  return [...starts, at];
}

/** A real recording: an agent child (root, BPF) that sees a leak, a resolution and a few totals. */
async function realRecording(file: string): Promise<void> {
  const agent = spawn(process.execPath, [CLI, 'agent', '--record', file, '--listen', '127.0.0.1:0', '--threshold', '1s', '--interval', '1s'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  agent.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((r) => agent.once('close', r));
  try {
    await waitFor(() => /recording to/.test(stderr) || agent.exitCode !== null, 30_000, 'agent started');
    const backend = await startBackend('127.8.2.1');
    const holder = await startHolder();
    await holder.request({ op: 'connect', host: backend.host, port: backend.port });
    await waitFor(() => backend.accepted.length === 1, 5000, 'accept');
    await backend.remove();
    await new Promise((r) => setTimeout(r, 3000)); // past the threshold: a leak record
    holder.kill();
    await new Promise((r) => setTimeout(r, 1500)); // its resolution, and another totals record
  } finally {
    agent.kill('SIGTERM');
  }
  assert.equal(await exited, 0, stderr);
}

const RECORDING_ROUNDS = 300 * SCALE;

test(`report: ${RECORDING_ROUNDS} truncated, bit-flipped and random recordings -> exit 0 or 65 with the right byte offset, never a crash`, async (t) => {
  const probe = await captured(['report', '--help']);
  if (probe.code !== ExitCode.OK) {
    t.skip('no `report` command in this build');
    return;
  }
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'sockleak-rec-'));
  try {
    const original = path.join(scratch, 'original.rec');
    await realRecording(original);
    const data = readFileSync(original);
    const bounds = recordBoundaries(data);
    assert.ok(bounds.length >= 4, `a few records recorded: ${bounds.length - 1}`);
    const whole = await captured(['report', original]);
    assert.equal(whole.code, ExitCode.OK, whole.stderr);

    const rng = new Rng(SEED + 5);
    const file = path.join(scratch, 'mutated.rec');
    const offsetOf = (stderr: string): number | undefined => {
      const m = /byte offset (\d+)/.exec(stderr);
      return m ? Number(m[1]) : undefined;
    };
    const check = async (bytes: Buffer, what: string): Promise<{ code: number; offset: number | undefined; stdout: string }> => {
      writeFileSync(file, bytes);
      const r = await captured(['report', file]);
      const desc = `${what} (${bytes.length} bytes) -> ${r.code}, stderr ${JSON.stringify(r.stderr)} (seed ${SEED})`;
      assert.ok(r.code === ExitCode.OK || r.code === ExitCode.DATA, desc);
      assert.doesNotMatch(r.stderr, /^\s+at |internal error/m, desc);
      assert.ok(r.ms < 5000, `${desc}: took ${r.ms} ms`);
      const offset = offsetOf(r.stderr);
      if (r.code === ExitCode.DATA) {
        assert.equal(r.stderr.trimEnd().split('\n').length, 1, desc);
        assert.ok(offset !== undefined || /empty/.test(r.stderr), `${desc}: names the byte offset`);
        assert.ok(offset === undefined || offset <= bytes.length, desc);
      }
      return { code: r.code, offset, stdout: r.stdout };
    };

    for (let i = 0; i < RECORDING_ROUNDS; i++) {
      const kind = rng.int(0, 3);
      if (kind === 0) {
        // Truncated: whole records before the cut are reported, the cut record is named by its offset.
        const cut = rng.int(0, data.length - 1);
        const r = await check(data.subarray(0, cut), `truncated at ${cut}`);
        const lastStart = maxOf(bounds.filter((b) => b <= cut));
        if (cut === 0) assert.equal(r.code, ExitCode.DATA, 'empty');
        else if (bounds.includes(cut)) assert.equal(r.code, ExitCode.OK, `cut at a record boundary ${cut}: a shorter, valid recording`);
        else {
          assert.equal(r.code, ExitCode.DATA, `cut inside a record at ${cut}`);
          assert.equal(r.offset, lastStart, `cut at ${cut}: the record starting at ${lastStart} is the truncated one`);
          if (lastStart > 0) assert.notEqual(r.stdout, '', 'the report of the records before it is printed first');
        }
      } else if (kind === 1) {
        // Bit flips: anything before the first damaged record is intact and must not be blamed.
        const bytes = Buffer.from(data);
        const flips = Array.from({ length: rng.int(1, 8) }, () => rng.int(0, bytes.length - 1));
        for (const at of flips) bytes[at]! ^= 1 << rng.int(0, 7);
        const r = await check(bytes, `bits flipped at ${flips.join(',')}`);
        const firstDamaged = maxOf(bounds.filter((b) => b <= flips.reduce((m, f) => Math.min(m, f), Infinity)));
        if (r.code === ExitCode.DATA && r.offset !== undefined) assert.ok(r.offset >= firstDamaged, `offset ${r.offset} >= ${firstDamaged}`);
      } else if (kind === 2) {
        // Bytes inserted or overwritten in the middle.
        const at = rng.int(0, data.length);
        const junk = Buffer.from(Array.from({ length: rng.int(1, 64) }, () => rng.int(0, 255)));
        const bytes = rng.chance(0.5) ? Buffer.concat([data.subarray(0, at), junk, data.subarray(at)]) : Buffer.concat([data.subarray(0, at), junk, data.subarray(at + junk.length)]);
        const r = await check(bytes, `${junk.length} bytes of junk at ${at}`);
        const firstDamaged = maxOf(bounds.filter((b) => b <= at));
        if (r.code === ExitCode.DATA && r.offset !== undefined) assert.ok(r.offset >= firstDamaged, `offset ${r.offset} >= ${firstDamaged}`);
      } else {
        // Not a recording at all: random bytes, zeros, a huge length prefix, a text file.
        const bytes = rng.pick([
          () => Buffer.from(Array.from({ length: rng.int(1, 4096) }, () => rng.int(0, 255))),
          () => Buffer.alloc(rng.int(1, 4096)),
          () => Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3]),
          () => Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
          () => Buffer.from('sockleak: not a recording\n'.repeat(rng.int(1, 100))),
        ])();
        await check(bytes, 'not a recording');
      }
    }
    // And a file that does not exist: 66.
    assert.equal((await captured(['report', path.join(scratch, 'missing.rec')])).code, ExitCode.NO_INPUT);
    assert.ok(statSync(original).size === data.length);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});

test(
  'report: a record that decodes but lacks its socket (a flipped tag byte), or a directory, is bad data (65), not an internal error',
  async (t) => {
    if ((await captured(['report', '--help'])).code !== ExitCode.OK) {
      t.skip('no `report` command in this build');
      return;
    }
    const scratch = mkdtempSync(path.join(os.tmpdir(), 'sockleak-rec-'));
    try {
      // timeUnixMs 1700000000000, then field 11 (leak) present but empty: no socket.
      const file = path.join(scratch, 'leak-without-socket.rec');
      writeFileSync(file, Buffer.from('090880d095ffbc315a00', 'hex'));
      const dir = await captured(['report', scratch]);
      assert.equal(dir.code, ExitCode.DATA, dir.stderr);
      const r = await captured(['report', file]);
      assert.equal(r.code, ExitCode.DATA, r.stderr);
      assert.match(r.stderr, /byte offset 0/);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  },
);

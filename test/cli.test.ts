/**
 * The CLI without surprises (issue 21): bare `sockleak`, every `--help`'s
 * examples and exit codes, usage errors said once, one duration and size
 * grammar, `--json` on every command and no terminal sniffing, `run --json`
 * and `--report`, and one address grammar for `run --allow` and `reap --remote`.
 * Real processes, real sockets, real BPF; stdout is a pipe throughout, which is
 * exactly the case terminal sniffing used to change.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { EXIT_CODE_MEANINGS } from '../src/cli/help';
import { parseDuration, parseSize } from '../src/cli/parse';
import { ExitCode, UsageError } from '../src/errors';
import type { RunResult } from '../src/run/run';
import { CLI, runCli, sleep, waitFor, type CliResult } from './helpers';

const dir = mkdtempSync(path.join(os.tmpdir(), 'sockleak-cli-'));
const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups.splice(0)) c();
  rmSync(dir, { recursive: true, force: true });
});

const NOT_EXECUTABLE = path.join(dir, 'not-executable.sh');

/** No BTF: any command that would load BPF stops at its preflight (69) instead of running. */
const NO_BTF = { SOCKLEAK_BTF: '/nonexistent/vmlinux' };

/** A CLI run that does not block this process (its servers keep accepting meanwhile). */
function cli(args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd ?? dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
  return new Promise((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

/** A live command: its output so far, and a way to stop it as a user would. */
function startLive(args: string[]): { stdout: () => string; stderr: () => string; stop: (signal?: NodeJS.Signals) => Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  cleanups.push(() => child.kill('SIGKILL'));
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    stop: async (signal = 'SIGINT') => {
      child.kill(signal);
      return exited;
    },
  };
}

/** A server that closes every connection it accepts: each client that does not close its side waits in CLOSE_WAIT. */
async function closingServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

/** A python client that connects to PORT, sees the server's FIN, and holds its socket in CLOSE_WAIT for SECONDS. */
const LEAK = "import socket,sys,time\ns=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\ns.recv(1)\ntime.sleep(float(sys.argv[2]))";

/** The command names, from the top-level help. */
function commandNames(): string[] {
  const top = runCli(['--help']);
  return [...(top.stdout.split(/^Commands:$/m)[1] ?? '').matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
}

/** code -> meaning, from a help text's `Exit codes:` section (numeric codes only). */
function exitCodesIn(help: string): Map<number, string> {
  const section = help.split(/^Exit codes:$/m)[1] ?? '';
  return new Map([...section.matchAll(/^ {2}([0-9]+) +(.+)$/gm)].map((m) => [Number(m[1]), m[2]!]));
}

const helps = new Map<string, string>();
function helpOf(command: string): string {
  if (!helps.has(command)) {
    const r = runCli([command, '--help']);
    assert.equal(r.code, 0, `${command} --help: ${r.stderr}`);
    assert.equal(r.stderr, '');
    helps.set(command, r.stdout);
  }
  return helps.get(command)!;
}

/** The usage-error line: one line, the command named, its help pointed at. */
function assertUsageLine(r: CliResult, command: string | undefined, what: RegExp, label: string): void {
  const who = command ? `sockleak ${command}` : 'sockleak';
  assert.equal(r.code, ExitCode.USAGE, `${label}: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${label}: one line, got:\n${r.stderr}`);
  assert.ok(lines[0]!.startsWith(`${who}: `), `${label}: ${lines[0]}`);
  assert.ok(lines[0]!.endsWith(` (see '${who} --help')`), `${label}: ${lines[0]}`);
  assert.match(lines[0]!, what, label);
  assert.equal(r.stdout, '', `${label}: nothing on stdout`);
}

test('bare sockleak: the top-level help on stdout, nothing on stderr, exit 0', () => {
  const r = runCli([]);
  assert.equal(r.code, ExitCode.OK, r.stderr);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, /^Usage: sockleak \[options\] \[command\]\n/);
  assert.equal(r.stdout, runCli(['--help']).stdout, 'the same help as --help');
  assertUsageLine(runCli(['frobnicate']), undefined, /unknown command 'frobnicate'/, 'an unknown command');
  assertUsageLine(runCli(['help', 'frobnicate']), undefined, /^sockleak: unknown command 'frobnicate' /, 'help for an unknown command');
  const helpRun = runCli(['help', 'run']);
  assert.equal(helpRun.code, ExitCode.OK, helpRun.stderr);
  assert.equal(helpRun.stdout, runCli(['run', '--help']).stdout, "'help run' is 'run --help'");
});

test('every --help ends with Examples (2-4 invocations of that command) and the exit codes it can return, meanings from one table', () => {
  const names = commandNames();
  assert.deepEqual([...names].sort(), ['agent', 'features', 'ports', 'reap', 'report', 'run', 'snapshot', 'trace', 'watch']);
  for (const name of ['', ...names]) {
    const help = name ? helpOf(name) : runCli(['--help']).stdout;
    const label = name || 'sockleak';
    const examples = help.split(/^Examples:$/m)[1]?.split(/^Exit codes:$/m)[0] ?? '';
    const invocations = [...examples.matchAll(/^ {2}\$ (.+)$/gm)].map((m) => m[1]!);
    assert.ok(invocations.length >= 2 && invocations.length <= 4, `${label}: ${invocations.length} examples`);
    if (name) for (const inv of invocations) assert.ok(inv.startsWith(`sockleak ${name}`), `${label} example: ${inv}`);
    assert.ok(help.indexOf('Examples:') > help.indexOf('Options:'), `${label}: examples after the options`);
    const codes = exitCodesIn(help);
    for (const code of [ExitCode.OK, ExitCode.USAGE, ExitCode.SOFTWARE]) assert.ok(codes.has(code), `${label} lists ${code}`);
    for (const [code, meaning] of codes) {
      assert.ok(code in EXIT_CODE_MEANINGS, `${label}: ${code} is an ExitCode`);
      // A command may say what a code means for it; the usage code always reads the same.
      if (code === ExitCode.USAGE) assert.equal(meaning, EXIT_CODE_MEANINGS[code], label);
    }
    // The help's last section is the exit codes (the top level adds a pointer to the commands' help).
    const tail = help.trimEnd().split('\n').at(-1)!;
    assert.ok(/^ {2}[0-9N+]+ +\S/.test(tail) || (!name && /sockleak COMMAND --help/.test(tail)), `${label} ends with: ${tail}`);
  }
  assert.equal(exitCodesIn(runCli(['--help']).stdout).size, Object.keys(EXIT_CODE_MEANINGS).length, 'the top level lists every code');
});

test('each command returns only exit codes its --help lists: bad flags, missing things, no BTF, no privileges', () => {
  const cases: Array<[string, string[], { env?: NodeJS.ProcessEnv; asUser?: number }?]> = [];
  for (const name of commandNames()) {
    cases.push([name, [name, '--frobnicate']]);
    cases.push([name, [name, '--help']]);
  }
  cases.push(
    ['trace', ['trace', '--pid', '999999']],
    ['snapshot', ['snapshot', '--pid', '999999']],
    ['watch', ['watch', '--pid', '999999']],
    ['reap', ['reap', '--pid', '999999']],
    ['ports', ['ports', '--netns', '1']],
    ['report', ['report', path.join(dir, 'no-such-recording')]],
    ['report', ['report', '/etc/hostname']],
    ['run', ['run', '--', 'no-such-command-xyz']],
    ['run', ['run', '--', NOT_EXECUTABLE]],
    ['run', ['run', '--junit', '/nonexistent-dir/x.xml', '--', 'true']],
    ['trace', ['trace'], { env: NO_BTF }],
    ['watch', ['watch'], { env: NO_BTF }],
    ['agent', ['agent', '--listen', '127.0.0.1:0'], { env: NO_BTF }],
    ['features', ['features'], { env: NO_BTF }],
    ['trace', ['trace'], { asUser: 65534 }],
    ['snapshot', ['snapshot'], { asUser: 65534 }],
    ['features', ['features'], { asUser: 65534 }],
    ['reap', ['reap', '--older-than', '1h'], { asUser: 65534 }],
    ['ports', ['ports'], { asUser: 65534 }],
  );
  const seen = new Set<number>();
  writeFileSync(NOT_EXECUTABLE, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
  for (const [name, args, options] of cases) {
    const r = runCli(args, options);
    assert.notEqual(r.code, null, `${args.join(' ')} timed out`);
    seen.add(r.code!);
    assert.ok(exitCodesIn(helpOf(name)).has(r.code!), `${args.join(' ')} exited ${r.code}, which '${name} --help' does not list: ${r.stderr}`);
    assert.notEqual(r.code, ExitCode.SOFTWARE, `${args.join(' ')}: ${r.stderr}`);
  }
  for (const code of [0, 64, 65, 66, 69, 77, 126, 127]) assert.ok(seen.has(code), `the cases reach exit ${code}: ${[...seen].join(', ')}`);
});

test('usage errors: one line naming the command, the flag, the value and what is accepted, each once, pointing at that command\'s help', () => {
  const cases: Array<[string[], RegExp]> = [
    [['snapshot', '--older-than', '1.5x'], /^sockleak snapshot: --older-than: '1\.5x' is not a duration; use 1\.5s, 500ms, 2m, 1h30m, /],
    [['watch', '--threshold=5 minutes'], /--threshold: '5 minutes' is not a duration/],
    [['agent', '--stream-queue', '4XB'], /--stream-queue: '4XB' is not a size; use 4096, .*4MB/],
    [['agent', '--stream-queue', '4kB'], /--stream-queue: '4kB' is 4000 bytes; use 4KiB to 4GiB/],
    [['trace', '--pid', 'abc'], /--pid: 'abc' is not a process id/],
    [['reap', '--remote', '10.0.0.0/33'], /--remote '10\.0\.0\.0\/33': prefix length must be 0\.\.32/],
    [['run', '--allow', 'backend:80', '--', 'true'], /--allow 'backend:80': 'backend' is not an IP address/],
    [['ports', '--top', '0'], /--top: '0' is not a count/],
    [['trace', '--bogus'], /unknown option '--bogus'/],
    [['run'], /missing required argument 'command'/],
    [['snapshot', 'extra'], /too many arguments/],
  ];
  for (const [args, what] of cases) {
    const r = runCli(args);
    assertUsageLine(r, args[0], what, args.join(' '));
    // Said once: commander's own "option ... argument ... is invalid." no longer wraps our sentence.
    assert.doesNotMatch(r.stderr, /is invalid/, args.join(' '));
    const flag = args.find((a) => a.startsWith('--') && a !== '--')?.split('=')[0];
    if (flag && !/unknown option/.test(what.source)) assert.equal(r.stderr.split(flag).length - 1, 1, `${flag} named once: ${r.stderr}`);
  }
});

test('durations: one grammar, what sockleak prints is what it takes (1.5s, 1.5, 500ms, 2m, 1h30m, 14h3m), on every duration flag', () => {
  for (const [text, ms] of [['1.5s', 1500], ['1.5', 1500], ['500ms', 500], ['2m', 120_000], ['1h30m', 5_400_000], ['14h3m', 50_580_000], ['2d', 172_800_000], ['0.5h', 1_800_000], ['1m0.25s', 60_250]] as const) {
    assert.equal(parseDuration(text, '--threshold'), ms, text);
  }
  for (const bad of ['1.5x', '', '1.5ms', '1.2345s', 's', '1 h', '-1s', '1h-30m', '1e3']) {
    assert.throws(() => parseDuration(bad, '--threshold'), (err: unknown) => err instanceof UsageError && err.message.startsWith(`--threshold: '${bad}' is not a duration; use `), bad);
  }
  // Every flag whose help says <duration> takes the same values (no BTF: a command that gets past its flags stops at its preflight).
  const flags: Array<[string, string]> = [];
  for (const name of commandNames()) {
    for (const m of helpOf(name).matchAll(/^ {2}(--[a-z-]+) <duration>/gm)) flags.push([name, m[1]!]);
  }
  assert.ok(flags.length >= 5, `duration flags: ${JSON.stringify(flags)}`);
  for (const [name, flag] of flags) {
    const tail = name === 'run' ? ['--', 'true'] : [];
    for (const good of ['1.5s', '1h30m']) {
      const r = runCli([name, flag, good, ...(name === 'reap' ? ['--pid', '999999'] : []), ...tail], { env: NO_BTF });
      assert.notEqual(r.code, ExitCode.USAGE, `${name} ${flag} ${good}: ${r.stderr}`);
    }
    assertUsageLine(runCli([name, flag, '1.5x', ...tail]), name, new RegExp(`${flag}: '1\\.5x' is not a duration`), `${name} ${flag}`);
  }
});

test('sizes: 4MB is SI (10^6), 4M and 4MiB are binary, 4kB 4000, 4096 bytes; anything else names the flag and the accepted forms', () => {
  for (const [text, bytes] of [
    ['4096', 4096], ['4096B', 4096], ['4kB', 4000], ['4KB', 4000], ['4k', 4096], ['4KiB', 4096],
    ['4MB', 4_000_000], ['4mb', 4_000_000], ['4M', 4 * 2 ** 20], ['4MiB', 4 * 2 ** 20], ['1GB', 1e9], ['1G', 2 ** 30], ['1.5MiB', 1.5 * 2 ** 20], ['4.1MB', 4_100_000],
  ] as const) {
    assert.equal(parseSize(text, '--stream-queue'), bytes, text);
  }
  for (const bad of ['4XB', '', 'MB', '4 MB', '-4k', '1.5', '4TB', '1.2345k']) {
    assert.throws(() => parseSize(bad, '--stream-queue'), (err: unknown) => err instanceof UsageError && err.message.startsWith(`--stream-queue: '${bad}' is not a size; use `), bad);
  }
  for (const good of ['4MB', '4MiB', '4M', '4096', '8kB']) {
    const r = runCli(['agent', '--stream-queue', good, '--listen', '127.0.0.1:0'], { env: NO_BTF });
    assert.equal(r.code, ExitCode.UNAVAILABLE, `agent --stream-queue ${good} gets past its flags: ${r.stderr}`);
  }
});

test('--json on every command; without it, text for people, whether stdout is a terminal or not (one-shot commands)', () => {
  for (const name of commandNames()) assert.match(helpOf(name), /^ {2}--json /m, `${name} --help lists --json`);
  const isJson = (text: string): boolean => {
    try {
      JSON.parse(text);
      return true;
    } catch {
      return false;
    }
  };
  for (const args of [['snapshot', '--state', 'listen'], ['ports'], ['features'], ['reap', '--remote', '192.0.2.1:9', '--older-than', '1h']]) {
    const text = runCli(args);
    assert.ok([0, ExitCode.UNAVAILABLE].includes(text.code!), `${args.join(' ')}: ${text.stderr}`);
    assert.ok(text.stdout.length > 0 && !isJson(text.stdout), `${args.join(' ')} piped prints text:\n${text.stdout.slice(0, 300)}`);
    const json = runCli([...args, '--json']);
    assert.equal(json.code, text.code, `${args.join(' ')} --json: ${json.stderr}`);
    assert.ok(isJson(json.stdout), `${args.join(' ')} --json prints one JSON document:\n${json.stdout.slice(0, 300)}`);
  }
});

test('trace and watch: text (the live screen) unless --json, ndjson with it; never decided by the terminal', { timeout: 120_000 }, async () => {
  const server = await closingServer();
  cleanups.push(() => void server.close());
  const clients: net.Socket[] = [];
  cleanups.push(() => clients.forEach((c) => c.destroy()));
  // Traffic for trace to show: a connection every 50 ms until the test ends.
  const traffic = setInterval(() => {
    const c = net.connect({ port: server.port, host: '127.0.0.1' }, () => undefined);
    c.on('error', () => undefined);
    clients.push(c);
  }, 50);
  cleanups.push(() => clearInterval(traffic));
  try {
    const text = await cli(['trace', '--count', '5']);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 5, text.stdout);
    for (const line of lines) assert.match(line, /^\d\d:\d\d:\d\d\.\d{3} (state|close|connect|accept|bind) /, line);
    const json = await cli(['trace', '--json', '--count', '5']);
    assert.equal(json.code, 0, json.stderr);
    const events = json.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string; cookie: string });
    assert.equal(events.length, 5);
    for (const e of events) assert.match(e.cookie, /^[0-9]+$/);

    const screen = startLive(['watch', '--threshold', '1s']);
    const records = startLive(['watch', '--json', '--threshold', '1s']);
    await waitFor(() => /CLOSE_WAIT longer than 1s/.test(screen.stdout()), 30_000, 'the live screen');
    // The held CLOSE_WAIT of a client that ignores the FIN: a record for the ndjson watcher.
    const leak = net.connect({ port: server.port, host: '127.0.0.1', allowHalfOpen: true });
    leak.on('end', () => undefined);
    clients.push(leak);
    await waitFor(() => records.stdout().includes(`"remote":"127.0.0.1:${server.port}"`), 30_000, 'a leak record');
    assert.equal(await screen.stop(), 0, screen.stderr());
    assert.equal(await records.stop(), 0, records.stderr());
    assert.ok(screen.stdout().startsWith('\x1b[H\x1b[2J'), 'the live screen, piped or not');
    assert.doesNotMatch(screen.stdout(), /^\{/m);
    for (const line of records.stdout().trimEnd().split('\n')) assert.equal(typeof (JSON.parse(line) as { type: string }).type, 'string', line);
  } finally {
    clearInterval(traffic);
  }
});

test('agent --json: its status lines as ndjson on stdout (started with the URL it serves, stopped with the totals)', { timeout: 120_000 }, async () => {
  const agent = startLive(['agent', '--json', '--listen', '127.0.0.1:0', '--no-ports']);
  await waitFor(() => agent.stdout().includes('\n'), 60_000, 'the started line');
  const started = JSON.parse(agent.stdout().split('\n')[0]!) as { status: string; url: string; port: number };
  assert.equal(started.status, 'started');
  assert.match(started.url, /^http:\/\/127\.0\.0\.1:[0-9]+$/);
  const health = await fetch(`${started.url}/healthz`);
  assert.equal(health.status, 200);
  assert.equal(await agent.stop('SIGTERM'), 0, agent.stderr());
  const lines = agent.stdout().trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(lines.length, 2, agent.stdout());
  assert.equal(lines[1]!.status, 'stopped');
  for (const key of ['leaksOpen', 'records', 'emitted', 'lost', 'mapFull']) assert.equal(typeof lines[1]![key], 'number', key);
  assert.doesNotMatch(agent.stderr(), /agent on http/, 'no sentence besides the ndjson');
});

test('run: --json is a flag (the summary, one JSON line after the command\'s output), --report FILE writes it: `run --json make test` runs `make test`', { timeout: 120_000 }, async () => {
  const cwd = mkdtempSync(path.join(dir, 'run-'));
  const echo = await cli(['run', '--json', 'echo', 'hello'], { cwd });
  assert.equal(echo.code, 0, echo.stderr);
  const out = echo.stdout.trimEnd().split('\n');
  assert.equal(out[0], 'hello');
  assert.equal(out.length, 2, echo.stdout);
  const doc = JSON.parse(out[1]!) as RunResult;
  assert.deepEqual([doc.command, doc.exitCode, doc.leaks], [['echo', 'hello'], 0, []]);
  assert.ok(!existsSync(path.join(cwd, 'echo')), '--json took no file name');
  assert.doesNotMatch(echo.stderr, /no leaked sockets/, 'no human summary besides the JSON');

  const server = await closingServer();
  cleanups.push(() => void server.close());
  const report = path.join(cwd, 'leaks.json');
  const leaky = await cli(['run', '--threshold', '1s', '--report', report, '--', 'python3', '-c', LEAK, String(server.port), '2.5'], { cwd });
  assert.equal(leaky.code, ExitCode.LEAKED, leaky.stderr);
  assert.match(leaky.stderr, /1 leaked socket/, 'the human summary on stderr');
  const written = JSON.parse(readFileSync(report, 'utf8')) as RunResult;
  assert.deepEqual(written.leaks.map((l) => l.remote), [`127.0.0.1:${server.port}`]);
  const both = await cli(['run', '--json', '--threshold', '1s', '--', 'python3', '-c', LEAK, String(server.port), '2.5'], { cwd });
  assert.equal(both.code, ExitCode.LEAKED, both.stderr);
  const last = JSON.parse(both.stdout.trimEnd().split('\n').at(-1)!) as RunResult;
  assert.deepEqual(last.leaks.map((l) => l.remote), [`127.0.0.1:${server.port}`]);
});

/** The same patterns for both flags: [pattern, matches 127.0.0.1:PORT of the test's server]. */
const SHARED = (port: number): Array<[string, boolean]> => [
  [`127.0.0.1:${port}`, true],
  ['127.0.0.1', true],
  [`*:${port}`, true],
  [`:${port}`, true],
  [`127.0.0.0/8:${port}`, true],
  [`127.0.0.*:${port - 1}-${port + 1}`, true],
  [`127.0.0.2:${port}`, false],
  [`:${port === 65535 ? 1 : port + 1}`, false],
  [`[::1]:${port}`, false],
  ['::1', false],
];
const MALFORMED = ['10.0.0.1:99999', '10.0.0.0/33', 'backend:80', '1.2.3.4:80:90', '[10.0.0.1]:80', '10.0.0.1:80-70', '[zz::*]', ''];

test('run --allow and reap --remote: the same grammar, the same verdicts on a real CLOSE_WAIT socket, the same refusals', { timeout: 300_000 }, async () => {
  for (const bad of MALFORMED) {
    const run = runCli(['run', '--allow', bad, '--', 'true']);
    assertUsageLine(run, 'run', new RegExp(`--allow '${bad.replace(/[.*[\]]/g, '\\$&')}': `), `run --allow '${bad}'`);
    const reap = runCli(['reap', '--remote', bad]);
    assertUsageLine(reap, 'reap', new RegExp(`--remote '${bad.replace(/[.*[\]]/g, '\\$&')}': `), `reap --remote '${bad}'`);
    assert.equal(run.stderr.replace(/^sockleak run: --allow/, ''), reap.stderr.replace(/^sockleak reap: --remote/, '').replace("'sockleak reap --help'", "'sockleak run --help'"), `the same reason for '${bad}'`);
  }

  const server = await closingServer();
  cleanups.push(() => void server.close());
  // reap: a CLOSE_WAIT socket this process holds (it ignores the FIN); a dry run lists it or not.
  const held = net.connect({ port: server.port, host: '127.0.0.1', allowHalfOpen: true });
  held.on('end', () => undefined);
  cleanups.push(() => held.destroy());
  await new Promise((resolve) => held.once('end', resolve));
  await sleep(50);
  for (const [pattern, hit] of SHARED(server.port)) {
    // --max: every match listed, however many CLOSE_WAIT sockets to 127.0.0.1 other tests hold.
    const r = runCli(['reap', '--remote', pattern, '--max', '65536', '--json']);
    assert.equal(r.code, 0, `reap --remote '${pattern}': ${r.stderr}`);
    const listed = (JSON.parse(r.stdout) as { sockets: Array<{ remote: string; owners: Array<{ pid: number }> }> }).sockets;
    const mine = listed.filter((s) => s.remote === `127.0.0.1:${server.port}` && s.owners.some((o) => o.pid === process.pid));
    assert.equal(mine.length, hit ? 1 : 0, `reap --remote '${pattern}' lists the held socket: ${hit}`);
  }
  // run: the same patterns decide whether the command's leak counts.
  for (const [pattern, hit] of SHARED(server.port)) {
    const r = await cli(['run', '--json', '--threshold', '1s', '--allow', pattern, '--', 'python3', '-c', LEAK, String(server.port), '2']);
    const doc = JSON.parse(r.stdout.trimEnd().split('\n').at(-1)!) as RunResult;
    assert.equal(r.code, hit ? 0 : ExitCode.LEAKED, `run --allow '${pattern}': ${r.stderr}`);
    assert.deepEqual([doc.allowed, doc.leaks.length], hit ? [1, 0] : [0, 1], `run --allow '${pattern}'`);
  }
});

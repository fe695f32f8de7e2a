/** Bad input and bad environments: one line on stderr, a documented exit code, no stack trace. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { ExitCode } from '../src/errors';
import { runCli } from './helpers';

function assertOneLine(stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line expected, got:\n${stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

test('not root: exit 77 naming the missing capabilities', () => {
  const r = runCli(['trace'], { asUser: 65534 });
  assert.equal(r.code, ExitCode.NO_PERMISSION);
  assertOneLine(r.stderr, /^sockleak: permission denied: .*CAP_BPF.*CAP_PERFMON/);
});

test('unknown flag: exit 64', () => {
  const r = runCli(['trace', '--frobnicate']);
  assert.equal(r.code, ExitCode.USAGE);
  assertOneLine(r.stderr, /unknown option '--frobnicate'/);
});

test('--pid not a number: exit 64', () => {
  for (const bad of ['abc', '-3', '0', '12x', '99999999999']) {
    const r = runCli(['trace', '--pid', bad]);
    assert.equal(r.code, ExitCode.USAGE, bad);
    assertOneLine(r.stderr, /--pid/);
  }
});

test('unknown pid: exit 66', () => {
  const r = runCli(['trace', '--pid', '999999']);
  assert.equal(r.code, ExitCode.NO_INPUT);
  assertOneLine(r.stderr, /no process with pid 999999/);
});

test('no BTF: exit 69', () => {
  const r = runCli(['trace'], { env: { SOCKLEAK_BTF: '/nonexistent/vmlinux' } });
  assert.equal(r.code, ExitCode.UNAVAILABLE);
  assertOneLine(r.stderr, /no kernel BTF at \/nonexistent\/vmlinux/);
});

test('BTF that is not the kernel\'s (a non-BTF file): exit 69, nothing left attached', () => {
  const r = runCli(['trace'], { env: { SOCKLEAK_BTF: '/etc/hostname' } });
  assert.equal(r.code, ExitCode.UNAVAILABLE);
  assertOneLine(r.stderr, /^sockleak: /);
});

test('unknown command: exit 64', () => {
  const r = runCli(['frobnicate']);
  assert.equal(r.code, ExitCode.USAGE);
  assertOneLine(r.stderr, /unknown command/);
});

test('snapshot/watch bad input: unknown state, malformed duration -> 64; unknown pid -> 66', () => {
  for (const args of [
    ['snapshot', '--state', 'half-open'],
    ['snapshot', '--older-than', '5 minutes'],
    ['snapshot', '--older-than', '-1s'],
    ['watch', '--threshold', '5x'],
    ['watch', '--threshold', ''],
  ]) {
    const r = runCli(args);
    assert.equal(r.code, ExitCode.USAGE, args.join(' '));
    assertOneLine(r.stderr, new RegExp(`^sockleak ${args[0]}: ${args[1]}: '.*' is not .* \\(see 'sockleak ${args[0]} --help'\\)$`));
  }
  for (const args of [['snapshot', '--pid', '999999'], ['watch', '--pid', '999999']]) {
    const r = runCli(args);
    assert.equal(r.code, ExitCode.NO_INPUT, args.join(' '));
    assertOneLine(r.stderr, /no process with pid 999999/);
  }
});

test('a program the verifier rejects: exit 69 naming the program, nothing left loaded', () => {
  const before = runBpftool();
  const r = runCli(['trace'], { env: { SOCKLEAK_FAULT: 'verifier' } });
  assert.equal(r.code, ExitCode.UNAVAILABLE);
  assertOneLine(r.stderr, /kernel refused BPF program handle_sys_exit \(EACCES: .+\)/);
  assert.deepEqual(runBpftool(), before, 'no sockleak program left loaded');
});

test('snapshot --json prints the documented shape', () => {
  const r = runCli(['snapshot', '--json', '--state', 'all']);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { takenAt: string; sockets: Array<Record<string, unknown>>; lost: number };
  assert.ok(!Number.isNaN(Date.parse(doc.takenAt)));
  assert.equal(doc.lost, 0);
  for (const s of doc.sockets) {
    for (const key of ['cookie', 'state', 'family', 'local', 'remote', 'netns', 'owners', 'creator', 'recvQ', 'sendQ', 'keepalive', 'stateAgeMs', 'ageEstimated']) {
      assert.ok(key in s, `${key} in ${JSON.stringify(s)}`);
    }
    assert.match(String(s.cookie), /^[0-9]+$/);
  }
});

/** Names of loaded BPF programs that belong to sockleak (handle_*, scan_*, new_leaks). */
function runBpftool(): string[] {
  const r = spawnSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' });
  const progs = JSON.parse(r.stdout || '[]') as Array<{ id: number; name?: string }>;
  return progs.filter((p) => /^(handle_|scan_|new_leaks)/.test(p.name ?? '')).map((p) => `${p.id}`);
}

/** Bad input and bad environments: one line on stderr, a documented exit code, no stack trace. */
import assert from 'node:assert/strict';
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

/** Remote patterns (remote-pattern.ts: run --allow and reap --remote) and the JUnit writer's escaping: pure, no BPF. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { xmlEscape } from '../src/cli/junit';
import { UsageError } from '../src/errors';
import { parseRemotePattern, type RemotePattern } from '../src/remote-pattern';

const matches = (pattern: string, remote: string): boolean => parseRemotePattern(pattern).matches(remote);

test('IPv4: exact, glob, CIDR, with and without ports', () => {
  assert.ok(matches('10.0.0.5:80', '10.0.0.5:80'));
  assert.ok(!matches('10.0.0.5:80', '10.0.0.5:81'));
  assert.ok(matches('10.0.0.5', '10.0.0.5:1234'), 'no port: any port');
  assert.ok(matches('10.0.0.*:80', '10.0.0.123:80'));
  assert.ok(!matches('10.0.0.*:80', '10.0.1.1:80'));
  assert.ok(matches('10.0.0.?:80', '10.0.0.7:80'));
  assert.ok(!matches('10.0.0.?:80', '10.0.0.17:80'));
  assert.ok(matches('*:5432', '192.168.1.1:5432'));
  assert.ok(matches('*:5432', '[2001:db8::1]:5432'), '* is any host, IPv6 too');
  assert.ok(!matches('*:5432', '192.168.1.1:5433'));
  assert.ok(matches('*', '1.2.3.4:9'));
  assert.ok(matches('10.0.0.0/8', '10.200.3.4:443'));
  assert.ok(!matches('10.0.0.0/8', '11.0.0.1:443'));
  assert.ok(matches('10.0.0.0/8:8000-8999', '10.1.1.1:8080'));
  assert.ok(!matches('10.0.0.0/8:8000-8999', '10.1.1.1:9000'));
  assert.ok(matches('127.0.0.1', '[::ffff:127.0.0.1]:80'), 'IPv4-mapped IPv6 remotes match IPv4 patterns');
  assert.ok(matches('127.0.0.0/8:*', '[::ffff:127.0.0.1]:80'));
});

test('IPv6: in brackets, exact (any spelling), glob, CIDR', () => {
  assert.ok(matches('[::1]:80', '[::1]:80'));
  assert.ok(matches('[0:0::1]', '[::1]:5000'), 'exact addresses compare as addresses');
  assert.ok(matches('[fd00::/8]:*', '[fd12:3456::1]:22'));
  assert.ok(!matches('[fd00::/8]', '[2001:db8::1]:22'));
  assert.ok(matches('[2001:db8:*]:443', '[2001:db8::5]:443'));
  assert.ok(!matches('[::1]', '127.0.0.1:80'));
  assert.ok(!matches('127.0.0.1', '[::1]:80'));
});

test('IPv6 without brackets: an address or a block, never a port; any host by port alone', () => {
  assert.ok(matches('::1', '[::1]:5000'));
  assert.ok(matches('fd00::/8', '[fd12::1]:22'));
  assert.ok(!matches('fd00::/8', '[2001:db8::1]:22'));
  assert.ok(matches('fd00::1:80', '[fd00::1:80]:9'), 'the last group is part of the address');
  assert.ok(!matches('fd00::1:80', '[fd00::1]:80'));
  assert.ok(matches(':5432', '10.1.2.3:5432'));
  assert.ok(matches(':5432', '[::1]:5432'));
  assert.ok(!matches(':5432', '10.1.2.3:5433'));
  assert.ok(matches(':8000-8999', '10.1.2.3:8080'));
});

test('narrows: false only for patterns that let every peer of a family through at any port', () => {
  for (const p of ['*', ':*', '*:*', '0.0.0.0/0', '[::/0]', '::/0', '*.*.*.*', '[*]']) {
    assert.equal(parseRemotePattern(p).narrows, false, p);
  }
  for (const p of ['*:80', ':80', '0.0.0.0/0:80', '10.0.0.0/8', '10.0.0.*', '[::1]', '127.0.0.1']) {
    assert.equal(parseRemotePattern(p).narrows, true, p);
  }
});

test('errors name the flag the pattern came from', () => {
  assert.throws(() => parseRemotePattern('10.0.0.0/33'), /^UsageError: --allow '10\.0\.0\.0\/33': prefix length/);
  assert.throws(() => parseRemotePattern('10.0.0.0/33', { flag: '--remote' }), /^UsageError: --remote '10\.0\.0\.0\/33': prefix length/);
  assert.deepEqual(['10.0.0.1', '[::1]:80'].map(parseRemotePattern as (text: string, index: unknown) => RemotePattern).map((p) => p.text), ['10.0.0.1', '[::1]:80'], 'as a map() callback');
});

test('malformed patterns are usage errors with the reason', () => {
  for (const [bad, reason] of [
    ['10::1:80:90x', /brackets/],
    ['10::1:80:90:1:2:3:4', /brackets/],
    ['1.2.3.4:80:90', /brackets/],
    ['[10.0.0.1]:80', /brackets are for IPv6/],
    ['', /empty/],
    ['10.0.0.1:99999', /port/],
    ['10.0.0.1:80-70', /port/],
    ['10.0.0.0/33', /prefix/],
    ['10.0.0/8', /not an IPv4 address/],
    ['example.com:80', /not an IP address/],
    ['[zz::*]', /glob/],
    ['[::1', /brackets|not an IP/],
  ] as const) {
    assert.throws(() => parseRemotePattern(bad), (err: unknown) => err instanceof UsageError && reason.test(err.message), bad);
  }
});

test('JUnit text: markup escaped, characters XML cannot hold replaced', () => {
  assert.equal(xmlEscape(`a<b>&"c'`), 'a&lt;b&gt;&amp;&quot;c&apos;');
  assert.equal(xmlEscape('comm\x01\x1b[0m\uFFFE'), 'comm\uFFFD\uFFFD[0m\uFFFD');
  assert.equal(xmlEscape('tab\tnl\n'), 'tab\tnl\n');
  assert.equal(xmlEscape('\u{1F600}'), '\u{1F600}', 'astral characters are fine');
  assert.equal(xmlEscape('\uD800x'), '\uFFFDx', 'lone surrogates are not');
});

/**
 * The wire schema's conventions, checked by the real tools: `buf lint`
 * (STANDARD), `buf breaking` against the last released copy
 * (proto/released/VERSION, scripts/release-proto.sh), the protoc line of the
 * file's own header, and the generated TypeScript types being the
 * generator's output for the .proto as it is now.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import protobuf from 'protobufjs';
import { fromSocket, toSocket } from '../src/recording/mapping';
import { decodeRecordBytes, encodeRecord } from '../src/recording/schema';
import type { SocketInfo } from '../src/sockets';
import { TCP_STATES } from '../src/tcp-states';
import { ROOT } from './helpers';

const BUF = path.join(ROOT, 'node_modules', '.bin', 'buf');
const PROTO = path.join(ROOT, 'proto', 'sockleak', 'v1', 'sockleak.proto');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'sockleak-proto-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function run(cmd: string, args: string[], cwd = ROOT): { code: number | null; out: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** The highest MAJOR.MINOR.PATCH under proto/released: the last release's schema. */
function lastRelease(): string {
  const versions = readdirSync(path.join(ROOT, 'proto', 'released')).filter((v) => /^\d+\.\d+\.\d+$/.test(v));
  const key = (v: string): number[] => v.split('.').map(Number);
  versions.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    return x[0]! - y[0]! || x[1]! - y[1]! || x[2]! - y[2]!;
  });
  assert.ok(versions.length > 0, 'proto/released holds at least one released schema');
  return path.join('proto', 'released', versions[versions.length - 1]!);
}

/** A module of its own in a temp dir holding the working schema with `edit` applied. */
function editedModule(name: string, edit: (text: string) => string): string {
  const dir = path.join(tmp, name);
  cpSync(path.join(ROOT, 'proto', 'sockleak'), path.join(dir, 'sockleak'), { recursive: true });
  writeFileSync(path.join(dir, 'buf.yaml'), 'version: v2\nlint:\n  use: [STANDARD]\nbreaking:\n  use: [FILE]\n');
  const file = path.join(dir, 'sockleak', 'v1', 'sockleak.proto');
  const before = readFileSync(file, 'utf8');
  const after = edit(before);
  assert.notEqual(after, before, `${name}: the edit applies`);
  writeFileSync(file, after);
  return dir;
}

test('buf lint (STANDARD) passes on proto/', () => {
  const r = run(BUF, ['lint']);
  assert.equal(r.code, 0, r.out);
});

test('buf lint fails on an enum value without its prefix (the check can fail)', () => {
  const dir = editedModule('lint', (t) => t.replace('HOW_CLOSE = 1;', 'CLOSE = 1;'));
  const r = run(BUF, ['lint', dir]);
  assert.equal(r.code, 100, r.out);
  assert.match(r.out, /should be prefixed with "HOW_"/);
});

test('buf breaking: the working schema is compatible with the last release', () => {
  const against = lastRelease();
  const r = run(BUF, ['breaking', '--against', against]);
  assert.equal(r.code, 0, `against ${against}: ${r.out}`);
});

test('buf breaking fails on a renumbered field and on a changed type (the check can fail)', () => {
  const against = path.join(ROOT, lastRelease());
  const retyped = editedModule('retyped', (t) => t.replace('uint64 cookie = 1;\n  TcpState state = 2;', 'uint32 cookie = 1;\n  TcpState state = 2;'));
  const r = run(BUF, ['breaking', retyped, '--against', against]);
  assert.equal(r.code, 100, r.out);
  assert.match(r.out, /"cookie" on message "SocketInfo" changed type from "uint64" to "uint32"/);
  const renumbered = editedModule('renumbered', (t) => t.replace('Gap gap = 18;', 'Gap gap = 99;'));
  const r2 = run(BUF, ['breaking', renumbered, '--against', against]);
  assert.equal(r2.code, 100, r2.out);
  assert.match(r2.out, /field "18" with name "gap" on message "Record" was deleted/);
});

test("the header's protoc example compiles the schema", (t) => {
  if (run('sh', ['-c', 'command -v protoc']).code !== 0) {
    t.skip('protoc not installed (scripts/setup.sh installs protobuf-compiler)');
    return;
  }
  const text = readFileSync(PROTO, 'utf8');
  const line = /^\/\/\s+(protoc .*)$/m.exec(text)?.[1];
  assert.ok(line, 'the header has a protoc line');
  const out = path.join(tmp, 'protoc-out');
  mkdirSync(out);
  const args = line.split(/\s+/).slice(1).map((a) => a.replace(/=OUT$/, `=${out}`));
  const r = run('protoc', args);
  assert.equal(r.code, 0, `${line}: ${r.out}`);
  for (const generated of ['sockleak/v1/sockleak.pb.cc', 'sockleak/v1/sockleak_pb2.py']) assert.ok(existsSync(path.join(out, generated)), `${generated} generated`);
});

test('src/generated/sockleak.ts is what scripts/gen-proto-types.mjs makes of the .proto now', () => {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'gen-proto-types.mjs'), path.relative(ROOT, PROTO)], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(path.join(ROOT, 'src', 'generated', 'sockleak.ts'), 'utf8'), r.stdout, 'stale: run npm run build:ts');
});

test('TcpState on the wire is the kernel number (TCP_STATE_X = tcp_states.h X), for every state', () => {
  const record = protobuf.loadSync(PROTO).lookupType('sockleak.v1.Record');
  const base: SocketInfo = {
    cookie: '18446744073709551615',
    state: 'UNKNOWN',
    family: 4,
    local: '127.0.0.1:1',
    remote: '127.0.0.1:2',
    netns: 1,
    owners: [],
    creator: null,
    recvQ: 0,
    sendQ: 0,
    keepalive: false,
    keepaliveProbeInMs: null,
    keepaliveReapByMs: null,
    stateAgeMs: null,
    ageEstimated: false,
    uid: 0,
  };
  TCP_STATES.forEach((name, kernel) => {
    const framed = encodeRecord({ timeUnixMs: 1, seq: 1, leak: { socket: toSocket({ ...base, state: name }) } });
    const raw = record.decodeDelimited(framed) as unknown as { leak: { socket: { state: number } } };
    assert.equal(raw.leak.socket.state, kernel, `${name} is ${kernel} on the wire`);
    const back = decodeRecordBytes(record.encode(raw as never).finish());
    assert.ok('leak' in back && back.leak.socket);
    assert.equal(fromSocket(back.leak.socket).state, name);
  });
  // Enums are open: a number this schema does not name (a newer writer, a flipped bit) decodes as a number.
  const future = record.encode(record.fromObject({ timeUnixMs: 1, seq: 1, leak: { socket: { cookie: 1, state: 99 } } })).finish();
  const decoded = decodeRecordBytes(future);
  assert.ok('leak' in decoded && decoded.leak.socket);
  assert.equal(decoded.leak.socket.state, 99);
  assert.equal(fromSocket(decoded.leak.socket).state, 'UNKNOWN');
});

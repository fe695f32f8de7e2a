/**
 * Where in the code each leak was made (issue #24, part 1): real leakers, real
 * BPF, the creating connect()'s stack named from the leaker's own binary.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { after, afterEach, test } from 'node:test';
import { groupSockets, renderGroups } from '../src/cli/leak-groups';
import { renderRunSummary, runJson } from '../src/cli/run-report';
import { runWithLeakCheck } from '../src/run/run';
import { forcedRefusals, notedFallbacks, onFallback, REFUSE_ENV, type Fallback } from '../src/kernel/fallbacks';
import { fromSocket, toBody } from '../src/recording/mapping';
import { decodeRecordBytes, encodeRecord } from '../src/recording/schema';
import { watch } from '../src/watch/leak-engine';
import type { LeakRecord, WatchRecord } from '../src/watch-records';
import http from 'node:http';
import { buildGoLeaker, GO_LEAKER_SOURCE, HAVE_GO, httpRequest, ROOT, startAgentProcess, startBackend, waitFor, type Backend } from './helpers';
import type { RecordMessage } from '../src/recording/messages';

const SOURCE = path.join(ROOT, 'test', 'fixtures', 'leak-stack.c');
const JS_SOURCE = path.join(ROOT, 'test', 'fixtures', 'leak-stack.js');
const dir = mkdtempSync(path.join(tmpdir(), 'sockleak-stacks-'));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});
const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** The line of `marker` in a fixture's source (the C leaker's by default): where the test expects the frame. */
function lineOf(marker: string, source = SOURCE): number {
  return readFileSync(source, 'utf8').split('\n').findIndex((l) => l.includes(marker)) + 1;
}

function recorder(options: Parameters<typeof watch>[0]): WatchRecord[] {
  const watcher = watch(options);
  const records: WatchRecord[] = [];
  const pumping = (async () => {
    for await (const r of watcher) records.push(r);
  })();
  stops.push(async () => {
    await watcher.close();
    await pumping;
  });
  return records;
}

async function startLeaker(argv: string[], backend: Backend, count: number, extra: string[] = []): Promise<ChildProcess> {
  const child = spawn(argv[0]!, [...argv.slice(1), backend.host, String(backend.port), String(count), ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const [line] = (await Promise.race([once(child.stdout!, 'data'), once(child, 'exit')])) as [Buffer | number];
  assert.ok(Buffer.isBuffer(line) && line.toString().includes('ready'), 'the leaker connected');
  return child;
}

const leaksOf = (records: WatchRecord[], pid: number): LeakRecord[] =>
  records.filter((r): r is LeakRecord => r.type === 'leak' && r.creator?.pid === pid);

/** scripts/test-fallbacks.sh runs this file again on each forced path: stacks are asserted where the path captures them. */
const traced = !forcedRefusals().some((r) => ['bpf', 'handle_set_state', 'handle_set_state_stacks'].includes(r));
/** Accepted sockets' creators need an accept() hook: the per-syscall tracepoints' (one group with close() and bind()) or the tp_btf syscall hooks. */
const acceptCreators = traced && !forcedRefusals().includes('tp_accept_exit');

/** Builds the C leaker with frame pointers and DWARF. */
function buildLeaker(name: string): string {
  const binary = path.join(dir, name);
  const built = spawnSync('gcc', ['-O1', '-fno-omit-frame-pointer', '-g', '-pthread', '-o', binary, SOURCE], { encoding: 'utf8' });
  assert.equal(built.status, 0, built.stderr);
  return binary;
}

for (const threaded of [false, true]) {
  const how = threaded ? 'multi-threaded (glibc moves the stack pointer before the syscall)' : 'single-threaded';
  test(`a C leaker built with frame pointers, ${how}: the stack names open_backend first, with file:line, then worker_loop and main`, { skip: !traced && 'no creator stacks on this path' }, async () => {
    const binary = buildLeaker(threaded ? 'leak-stack-mt' : 'leak-stack');
    const backend = await startBackend('127.0.0.1');
    const records = recorder({ thresholdMs: 300, tickMs: 100, stacks: true });
    await new Promise((r) => setTimeout(r, 300)); // attached
    const leaker = await startLeaker([binary], backend, 3, threaded ? ['threaded'] : []);
    await waitFor(() => backend.accepted.length === 3, 5000, 'accepts');
    await backend.remove();
    await waitFor(() => leaksOf(records, leaker.pid!).length === 3, 8000, '3 leaks');
    for (const leak of leaksOf(records, leaker.pid!)) {
      const stack = leak.creator?.stack;
      assert.ok(stack && stack.length >= 3, `a stack: ${JSON.stringify(leak.creator)}`);
      assert.equal(stack[0]!.symbol, 'open_backend', `the function that called connect() comes first, not its caller: ${JSON.stringify(stack)}`);
      assert.equal(path.basename(stack[0]!.file ?? ''), 'leak-stack.c');
      assert.equal(stack[0]!.line, lineOf('LEAK_LINE'));
      assert.equal(stack[0]!.module, binary);
      assert.equal(stack[1]!.symbol, 'worker_loop');
      assert.equal(stack[1]!.line, lineOf('WORKER_LINE'));
      assert.equal(stack[2]!.symbol, 'main');
      assert.equal(leak.creator?.stackTruncated, false, 'a frame-pointer stack down to main is whole');
      assert.match(stack[0]!.addr, /^0x[0-9a-f]+$/);
    }
    // The agent's stream (protobuf Creator.stack) carries the same frames, all 64 bits of each address.
    const leak = leaksOf(records, leaker.pid!)[0]!;
    const bytes = encodeRecord({ timeUnixMs: Date.now(), seq: 1, ...toBody(leak) });
    let prefix = 0;
    while (bytes[prefix]! & 0x80) prefix++; // the length varint
    const decoded = decodeRecordBytes(bytes.subarray(prefix + 1));
    assert.ok('leak' in decoded && decoded.leak.socket);
    assert.deepEqual(fromSocket(decoded.leak.socket).creator, leak.creator);
    const table = renderGroups(groupSockets(leaksOf(records, leaker.pid!)));
    assert.match(table, new RegExp(`created at open_backend \\(leak-stack\\.c:${lineOf('LEAK_LINE')}\\) <- worker_loop \\(leak-stack\\.c:${lineOf('WORKER_LINE')}\\) <- main`));
  });
}

test('incident 1\'s shape: 16 worker threads leak from the same code; each leak names its own thread, and the stack is named once for all', { skip: !traced && 'no creator stacks on this path' }, async () => {
  const binary = buildLeaker('leak-stack-workers');
  const backend = await startBackend('127.0.0.1');
  const records = recorder({ thresholdMs: 300, tickMs: 100, stacks: true });
  await new Promise((r) => setTimeout(r, 300)); // attached
  const leaker = await startLeaker([binary], backend, 1, ['workers=16']);
  await waitFor(() => backend.accepted.length === 16, 5000, 'accepts');
  await backend.remove();
  await waitFor(() => leaksOf(records, leaker.pid!).length === 16, 15_000, '16 leaks');
  const leaks = leaksOf(records, leaker.pid!);
  assert.equal(new Set(leaks.map((l) => l.creator?.tid)).size, 16, 'a creator thread per leak');
  assert.ok(leaks.every((l) => l.creator?.tid !== leaker.pid), 'none from the main thread');
  const stack = leaks[0]!.creator!.stack!;
  assert.deepEqual(stack.slice(0, 3).map((f) => f.symbol), ['open_backend', 'worker_loop', 'worker_thread']);
  // (Then glibc's start_thread, which Debian's stripped libc does not name and whose missing frame pointer ends the walk: cut short, said so.)
  // One resolution shared by the 16 creators (each thread is a creator of its own): not 16 reads of the maps.
  for (const l of leaks) assert.equal(l.creator?.stack, stack);
  const groups = groupSockets(leaks);
  assert.equal(groups.length, 1);
  assert.equal(groups[0]!.threads, 16);
  assert.match(groups[0]!.createdAt ?? '', /^open_backend \(leak-stack\.c:\d+\) <- worker_loop/);
});

test('without --stacks no stack is captured (the default costs nothing more per connect())', { skip: !traced && 'no tracer on this path' }, async () => {
  const binary = buildLeaker('leak-stack-nostacks');
  const backend = await startBackend('127.0.0.1');
  const records = recorder({ thresholdMs: 300, tickMs: 100 });
  await new Promise((r) => setTimeout(r, 300));
  const leaker = await startLeaker([binary], backend, 1);
  await waitFor(() => backend.accepted.length === 1, 5000, 'accepts');
  await backend.remove();
  await waitFor(() => leaksOf(records, leaker.pid!).length === 1, 8000, 'the leak');
  assert.equal(leaksOf(records, leaker.pid!)[0]!.creator?.stack, undefined);
});


test('a Node leaker run with --perf-basic-prof: its leaking JavaScript function is named from the perf map', { skip: !traced && 'no creator stacks on this path' }, async () => {
  const backend = await startBackend('127.0.0.1');
  const records = recorder({ thresholdMs: 300, tickMs: 100, stacks: true });
  await new Promise((r) => setTimeout(r, 300));
  // --interpreted-frames-native-stack: a function not compiled yet runs in the interpreter, whose frames the perf map names only with it.
  const args = ['--perf-basic-prof', '--interpreted-frames-native-stack', JS_SOURCE];
  const leaker = await startLeaker([process.execPath, ...args], backend, 2);
  await waitFor(() => backend.accepted.length === 2, 5000, 'accepts');
  await backend.remove();
  // The first Node stack reads node's ~86k symbols and libc's call frame information (~0.25 s here, far more on an emulated kernel).
  await waitFor(() => leaksOf(records, leaker.pid!).length === 2, 30_000, '2 leaks');
  for (const leak of leaksOf(records, leaker.pid!)) {
    const stack = leak.creator?.stack ?? [];
    const js = stack.find((f) => f.module === '[perf-map]' && f.symbol === 'openBackendJs');
    assert.ok(js, `openBackendJs among the frames: ${stack.map((f) => `${f.symbol} [${f.module}]`).join(' <- ')}`);
    assert.equal(js.file, JS_SOURCE);
    assert.equal(js.line, lineOf('function openBackendJs', JS_SOURCE));
  }
  // The line people read starts in the leaker's own code: libuv, Node's C++ and `node:net` are left out.
  // (Its lookup callback, which net.connect() calls and which answers at once, is the innermost.)
  const [group] = groupSockets(leaksOf(records, leaker.pid!));
  assert.match(group!.createdAt ?? '', new RegExp(`^lookup \\(leak-stack\\.js:\\d+\\) <- … <- openBackendJs \\(leak-stack\\.js:${lineOf('function openBackendJs', JS_SOURCE)}\\)`));
  rmSync(`/tmp/perf-${leaker.pid}.map`, { force: true });
});

for (const [how, flags] of [
  ['with its DWARF', []],
  // (-trimpath's relative file names are a unit test's, test/format-stack.test.ts: the flag rebuilds Go's standard library, 15 s here, minutes under emulation.)
  ['stripped (-ldflags=-s -w), as container images ship it: named from .gopclntab', ['-ldflags=-s -w']],
] as const) {
  test(`a Go leaker ${how} (frame pointers; no libc): the stack names main.openBackend with file:line, below Go's net package, then main.main`, { skip: (!traced && 'no creator stacks on this path') || (!HAVE_GO && 'no Go toolchain (Debian\'s golang-go)') }, async (t) => {
    const binary = buildGoLeaker(dir, `leak-stack-go${flags.length}`, { flags, cgo: false });
    if (flags.length > 0) assert.doesNotMatch(spawnSync('readelf', ['-S', binary], { encoding: 'utf8' }).stdout, /\.symtab|\.debug_line/, 'stripped');
    const backend = await startBackend('127.0.0.1');
    const records = recorder({ thresholdMs: 300, tickMs: 100, stacks: true });
    await new Promise((r) => setTimeout(r, 300)); // attached
    const leaker = await startLeaker([binary], backend, 2);
    await waitFor(() => backend.accepted.length === 2, 5000, 'accepts');
    await backend.remove();
    await waitFor(() => leaksOf(records, leaker.pid!).length === 2, 15_000, '2 leaks');
    for (const leak of leaksOf(records, leaker.pid!)) {
      const stack = leak.creator?.stack ?? [];
      const shown = stack.map((f) => `${f.symbol} (${f.file ?? '?'}:${f.line ?? '?'})`).join(' <- ');
      const at = stack.findIndex((f) => f.symbol === 'main.openBackend');
      assert.ok(at > 0, `main.openBackend below the net package's frames: ${shown}`);
      // Go's syscall path has no frameless libc wrapper: every frame above it is Go's own dialer.
      assert.ok(stack.slice(0, at).every((f) => /^(net|syscall|internal\/poll|runtime\/internal\/syscall)\./.test(f.symbol)), shown);
      assert.ok(stack.slice(0, at).every((f) => f.file?.endsWith('.go') && f.line! > 0), `each with its file and line: ${shown}`);
      assert.equal(path.basename(stack[at]!.file ?? ''), 'leak-stack.go');
      assert.equal(stack[at]!.line, lineOf('LEAK_LINE', GO_LEAKER_SOURCE));
      assert.equal(stack[at + 1]?.symbol, 'main.main', shown);
      assert.equal(stack[at + 1]?.line, lineOf('MAIN_LINE', GO_LEAKER_SOURCE));
      assert.equal(stack[stack.length - 1]!.symbol, 'runtime.main', shown);
      assert.equal(leak.creator?.stackTruncated, false, 'a Go stack down to runtime.main is whole');
    }
    // The line people read starts at the program's own code, below Go's net package.
    const [group] = groupSockets(leaksOf(records, leaker.pid!));
    assert.equal(group!.createdAt, `main.openBackend (leak-stack.go:${lineOf('LEAK_LINE', GO_LEAKER_SOURCE)}) <- main.main (leak-stack.go:${lineOf('MAIN_LINE', GO_LEAKER_SOURCE)}) <- …`);
    const first = leaksOf(records, leaker.pid!)[0]!.creator!;
    t.diagnostic(first.stack!.map((f) => `${f.symbol} (${f.file ?? '?'}:${f.line ?? '?'})`).join(' <- '));
  });
}

test('a kernel that refuses the stack program: watch goes on with creators but no stacks, and says what is lost', { skip: !traced && 'no tracer on this path' }, async () => {
  const binary = buildLeaker('leak-stack-refused');
  const backend = await startBackend('127.0.0.1');
  const noted: Fallback[] = [];
  const unsubscribe = onFallback((f) => noted.push(f));
  const before = process.env[REFUSE_ENV];
  process.env[REFUSE_ENV] = [before, 'handle_set_state_stacks'].filter(Boolean).join(',');
  let records: WatchRecord[];
  try {
    records = recorder({ thresholdMs: 300, tickMs: 100, stacks: true });
  } finally {
    if (before === undefined) delete process.env[REFUSE_ENV];
    else process.env[REFUSE_ENV] = before;
    unsubscribe();
  }
  const fallback = noted.find((f) => f.what === 'handle_set_state_stacks');
  assert.ok(fallback, 'the refusal is noted');
  assert.equal(fallback.instead, 'handle_set_state');
  assert.match(fallback.lost, /creator stacks/);
  await new Promise((r) => setTimeout(r, 300));
  const leaker = await startLeaker([binary], backend, 1);
  await waitFor(() => backend.accepted.length === 1, 5000, 'accepts');
  await backend.remove();
  await waitFor(() => leaksOf(records, leaker.pid!).length === 1, 8000, 'the leak, creator known');
  assert.equal(leaksOf(records, leaker.pid!)[0]!.creator?.stack, undefined);
});

test('sockleak run names the leaking code always (no option): the report, its --json and its table', { skip: !traced && 'no creator stacks on this path' }, async () => {
  const binary = buildLeaker('leak-stack-run');
  const backend = await startBackend('127.0.0.1');
  const running = runWithLeakCheck([binary, backend.host, String(backend.port), '2'], {
    thresholdMs: 500,
    env: { ...process.env, LEAK_STACK_HOLD_S: '5' }, // past the threshold and a tick or two, even on an emulated kernel
  });
  await waitFor(() => backend.accepted.length === 2, 5000, 'accepts');
  await backend.remove();
  const result = await running;
  assert.equal(result.leaks.length, 2, 'both sockets leaked');
  for (const leak of result.leaks) {
    assert.equal(leak.creator?.stack?.[0]?.symbol, 'open_backend');
    assert.equal(leak.creator?.stack?.[0]?.line, lineOf('LEAK_LINE'));
  }
  const json = JSON.parse(runJson(result)) as typeof result;
  assert.equal(json.leaks[0]!.creator?.stack?.[1]?.symbol, 'worker_loop');
  assert.match(renderRunSummary(result, 1), new RegExp(`sockleak: 2 created at open_backend \\(leak-stack\\.c:${lineOf('LEAK_LINE')}\\) <- worker_loop`));
});

test('a C server that leaks what it accepts: the stack names accept_client first, then serve_loop (or the fallback line says accept stacks are lost)', { skip: !acceptCreators && 'no accept() hook on this path' }, async () => {
  const source = path.join(ROOT, 'test', 'fixtures', 'accept-stack.c');
  const binary = path.join(dir, 'accept-stack');
  const built = spawnSync('gcc', ['-O1', '-fno-omit-frame-pointer', '-g', '-o', binary, source], { encoding: 'utf8' });
  assert.equal(built.status, 0, built.stderr);
  const line = (marker: string): number => readFileSync(source, 'utf8').split('\n').findIndex((l) => l.includes(marker)) + 1;
  const records = recorder({ thresholdMs: 300, tickMs: 100, stacks: true });
  // Where the kernel (or a forced set) leaves no stack-capturing accept() hook, the loader says so in its one line.
  const lost = notedFallbacks().find((f) => /accepted sockets were taken/.test(f.lost));
  await new Promise((r) => setTimeout(r, 300));
  const server = spawn(binary, ['2'], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(server);
  const [portLine] = (await once(server.stdout!, 'data')) as [Buffer];
  const port = Number(portLine.toString().split('\n')[0]);
  const clients = await Promise.all(
    [0, 1].map(
      () =>
        new Promise<net.Socket>((resolve, reject) => {
          const c = net.connect(port, '127.0.0.1', () => resolve(c));
          c.once('error', reject);
        }),
    ),
  );
  await new Promise((r) => setTimeout(r, 200)); // accepted
  for (const c of clients) c.destroy();
  const accepted = (): LeakRecord[] => records.filter((r): r is LeakRecord => r.type === 'leak' && r.creator?.pid === server.pid);
  await waitFor(() => accepted().length === 2, 8000, '2 leaks');
  for (const leak of accepted()) {
    const stack = leak.creator?.stack ?? [];
    if (lost) {
      assert.deepEqual(stack, [], `${lost.what} said accept stacks are lost, and none came`);
      continue;
    }
    assert.equal(stack[0]?.symbol, 'accept_client', JSON.stringify(stack));
    assert.equal(stack[0]?.line, line('ACCEPT_LINE'));
    assert.equal(stack[1]?.symbol, 'serve_loop');
    assert.equal(stack[1]?.line, line('SERVE_LINE'));
  }
});

/** Every whole length-delimited record in `bytes` decoded into `out`; returns the unfinished rest. */
function takeRecords(bytes: Buffer, out: RecordMessage[]): Buffer {
  let at = 0;
  for (;;) {
    let length = 0;
    let shift = 0;
    let i = at;
    for (; i < bytes.length; i++) {
      length += (bytes[i]! & 0x7f) * 2 ** shift;
      shift += 7;
      if (!(bytes[i]! & 0x80)) break;
    }
    if (i >= bytes.length || i + 1 + length > bytes.length) return bytes.subarray(at);
    out.push(decodeRecordBytes(bytes.subarray(i + 1, i + 1 + length)));
    at = i + 1 + length;
  }
}

test('sockleak agent --stacks: the /stream leak records carry Creator.stack; /metrics has no stack labels', { skip: !traced && 'no creator stacks on this path', timeout: 60_000 }, async () => {
  const binary = buildLeaker('leak-stack-agent');
  const backend = await startBackend('127.0.0.1');
  const agent = await startAgentProcess(['--listen', '127.0.0.1:0', '--threshold', '300ms', '--no-ports', '--stacks']);
  stops.push(async () => void (await agent.stop()));
  const records: RecordMessage[] = [];
  let pending: Buffer = Buffer.alloc(0);
  const req = http.get(`${agent.base}/stream`, (res) => res.on('data', (d: Buffer) => (pending = takeRecords(Buffer.concat([pending, d]), records))));
  req.on('error', () => undefined);
  stops.push(async () => void req.destroy());
  const leaker = await startLeaker([binary], backend, 1);
  await waitFor(() => backend.accepted.length === 1, 5000, 'accepts');
  await backend.remove();
  const leakOf = (): RecordMessage | undefined => records.find((r) => 'leak' in r && r.leak.socket?.creator?.pid === leaker.pid);
  await waitFor(() => leakOf() !== undefined, 15_000, 'the leak on /stream');
  const creator = (leakOf() as Extract<RecordMessage, { leak: unknown }>).leak.socket!.creator!;
  assert.equal(creator.stack[0]?.symbol, 'open_backend');
  assert.equal(creator.stack[0]?.line, lineOf('LEAK_LINE'));
  assert.equal(creator.stack[1]?.symbol, 'worker_loop');
  assert.equal(creator.stackTruncated, false);
  const metrics = await httpRequest(`${agent.base}/metrics`);
  assert.equal(metrics.status, 200);
  assert.doesNotMatch(metrics.body, /open_backend|worker_loop/, 'stacks are never metric labels');
});

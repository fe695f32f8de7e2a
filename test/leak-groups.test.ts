/** The grouped table people read: the biggest groups first, at most MAX_TABLE_ROWS of them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forecastLines, groupSockets, MAX_FORECAST_LINES, MAX_TABLE_ROWS, renderGroups, summarize } from '../src/cli/leak-groups';
import type { ProcessForecastRecord } from '../src/forecast/fd-forecast';
import type { Creator, Frame, SocketInfo } from '../src/sockets';
import { formatCreatorStack } from '../src/stacks/format-stack';
import { jitFrameName } from '../src/stacks/symbolizer';

function socket(i: number, remote: string, pid: number): SocketInfo {
  return {
    cookie: String(i),
    state: 'CLOSE_WAIT',
    family: 4,
    local: `127.0.0.1:${10_000 + i}`,
    remote,
    netns: 1,
    owners: [{ pid, comm: 'svc', fd: 10 + i }],
    creator: null,
    keepalive: false,
    keepaliveProbeInMs: null,
    stateAgeMs: 1000,
    ageEstimated: true,
  } as unknown as SocketInfo;
}

test('a machine with thousands of groups: the biggest MAX_TABLE_ROWS shown, the rest summed on one line', () => {
  const sockets: SocketInfo[] = [];
  for (let i = 0; i < 5000; i++) sockets.push(socket(i, `10.0.${i >> 8}.${i & 255}:9000`, 7));
  for (let i = 0; i < 360; i++) sockets.push(socket(5000 + i, '10.9.9.9:9000', 7)); // the big one
  const groups = groupSockets(sockets);
  const text = renderGroups(groups);
  const rows = text.split('\n').filter((l) => l.startsWith('│'));
  assert.equal(rows.length, MAX_TABLE_ROWS + 1, 'header + MAX_TABLE_ROWS rows');
  assert.match(rows[1]!, /10\.9\.9\.9:9000 .*│ 360 /, 'the biggest group first');
  assert.match(text, new RegExp(`… and ${5001 - MAX_TABLE_ROWS} more groups \\(${5001 - MAX_TABLE_ROWS} sockets\\); --json lists every socket$`));
  assert.deepEqual(summarize(groups), [
    'pid 7 (svc) holds 5360 CLOSE_WAIT sockets to 10.9.9.9:9000, 10.0.0.0:9000, 10.0.0.1:9000 and 4998 more, oldest 1s, keepalive off: the kernel will never reap them.',
  ]);
});

test('a few groups: every one shown, no summing line', () => {
  const groups = groupSockets([socket(1, '10.0.0.1:9000', 7), socket(2, '10.0.0.2:9000', 8)]);
  const text = renderGroups(groups);
  assert.equal(text.split('\n').filter((l) => l.startsWith('│')).length, 3);
  assert.doesNotMatch(text, /more groups/);
});

test('forecast lines: one per process of the groups, its groups\' first leaks oldest first, at most MAX_FORECAST_LINES', () => {
  const now = Date.parse('2026-12-07T04:00:00.000Z');
  const aged = (i: number, remote: string, pid: number, ageMs: number, estimated: boolean): SocketInfo => ({ ...socket(i, remote, pid), stateAgeMs: ageMs, ageEstimated: estimated });
  const sockets = [aged(1, '10.0.3.9:9000', 7, 3_600_000, false), aged(2, '10.0.3.7:9000', 7, 6_313_000, true), aged(3, '10.0.0.1:80', 8, 1000, false)];
  for (let pid = 100; pid < 120; pid++) sockets.push(aged(pid, '10.1.1.1:80', pid, 1000, false));
  const forecast = (pid: number): ProcessForecastRecord => ({
    type: 'forecast', pid, comm: 'svc', leaksPerHour: 115, leaksInWindow: 115, windowMs: 3_600_000, openFds: 412, fdLimit: 1024,
    exhaustInSec: 19_158, firstLeakAt: '2026-12-07T02:14:47.000Z', firstLeakEstimated: true, running: true,
    forecast: `pid ${pid} (svc): 115 leaks/h; EMFILE in ~5h19m (412 of 1024 fds); first leak ~02:14:47 UTC`,
  });
  const lines = forecastLines(groupSockets(sockets, now), [7, ...Array.from({ length: 20 }, (_, i) => 100 + i)].map(forecast), now);
  assert.equal(lines[0], 'pid 7 (svc): 115 leaks/h; EMFILE in ~5h19m (412 of 1024 fds); first leak ~02:14:47 UTC to 10.0.3.7:9000, 03:00:00 UTC to 10.0.3.9:9000');
  assert.equal(lines.length, MAX_FORECAST_LINES + 1, 'pid 8 has no forecast; the rest cut');
  assert.match(lines[MAX_FORECAST_LINES]!, /more processes have forecasts: --json has every one/);
});

/** Frames as sockleak named them from real leakers (test/stacks.test.ts's Go and Node fixtures, Debian's go 1.19 and node 20). */
const go = (symbol: string, file: string, line: number): Frame => ({ addr: '0x4822cf', symbol, file, line, module: '/srv/leaker' });
const js = (name: string): Frame => ({ addr: '0x7f3a00001000', ...jitFrameName(name), module: '[perf-map]' });
const native = (symbol: string, module: string): Frame => ({ addr: '0x55d0c2a1b2c3', symbol, module });

test('created at: the program\'s own code first; the runtime that made the connect() for it is left out, `…` where it was', () => {
  const goStack = [
    go('syscall.RawSyscall6', '/usr/lib/go-1.19/src/runtime/internal/syscall/syscall_linux.go', 38),
    go('syscall.connect', '/usr/lib/go-1.19/src/syscall/zsyscall_linux_amd64.go', 1424),
    go('net.(*sysDialer).dialSingle', '/usr/lib/go-1.19/src/net/dial.go', 580),
    go('github.com/lib/pq.(*conn).open', '/root/go/pkg/mod/github.com/lib/pq@v1.10.9/conn.go', 301),
    go('main.openBackend', '/srv/leak.go', 18),
    go('main.main', '/srv/leak.go', 31),
    go('runtime.main', '/usr/lib/go-1.19/src/runtime/proc.go', 250),
  ];
  assert.equal(formatCreatorStack({ stack: goStack, stackTruncated: false } as Creator), 'github.com/lib/pq.(*conn).open (conn.go:301) <- main.openBackend (leak.go:18) <- main.main (leak.go:31) <- …');
  // Built with -trimpath: the standard library's files are relative (`net/dial.go`), the module's are its import path.
  const trimmed = goStack.map((f) => ({ ...f, file: f.file!.replace(/^\/usr\/lib\/go-1\.19\/src\//, '').replace(/^\/root\/go\/pkg\/mod\//, '').replace(/^\/srv\//, 'example.com/leaker/') }));
  assert.equal(trimmed[2]!.file, 'net/dial.go');
  assert.equal(formatCreatorStack({ stack: trimmed, stackTruncated: false } as Creator), 'github.com/lib/pq.(*conn).open (conn.go:301) <- main.openBackend (leak.go:18) <- main.main (leak.go:31) <- …');
  const nodeStack = [
    native('uv__tcp_connect', '/usr/bin/node'),
    native('node::TCPWrap::Connect(v8::FunctionCallbackInfo<v8::Value> const&)', '/usr/bin/node'),
    js('JS:~internalConnect node:net:1038:25'),
    js('JS:~connect node:net:227:17'),
    js('JS:~openBackendJs /srv/app/pool.js:8:23'),
    js('JS:~ /srv/app/pool.js:1:1'),
    js('JS:~Module._compile node:internal/modules/cjs/loader:1483:37'),
    js('Builtin:JSEntryTrampoline'),
    native('node::StartExecution(node::Environment*, char const*)', '/opt/node-v20/bin/node'),
  ];
  assert.equal(formatCreatorStack({ stack: nodeStack, stackTruncated: true } as Creator), 'openBackendJs (pool.js:8) <- (anonymous) (pool.js:1) <- … (stack cut short: no frame pointers past here)');
  // Python 3.12 -X perf: its standard library is the system's, the program's own is not.
  const pyStack = [
    native('_PyEval_EvalFrameDefault', '/usr/lib/x86_64-linux-gnu/libpython3.12.so.1.0'),
    js('py::create_connection:/usr/lib/python3.12/socket.py'),
    js('py::open_backend:/srv/app.py'),
  ];
  assert.equal(formatCreatorStack({ stack: pyStack, stackTruncated: false } as Creator), 'open_backend (app.py)');
  // A C program: the caller of libc's wrapper is already first; libc's frames after main end it.
  const cStack = [
    { ...native('open_backend', '/srv/leak'), file: '/srv/leak.c', line: 21 },
    native('main', '/srv/leak'),
    native('__libc_start_call_main', '/usr/lib/x86_64-linux-gnu/libc.so.6'),
  ];
  assert.equal(formatCreatorStack({ stack: cStack, stackTruncated: false } as Creator), 'open_backend (leak.c:21) <- main <- …');
  // Nothing of the program's (a daemon in libraries only, a stack cut short in the runtime): shown from the top.
  assert.equal(formatCreatorStack({ stack: nodeStack.slice(0, 3), stackTruncated: true } as Creator), 'uv__tcp_connect <- node::TCPWrap::Connect(v8::FunctionCallbackInfo<v8::Value> const&) <- internalConnect (node:net:1038) (stack cut short: no frame pointers past here)');
  assert.equal(formatCreatorStack({ stack: [], stackTruncated: false } as unknown as Creator), null);
});

test('perf map names: Node\'s and Python\'s give the function and where it is; others are kept whole', () => {
  assert.deepEqual(jitFrameName('JS:~openBackendJs /srv/app.js:8:23'), { symbol: 'openBackendJs', file: '/srv/app.js', line: 8 });
  assert.deepEqual(jitFrameName('LazyCompile:*Socket.connect node:net:1202:36'), { symbol: 'Socket.connect', file: 'node:net', line: 1202 });
  assert.deepEqual(jitFrameName('JS:~ /srv/app.js:1:1'), { symbol: '(anonymous)', file: '/srv/app.js', line: 1 });
  assert.deepEqual(jitFrameName('py::open_backend:/srv/app.py'), { symbol: 'open_backend', file: '/srv/app.py' });
  assert.deepEqual(jitFrameName('Builtin:JSEntryTrampoline'), { symbol: 'Builtin:JSEntryTrampoline' });
  assert.deepEqual(jitFrameName('Lcom/example/Pool;::open'), { symbol: 'Lcom/example/Pool;::open' });
});

/** The creating call site as people read it: the program's own code first (src/stacks/format-stack.ts), and perf-map names. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Creator, Frame } from '../src/sockets';
import { formatCreatorStack } from '../src/stacks/format-stack';
import { jitFrameName } from '../src/stacks/symbolizer';

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

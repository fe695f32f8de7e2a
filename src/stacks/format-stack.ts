/** A creator stack as one line people read: `open_backend (leak.c:21) <- worker_loop (leak.c:40)`. */
import type { Creator, Frame } from '../sockets';

function frameText(f: Frame): string {
  const where = f.file !== undefined ? ` (${f.file.slice(f.file.lastIndexOf('/') + 1)}${f.line !== undefined ? `:${f.line}` : ''})` : '';
  const name = f.symbol === '??' ? `${f.module.slice(f.module.lastIndexOf('/') + 1)}+${f.addr}` : f.symbol;
  return `${name}${where}`;
}

/** Where the system keeps what its packages install: shared libraries, a language's own modules. */
const SYSTEM_DIRS = /^\/(usr\/)?(lib|lib64|libexec)\//;

/**
 * Go's standard library: a frame in a `.go` file whose package's import path has no dot in its
 * first element (Go reserves those for itself), in a file under the toolchain's `src/`
 * (`net.(*sysDialer).dialSingle` in `/usr/lib/go-1.19/src/net/dial.go`, or `net/dial.go` when
 * built with `-trimpath`; the file's package may differ from the name's, as for
 * `syscall.RawSyscall6`, linked from `runtime/internal/syscall`). `main.` and
 * `github.com/lib/pq.(*conn).Open` are the program's.
 */
function goStdlib(f: Frame): boolean {
  if (!f.file?.endsWith('.go')) return false;
  const name = f.symbol.split(/[([]/, 1)[0]!;
  const slash = name.lastIndexOf('/');
  const pkg = name.slice(0, slash + 1) + name.slice(slash + 1).split('.', 1)[0]!;
  // Under the toolchain's src/, or (built with -trimpath) a relative path with a dotless first element.
  return pkg !== 'main' && !pkg.split('/', 1)[0]!.includes('.') && /\/src\/[^./]+\/|^(\.\/)?[^./]+\//.test(f.file);
}

/**
 * Whether a frame is a runtime's or the system's rather than the program's own: libraries under
 * /lib and /usr/lib (libc, libuv, libpython, libjvm), Go's standard library, Node's built-in
 * modules (`node:net`), JIT frames with no source (builtins, stubs), and in a stack with JIT
 * frames every native frame (the interpreter or VM that runs the program, wherever it lives).
 */
export function isRuntimeFrame(f: Frame, jitted: boolean): boolean {
  if (f.module === '[perf-map]') return f.file === undefined || f.file.startsWith('node:') || SYSTEM_DIRS.test(f.file);
  return jitted || SYSTEM_DIRS.test(f.module) || goStdlib(f);
}

/**
 * The creating call site, innermost first, at most `frames` frames; null when the creator has no
 * stack. It starts at the program's own code: the frames of the runtime that made the connect()
 * for it (Go's net package, Node's libuv and `node:net`) come before that and are left out, and
 * `…` stands for runtime frames between two of the program's. A stack with none of the
 * program's frames is shown from the top. The JSON keeps every frame. A stack cut short says so
 * rather than end as if complete.
 */
export function formatCreatorStack(creator: Creator | null | undefined, frames = 3): string | null {
  const stack = creator?.stack;
  if (!stack || stack.length === 0) return null;
  const jitted = stack.some((f) => f.module === '[perf-map]');
  const own = stack.map((f) => !isRuntimeFrame(f, jitted));
  if (!own.includes(true)) own.fill(true); // none of the program's: shown from the top
  const parts: string[] = [];
  let i = own.indexOf(true);
  for (let shown = 0; i < stack.length && shown < frames; i++) {
    if (!own[i]) {
      if (parts[parts.length - 1] !== '…') parts.push('…');
      continue;
    }
    parts.push(frameText(stack[i]!));
    shown++;
  }
  if (i < stack.length && parts[parts.length - 1] !== '…') parts.push('…');
  return `${parts.join(' <- ')}${creator.stackTruncated ? ' (stack cut short: no frame pointers past here)' : ''}`;
}

/**
 * Creator stacks (bpf/sockets.bpf.h user_stacks) to frames people read: the
 * raw return addresses of a live process named by the ELF symbols of the file
 * mapped there (elf-symbols.ts), file:line from DWARF by binutils' addr2line
 * where the file has it, and JIT code by the perf map the runtime writes
 * (/tmp/perf-PID.map: Node --perf-basic-prof, Python -X perf); the frame the
 * kernel's frame-pointer walk skips placed by the syscall wrapper's call frame
 * information (binutils' readelf). Done at report time, while the process
 * lives: its maps say which file each address is in (the files are then held
 * open until the stack is resolved).
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import type { Frame } from '../sockets';
import { ElfSymbols } from './elf-symbols';

/** One executable mapping of /proc/PID/maps. */
interface Mapping {
  start: bigint;
  end: bigint;
  offset: bigint;
  /** dev:inode:mtime, the file's identity across processes and rewrites. */
  id: string;
  path: string;
}

/** One perf map entry: JIT code [start, start + size). */
interface JitSymbol {
  start: bigint;
  end: bigint;
  name: string;
}

/** Symbol tables kept, by file identity, before starting over. */
const FILE_LIMIT = 256;
/** The frames of a function whose callers' frames are not the program's own (the stack's natural end). */
const STACK_BOTTOM = /^(main|_start|start_thread|__libc_start_main|__libc_start_call_main|clone3?|__clone3?)$|^(runtime\.goexit|runtime\.main)$/;

/** The kernel's mark of a stack word that differed between sockets (SL_CALLER_MIXED). */
const MIXED = 0xffffffffffffffffn;

/** A canonical frame address rule: register + offset. */
interface CfaRule {
  register: string;
  offset: number;
}

/**
 * The CFA rule at `vaddr` in readelf's `--debug-dump=frames-interp` output:
 * the FDE whose pc range holds it, its last row at or before it.
 */
export function cfaRuleIn(text: string, vaddr: bigint): CfaRule | null {
  const fde = /FDE cie=[0-9a-f]+ pc=([0-9a-f]+)\.\.([0-9a-f]+)\n/g;
  for (let m = fde.exec(text); m; m = fde.exec(text)) {
    if (vaddr < BigInt(`0x${m[1]}`) || vaddr >= BigInt(`0x${m[2]}`)) continue;
    const end = text.indexOf('\n\n', m.index);
    let rule: CfaRule | null = null;
    for (const line of text.slice(fde.lastIndex, end < 0 ? undefined : end).split('\n')) {
      const row = /^([0-9a-f]+) +([a-z0-9]+)\+(\d+) /.exec(line);
      if (!row) continue;
      if (BigInt(`0x${row[1]}`) > vaddr) break;
      rule = { register: row[2]!, offset: Number(row[3]) };
    }
    return rule;
  }
  return null;
}

/** A frame to be given its file:line, and where to look. */
interface LineWanted {
  frame: Frame;
  id: string;
  /** The file, held open by resolve(). */
  fd: number;
  vaddr: bigint;
}

/** The file runOnFile gives its tool, as the tool sees it. */
const FILE_ARG = '/proc/self/fd/3';

/** binutils' `tool` with the file open as `fd` passed as its fd 3 (FILE_ARG in `args`), synchronously. */
function runOnFile(tool: string, args: readonly string[], fd: number, maxBuffer = 16 << 20): SpawnSyncReturns<string> {
  return spawnSync(tool, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore', fd], timeout: 10_000, maxBuffer });
}

/** What a raw stack resolves to. */
export interface ResolvedStack {
  stack: Frame[];
  stackTruncated: boolean;
}

function hex(addr: bigint): string {
  return `0x${addr.toString(16)}`;
}

function readMaps(pid: number): Mapping[] {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch {
    return [];
  }
  const out: Mapping[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s+(.*)$/.exec(line);
    if (!m || m[3]![2] !== 'x') continue;
    // A file rewritten in place keeps its inode: its mtime tells the new contents from the cached ones.
    let mtime = 0;
    if (m[7]!.startsWith('/')) {
      try {
        mtime = statSync(`/proc/${pid}/map_files/${m[1]}-${m[2]}`).mtimeMs;
      } catch {
        // gone meanwhile
      }
    }
    out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), offset: BigInt(`0x${m[4]}`), id: `${m[5]}:${m[6]}:${mtime}`, path: m[7]! });
  }
  return out;
}

/**
 * A perf map's name as a frame: Node's `JS:~openBackend /srv/app.js:8:23` (`LazyCompile:`,
 * `Function:` before Node 20) and Python's `py::open_backend:/srv/app.py` give the function and
 * where it is; other names (`Builtin:…`, a Java agent's `Lcom/x/Pool;::open`) are kept whole.
 */
export function jitFrameName(name: string): Pick<Frame, 'symbol' | 'file' | 'line'> {
  const js = /^(?:JS|LazyCompile|Function|InterpretedFunction|Script):[~*^+]?(.*?) ?(\S+):(\d+):\d+$/.exec(name);
  if (js) return { symbol: js[1] || '(anonymous)', file: js[2]!, line: Number(js[3]) };
  const py = /^py::([^:]*):(.+)$/.exec(name);
  if (py) return { symbol: py[1] || '(anonymous)', file: py[2]! };
  return { symbol: name };
}

function readPerfMap(pid: number): JitSymbol[] {
  let text: string;
  try {
    text = readFileSync(`/tmp/perf-${pid}.map`, 'utf8');
  } catch {
    return [];
  }
  const out: JitSymbol[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-fA-F]+) ([0-9a-fA-F]+) (.+)$/.exec(line);
    if (!m) continue;
    const start = BigInt(`0x${m[1]}`);
    out.push({ start, end: start + BigInt(`0x${m[2]}`), name: m[3]! });
  }
  return out;
}

/**
 * Whether `addr` follows a call instruction in the process's memory: a return
 * address. The word at the user stack pointer at syscall entry is the caller's
 * return address only when the syscall wrapper pushed nothing; when it did,
 * the word is data, and showing it would show a wrong frame.
 */
function followsCall(pid: number, addr: bigint, file: { fd: number; m: Mapping } | null): boolean {
  if (addr < 8n) return false;
  const bytes = Buffer.alloc(7);
  // Code mapped from a file is read from the file (held open: the process may be exiting); JIT code from the process.
  const inFile = file !== null && addr - 7n >= file.m.start;
  let fd: number;
  try {
    fd = inFile ? file.fd : openSync(`/proc/${pid}/mem`, 'r');
  } catch {
    return false;
  }
  try {
    const at = inFile ? addr - 7n - file.m.start + file.m.offset : addr - 7n;
    if (readSync(fd, bytes, 0, 7, at) !== 7) return false;
  } catch {
    return false;
  } finally {
    if (!inFile) closeSync(fd);
  }
  // x86-64: call rel32 (e8), call *disp32(%rip) (ff 15), call *%reg (ff d0-d7), call *(%reg)/disp8 forms (ff /2).
  if (bytes[2] === 0xe8) return true;
  if (bytes[1] === 0xff && bytes[2] === 0x15) return true;
  if (bytes[5] === 0xff && (bytes[6]! & 0xf8) === 0xd0) return true;
  if (bytes[5] === 0xff && (bytes[6]! & 0x38) === 0x10 && (bytes[6]! & 0xc0) === 0x00) return true;
  if (bytes[4] === 0xff && (bytes[5]! & 0x38) === 0x10 && (bytes[5]! & 0xc0) === 0x40) return true;
  return false;
}

/** Resolves raw creator stacks of live processes; caches symbol tables per file. */
export class Symbolizer {
  private readonly files = new Map<string, ElfSymbols | null>();
  private readonly lines = new Map<string, { file: string; line: number } | null>();
  private addr2line: boolean | undefined;
  private cxxfilt: boolean | undefined;
  private readelf: boolean | undefined;
  /** CFA rules of syscall wrappers, by file and address (a handful: connect, accept, accept4 of one libc). */
  private readonly cfa = new Map<string, CfaRule | null>();
  /** Demangled C++ names, by mangled name. */
  private readonly names = new Map<string, string>();
  /**
   * Resolved stacks, by pid and raw stack: incident 1's 360 worker threads make one stack from 360
   * creators (each thread is a creator of its own), named once, not once per thread with the
   * process's maps and perf map read again each time.
   */
  private readonly stacks = new Map<string, ResolvedStack>();

  /**
   * The frames of one raw stack of process `pid`: `ips` innermost first as the
   * kernel walked them (ips[0] inside the syscall wrapper), `words` the words
   * at the user stack pointer on entry (all ones where they differed between
   * sockets of this stack). The first frame is the function that called the
   * wrapper when that is sound; else the stack says it is truncated.
   */
  resolve(pid: number, ips: readonly bigint[], words: readonly bigint[]): ResolvedStack {
    const key = `${pid}|${ips.join(',')}|${words.join(',')}`;
    const known = this.stacks.get(key);
    if (known) return known;
    const opened = new Map<string, number>();
    try {
      const resolved = this.resolveWith(pid, ips, words, opened);
      if (this.stacks.size >= FILE_LIMIT * 16) this.stacks.clear();
      this.stacks.set(key, resolved);
      return resolved;
    } finally {
      for (const fd of opened.values()) closeSync(fd);
    }
  }

  /**
   * resolve(), with the mapped files it reads held open in `opened` (by their
   * /proc/PID/map_files path) from the first look: a process that exits meanwhile
   * takes its map_files with it, and the symbols, CFA rules and lines of one
   * stack then still come from the files it had mapped.
   */
  private resolveWith(pid: number, ips: readonly bigint[], words: readonly bigint[], opened: Map<string, number>): ResolvedStack {
    const maps = readMaps(pid);
    /** Frames of files with DWARF line tables, named file:line at the end, one addr2line run per file. */
    const lines: LineWanted[] = [];
    let jit: JitSymbol[] | undefined;
    const locate = (look: bigint): { m: Mapping; fd: number; vaddr: bigint | null; elf: ElfSymbols | null } | null => {
      const m = maps.find((x) => look >= x.start && look < x.end);
      if (!m || !m.path.startsWith('/')) return null;
      const file = `/proc/${pid}/map_files/${m.start.toString(16)}-${m.end.toString(16)}`;
      let fd = opened.get(file);
      if (fd === undefined) {
        try {
          fd = openSync(file, 'r');
        } catch {
          return null; // gone with its process
        }
        opened.set(file, fd);
      }
      const elf = this.elf(m.id, fd);
      return { m, fd, elf, vaddr: elf?.vaddrOf(look - m.start + m.offset) ?? null };
    };
    const frame = (addr: bigint, returnAddr: boolean): Frame | null => {
      // A return address points after the call: name the call (addr - 1), show the address as walked.
      const look = returnAddr ? addr - 1n : addr;
      const at = locate(look);
      if (at) {
        const go = at.vaddr !== null ? at.elf?.goPlaceAt(at.vaddr) ?? null : null;
        if (go) return { addr: hex(addr), ...go, module: at.m.path };
        const symbol = at.vaddr !== null ? at.elf?.symbolAt(at.vaddr) ?? null : null;
        const f: Frame = { addr: hex(addr), symbol: symbol ?? '??', module: at.m.path };
        if (at.vaddr !== null && at.elf?.hasLines) lines.push({ frame: f, id: at.m.id, fd: at.fd, vaddr: at.vaddr });
        return f;
      }
      jit ??= readPerfMap(pid);
      const j = jit.find((x) => look >= x.start && look < x.end);
      if (j) return { addr: hex(addr), ...jitFrameName(j.name), module: '[perf-map]' };
      return null;
    };
    const frames: Frame[] = [];
    let truncated = false;
    const wrapper = ips[0] !== undefined ? locate(ips[0]) : null;
    const rule = wrapper && wrapper.vaddr !== null ? this.cfaAt(wrapper.m.id, wrapper.fd, wrapper.vaddr) : undefined;
    if (rule?.register === 'rbp') {
      // The wrapper keeps a frame pointer: the walk from ips[1] already starts at its caller.
      const own = frame(ips[0]!, false);
      if (own) frames.push(own);
    } else {
      // The wrapper's return address is where its call frame information puts it (CFA - 8), else at the stack pointer.
      const index = rule ? (rule.offset - 8) / 8 : 0;
      const word = Number.isInteger(index) ? words[index] : undefined;
      const usable = word !== undefined && word !== MIXED && followsCall(pid, word, locate(word - 1n));
      const first = usable ? frame(word, true) : null;
      if (first) frames.push(first);
      else {
        truncated = true;
        const own = ips[0] !== undefined ? frame(ips[0], false) : null;
        if (own) frames.push(own);
      }
    }
    let bottom = false;
    for (const ip of ips.slice(1)) {
      const f = frame(ip, true);
      if (!f) break;
      if (frames.length > 0 && frames[frames.length - 1]!.addr === f.addr) continue;
      frames.push(f);
      if (STACK_BOTTOM.test(f.symbol)) {
        bottom = true;
        break;
      }
    }
    // The walk ended at an address nothing maps (a broken frame-pointer chain) or at the kernel's frame limit.
    if (!bottom) truncated = true;
    this.addLines(lines.filter((l) => frames.includes(l.frame)));
    this.demangle(frames);
    return { stack: frames, stackTruncated: truncated };
  }

  /** C++ names as people write them (`node::TCPWrap::Connect(...)`), by binutils' c++filt, one run per stack. */
  private demangle(frames: Frame[]): void {
    const mangled = [...new Set(frames.map((f) => f.symbol).filter((n) => n.startsWith('_Z') && !this.names.has(n)))];
    if (mangled.length > 0 && this.cxxfilt !== false) {
      try {
        const out = execFileSync('c++filt', [], { input: `${mangled.join('\n')}\n`, encoding: 'utf8', stdio: ['pipe', 'pipe', 'ignore'], timeout: 5000 }).split('\n');
        if (this.names.size >= FILE_LIMIT * 64) this.names.clear();
        mangled.forEach((n, i) => this.names.set(n, out[i] || n));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') this.cxxfilt = false;
      }
    }
    for (const f of frames) f.symbol = this.names.get(f.symbol) ?? f.symbol;
  }

  /**
   * How the canonical frame address is computed at `vaddr` of the file, from
   * its .eh_frame (binutils' readelf): `rsp+32` is { register: 'rsp', offset: 32 }.
   * null when the file has no rule there, or no readelf.
   */
  private cfaAt(id: string, fd: number, vaddr: bigint): CfaRule | null {
    const key = `${id}@${vaddr}`;
    const known = this.cfa.get(key);
    if (known !== undefined) return known;
    let rule: CfaRule | null = null;
    if (this.readelf !== false) {
      // (readelf exits 1 over sections it cannot decode, e.g. libc's .debug_frame stubs, after printing .eh_frame)
      const run = runOnFile('readelf', ['--debug-dump=frames-interp', FILE_ARG], fd, 512 << 20);
      if ((run.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') this.readelf = false;
      else if (run.stdout) rule = cfaRuleIn(run.stdout, vaddr);
    }
    this.cfa.set(key, rule);
    return rule;
  }

  private elf(id: string, fd: number): ElfSymbols | null {
    let elf = this.files.get(id);
    if (elf === undefined) {
      if (this.files.size >= FILE_LIMIT) this.files.clear();
      elf = ElfSymbols.load(`/proc/self/fd/${fd}`);
      this.files.set(id, elf);
    }
    return elf;
  }

  /** file:line of each frame, from its file's DWARF by binutils' addr2line: one run per file for the addresses not cached. */
  private addLines(wanted: readonly LineWanted[]): void {
    const byFile = new Map<string, LineWanted[]>();
    for (const w of wanted) {
      if (this.lines.has(`${w.id}@${w.vaddr}`)) continue;
      const list = byFile.get(w.id);
      if (list) list.push(w);
      else byFile.set(w.id, [w]);
    }
    if (this.lines.size >= FILE_LIMIT * 64) this.lines.clear();
    for (const list of byFile.values()) {
      if (this.addr2line === false) break;
      const run = runOnFile('addr2line', ['-e', FILE_ARG, ...list.map((w) => hex(w.vaddr))], list[0]!.fd);
      if ((run.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') this.addr2line = false;
      // One line per address, `file:line` (`??:0` or `??:?` where DWARF has none; ` (discriminator N)` may follow).
      const out = (run.stdout ?? '').split('\n');
      list.forEach((w, i) => {
        const m = /^(.*):(\d+)/.exec(out[i] ?? '');
        this.lines.set(`${w.id}@${w.vaddr}`, m && m[1] !== '??' && Number(m[2]) > 0 ? { file: m[1]!, line: Number(m[2]) } : null);
      });
    }
    for (const w of wanted) {
      const where = this.lines.get(`${w.id}@${w.vaddr}`);
      if (where) {
        w.frame.file = where.file;
        w.frame.line = where.line;
      }
    }
  }
}

/**
 * Function symbols of one ELF file (.symtab, else .dynsym), and the map from
 * a file offset to the address the symbols use (its PT_LOAD segments): enough
 * to name a return address of a mapped executable or library without any tool.
 */
import { readFileSync } from 'node:fs';

/** One function symbol: [start, start + size) in the file's virtual addresses. */
interface FuncSymbol {
  start: bigint;
  size: bigint;
  name: string;
}

/** A PT_LOAD segment: file bytes [offset, offset + size) load at vaddr. */
interface Segment {
  offset: bigint;
  size: bigint;
  vaddr: bigint;
}

/** The symbols of one ELF file, sorted by address. */
export class ElfSymbols {
  private constructor(
    private readonly symbols: FuncSymbol[],
    private readonly segments: Segment[],
    /** The file has DWARF line tables (.debug_line): addr2line can say file:line. */
    readonly hasLines: boolean,
  ) {}

  /** Parses `path` (64-bit little-endian ELF); null when it is not one, or unreadable. */
  static load(path: string): ElfSymbols | null {
    let b: Buffer;
    try {
      b = readFileSync(path);
    } catch {
      return null;
    }
    if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return null;
    const phoff = Number(b.readBigUInt64LE(32));
    const shoff = Number(b.readBigUInt64LE(40));
    const phentsize = b.readUInt16LE(54);
    const phnum = b.readUInt16LE(56);
    const shentsize = b.readUInt16LE(58);
    const shnum = b.readUInt16LE(60);
    const segments: Segment[] = [];
    for (let i = 0; i < phnum; i++) {
      const at = phoff + i * phentsize;
      if (at + 56 > b.length || b.readUInt32LE(at) !== 1 /* PT_LOAD */) continue;
      segments.push({ offset: b.readBigUInt64LE(at + 8), vaddr: b.readBigUInt64LE(at + 16), size: b.readBigUInt64LE(at + 32) });
    }
    const sections = (type: number): Array<{ off: number; size: number; link: number; entsize: number }> => {
      const out = [];
      for (let i = 0; i < shnum; i++) {
        const at = shoff + i * shentsize;
        if (at + 64 > b.length || b.readUInt32LE(at + 4) !== type) continue;
        out.push({ off: Number(b.readBigUInt64LE(at + 24)), size: Number(b.readBigUInt64LE(at + 32)), link: b.readUInt32LE(at + 40), entsize: Number(b.readBigUInt64LE(at + 56)) });
      }
      return out;
    };
    const symbols: FuncSymbol[] = [];
    // .symtab has the static functions too; a stripped file keeps only .dynsym.
    for (const type of [2 /* SHT_SYMTAB */, 11 /* SHT_DYNSYM */]) {
      for (const sec of sections(type)) {
        const strAt = shoff + sec.link * shentsize;
        if (strAt + 64 > b.length) continue;
        const strOff = Number(b.readBigUInt64LE(strAt + 24));
        const entsize = sec.entsize || 24;
        for (let at = sec.off; at + 24 <= sec.off + sec.size && at + 24 <= b.length; at += entsize) {
          const info = b[at + 4]!;
          const shndx = b.readUInt16LE(at + 6);
          if ((info & 0xf) !== 2 /* STT_FUNC */ || shndx === 0) continue;
          const nameAt = strOff + b.readUInt32LE(at);
          const end = b.indexOf(0, nameAt);
          symbols.push({ name: b.toString('utf8', nameAt, end < 0 ? nameAt : end), start: b.readBigUInt64LE(at + 8), size: b.readBigUInt64LE(at + 16) });
        }
      }
      if (symbols.length > 0) break;
    }
    symbols.sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0));
    // Section names are in the section named by e_shstrndx.
    const shstrndx = b.readUInt16LE(62);
    const namesAt = shoff + shstrndx * shentsize;
    let hasLines = false;
    if (shstrndx < shnum && namesAt + 64 <= b.length) {
      const names = Number(b.readBigUInt64LE(namesAt + 24));
      for (let i = 0; i < shnum && !hasLines; i++) {
        const at = shoff + i * shentsize;
        if (at + 64 > b.length) break;
        const nameAt = names + b.readUInt32LE(at);
        hasLines = b.toString('latin1', nameAt, nameAt + 12) === '.debug_line\0';
      }
    }
    return new ElfSymbols(symbols, segments, hasLines);
  }

  /** The virtual address (as the symbols and DWARF use) of file offset `offset`; null outside every loaded segment. */
  vaddrOf(offset: bigint): bigint | null {
    for (const s of this.segments) {
      if (offset >= s.offset && offset < s.offset + s.size) return offset - s.offset + s.vaddr;
    }
    return null;
  }

  /** The function containing `vaddr`, or null. A symbol of size 0 covers up to the next one. */
  symbolAt(vaddr: bigint): string | null {
    const list = this.symbols;
    let lo = 0;
    let hi = list.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.start <= vaddr) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) return null;
    const sym = list[found]!;
    if (sym.size > 0n ? vaddr < sym.start + sym.size : found + 1 < list.length) return sym.name;
    return null;
  }
}

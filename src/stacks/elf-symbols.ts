/**
 * Function symbols of one ELF file (.symtab, else .dynsym), and the map from
 * a file offset to the address the symbols use (its PT_LOAD segments): enough
 * to name a return address of a mapped executable or library without any tool.
 */
import { closeSync, openSync, readSync } from 'node:fs';

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

  /**
   * Parses `path` (64-bit little-endian ELF); null when it is not one, or
   * unreadable. Reads only the headers and the symbol and string tables: a
   * binary with its debug info can weigh gigabytes.
   */
  static load(path: string): ElfSymbols | null {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return null;
    }
    try {
      return ElfSymbols.parse((offset, length) => {
        const out = Buffer.alloc(Math.max(0, length));
        const got = length > 0 ? readSync(fd, out, 0, length, offset) : 0;
        return out.subarray(0, got);
      });
    } catch {
      return null;
    } finally {
      closeSync(fd);
    }
  }

  private static parse(read: (offset: number, length: number) => Buffer): ElfSymbols | null {
    const h = read(0, 64);
    if (h.length < 64 || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return null;
    const phoff = Number(h.readBigUInt64LE(32));
    const shoff = Number(h.readBigUInt64LE(40));
    const phentsize = h.readUInt16LE(54);
    const phnum = h.readUInt16LE(56);
    const shentsize = h.readUInt16LE(58);
    const shnum = h.readUInt16LE(60);
    const shstrndx = h.readUInt16LE(62);
    if (phentsize < 56 || (shnum > 0 && shentsize < 64)) return null;
    const ph = read(phoff, phnum * phentsize);
    const segments: Segment[] = [];
    for (let at = 0; at + 56 <= ph.length; at += phentsize) {
      if (ph.readUInt32LE(at) !== 1 /* PT_LOAD */) continue;
      segments.push({ offset: ph.readBigUInt64LE(at + 8), vaddr: ph.readBigUInt64LE(at + 16), size: ph.readBigUInt64LE(at + 32) });
    }
    const sh = read(shoff, shnum * shentsize);
    interface Section {
      name: number;
      type: number;
      off: number;
      size: number;
      link: number;
      entsize: number;
    }
    const sections: Section[] = [];
    for (let at = 0; at + 64 <= sh.length; at += shentsize) {
      sections.push({
        name: sh.readUInt32LE(at),
        type: sh.readUInt32LE(at + 4),
        off: Number(sh.readBigUInt64LE(at + 24)),
        size: Number(sh.readBigUInt64LE(at + 32)),
        link: sh.readUInt32LE(at + 40),
        entsize: Number(sh.readBigUInt64LE(at + 56)),
      });
    }
    const symbols: FuncSymbol[] = [];
    // .symtab has the static functions too; a stripped file keeps only .dynsym.
    for (const type of [2 /* SHT_SYMTAB */, 11 /* SHT_DYNSYM */]) {
      for (const sec of sections.filter((x) => x.type === type)) {
        const strings = sections[sec.link];
        if (!strings) continue;
        const tab = read(sec.off, sec.size);
        const str = read(strings.off, strings.size);
        const entsize = sec.entsize || 24;
        for (let at = 0; at + 24 <= tab.length; at += entsize) {
          if ((tab[at + 4]! & 0xf) !== 2 /* STT_FUNC */ || tab.readUInt16LE(at + 6) === 0) continue;
          const nameAt = tab.readUInt32LE(at);
          const end = str.indexOf(0, nameAt);
          symbols.push({ name: str.toString('utf8', nameAt, end < 0 ? nameAt : end), start: tab.readBigUInt64LE(at + 8), size: tab.readBigUInt64LE(at + 16) });
        }
      }
      if (symbols.length > 0) break;
    }
    symbols.sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0));
    const names = sections[shstrndx];
    const nameTable = names ? read(names.off, names.size) : Buffer.alloc(0);
    const hasLines = sections.some((x) => nameTable.toString('latin1', x.name, x.name + 12) === '.debug_line\0');
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

/**
 * Function symbols of one ELF file (.symtab, else .dynsym), and the map from
 * a file offset to the address the symbols use (its PT_LOAD segments): enough
 * to name a return address of a mapped executable or library without any tool.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { tableString } from '../c-string';
import { GoPclntab, type GoPlace } from './go-pclntab';

/**
 * Function symbols as parallel arrays sorted by start address, names decoded
 * only when asked: a binary like node has ~86k of them, and parsing them into
 * objects of bigints and strings took ~220 ms where this takes a tenth.
 * Addresses are Numbers: user-space virtual addresses stay below 2^47.
 */
interface FuncSymbols {
  starts: Float64Array;
  sizes: Float64Array;
  /** Offsets of the names in `strings`. */
  names: Uint32Array;
  strings: Buffer;
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
    private readonly symbols: FuncSymbols,
    private readonly segments: Segment[],
    /** The file has DWARF line tables (.debug_line): addr2line can say file:line. */
    readonly hasLines: boolean,
    /** A Go binary's own table (.gopclntab), kept by `-ldflags=-s -w` too. */
    private readonly go: GoPclntab | null,
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
      addr: number;
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
        addr: Number(sh.readBigUInt64LE(at + 16)),
        off: Number(sh.readBigUInt64LE(at + 24)),
        size: Number(sh.readBigUInt64LE(at + 32)),
        link: sh.readUInt32LE(at + 40),
        entsize: Number(sh.readBigUInt64LE(at + 56)),
      });
    }
    let symbols: FuncSymbols = { starts: new Float64Array(0), sizes: new Float64Array(0), names: new Uint32Array(0), strings: Buffer.alloc(0) };
    // .symtab has the static functions too; a stripped file keeps only .dynsym.
    for (const type of [2 /* SHT_SYMTAB */, 11 /* SHT_DYNSYM */]) {
      const sec = sections.find((x) => x.type === type);
      const strings = sec && sections[sec.link];
      if (!sec || !strings) continue;
      const tab = read(sec.off, sec.size);
      const entsize = sec.entsize || 24;
      const found: number[] = [];
      for (let at = 0; at + 24 <= tab.length; at += entsize) {
        if ((tab[at + 4]! & 0xf) === 2 /* STT_FUNC */ && tab.readUInt16LE(at + 6) !== 0) found.push(at);
      }
      if (found.length === 0) continue;
      const u64 = (at: number): number => tab.readUInt32LE(at) + tab.readUInt32LE(at + 4) * 2 ** 32;
      const starts = new Float64Array(found.length);
      for (let i = 0; i < found.length; i++) starts[i] = u64(found[i]! + 8);
      const order = Uint32Array.from(found.keys()).sort((x, y) => starts[x]! - starts[y]!);
      symbols = { starts: new Float64Array(found.length), sizes: new Float64Array(found.length), names: new Uint32Array(found.length), strings: read(strings.off, strings.size) };
      order.forEach((from, i) => {
        symbols.starts[i] = starts[from]!;
        symbols.sizes[i] = u64(found[from]! + 16);
        symbols.names[i] = tab.readUInt32LE(found[from]!);
      });
      break;
    }
    const names = sections[shstrndx];
    const nameTable = names ? read(names.off, names.size) : Buffer.alloc(0);
    const named = (name: string): Section | undefined => sections.find((x) => nameTable.toString('latin1', x.name, x.name + name.length + 1) === `${name}\0`);
    const pclntab = named('.gopclntab');
    const go = pclntab ? GoPclntab.parse(read(pclntab.off, pclntab.size), named('.text')?.addr ?? 0) : null;
    return new ElfSymbols(symbols, segments, named('.debug_line') !== undefined, go);
  }

  /** The virtual address (as the symbols and DWARF use) of file offset `offset`; null outside every loaded segment. */
  vaddrOf(offset: bigint): bigint | null {
    for (const s of this.segments) {
      if (offset >= s.offset && offset < s.offset + s.size) return offset - s.offset + s.vaddr;
    }
    return null;
  }

  /**
   * A Go function's name, file and line at `vaddr` from the binary's .gopclntab (no DWARF or
   * addr2line needed, stripped or not); null outside Go code. In a cgo binary the C functions are
   * in .symtab, not in Go's table: where the two disagree, the address is not Go's.
   */
  goPlaceAt(vaddr: bigint): GoPlace | null {
    const place = this.go?.placeAt(Number(vaddr)) ?? null;
    if (!place) return null;
    const symbol = this.symbolAt(vaddr);
    return symbol === null || symbol === place.symbol ? place : null;
  }

  /** The function containing `vaddr`, or null. A symbol of size 0 covers up to the next one. */
  symbolAt(vaddr: bigint): string | null {
    const { starts, sizes, names, strings } = this.symbols;
    const at = Number(vaddr);
    let lo = 0;
    let hi = starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid]! <= at) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) return null;
    const size = sizes[found]!;
    if (size > 0 ? at >= starts[found]! + size : found + 1 >= starts.length) return null;
    return tableString(strings, names[found]!) ?? '';
  }
}

/**
 * Go's own symbol table, `.gopclntab`: every Go binary keeps it, stripped
 * (`-ldflags=-s -w`, common in container images) or not, because the runtime
 * needs it for its own tracebacks. It names each function and gives the file
 * and line of each instruction, where `.symtab` and DWARF are gone.
 *
 * The layout (Go 1.18 and later; runtime/symtab.go's pcHeader, _func and
 * pcvalue encoding): a header, the function names, the compilation units' file
 * indexes, the file names, the pc-value tables and the function table (entry
 * offset, _func offset) sorted by entry.
 */

import { tableString } from '../c-string';

/** Go 1.18–1.19 and Go 1.20+: the same fields where this reads them. */
const MAGICS = new Set([0xfffffff0, 0xfffffff1]);

export interface GoPlace {
  symbol: string;
  file?: string;
  line?: number;
}

export class GoPclntab {
  private constructor(
    private readonly tab: Buffer,
    /** The pc quantum (instruction size unit): pc deltas in the tables count in it (1 on amd64, 4 on arm64). */
    private readonly quantum: number,
    private readonly textStart: number,
    private readonly nfunc: number,
    private readonly funcnames: number,
    private readonly cutab: number,
    private readonly filetab: number,
    private readonly pctab: number,
    private readonly pcln: number,
  ) {}

  /** The table of `tab` (the section's bytes); null when it is not one of Go 1.18+, 64-bit. `textAddr`: `.text`'s address, for a header that leaves textStart to relocation (PIE). */
  static parse(tab: Buffer, textAddr: number): GoPclntab | null {
    if (tab.length < 72 || !MAGICS.has(tab.readUInt32LE(0)) || tab[7] !== 8) return null;
    const word = (at: number): number => Number(tab.readBigUInt64LE(at));
    const nfunc = word(8);
    const pcln = word(64);
    if (pcln + (nfunc + 1) * 8 > tab.length) return null;
    return new GoPclntab(tab, tab[6]!, word(24) || textAddr, nfunc, word(32), word(40), word(48), word(56), pcln);
  }

  /** The function containing `vaddr` and, from its pc tables, the file and line there. */
  placeAt(vaddr: number): GoPlace | null {
    const off = vaddr - this.textStart;
    const entry = (i: number): number => this.tab.readUInt32LE(this.pcln + i * 8);
    if (off < 0 || this.nfunc === 0 || off < entry(0) || off >= entry(this.nfunc)) return null;
    let lo = 0;
    let hi = this.nfunc - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (entry(mid) <= off) lo = mid;
      else hi = mid - 1;
    }
    const fn = this.pcln + this.tab.readUInt32LE(this.pcln + lo * 8 + 4);
    // _func: entryOff u32, nameOff i32, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset u32.
    const symbol = tableString(this.tab, this.funcnames + this.tab.readInt32LE(fn + 4)) ?? '';
    const start = entry(lo);
    // The function's stack-pointer table covers all of its code: an address past its end is not
    // Go's (a cgo binary's C code lies between Go functions; the table has no sizes).
    if (this.pcvalue(this.tab.readUInt32LE(fn + 16), start, off) === null) return null;
    const line = this.pcvalue(this.tab.readUInt32LE(fn + 24), start, off);
    const fileIndex = this.pcvalue(this.tab.readUInt32LE(fn + 20), start, off);
    const file = fileIndex === null || fileIndex < 0 ? undefined : this.fileName(this.tab.readUInt32LE(fn + 32), fileIndex);
    return { symbol, ...(file !== undefined && { file }), ...(line !== null && line > 0 && { line }) };
  }

  /** The file of compilation unit `cu`'s `index`th file: cutab gives its offset in filetab. */
  private fileName(cu: number, index: number): string | undefined {
    const at = this.cutab + (cu + index) * 4;
    if (at + 4 > this.tab.length) return undefined;
    return tableString(this.tab, this.filetab + this.tab.readUInt32LE(at)) ?? undefined;
  }

  /**
   * The value a pc-value table gives at `target` (an offset from the text start): pairs of a
   * zig-zag value delta and a pc delta, both varints, from value -1 at the function's entry.
   */
  private pcvalue(tableOff: number, entry: number, target: number): number | null {
    if (tableOff === 0) return null;
    let at = this.pctab + tableOff;
    let value = -1;
    let pc = entry;
    const varint = (): number => {
      let result = 0;
      for (let shift = 0; at < this.tab.length; shift += 7) {
        const b = this.tab[at++]!;
        result += (b & 0x7f) * 2 ** shift;
        if ((b & 0x80) === 0) return result;
      }
      return -1;
    };
    for (let first = true; ; first = false) {
      const uv = varint();
      if (uv < 0 || (uv === 0 && !first)) return null; // the table's end
      value += uv % 2 === 1 ? -(uv + 1) / 2 : uv / 2;
      const step = varint();
      if (step < 0) return null;
      pc += step * this.quantum;
      if (target < pc) return value;
    }
  }
}

/**
 * Results as tables: one data structure, rendered aligned for the terminal and
 * as Markdown for docs/benchmarks.md, so the two can never disagree.
 */

export interface Table {
  title: string;
  headers: string[];
  /** Columns right-aligned (numbers); the others are left-aligned. */
  numeric: boolean[];
  rows: string[][];
  /** Lines printed under the table. */
  notes: string[];
}

export function renderText(t: Table): string {
  const widths = t.headers.map((h, i) => Math.max(h.length, ...t.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (t.numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [
    `== ${t.title}`,
    line(t.headers),
    line(widths.map((w) => '-'.repeat(w))),
    ...t.rows.map(line),
    ...t.notes.map((n) => `  ${n}`),
    '',
  ].join('\n');
}

export function renderMarkdown(t: Table): string {
  const esc = (c: string): string => c.replace(/\|/g, '\\|');
  return [
    `### ${t.title}`,
    '',
    `| ${t.headers.map(esc).join(' | ')} |`,
    `|${t.numeric.map((n) => (n ? '---:' : '---')).join('|')}|`,
    ...t.rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
    '',
    ...t.notes.map((n) => `${n}  `),
    ...(t.notes.length ? [''] : []),
  ].join('\n');
}

export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** Integer with thin grouping, e.g. 46 640; "—" for NaN. */
export function fmtInt(x: number): string {
  if (!Number.isFinite(x)) return '—';
  return Math.round(x)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
}

export function fmtFixed(x: number, digits: number): string {
  return Number.isFinite(x) ? x.toFixed(digits) : '—';
}

export function fmtPercent(ratio: number): string {
  return Number.isFinite(ratio) ? `${(ratio * 100).toFixed(ratio < 0.1 ? 1 : 0)}%` : '—';
}

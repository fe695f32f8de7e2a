// Dependency-free SVG pictures for docs/img: a time-series line chart and a terminal "screenshot".
// Both return a complete standalone SVG document as a string. They draw on an opaque background
// so the picture reads the same on GitHub's light and dark themes (an SVG in <img> inherits none).

const PALETTE = ['#1f6feb', '#cf222e', '#1a7f37', '#bc4c00', '#8250df', '#9a6700', '#bf3989', '#57606a'];
const SANS = 'system-ui, -apple-system, "Segoe UI", Helvetica, Arial, "DejaVu Sans", sans-serif';
const MONO = 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", "DejaVu Sans Mono", monospace';

/** Escapes text for SVG element content and attribute values. */
export function escapeXml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

/** Rounds to 2 decimals: enough for pixels, and keeps the SVG (and its diffs) small. */
const px = (n) => String(Math.round(n * 100) / 100);

/** A "nice" step (1, 2 or 5 × 10^k) so about `count` steps cover `span`. */
function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / magnitude;
  const nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * magnitude;
}

/** Steps a clock reader expects: seconds, minutes, hours, days. */
const TIME_STEPS = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

function timeStep(span, count) {
  const raw = span / Math.max(1, count);
  return TIME_STEPS.find((s) => s >= raw) ?? Math.ceil(raw / 86400) * 86400;
}

const pad2 = (n) => String(n).padStart(2, '0');

/** Clock labels in UTC (the axis says so): a recording's reader may sit in any time zone. */
function timeLabel(unixSeconds, step) {
  const d = new Date(unixSeconds * 1000);
  const hm = `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
  if (step >= 86400) return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
  return step < 60 ? `${hm}:${pad2(d.getUTCSeconds())}` : hm;
}

function numberLabel(value, step) {
  const decimals = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
  return value.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

/**
 * Renders time series as an SVG line chart: title, y axis with ticks and label, UTC clock labels
 * on the x axis, one coloured line per series and a legend.
 *
 * @param {object} options
 * @param {string} options.title - Shown above the plot.
 * @param {string} options.yLabel - Names the y axis (quantity and unit).
 * @param {{ name: string, points: [number, number][], color?: string, step?: boolean }[]} options.series -
 *   Points are `[unixSeconds, value]`, in any order. `step: true` draws a gauge that holds its
 *   value until the next sample instead of interpolating.
 * @param {number} [options.width=800]
 * @param {number} [options.height=360]
 * @param {{ at: number, label?: string }[]} [options.markers] - Vertical dashed lines at
 *   unix-second times (events such as a deletion), labelled at the top of the plot.
 * @param {string} [options.markerName] - Legend entry for the unlabelled markers.
 * @returns {string} An SVG document.
 */
export function lineChart({ title, yLabel, series, width = 800, height = 360, markers = [], markerName }) {
  const all = series.flatMap((s) => s.points).filter(([t, v]) => Number.isFinite(t) && Number.isFinite(v));
  const legend = [...series.map((s, i) => ({ name: s.name, color: s.color ?? PALETTE[i % PALETTE.length], dash: '' }))];
  if (markerName) legend.push({ name: markerName, color: '#8c959f', dash: '4 3' });
  // Legend entries flow left to right under the axis, wrapping at the width (text ~0.62em a character).
  let [lx, row] = [72, 0];
  for (const entry of legend) {
    const w = 30 + entry.name.length * 13 * 0.62 + 24;
    if (lx + w > width - 16 && lx > 72) [lx, row] = [72, row + 1];
    Object.assign(entry, { x: lx, row });
    lx += w;
  }
  const legendRows = legend.length ? row + 1 : 0;
  const margin = { left: 72, right: 40, top: 48, bottom: 48 + 22 * legendRows };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;

  let tMin = Math.min(...all.map(([t]) => t), ...markers.map((m) => m.at));
  let tMax = Math.max(...all.map(([t]) => t), ...markers.map((m) => m.at));
  if (!Number.isFinite(tMin)) [tMin, tMax] = [0, 60];
  if (tMax - tMin < 1) [tMin, tMax] = [tMin - 1, tMax + 1];
  const vMaxData = Math.max(0, ...all.map(([, v]) => v));
  const vMinData = Math.min(0, ...all.map(([, v]) => v));
  const yStep = niceStep(vMaxData - vMinData || 1, 5);
  const vMin = Math.floor(vMinData / yStep) * yStep;
  const vMax = Math.max(vMin + yStep, Math.ceil(vMaxData / yStep) * yStep);

  const x = (t) => margin.left + ((t - tMin) / (tMax - tMin)) * plotW;
  const y = (v) => margin.top + plotH - ((v - vMin) / (vMax - vMin)) * plotH;
  const out = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family='${SANS}'>`,
    `<rect width="${width}" height="${height}" rx="6" fill="#ffffff" stroke="#d0d7de"/>`,
    // A long title shrinks rather than runs off the picture (bold sans: ~0.6em a character).
    `<text x="${width / 2}" y="28" text-anchor="middle" font-size="${px(Math.min(17, (width - 32) / (title.length * 0.6)))}" font-weight="600" fill="#1f2328">${escapeXml(title)}</text>`,
  );

  // Horizontal grid and y ticks.
  for (let v = vMin; v <= vMax + yStep / 2; v += yStep) {
    const yy = px(y(v));
    out.push(
      `<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${yy}" y2="${yy}" stroke="${v === 0 ? '#8c959f' : '#eaeef2'}"/>`,
      `<text x="${margin.left - 8}" y="${yy}" dy="0.32em" text-anchor="end" font-size="12" fill="#57606a">${numberLabel(v, yStep)}</text>`,
    );
  }
  out.push(
    `<text transform="translate(18 ${px(margin.top + plotH / 2)}) rotate(-90)" text-anchor="middle" font-size="13" fill="#1f2328">${escapeXml(yLabel)}</text>`,
  );

  // Time ticks at round clock values.
  const tStep = timeStep(tMax - tMin, Math.max(2, Math.floor(plotW / 110)));
  for (let t = Math.ceil(tMin / tStep) * tStep; t <= tMax; t += tStep) {
    const xx = px(x(t));
    out.push(
      `<line x1="${xx}" x2="${xx}" y1="${margin.top + plotH}" y2="${margin.top + plotH + 5}" stroke="#8c959f"/>`,
      `<text x="${xx}" y="${margin.top + plotH + 19}" text-anchor="middle" font-size="12" fill="#57606a">${timeLabel(t, tStep)}</text>`,
    );
  }
  out.push(
    `<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${margin.top + plotH}" y2="${margin.top + plotH}" stroke="#8c959f"/>`,
    `<line x1="${margin.left}" x2="${margin.left}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#8c959f"/>`,
    `<text x="${margin.left + plotW}" y="${margin.top + plotH + 36}" text-anchor="end" font-size="12" fill="#57606a">time (UTC)</text>`,
  );

  for (const marker of markers) {
    const xx = px(x(marker.at));
    out.push(`<line x1="${xx}" x2="${xx}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#8c959f" stroke-dasharray="4 3"/>`);
    if (marker.label) {
      out.push(`<text x="${xx}" y="${margin.top - 6}" text-anchor="middle" font-size="11" fill="#57606a">${escapeXml(marker.label)}</text>`);
    }
  }

  if (all.length === 0) {
    out.push(`<text x="${px(margin.left + plotW / 2)}" y="${px(margin.top + plotH / 2)}" text-anchor="middle" font-size="14" fill="#57606a">no data</text>`);
  }
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const points = s.points.filter(([t, v]) => Number.isFinite(t) && Number.isFinite(v)).sort((a, b) => a[0] - b[0]);
    const coords = [];
    points.forEach(([t, v], k) => {
      const prev = points[k - 1];
      if (s.step && prev) coords.push(`${px(x(t))},${px(y(prev[1]))}`);
      coords.push(`${px(x(t))},${px(y(v))}`);
    });
    if (coords.length > 1) {
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2.25" stroke-linejoin="round" points="${coords.join(' ')}"/>`);
    } else if (coords.length === 1) {
      const [cx, cy] = coords[0].split(',');
      out.push(`<circle cx="${cx}" cy="${cy}" r="3" fill="${color}"/>`);
    }
  });

  for (const { name, color, dash, x: lx, row: r } of legend) {
    const ly = height - margin.bottom + 48 + r * 22;
    out.push(
      `<line x1="${lx}" x2="${lx + 22}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="${dash ? 1.5 : 3}"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`,
      `<text x="${lx + 30}" y="${ly}" dy="0.32em" font-size="13" fill="#1f2328">${escapeXml(name)}</text>`,
    );
  }
  out.push('</svg>', '');
  return out.join('\n');
}

/** CSI/OSC escape sequences a captured terminal session carries (colours, cursor moves, titles). */
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

/**
 * Renders captured terminal text as an SVG "screenshot": a dark window with a title bar, one
 * monospace <text> per line with spaces preserved, so columns stay aligned as in the terminal.
 * ANSI escapes are dropped, tabs expanded to 8 columns, carriage returns keep the last overwrite.
 *
 * @param {string} text - The captured output.
 * @param {{ title?: string, fontSize?: number, columns?: number }} [options] - `columns`: the
 *   terminal's width; longer lines wrap there, at a space where there is one, as a narrower
 *   picture stays legible when GitHub scales it to the page.
 * @returns {string} An SVG document.
 */
export function terminalSvg(text, { title = '', fontSize = 13, columns: wrapAt = Infinity } = {}) {
  const lines = String(text)
    .replace(ANSI, '')
    .replace(/\r\n/g, '\n')
    .replace(/\n+$/, '')
    .split('\n')
    .flatMap((line) => wrap(expandTabs(line.split('\r').pop() ?? ''), wrapAt));
  const columns = Math.max(20, ...lines.map((l) => [...l].length));
  // Monospace advance is close to 0.6em in the fonts listed; the window is sized from it.
  const charW = fontSize * 0.6;
  const lineH = Math.round(fontSize * 1.4);
  const padX = 16;
  const bar = 30;
  const width = Math.ceil(columns * charW * 1.02 + 2 * padX);
  const height = Math.ceil(bar + 12 + lines.length * lineH + 12);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" rx="8" fill="#0d1117" stroke="#30363d"/>`,
    `<path d="M0 8a8 8 0 0 1 8-8h${width - 16}a8 8 0 0 1 8 8v${bar - 8}h-${width}z" fill="#21262d"/>`,
    `<circle cx="16" cy="15" r="5.5" fill="#ff5f56"/><circle cx="34" cy="15" r="5.5" fill="#ffbd2e"/><circle cx="52" cy="15" r="5.5" fill="#27c93f"/>`,
  ];
  if (title) {
    out.push(`<text x="${width / 2}" y="19.5" text-anchor="middle" font-family='${SANS}' font-size="12.5" fill="#8b949e">${escapeXml(title)}</text>`);
  }
  out.push(`<g font-family='${MONO}' font-size="${fontSize}" fill="#e6edf3" xml:space="preserve" style="white-space:pre">`);
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const prompt = line.startsWith('$ ') || line.startsWith('# ');
    out.push(`<text x="${padX}" y="${bar + 12 + (i + 0.8) * lineH}"${prompt ? ' fill="#7ee787"' : ''}>${escapeXml(line)}</text>`);
  });
  out.push('</g>', '</svg>', '');
  return out.join('\n');
}

function wrap(line, columns) {
  const out = [];
  let rest = [...line];
  while (rest.length > columns) {
    const space = rest.lastIndexOf(' ', columns);
    const cut = space > columns / 2 ? space : columns;
    out.push(rest.slice(0, cut).join('').trimEnd());
    rest = rest.slice(rest[cut] === ' ' ? cut + 1 : cut);
  }
  out.push(rest.join(''));
  return out;
}

function expandTabs(line) {
  let out = '';
  for (const ch of line) out += ch === '\t' ? ' '.repeat(8 - ([...out].length % 8)) : ch;
  return out;
}

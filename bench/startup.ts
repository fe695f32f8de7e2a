/**
 * Start-up of the sockleak command as people run it, through its #! line:
 * `--version` (start-up alone) and a one-shot `snapshot --json`, each with and
 * without NODE_EXTRA_CA_CERTS (Node 20 parses those certificates before any
 * JavaScript runs), and the snapshot once more with the V8 flags the #! line
 * used to pass (docs/install.md). The variants run interleaved, so that load
 * from others spreads over all of them; CPU time is the figure that repeats on
 * a shared VM, wall time is shown beside it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { timed } from './children';
import { fmtFixed, fmtInt, median, type Table } from './table';

export interface StartupOptions {
  cli: string;
  node: string;
  /** GNU time: CPU time and peak RSS of the child (wait4). */
  gnuTime: string;
  reps: number;
  log: (line: string) => void;
}

interface Variant {
  label: string;
  certs: boolean;
  argv: string[];
  wallMs: number[];
  cpuMs: number[];
  rssKiB: number[];
  failed?: string;
}

/** What the flags row passes: the #! line's before it became `#!/usr/bin/env node`. */
const OLD_FLAGS = ['--max-semi-space-size=4', '--interrupt-budget=270336'];

export async function runStartup(o: StartupOptions): Promise<Table> {
  const certs = process.env.NODE_EXTRA_CA_CERTS ?? '/etc/ssl/certs/ca-certificates.crt';
  const variant = (label: string, withCerts: boolean, argv: string[]): Variant => ({ label, certs: withCerts, argv, wallMs: [], cpuMs: [], rssKiB: [] });
  const variants = [
    variant('sockleak --version', false, [o.cli, '--version']),
    variant('sockleak --version', true, [o.cli, '--version']),
    variant('sockleak snapshot --json', false, [o.cli, 'snapshot', '--json']),
    variant('sockleak snapshot --json', true, [o.cli, 'snapshot', '--json']),
    variant('node bin/sockleak.js snapshot --json', false, [o.node, o.cli, 'snapshot', '--json']),
    variant(`node ${OLD_FLAGS.join(' ')} bin/sockleak.js snapshot --json`, false, [o.node, ...OLD_FLAGS, o.cli, 'snapshot', '--json']),
  ];
  const out = path.join(os.tmpdir(), `sockleak-bench-startup.${process.pid}`);
  const saved = process.env.NODE_EXTRA_CA_CERTS;
  o.log(`start-up: ${variants.length} variants, ${o.reps} rounds, interleaved`);
  try {
    for (let round = 0; round < o.reps; round++) {
      for (const v of variants) {
        if (v.failed) continue;
        // timed() spawns with this process's environment.
        if (v.certs) process.env.NODE_EXTRA_CA_CERTS = certs;
        else delete process.env.NODE_EXTRA_CA_CERTS;
        const r = await timed(o.gnuTime, ['-f', '%U %S %M', '-o', out, ...v.argv]);
        if (r.code !== 0) {
          v.failed = `exit ${r.code}: ${r.stderr.trim().split('\n').pop() ?? ''}`;
          continue;
        }
        const [user, sys, rss] = fs.readFileSync(out, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
        v.wallMs.push(r.wallMs);
        v.cpuMs.push(((user ?? NaN) + (sys ?? NaN)) * 1000);
        v.rssKiB.push(rss ?? NaN);
      }
    }
  } finally {
    if (saved === undefined) delete process.env.NODE_EXTRA_CA_CERTS;
    else process.env.NODE_EXTRA_CA_CERTS = saved;
    fs.rmSync(out, { force: true });
  }
  return {
    title: `Start-up: the command through its #! line, ${o.reps} interleaved rounds, medians`,
    headers: ['command', 'NODE_EXTRA_CA_CERTS', 'wall ms', 'min wall ms', 'CPU ms (user+sys)', 'peak RSS MB'],
    numeric: [false, false, true, true, true, true],
    rows: variants.map((v) =>
      v.failed
        ? [v.label, v.certs ? 'set' : 'unset', v.failed, '', '', '']
        : [
            v.label,
            v.certs ? 'set' : 'unset',
            fmtInt(median(v.wallMs)),
            fmtInt(Math.min(...v.wallMs)),
            fmtInt(median(v.cpuMs)),
            fmtFixed(median(v.rssKiB) / 1024, 1),
          ],
    ),
    notes: [
      `NODE_EXTRA_CA_CERTS set: ${certs} (${fs.existsSync(certs) ? `${(fs.statSync(certs).size / 1024).toFixed(0)} KiB` : 'missing'}). ` +
        'snapshot: the CLOSE_WAIT sockets on the machine at the time (few). CPU: GNU time, 10 ms resolution, all threads.',
      `The last row passes the V8 flags the #! line passed before it became \`#!/usr/bin/env node\` (docs/install.md); the row above it is the same run without them.`,
    ],
  };
}

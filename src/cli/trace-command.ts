/** `sockleak trace`: every TCP state change and socket close/connect/accept, live. */
import { monotonicToEpochMs } from '../clock';
import { Option } from 'commander';
import { openTracer } from '../trace/tracer';
import type { RegisterCommand } from './command';
import { ExitCode } from '../errors';
import { helpFooter } from './help';
import { arg, parseCount, parsePid } from './parse';
import { formatEvent } from './format';
import { stdoutClosed, write } from './output';

export interface TraceCommandOptions {
  pid?: number;
  json?: boolean;
  /** Stop after this many events (tests, scripts). */
  count?: number;
}

/** Runs until SIGINT/SIGTERM (or `count` events); prints totals to stderr. Returns the exit code. */
export async function traceCommand(options: TraceCommandOptions): Promise<number> {
  const tracer = openTracer({ ...(options.pid !== undefined && { pid: options.pid }) });
  const stop = (): void => void tracer.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const json = options.json === true;
  const offset = monotonicToEpochMs();
  let seen = 0;
  process.stderr.write(`sockleak: tracing${options.pid ? ` pid ${options.pid}` : ''}; Ctrl-C to stop\n`);
  try {
    for await (const batch of tracer.batches()) {
      const room = options.count === undefined ? batch.length : Math.min(batch.length, options.count - seen);
      const lines = batch.slice(0, room).map((ev) => (json ? JSON.stringify(ev) : formatEvent(ev, offset)));
      seen += room;
      if (lines.length) await write(`${lines.join('\n')}\n`);
      if (stdoutClosed() || (options.count !== undefined && seen >= options.count)) await tracer.close();
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  const c = tracer.counters();
  process.stderr.write(
    `sockleak: ${seen} events shown, ${c.emitted} emitted, ${c.lost} lost, ${c.missed} missed, ${c.mapFull} map-full\n`,
  );
  return 0;
}

export const registerTrace: RegisterCommand = (cli, setResult) => {
  cli
    .command('trace')
    .description('print every TCP state change and close()/connect()/accept() of TCP sockets, live')
    .option('--pid <pid>', 'only this process and the sockets it made or accepted', arg(parsePid))
    .option('--json', 'one JSON object per event and line (ndjson) instead of text lines')
    .addOption(new Option('--count <n>', 'stop after n events').argParser(arg((t) => parseCount(t, '--count'))))
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak trace', 'every TCP state change and close()/connect()/accept(), one line each, until Ctrl-C'],
          ['sockleak trace --pid 1234', 'only what process 1234 does and the sockets it made or accepted'],
          ['sockleak trace --json --count 1000 > events.ndjson', 'the first 1000 events as ndjson'],
        ],
        [[ExitCode.OK, 'stopped by Ctrl-C, SIGTERM or --count'], ExitCode.NO_INPUT, ExitCode.UNAVAILABLE, ExitCode.NO_PERMISSION],
      ),
    )
    .action((opts: TraceCommandOptions) => setResult(traceCommand(opts)));
};

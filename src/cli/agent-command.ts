/** `sockleak agent`: runs for good, serving /metrics, /stream and /healthz, optionally recording. */
import v8 from 'node:v8';
import { Option } from 'commander';
import { loadAddon } from '../kernel/addon';
import type { AgentOptions } from '../agent/agent';
import { ExitCode, UsageError } from '../errors';
import { describeCapabilityGaps } from '../kernel/preflight';
import { formatAge } from './format';
import { helpFooter } from './help';
import type { RegisterCommand } from './command';
import { tracefsNote, write } from './output';
import { arg, parseCount, parseDuration, parseSize } from './parse';

export interface AgentCommandOptions {
  listen?: { host: string; port: number };
  record?: string;
  recordMaxSize?: number;
  threshold?: number;
  maxSockets?: number;
  stacks?: boolean;
  top?: number;
  interval?: number;
  streamQueue?: number;
  /** false with --no-ports. */
  ports?: boolean;
  /** Status lines (started, stopped) as ndjson on stdout instead of sentences on stderr. */
  json?: boolean;
  /** --web.config.file (commander keeps the dots: `web.config.file`). */
  'web.config.file'?: string;
}

/** `127.0.0.1:9466`, `[::1]:9466`, `0.0.0.0:9466`; port 0 picks a free one. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|localhost)):([0-9]{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new UsageError(`--listen: '${text}' is not HOST:PORT; use e.g. 127.0.0.1:9466, [::1]:9466 or 0.0.0.0:9466`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}

/** --stream-queue: a size within the bounds startAgent() checks, said in the flag's terms. */
function parseStreamQueue(text: string): number {
  const bytes = parseSize(text, '--stream-queue');
  if (bytes < 4096 || bytes > 2 ** 32) throw new UsageError(`--stream-queue: '${text}' is ${bytes} bytes; use 4KiB to 4GiB`);
  return bytes;
}

export async function agentCommand(options: AgentCommandOptions): Promise<number> {
  if (options.recordMaxSize !== undefined && options.record === undefined) throw new UsageError('--record-max-size needs --record FILE');
  // Scans run on the libuv pool, and glibc gives each pool thread its own malloc arena, which keeps
  // the high-water mark of the largest scan buffer dirty: one thread, one arena (docs/benchmarks.md,
  // "Figures behind design choices"). Read when the pool starts, at its first use: nothing before this line uses it.
  process.env.UV_THREADPOOL_SIZE ??= '1';
  // A long-lived process whose scans make short bursts of objects: V8's default young generation
  // (up to 3 x 16 MiB) and heap growth stay mapped after them. --optimize-for-size (read by V8's
  // heuristics as they run, so it works when set here) keeps the young generation at 1 MiB and
  // grows the heap less: less RSS at 200k leaks in our measurement (docs/benchmarks.md).
  v8.setFlagsFromString('--optimize-for-size');
  // Large native buffers (a restart's 19 MB leak walk, event batches) go back to the kernel when
  // freed instead of staying in glibc's heap (docs/benchmarks.md).
  loadAddon().releaseLargeAllocations();
  const config: AgentOptions = {
    ...(options.listen && { host: options.listen.host, port: options.listen.port }),
    ...(options.record !== undefined && { recordPath: options.record }),
    ...(options.recordMaxSize !== undefined && { recordMaxBytes: options.recordMaxSize }),
    ...(options.threshold !== undefined && { thresholdMs: options.threshold }),
    ...(options.maxSockets !== undefined && { maxSockets: options.maxSockets }),
    ...(options.stacks && { stacks: true }),
    ...(options.top !== undefined && { top: options.top }),
    ...(options.interval !== undefined && { intervalMs: options.interval }),
    ...(options.streamQueue !== undefined && { streamQueueBytes: options.streamQueue }),
    ...(options.ports === false && { ports: false }),
    ...(options['web.config.file'] !== undefined && { webConfigFile: options['web.config.file'] }),
  };
  // Loaded on use: prom-client and protobufjs would slow every other command's start-up.
  const { startAgent } = await import('../agent/agent');
  const agent = await startAgent(config);
  for (const note of agent.recordingNotes()) process.stderr.write(`sockleak: --record ${note}\n`);
  const stop = (): void => void agent.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const { host, port } = agent.address;
  const url = `${agent.scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const thresholdMs = options.threshold ?? 30_000;
  // Warnings stay on stderr in both modes, as fallback lines do.
  const gaps = describeCapabilityGaps(agent.capabilityGaps());
  const exposed = agent.exposure();
  process.stderr.write(`${gaps ? `sockleak: ${gaps}\n` : ''}${exposed ? `sockleak: ${exposed}\n` : ''}`);
  if (options.json) {
    await write(`${JSON.stringify({ status: 'started', url, host, port, thresholdMs, recording: options.record ?? null, tracefsMounted: agent.hooks()?.mountedTracefs ?? false })}\n`);
  } else {
    process.stderr.write(
      `${tracefsNote(agent.hooks())}sockleak: agent on ${url} (/metrics, /stream, /healthz)${options.record ? `, recording to ${options.record}` : ''}; ` +
        `CLOSE_WAIT longer than ${formatAge(thresholdMs)} is a leak; SIGTERM or Ctrl-C to stop\n`,
    );
  }
  try {
    await agent.finished;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  const s = agent.status();
  if (options.json) {
    // Counters are bigints (64-bit in the kernel) but far below 2^53: numbers, as in the other commands' JSON.
    const doc = { status: 'stopped', ...s, recordingError: s.recordingError?.message ?? null };
    await write(`${JSON.stringify(doc, (_, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))}\n`);
    return ExitCode.OK;
  }
  process.stderr.write(
    `sockleak: ${s.leaksOpen} leaks open, ${s.records} records, ${s.emitted} events, ${s.lost} lost, ${s.missed} missed, ${s.mapFull} map-full, ` +
      `${s.evictions} evicted, ${s.streamDropped} dropped for slow subscribers` +
      `${options.record ? `, ${s.recordingBytes} bytes recorded${s.recordingRotations ? ` (rotated ${s.recordingRotations} times)` : ''}${s.recordingError ? ` (recording failed: ${s.recordingError.message})` : ''}` : ''}\n`,
  );
  return 0;
}

export const registerAgent: RegisterCommand = (cli, setResult) => {
  cli
    .command('agent')
    .description('run continuously: Prometheus /metrics, a protobuf record /stream, optionally a recording for `sockleak report`')
    .option('--listen <host:port>', 'address for /metrics, /stream and /healthz (default 127.0.0.1:9466)', arg(parseListen))
    .option('--record <file>', 'also append the record stream to this file (mode 0600; each start adds a session), flushed every second')
    .option(
      '--record-max-size <size>',
      'rotate the recording to FILE.1 (replacing it) before FILE grows past this, e.g. 256MiB or 1GB (default 256MiB, at least 1MiB)',
      arg((t) => {
        const n = parseSize(t, '--record-max-size');
        if (n < 1 << 20) throw new UsageError(`--record-max-size: '${t}' is ${n} bytes; use at least 1MiB`);
        return n;
      }),
    )
    .option('--threshold <duration>', 'how long in CLOSE_WAIT makes a leak (default 30s)', arg((t) => parseDuration(t, '--threshold')))
    .addOption(
      new Option('--max-sockets <n>', 'most leaks tracked at once; the oldest are evicted beyond it (default 250000)').argParser(
        arg((t) => {
          const n = parseCount(t, '--max-sockets', 1 << 26);
          if (n < 1024) throw new UsageError(`--max-sockets: '${t}' is too few; use at least 1024`);
          return n;
        }),
      ),
    )
    .addOption(new Option('--top <k>', 'processes and destinations with their own metric series (default 10)').argParser(arg((t) => parseCount(t, '--top', 1000))))
    .option('--stacks', "where in the code each leak was made, in the stream's Creator.stack (costs a stack walk per connect() and accept(); docs/stacks.md)")
    .option('--interval <duration>', 'how often sockets are counted per state and totals recorded (default 15s)', arg((t) => parseDuration(t, '--interval')))
    .option('--stream-queue <size>', 'per /stream subscriber queue bound, e.g. 4MiB or 4MB; a slower subscriber loses its oldest records (default 4MiB)', arg(parseStreamQueue))
    .option('--web.config.file <file>', 'TLS and basic auth for the endpoints, in the Prometheus exporters\' web config format (docs/deploy.md)')
    .option('--no-ports', 'do not count ephemeral ports per destination (once a minute, from the scan the port watcher makes)')
    .option('--json', 'status lines as ndjson on stdout ({"status":"started","url",...}, then {"status":"stopped", counters...}) instead of sentences on stderr')
    .addHelpText(
      'after',
      helpFooter(
        [
          ['sockleak agent', 'serve /metrics, /stream and /healthz on 127.0.0.1:9466'],
          ['sockleak agent --listen 0.0.0.0:9466 --threshold 5m', 'for a Prometheus on another host; CLOSE_WAIT over 5 minutes is a leak'],
          ['sockleak agent --record /var/lib/sockleak/rec.bin', 'also record, for `sockleak report` after the incident'],
          ['sockleak agent --listen 0.0.0.0:9466 --web.config.file /etc/sockleak/web.yml', 'beyond loopback with TLS and basic auth (docs/deploy.md)'],
        ],
        [[ExitCode.OK, 'stopped by SIGTERM or Ctrl-C'], ExitCode.NO_INPUT, ExitCode.UNAVAILABLE, ExitCode.NO_PERMISSION, ExitCode.CONFIG],
      ),
    )
    .action((opts: AgentCommandOptions) => setResult(agentCommand(opts)));
};

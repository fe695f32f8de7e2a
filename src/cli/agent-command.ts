/** `sockleak agent`: runs for good, serving /metrics, /stream and /healthz, optionally recording. */
import v8 from 'node:v8';
import { Option } from 'commander';
import { loadAddon } from '../addon';
import type { AgentOptions } from '../agent/agent';
import { UsageError } from '../errors';
import { describeCapabilityGaps } from '../preflight';
import { formatAge } from './format';
import type { RegisterCommand } from './main';
import { tracefsNote } from './output';
import { arg, parseCount, parseDuration } from './parse';

export interface AgentCommandOptions {
  listen?: { host: string; port: number };
  record?: string;
  threshold?: number;
  maxSockets?: number;
  top?: number;
  interval?: number;
  streamQueue?: number;
  /** false with --no-ports. */
  ports?: boolean;
  /** --web.config.file (commander keeps the dots: `web.config.file`). */
  'web.config.file'?: string;
}

/** `127.0.0.1:9466`, `[::1]:9466`, `0.0.0.0:9466`; port 0 picks a free one. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|localhost)):([0-9]{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new UsageError(`--listen must be HOST:PORT such as 127.0.0.1:9466 or [::1]:9466, got '${text}'`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}

const BYTE_UNITS: Record<string, number> = { '': 1, k: 1024, kib: 1024, m: 1 << 20, mib: 1 << 20, g: 1 << 30, gib: 1 << 30 };

/** `65536`, `64k`, `4MiB`, `1g`: bytes. */
export function parseBytes(text: string, flag: string): number {
  const m = /^([0-9]{1,10})\s*([a-zA-Z]*)$/.exec(text);
  const unit = BYTE_UNITS[(m?.[2] ?? '?').toLowerCase()];
  if (!m || unit === undefined) throw new UsageError(`${flag} must be a size like 65536, 64k or 4MiB, got '${text}'`);
  return Number(m[1]) * unit;
}

export async function agentCommand(options: AgentCommandOptions): Promise<number> {
  // Scans run on the libuv pool, and glibc gives each pool thread its own malloc arena, which keeps
  // the high-water mark of the largest scan buffer dirty: one thread, one arena (~100 MB less at
  // 200k leaks). Read when the pool starts, at its first use: nothing before this line uses it.
  process.env.UV_THREADPOOL_SIZE ??= '1';
  // A long-lived process whose scans make short bursts of objects: V8's default young generation
  // (up to 3 x 16 MiB) and heap growth stay mapped after them. --optimize-for-size (read by V8's
  // heuristics as they run, so it works when set here) keeps the young generation at 1 MiB and
  // grows the heap less: ~90 MB less RSS at 200k leaks in our measurement (docs/agent.md).
  v8.setFlagsFromString('--optimize-for-size');
  // Large native buffers (a restart's 19 MB leak walk, event batches) go back to the kernel when
  // freed instead of staying in glibc's heap: ~15 MB of settled RSS at 200k leaks.
  loadAddon().releaseLargeAllocations();
  const config: AgentOptions = {
    ...(options.listen && { host: options.listen.host, port: options.listen.port }),
    ...(options.record !== undefined && { recordPath: options.record }),
    ...(options.threshold !== undefined && { thresholdMs: options.threshold }),
    ...(options.maxSockets !== undefined && { maxSockets: options.maxSockets }),
    ...(options.top !== undefined && { top: options.top }),
    ...(options.interval !== undefined && { intervalMs: options.interval }),
    ...(options.streamQueue !== undefined && { streamQueueBytes: options.streamQueue }),
    ...(options.ports === false && { ports: false }),
    ...(options['web.config.file'] !== undefined && { webConfigFile: options['web.config.file'] }),
  };
  // Loaded on use: prom-client and protobufjs would cost every other command ~60 ms of start-up.
  const { startAgent } = await import('../agent/agent');
  const agent = await startAgent(config);
  const stop = (): void => void agent.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const { host, port } = agent.address;
  const url = `${agent.scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const gaps = describeCapabilityGaps(agent.capabilityGaps());
  const exposed = agent.exposure();
  process.stderr.write(
    `${tracefsNote(agent.hooks())}${gaps ? `sockleak: ${gaps}\n` : ''}${exposed ? `sockleak: ${exposed}\n` : ''}sockleak: agent on ${url} (/metrics, /stream, /healthz)${options.record ? `, recording to ${options.record}` : ''}; ` +
      `CLOSE_WAIT longer than ${formatAge(options.threshold ?? 30_000)} is a leak; SIGTERM or Ctrl-C to stop\n`,
  );
  try {
    await agent.finished;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  const s = agent.status();
  process.stderr.write(
    `sockleak: ${s.leaksOpen} leaks open, ${s.records} records, ${s.emitted} events, ${s.lost} lost, ${s.mapFull} map-full, ` +
      `${s.evictions} evicted, ${s.streamDropped} dropped for slow subscribers` +
      `${options.record ? `, ${s.recordingBytes} bytes recorded${s.recordingError ? ` (recording failed: ${s.recordingError.message})` : ''}` : ''}\n`,
  );
  return 0;
}

export const registerAgent: RegisterCommand = (cli, setResult) => {
  cli
    .command('agent')
    .description('run continuously: Prometheus /metrics, a protobuf record /stream, optionally a recording for `sockleak report`')
    .option('--listen <host:port>', 'address for /metrics, /stream and /healthz (default 127.0.0.1:9466)', arg(parseListen))
    .option('--record <file>', 'also write the record stream to this file (truncated first), flushed every second')
    .option('--threshold <duration>', 'how long in CLOSE_WAIT makes a leak (default 30s)', arg((t) => parseDuration(t, '--threshold')))
    .addOption(
      new Option('--max-sockets <n>', 'most leaks tracked at once; the oldest are evicted beyond it (default 250000)').argParser(
        arg((t) => {
          const n = parseCount(t, '--max-sockets', 1 << 26);
          if (n < 1024) throw new UsageError(`--max-sockets must be at least 1024, got '${t}'`);
          return n;
        }),
      ),
    )
    .addOption(new Option('--top <k>', 'processes and destinations with their own metric series (default 10)').argParser(arg((t) => parseCount(t, '--top', 1000))))
    .option('--interval <duration>', 'how often sockets are counted per state and totals recorded (default 15s)', arg((t) => parseDuration(t, '--interval')))
    .option('--stream-queue <bytes>', 'per /stream subscriber queue bound; a slower subscriber loses its oldest records (default 4MiB)', arg((t) => parseBytes(t, '--stream-queue')))
    .option('--web.config.file <file>', 'TLS and basic auth for the endpoints, in the Prometheus exporters\' web config format (docs/agent.md)')
    .option('--no-ports', 'do not count ephemeral ports per destination (once a minute, from the scan the port watcher makes)')
    .action((opts: AgentCommandOptions) => setResult(agentCommand(opts)));
};

/**
 * sockleak as a library. Everything the CLI does is available here, with
 * typed results and typed errors (errors.ts); nothing here prints or exits.
 */
import type * as AgentModule from './agent/agent';
import type * as SchemaModule from './recording/schema';
import type * as RecordingModule from './recording/recording';

export { openTracer, Tracer, type TracerOptions } from './trace/tracer';
export { snapshot, type SnapshotOptions } from './scan/snapshot';
export { LeakWatcher, type WatchOptions } from './watch/leak-watcher';
export { watch, type LeakEngine } from './watch/leak-engine';
export type { WatchRecord, LeakRecord, ResolvedRecord, FdClosedRecord, Closer } from './watch-records';
export type { SocketInfo, Owner, Creator, Snapshot } from './sockets';
export { cgroupPlace, type CgroupFilter, type CgroupPlace } from './cgroup-path';
export type {
  TraceEvent,
  StateEvent,
  CloseEvent,
  ConnectEvent,
  AcceptEvent,
  EventContext,
  TraceCounters,
} from './events';
export { TCP_STATES, type TcpState } from './tcp-states';
export * from './errors';
export { ports, type PortsSnapshot, type PortsOptions } from './ports/ports';
export type { NetnsPorts, RemotePorts, SourcePorts } from './ports/port-usage';
export { watchWithPorts, PortAwareWatcher, type PortAwareWatchOptions, type ForecastWatchOptions, type WatchStreamRecord } from './watch/port-watch';
export type { PortRecord, PortFailureRecord, PortWatchOptions } from './ports/port-watcher';
export type { PortPressureRecord, PortCloser } from './ports/port-pressure';
export type { ProcessForecastRecord } from './forecast/fd-forecast';
export { runWithLeakCheck, gateExitCode, resolveCommand, type RunOptions, type RunResult, type LeakedSocket } from './run/run';
export { checkSocketLeaks, type CheckLeaksOptions } from './run/check-leaks';
export { parseRemotePattern, type RemotePattern } from './remote-pattern';
export type { TimeWaitReport } from './run/time-wait-budget';
export {
  reap,
  planReap,
  executeReap,
  REAP_DEFAULT_MAX,
  REAP_MAX,
  type ReapFilters,
  type AppliedReapFilters,
  type ReapOptions,
  type ExecuteReapOptions,
  type ReapPlan,
  type ReapReport,
  type ReapSocketResult,
  type ReapSkipReason,
  type AuditTarget,
  type AuditActor,
} from './reap/reap';
export type { AgentOptions, AgentStatus } from './agent/agent';
export type { CapabilityGap } from './kernel/preflight';
export type { RecordMessage } from './recording/messages';
export type { RecordAt } from './recording/recording';
export { Replay, type ReplayResult } from './recording/recording-replay';

// The agent (prom-client, an HTTP server) and the wire schema (protobufjs) load
// when first used, not with the library: most callers take a snapshot or watch
// and should not pay for either at require() time.
/* eslint-disable @typescript-eslint/no-require-imports */
const agentModule = (): typeof AgentModule => require('./agent/agent') as typeof AgentModule;
const schemaModule = (): typeof SchemaModule => require('./recording/schema') as typeof SchemaModule;
const recordingModule = (): typeof RecordingModule => require('./recording/recording') as typeof RecordingModule;
/* eslint-enable @typescript-eslint/no-require-imports */

/** Starts the agent: watch, Prometheus metrics and the record stream (docs/agent.md). Loads prom-client on first call. */
export const startAgent: typeof AgentModule.startAgent = (...args) => agentModule().startAgent(...args);

/** One record, length-delimited, ready to append to a stream. Loads protobufjs on first call. */
export const encodeRecord: typeof SchemaModule.encodeRecord = (...args) => schemaModule().encodeRecord(...args);

/** One record's message bytes (without the length prefix) as a plain object. Throws on malformed bytes. Loads protobufjs on first call. */
export const decodeRecordBytes: typeof SchemaModule.decodeRecordBytes = (...args) => schemaModule().decodeRecordBytes(...args);

/** The records of a recording file (`sockleak agent --record`), in order. Loads protobufjs on first call. */
export const readRecording: typeof RecordingModule.readRecording = (...args) => recordingModule().readRecording(...args);

/** The running agent that startAgent() resolves to. */
export type Agent = AgentModule.Agent;
/** The Agent class; reading it loads the agent module. */
export declare const Agent: typeof AgentModule.Agent;
/** Where proto/sockleak/v1/sockleak.proto is, in a checkout or the installed package. */
export declare const PROTO_PATH: string;
/** Fully-qualified name of the envelope message. */
export declare const RECORD_TYPE: string;
lazyExport('Agent', () => agentModule().Agent);
lazyExport('PROTO_PATH', () => schemaModule().PROTO_PATH);
lazyExport('RECORD_TYPE', () => schemaModule().RECORD_TYPE);

/** A value export computed when first read (`declare`d above for its type): CommonJS lets a getter stand for it. */
function lazyExport(name: string, get: () => unknown): void {
  Object.defineProperty(exports, name, { enumerable: true, configurable: true, get });
}

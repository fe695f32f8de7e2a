/**
 * sockleak as a library. Everything the CLI does is available here, with
 * typed results and typed errors (errors.ts); nothing here prints or exits.
 */
export { openTracer, Tracer, type TracerOptions } from './tracer';
export { snapshot, type SnapshotOptions } from './snapshot';
export { LeakWatcher, type WatchOptions } from './leak-watcher';
export { watch, type LeakEngine } from './leak-engine';
export type { WatchRecord, LeakRecord, ResolvedRecord, FdClosedRecord, Closer } from './watch-records';
export type { SocketInfo, Owner, Creator, Snapshot } from './sockets';
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
export { ports, type PortsSnapshot, type PortsOptions } from './ports';
export type { NetnsPorts, RemotePorts, SourcePorts } from './port-usage';
export { watchWithPorts, PortAwareWatcher, type PortAwareWatchOptions } from './port-watch';
export type { PortRecord, PortFailureRecord, PortWatchOptions } from './port-watcher';
export type { PortPressureRecord, PortCloser } from './port-pressure';
export { runWithLeakCheck, gateExitCode, resolveCommand, type RunOptions, type RunResult, type LeakedSocket } from './run';
export { checkSocketLeaks, type CheckLeaksOptions } from './check-leaks';
export { parseRemotePattern, type RemotePattern } from './remote-pattern';
export type { TimeWaitReport } from './time-wait-budget';
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
} from './reap';
export { startAgent, Agent, type AgentOptions, type AgentStatus } from './agent/agent';
export type { CapabilityGap } from './preflight';
export { PROTO_PATH, RECORD_TYPE, encodeRecord, decodeRecordBytes } from './agent/schema';
export type { RecordMessage } from './agent/messages';
export { readRecording, type RecordAt } from './recording';
export { Replay, type ReplayResult } from './recording-replay';

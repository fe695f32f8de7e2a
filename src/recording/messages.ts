/**
 * proto/sockleak/v1/sockleak.proto's messages as plain objects, the form
 * protobufjs's fromObject() takes and toObject({ longs: String, enums: String })
 * returns. Generated from the .proto at build time (scripts/gen-proto-types.mjs
 * → src/generated/sockleak.ts, `npm run build:proto`); this module is the one
 * place the rest of the code imports them from.
 */
export type {
  CloserMessage,
  ConnectFailureCall,
  ConnectFailureMessage,
  CountersMessage,
  CreatorMessage,
  FdClosedMessage,
  FrameMessage,
  GapMessage,
  LeakMessage,
  NetnsPortsMessage,
  OwnerMessage,
  PortCloserMessage,
  PortPressureMessage,
  PortsMessage,
  ProcessForecastMessage,
  RecordBody,
  RecordMessage,
  RemotePortsMessage,
  ResolvedHow,
  ResolvedMessage,
  SessionMessage,
  SnapshotMessage,
  SocketInfoMessage,
  SourcePortsMessage,
  TcpState as TcpStateWire,
  U64,
} from '../generated/sockleak';

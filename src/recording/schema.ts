/**
 * The wire schema, proto/sockleak/v1/sockleak.proto, loaded at run time with
 * protobufjs's parser.
 *
 * Why the encoder is not generated code: the .proto stays the one definition
 * the process runs from, protobufjs still compiles each type's encoder and
 * decoder to specialised functions on first use, so encoding costs what static
 * code would, and parsing the file takes a few ms once. Only the TypeScript
 * view of the messages is generated from it, at build time (src/recording/messages.ts).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import protobuf from 'protobufjs';
import type { RecordMessage } from './messages';

/** Where the schema lives in a checkout or an installed package. */
export const PROTO_PATH = path.resolve(__dirname, '..', '..', '..', 'proto', 'sockleak', 'v1', 'sockleak.proto');

/** Fully-qualified name of the envelope message. */
export const RECORD_TYPE = 'sockleak.v1.Record';

let recordType: protobuf.Type | undefined;

/** The Record type, parsed once. */
export function recordSchema(): protobuf.Type {
  if (!recordType) {
    const { root } = protobuf.parse(readFileSync(PROTO_PATH, 'utf8'), { keepCase: false });
    recordType = root.lookupType(RECORD_TYPE);
  }
  return recordType;
}

/** One record, length-delimited (varint length, then the message), ready to append to a stream. */
export function encodeRecord(record: RecordMessage): Buffer {
  const type = recordSchema();
  const bytes = type.encodeDelimited(type.fromObject(record)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** One record's message bytes (without the length prefix) as a plain object. Throws on malformed bytes. */
export function decodeRecordBytes(bytes: Uint8Array): RecordMessage {
  const type = recordSchema();
  const message = type.decode(bytes);
  // `defaults` fills proto3 scalars and repeated fields; oneof members and `optional` fields stay absent when unset.
  return type.toObject(message, { longs: String, enums: String, defaults: true }) as RecordMessage;
}

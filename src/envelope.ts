/**
 * The envelope: how one node's published messages of one topic travel
 * through a broker to the other nodes. Pure: bytes in, fields out.
 *
 * Layout (version 1, integers big-endian):
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 1 | version, 1 |
 * | 1 | 1 | flags, 0 (reserved) |
 * | 2 | 8 | node id of the publisher |
 * | 10 | 4 | sequence number of the first message, per node and topic |
 * | 14 | 2 | message count, at least 1 |
 * | 16 | 2 | topic length in bytes |
 * | 18 | n | topic, UTF-8 |
 * |  | 4 + m | per message: its length, then the message as it goes on the wire: unmasked WebSocket frames |
 *
 * The messages of one envelope are consecutive: the k-th has the first
 * sequence number plus k. The messages are checked frame by frame before
 * anything is delivered, because their bytes are queued on sockets as they
 * are: a broken frame would break every subscriber's connection.
 *
 * @module
 */

import { OPCODE_BINARY, OPCODE_CONTINUATION, OPCODE_TEXT } from "./frame.ts";
import { decodeUtf8, Utf8StreamDecoder } from "./utf8.ts";

/** The envelope version this library writes and reads. */
export const ENVELOPE_VERSION = 1;
/** Bytes before the topic. */
export const ENVELOPE_HEADER_SIZE = 18;
/** Most messages in one envelope (the count is 16 bits). */
export const MAX_ENVELOPE_MESSAGES = 0xffff;
/** Longest topic, in UTF-8 bytes (the length is 16 bits). */
export const MAX_TOPIC_BYTES = 0xffff;

/** A node id: 8 random bytes, kept as two 32-bit halves. */
export interface NodeId {
  readonly high: number;
  readonly low: number;
}

/** A fresh random node id. */
export function randomNodeId(): NodeId {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return { high: words[0], low: words[1] };
}

/** What {@linkcode decodeEnvelope} found in a valid envelope. */
export interface Envelope {
  node: NodeId;
  /** Sequence number of the first message. */
  sequence: number;
  topic: string;
  /** Each message's frames (views into the envelope's bytes). */
  messages: Uint8Array[];
}

const topicDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Writes an envelope around `messages` (each one whole message of
 * unmasked frames), whose first has sequence number `sequence`.
 */
export function encodeEnvelope(
  node: NodeId,
  sequence: number,
  topic: Uint8Array,
  messages: readonly Uint8Array[],
): Uint8Array {
  let size = ENVELOPE_HEADER_SIZE + topic.length;
  for (let i = 0; i < messages.length; i++) size += 4 + messages[i].length;
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  bytes[0] = ENVELOPE_VERSION;
  bytes[1] = 0;
  view.setUint32(2, node.high);
  view.setUint32(6, node.low);
  view.setUint32(10, sequence >>> 0);
  view.setUint16(14, messages.length);
  view.setUint16(16, topic.length);
  bytes.set(topic, ENVELOPE_HEADER_SIZE);
  let offset = ENVELOPE_HEADER_SIZE + topic.length;
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i];
    view.setUint32(offset, message.length);
    bytes.set(message, offset + 4);
    offset += 4 + message.length;
  }
  return bytes;
}

/**
 * Reads an envelope, or returns `null` when it is not a valid one: another
 * version, a length that does not add up, a topic that is not UTF-8, or a
 * message that is not one whole unmasked text or binary message (frames
 * with RSV bits, a control frame, a text message that is not UTF-8).
 * Never throws.
 */
export function decodeEnvelope(bytes: Uint8Array): Envelope | null {
  if (!(bytes instanceof Uint8Array)) return null;
  if (bytes.length < ENVELOPE_HEADER_SIZE) return null;
  if (bytes[0] !== ENVELOPE_VERSION || bytes[1] !== 0) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint16(14);
  const topicLength = view.getUint16(16);
  if (count === 0) return null;
  let offset = ENVELOPE_HEADER_SIZE + topicLength;
  if (offset > bytes.length) return null;
  let topic: string;
  try {
    topic = topicDecoder.decode(bytes.subarray(ENVELOPE_HEADER_SIZE, offset));
  } catch {
    return null;
  }
  const messages: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    if (offset + 4 > bytes.length) return null;
    const length = view.getUint32(offset);
    offset += 4;
    if (length > bytes.length - offset) return null;
    const message = bytes.subarray(offset, offset + length);
    if (!isWholeMessage(message)) return null;
    messages.push(message);
    offset += length;
  }
  if (offset !== bytes.length) return null;
  return {
    node: { high: view.getUint32(2), low: view.getUint32(6) },
    sequence: view.getUint32(10),
    topic,
    messages,
  };
}

/**
 * Whether `bytes` is exactly one data message as a server sends it: frames
 * with minimal lengths, no mask, no RSV bits, a text or binary opcode then
 * continuations, FIN on the last one only, and UTF-8 if it is text.
 */
export function isWholeMessage(bytes: Uint8Array): boolean {
  let offset = 0;
  let first = true;
  let text = false;
  let utf8: Utf8StreamDecoder | null = null;
  while (offset < bytes.length) {
    if (bytes.length - offset < 2) return false;
    const b0 = bytes[offset];
    const b1 = bytes[offset + 1];
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    // RFC 6455 5.2: RSV bits must be 0 unless an extension defines them,
    // and published messages are never compressed.
    if ((b0 & 0x70) !== 0) return false;
    // RFC 6455 5.1: a server must not mask the frames it sends.
    if ((b1 & 0x80) !== 0) return false;
    if (first) {
      if (opcode !== OPCODE_TEXT && opcode !== OPCODE_BINARY) return false;
      text = opcode === OPCODE_TEXT;
    } else if (opcode !== OPCODE_CONTINUATION) return false;
    let length = b1 & 0x7f;
    offset += 2;
    // RFC 6455 5.2: the minimal number of bytes must be used for the length.
    if (length === 126) {
      if (bytes.length - offset < 2) return false;
      length = (bytes[offset] << 8) | bytes[offset + 1];
      if (length < 126) return false;
      offset += 2;
    } else if (length === 127) {
      if (bytes.length - offset < 8) return false;
      const view = new DataView(bytes.buffer, bytes.byteOffset + offset, 8);
      const high = view.getUint32(0);
      if (high > 0x1fffff) return false;
      length = high * 0x1_0000_0000 + view.getUint32(4);
      if (length < 0x10000) return false;
      offset += 8;
    }
    if (length > bytes.length - offset) return false;
    const payload = bytes.subarray(offset, offset + length);
    offset += length;
    if (text) {
      if (first && fin) {
        if (decodeUtf8(payload) === undefined) return false;
      } else {
        utf8 ??= new Utf8StreamDecoder();
        if (!utf8.push(payload)) return false;
      }
    }
    first = false;
    if (fin) {
      if (utf8 !== null && utf8.end() === undefined) return false;
      return offset === bytes.length;
    }
  }
  return false;
}

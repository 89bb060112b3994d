/**
 * What `write` and `send` accept: the frame types, the payload kinds, and
 * the checks on them, made before anything is queued.
 *
 * @module
 */

import {
  MAX_CONTROL_PAYLOAD,
  OPCODE_BINARY,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
} from "./frame.ts";

/** The frame types `Socket.write` sends. */
export type MessageType = "text" | "binary" | "ping" | "pong" | "close";

/** The opcode of each frame type but `close`. */
export const OPCODES: Record<string, number> = {
  text: OPCODE_TEXT,
  binary: OPCODE_BINARY,
  ping: OPCODE_PING,
  pong: OPCODE_PONG,
};

const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/**
 * The bytes `write(data, type)` sends as `opcode` (`undefined` when `type`
 * is unknown), or the error it rejects with.
 */
export function payloadOf(
  data: unknown,
  type: string,
  opcode: number | undefined,
): Uint8Array | TypeError | RangeError {
  if (opcode === undefined) {
    return new TypeError(
      `Cannot write: type must be text, binary, ping, pong or close, received ${
        String(type)
      }`,
    );
  }
  let payload: Uint8Array;
  if (data === null || data === undefined) payload = EMPTY;
  else if (typeof data === "string") payload = encoder.encode(data);
  else if (data instanceof Uint8Array) payload = data;
  else {
    return new TypeError(
      `Cannot write: data must be a string or Uint8Array, received ${typeof data}`,
    );
  }
  if (opcode >= OPCODE_PING && payload.length > MAX_CONTROL_PAYLOAD) {
    return new RangeError(
      `Cannot send ${type} frame: payload must be 125 bytes or less, received ${payload.length} bytes`,
    );
  }
  return payload;
}

/**
 * What `send(data)` writes: a string as is (text), any other bytes as a
 * `Uint8Array` over the same memory (binary), or the error it rejects with.
 */
export function sendable(data: unknown): string | Uint8Array | TypeError {
  if (typeof data === "string" || data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new TypeError(
    `Cannot send: data must be a string, an ArrayBufferView or an ArrayBuffer, received ${typeof data}`,
  );
}

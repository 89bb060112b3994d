/**
 * The frame format (RFC 6455 5.2): opcodes, the control-frame limit, the
 * error a peer's bad frame becomes, and frame encoding. Decoding is in
 * `frame_decoder.ts`.
 *
 * Pure: no I/O, no timers, no promises.
 *
 * @module
 */

import { mask } from "./mask.ts";

/** Opcode of a continuation frame. */
export const OPCODE_CONTINUATION = 0x0;
/** Opcode of a text frame. */
export const OPCODE_TEXT = 0x1;
/** Opcode of a binary frame. */
export const OPCODE_BINARY = 0x2;
/** Opcode of a close frame. */
export const OPCODE_CLOSE = 0x8;
/** Opcode of a ping frame. */
export const OPCODE_PING = 0x9;
/** Opcode of a pong frame. */
export const OPCODE_PONG = 0xa;

/** RFC 6455 5.5: all control frames carry 125 bytes of payload or less. */
export const MAX_CONTROL_PAYLOAD = 125;

/** A decoded frame. `payload` is already unmasked. */
export interface Frame {
  /** FIN: the last frame of its message. */
  fin: boolean;
  /** RSV1: on a message's first frame, compressed (RFC 7692 6). */
  rsv1: boolean;
  /** One of the `OPCODE_*` values. */
  opcode: number;
  /** The application data, unmasked. */
  payload: Uint8Array;
}

/**
 * What the peer did wrong, as the close code to fail the connection with.
 * Thrown by the frame decoder and the deflate codec and caught by the
 * protocol: never reaches the library's caller.
 */
export class FrameError extends Error {
  /** The close code to send (1002 or 1009). */
  readonly closeCode: number;
  /** An error that fails the connection with `closeCode`. */
  constructor(closeCode: number, message: string) {
    super(message);
    this.name = "FrameError";
    this.closeCode = closeCode;
  }
}

/** Size of a frame header for a payload of `payloadLength` bytes. */
export function frameHeaderSize(
  payloadLength: number,
  masked: boolean,
): number {
  const size = payloadLength < 126 ? 2 : payloadLength < 0x10000 ? 4 : 10;
  return masked ? size + 4 : size;
}

/**
 * Writes a frame header into `target` at `offset`.
 *
 * @returns the offset just past the header
 */
export function writeFrameHeader(
  target: Uint8Array,
  offset: number,
  fin: boolean,
  rsv1: boolean,
  opcode: number,
  payloadLength: number,
  maskingKey?: Uint8Array,
): number {
  target[offset++] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode;
  const maskBit = maskingKey ? 0x80 : 0;
  if (payloadLength < 126) {
    target[offset++] = maskBit | payloadLength;
  } else if (payloadLength < 0x10000) {
    target[offset++] = maskBit | 126;
    target[offset++] = payloadLength >>> 8;
    target[offset++] = payloadLength & 0xff;
  } else {
    target[offset++] = maskBit | 127;
    const high = Math.floor(payloadLength / 0x1_0000_0000);
    const low = payloadLength >>> 0;
    target[offset++] = high >>> 24;
    target[offset++] = (high >>> 16) & 0xff;
    target[offset++] = (high >>> 8) & 0xff;
    target[offset++] = high & 0xff;
    target[offset++] = low >>> 24;
    target[offset++] = (low >>> 16) & 0xff;
    target[offset++] = (low >>> 8) & 0xff;
    target[offset++] = low & 0xff;
  }
  if (maskingKey) {
    target[offset++] = maskingKey[0];
    target[offset++] = maskingKey[1];
    target[offset++] = maskingKey[2];
    target[offset++] = maskingKey[3];
  }
  return offset;
}

/** Options of {@linkcode encodeFrame}. */
export interface EncodeFrameOptions {
  /** FIN bit. @default {true} */
  fin?: boolean;
  /** RSV1 bit (permessage-deflate). @default {false} */
  rsv1?: boolean;
  /** Mask with this 4-byte key (client frames); unmasked when absent. */
  maskingKey?: Uint8Array;
}

/**
 * Encodes one frame: header and (masked) payload. `payload` is not modified.
 */
export function encodeFrame(
  opcode: number,
  payload: Uint8Array,
  options: EncodeFrameOptions = {},
): Uint8Array {
  const { fin = true, rsv1 = false, maskingKey } = options;
  const headerSize = frameHeaderSize(payload.length, maskingKey !== undefined);
  const frame = new Uint8Array(headerSize + payload.length);
  writeFrameHeader(frame, 0, fin, rsv1, opcode, payload.length, maskingKey);
  frame.set(payload, headerSize);
  if (maskingKey) mask(frame.subarray(headerSize), maskingKey);
  return frame;
}

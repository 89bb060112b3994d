/**
 * Close codes (RFC 6455 7.4) and the close frame payload.
 *
 * Pure: no I/O.
 *
 * @module
 */

import { decodeUtf8, encodeUtf8 } from "./utf8.ts";

/** 1000: the purpose for which the connection was established is fulfilled. */
export const NORMAL_CLOSURE = 1000;
/** 1001: an endpoint is going away (server shutdown, page navigation). */
export const GOING_AWAY = 1001;
/** 1002: the peer broke the protocol. */
export const PROTOCOL_ERROR = 1002;
/** 1003: a type of data the endpoint cannot accept. */
export const UNSUPPORTED_DATA = 1003;
/** 1005: reserved; reported when a close frame carried no code. */
export const NO_STATUS_RECEIVED = 1005;
/** 1006: reserved; reported when the connection dropped without a close frame. */
export const ABNORMAL_CLOSURE = 1006;
/** 1007: data inconsistent with the message type (invalid UTF-8 text). */
export const INVALID_FRAME_PAYLOAD_DATA = 1007;
/** 1008: a message violated the endpoint's policy. */
export const POLICY_VIOLATION = 1008;
/** 1009: a message too big to process. */
export const MESSAGE_TOO_BIG = 1009;
/** 1010: the client expected an extension the server did not negotiate. */
export const MANDATORY_EXTENSION = 1010;
/** 1011: the server hit an unexpected condition. */
export const INTERNAL_ERROR = 1011;
/** 1015: reserved; reported when the TLS handshake failed. */
export const TLS_HANDSHAKE = 1015;

/**
 * Whether `code` may appear in a close frame on the wire.
 *
 * RFC 6455 7.4.1 and the IANA registry: 1000-1003 and 1007-1014 are defined,
 * 3000-4999 belong to libraries and applications; 1004, 1005, 1006 and 1015
 * are reserved and must never be sent.
 */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) ||
    (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

const NORMAL_PAYLOAD = Uint8Array.of(
  NORMAL_CLOSURE >>> 8,
  NORMAL_CLOSURE & 0xff,
);

/**
 * Encodes a close payload: the code in network byte order and the UTF-8
 * reason. Code 1005 means "no code" and gives an empty payload.
 * The caller validates `code` and the reason's length.
 */
export function encodeClosePayload(code: number, reason: string): Uint8Array {
  if (code === NO_STATUS_RECEIVED) return new Uint8Array(0);
  // The usual close and its echo: one payload for all (the write queue
  // copies control payloads, so nothing writes into it).
  if (code === NORMAL_CLOSURE && reason === "") return NORMAL_PAYLOAD;
  const reasonBytes = reason === "" ? null : encodeUtf8(reason);
  const payload = new Uint8Array(2 + (reasonBytes?.length ?? 0));
  payload[0] = code >>> 8;
  payload[1] = code & 0xff;
  if (reasonBytes !== null) payload.set(reasonBytes, 2);
  return payload;
}

/** A decoded close payload, or the close code to fail the connection with. */
export type ClosePayload =
  | { ok: true; code: number; reason: string }
  | { ok: false; closeCode: number; message: string };

/** Decodes and validates the payload of a received close frame. */
export function decodeClosePayload(payload: Uint8Array): ClosePayload {
  if (payload.length === 0) {
    return { ok: true, code: NO_STATUS_RECEIVED, reason: "" };
  }
  // RFC 6455 5.5.1: if there is a body, the first two bytes are the code.
  if (payload.length === 1) {
    return {
      ok: false,
      closeCode: PROTOCOL_ERROR,
      message: "Invalid close frame: payload of 1 byte",
    };
  }
  const code = (payload[0] << 8) | payload[1];
  if (!isValidCloseCode(code)) {
    return {
      ok: false,
      closeCode: PROTOCOL_ERROR,
      message: `Invalid close frame: close code ${code}`,
    };
  }
  // Most close frames have no reason: no decoder for those.
  const reason = payload.length === 2 ? "" : decodeUtf8(payload.subarray(2));
  if (reason === undefined) {
    return {
      ok: false,
      closeCode: INVALID_FRAME_PAYLOAD_DATA,
      message: "Invalid close frame: reason is not valid UTF-8",
    };
  }
  return { ok: true, code, reason };
}

/** Most bytes of UTF-8 a close reason can have: 125 less the code. */
export const MAX_REASON_BYTES = 123;

/**
 * Why `code` and `reason` cannot start a close handshake, or `null` when
 * they can: a code that may not be sent, or a reason over 123 bytes.
 */
export function closeArgumentError(
  code: number,
  reason: string,
): RangeError | null {
  if (!Number.isInteger(code) || !isValidCloseCode(code)) {
    return new RangeError(
      `Cannot close: code must be 1000-1003, 1007-1014 or 3000-4999, received ${code}`,
    );
  }
  if (
    typeof reason !== "string" ||
    // 41 UTF-16 code units are 123 bytes of UTF-8 at most.
    (reason.length > 41 && encodeUtf8(reason).length > MAX_REASON_BYTES)
  ) {
    return new RangeError(
      `Cannot close: reason must be a string of ${MAX_REASON_BYTES} bytes or less`,
    );
  }
  return null;
}

/**
 * The code and reason of a close frame written as data: a payload
 * (the code in network byte order, then the reason) or a reason string
 * (with code 1000); or why it cannot be sent.
 */
export function closeArguments(
  data: string | Uint8Array | null | undefined,
): { code: number; reason: string } | RangeError {
  const tooBig = (size: number) =>
    new RangeError(
      `Cannot send close frame: payload must be 125 bytes or less, received ${size} bytes`,
    );
  if (data instanceof Uint8Array && data.length > 0) {
    if (data.length > 125) return tooBig(data.length);
    if (data.length === 1) {
      return new RangeError(
        "Cannot send close frame: payload of 1 byte has no close code",
      );
    }
    const code = (data[0] << 8) | data[1];
    const reason = new TextDecoder().decode(data.subarray(2));
    return closeArgumentError(code, reason) ?? { code, reason };
  }
  const reason = typeof data === "string" ? data : "";
  const size = 2 + encodeUtf8(reason).length;
  if (size > 125) return tooBig(size);
  return { code: NORMAL_CLOSURE, reason };
}

/**
 * Where a socket's TCP (or TLS) connection is: open; draining our last
 * frames before closing after a clean close handshake; lingering after a
 * failure (our close frame out, a FIN, the peer's bytes discarded until
 * it closes too, RFC 6455 7.1.1); closed.
 */
export const Transport = {
  OPEN: 0,
  DRAINING: 1,
  LINGERING: 2,
  CLOSED: 3,
} as const;
/** One of {@linkcode Transport}'s values. */
export type Transport = typeof Transport[keyof typeof Transport];

/**
 * The one error class the library throws for its own failures.
 *
 * @module
 */

/**
 * Stable identifiers for {@linkcode WebSocketError}. Match on these, not on
 * the message text.
 *
 * - `INVALID_URL`: the URL given to `connect` is not `ws://` or `wss://`.
 * - `CONNECTION_FAILED`: TCP connect failed (DNS, refused, unreachable).
 * - `TLS_FAILED`: the TLS handshake failed (bad certificate, wrong name).
 * - `HANDSHAKE_TIMEOUT`: the HTTP upgrade did not finish in time.
 * - `ABORTED`: the `signal` passed to `connect` was aborted.
 * - `BAD_HANDSHAKE`: the peer's upgrade response is not a valid 101
 *   (status, `Sec-WebSocket-Accept`, unrequested subprotocol or extension).
 * - `PROXY_ERROR`: the HTTP proxy refused the `CONNECT` (the message has its
 *   status line) or answered something else than a tunnel.
 * - `BAD_REDIRECT`: with `followRedirects`, a redirect that is not followed:
 *   more than `maxRedirects`, a `wss:` to `ws:` downgrade, no `Location`.
 * - `SOCKET_CLOSED`: a write after the close handshake began or after the
 *   connection was lost, or a message read with `readStream()` that the
 *   end of the connection cut short (its stream errors with it);
 *   `closeCode` holds the close code when known.
 */
export type WebSocketErrorCode =
  | "INVALID_URL"
  | "CONNECTION_FAILED"
  | "TLS_FAILED"
  | "HANDSHAKE_TIMEOUT"
  | "ABORTED"
  | "BAD_HANDSHAKE"
  | "PROXY_ERROR"
  | "BAD_REDIRECT"
  | "SOCKET_CLOSED";

/**
 * A failure of the library itself or of the connection, with a stable
 * {@linkcode WebSocketErrorCode} and, where one applies, the close code.
 *
 * @example Telling a refused connection apart
 * ```ts
 * import { connect, WebSocketError } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * // Port 1 on loopback is closed on any sane machine.
 * const error = await connect("ws://127.0.0.1:1").catch((e) => e);
 * assert.ok(error instanceof WebSocketError);
 * assert.equal(error.code, "CONNECTION_FAILED");
 * ```
 */
export class WebSocketError extends Error {
  /** The stable identifier of what failed. */
  readonly code: WebSocketErrorCode;
  /** The WebSocket close code that applies, if any (e.g. 1006). */
  readonly closeCode: number | undefined;

  /**
   * Makes an error; the library does, callers rarely need to.
   *
   * @param code the stable identifier
   * @param message what failed, then a colon and what was seen
   * @param options `closeCode` and the underlying `cause`
   */
  constructor(
    code: WebSocketErrorCode,
    message: string,
    options: { closeCode?: number; cause?: unknown } = {},
  ) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "WebSocketError";
    this.code = code;
    this.closeCode = options.closeCode;
  }
}

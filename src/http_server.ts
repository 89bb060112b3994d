/**
 * Answers that end a connection: a refused request, an upgrade the hook
 * rejected, and the lingering close that keeps those answers from being
 * lost to a reset. (Plain requests that keep their connection are served
 * in `http_conn.ts`.)
 *
 * @module
 */

import { closeQuietly } from "./http_head.ts";
import { BodyFailed, writeResponse } from "./http_response.ts";
import type { HandshakeConfig } from "./options.ts";
import { type PendingConn, writeAll } from "./pending_conn.ts";
import { encodeResponse } from "./http.ts";

/**
 * Writes `response` (each write within `handshakeTimeout`), calls
 * `written`, then closes: half-close first and read what the client still sends, briefly,
 * so unread request bytes do not turn the close into a reset that loses
 * the response.
 */
export async function respond(
  pending: PendingConn,
  response: Response,
  method: string,
  config: HandshakeConfig,
  written: () => void = noop,
): Promise<void> {
  const conn = pending.conn;
  const write = async (bytes: Uint8Array) => {
    const cancel = pending.deadline(config.handshakeTimeout);
    try {
      await writeAll(conn, bytes);
    } finally {
      cancel();
    }
  };
  const framing = { method, keepAlive: false, http10: false };
  try {
    try {
      await writeResponse(response, write, framing);
    } catch (error) {
      if (!(error instanceof BodyFailed) || error.written) throw error;
      // The body failed (a stream that errored, a used body).
      config.onError(error.cause);
      await writeResponse(internalError(), write, framing);
    }
  } catch {
    closeQuietly(conn);
    return;
  }
  written();
  await lingerClose(pending);
}

/**
 * Answers a request refused before its head was read whole with `status`
 * and a text body (the write bounded to a second, as the linger is), then
 * closes as {@linkcode lingerClose} does.
 */
export async function refuseRequest(
  pending: PendingConn,
  status: number,
  message: string,
): Promise<null> {
  const conn = pending.conn;
  const cancel = pending.deadline(LINGER_MS);
  try {
    await writeAll(conn, encodeResponse(status, {}, message + "\n"));
  } catch {
    closeQuietly(conn);
    return null;
  } finally {
    cancel();
  }
  await lingerClose(pending);
  return null;
}

/** Most a lingering close reads and waits before it closes anyway. */
const LINGER_BYTES = 1024 * 1024;
const LINGER_MS = 1000;

/**
 * Half-closes, then reads and drops what the client still sends (at most
 * a megabyte, for at most a second) before closing.
 */
export async function lingerClose(pending: PendingConn): Promise<void> {
  const conn = pending.conn;
  try {
    await conn.closeWrite();
  } catch {
    closeQuietly(conn);
    return;
  }
  const cancel = pending.deadline(LINGER_MS);
  const buffer = new Uint8Array(16 * 1024);
  try {
    for (let total = 0; total < LINGER_BYTES;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      total += n;
    }
  } catch {
    // Reset, or cut by the deadline.
  } finally {
    cancel();
    closeQuietly(conn);
  }
}

/** The 500 a client gets when `onRequest` or a hook failed. */
export function internalError(): Response {
  return new Response("Internal server error\n", { status: 500 });
}

/** Where `url` is built from when a request has no `Host`. */
export function hostOf(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return "localhost";
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

function noop(): void {}

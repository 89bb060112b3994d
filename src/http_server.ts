/**
 * Plain HTTP on the WebSocket port: a request without `Upgrade: websocket`
 * goes to `onRequest`, and its response goes back. Also the answers to
 * requests refused before their head was whole, and the lingering close
 * that keeps those answers from being lost to a reset.
 *
 * @module
 */

import { hasToken, type RequestHead } from "./http.ts";
import {
  bodyLength,
  buildRequest,
  encodeHttpResponse,
  readBody,
  requestUrl,
} from "./http_request.ts";
import { closeQuietly } from "./http_head.ts";
import type { ConnectionInfo, HandshakeConfig } from "./options.ts";
import { type PendingConn, writeAll } from "./pending_conn.ts";
import { encodeUtf8 } from "./utf8.ts";
import { encodeResponse } from "./http.ts";

/** The steps of a plain request the server follows. */
export interface RequestPhases {
  /** The head and body were read: the handshake timeout is over. */
  headDone(): void;
  /** `onRequest` runs: shutdown gives it closeTimeout. */
  enterRequest(): void;
  /** The response is out: shutdown may cut the lingering close. */
  enterLinger(): void;
}

/** Reads the body of a plain HTTP request, runs `onRequest`, responds. */
export async function serveRequest(
  pending: PendingConn,
  head: RequestHead,
  rest: Uint8Array,
  config: HandshakeConfig,
  secure: boolean,
  info: ConnectionInfo,
  phases: RequestPhases,
): Promise<void> {
  const conn = pending.conn;
  const method = head.method;
  const text = async (status: number, message: string) => {
    phases.headDone();
    await respond(
      pending,
      new Response(message + "\n", { status }),
      method,
      config,
      phases.enterLinger,
    );
  };
  const length = bodyLength(head.headers, config.maxRequestBodySize);
  if (typeof length === "object" && length !== null) {
    return await text(length.status, length.message);
  }
  let body: Uint8Array | null = null;
  if (length !== null) {
    // RFC 9110 10.1.1: tell a client that waits for it to send the body.
    if (hasToken(head.headers.get("expect"), "100-continue")) {
      await writeAll(conn, encodeUtf8("HTTP/1.1 100 Continue\r\n\r\n"));
    }
    const read = await readBody(conn, rest, length, config.maxRequestBodySize);
    if (!(read instanceof Uint8Array)) {
      return await text(read.status, read.message);
    }
    body = read;
  }
  const url = requestUrl(
    head,
    secure ? "https" : "http",
    hostOf(info.localAddr),
  );
  if (url === null) {
    return await text(
      400,
      `Invalid request target: ${JSON.stringify(head.target.slice(0, 64))}`,
    );
  }
  let request: Request;
  try {
    request = buildRequest(head, url, body, pending.signal);
  } catch {
    return await text(405, `Method not allowed: ${method}`);
  }
  phases.headDone();
  phases.enterRequest();
  let response: Response;
  try {
    response = await pending.race(config.onRequest!(request, info));
    if (!(response instanceof Response)) {
      throw new TypeError(
        `Invalid onRequest result: expected a Response, received ${typeof response}`,
      );
    }
  } catch (error) {
    if (pending.signal.aborted) return;
    config.onError(error);
    response = internalError();
  }
  await respond(pending, response, method, config, phases.enterLinger);
}

/**
 * Writes `response` (within `handshakeTimeout`), calls `written`, then
 * closes: half-close first and read what the client still sends, briefly,
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
  let bytes: Uint8Array;
  try {
    bytes = await pending.race(encodeHttpResponse(response, method));
  } catch (error) {
    if (pending.signal.aborted) return;
    // The body failed (a stream that errored, a used body).
    config.onError(error);
    bytes = await encodeHttpResponse(internalError(), method);
  }
  const cancel = pending.deadline(config.handshakeTimeout);
  try {
    await writeAll(conn, bytes);
  } catch {
    closeQuietly(conn);
    return;
  } finally {
    cancel();
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

async function lingerClose(pending: PendingConn): Promise<void> {
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

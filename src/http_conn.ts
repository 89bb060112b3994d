/**
 * A connection that speaks plain HTTP/1.1 to `onRequest`: keep-alive,
 * pipelined requests answered in order, request bodies streamed to the
 * app, responses streamed to the client, until the client closes, a limit
 * ends it, or it asks to upgrade (then the server's handshake takes it
 * from there).
 *
 * @module
 */

import {
  hasToken,
  headerValue,
  parseRequestHead,
  type RequestHead,
} from "./http.ts";
import { RequestBody } from "./http_body.ts";
import { closeQuietly, type HeadRead } from "./http_head.ts";
import { ConnReader } from "./http_reader.ts";
import { ConnTimer } from "./http_timer.ts";
import { bodyLength, requestUrl } from "./http_request.ts";
import {
  BodyFailed,
  type ResponseFraming,
  writeResponse,
} from "./http_response.ts";
import {
  hostOf,
  internalError,
  lingerClose,
  refuseRequest,
} from "./http_server.ts";
import type { ConnectionInfo, HandshakeConfig } from "./options.ts";
import type { PendingConn } from "./pending_conn.ts";

/** How the server follows a plain HTTP connection (`null` for `accept`). */
export interface HttpTracker {
  /** `request`: shutdown gives it closeTimeout; `handshake`: cut at once. */
  enter(pending: PendingConn, phase: "handshake" | "request"): void;
  /** Whether the server is shutting down (responses then say `close`). */
  closing(): boolean;
}

/** Where a plain HTTP connection comes from, and who follows it. */
export interface HttpConnContext {
  /** Whether it came over TLS: `https` URLs. */
  secure: boolean;
  info: ConnectionInfo;
  tracker: HttpTracker | null;
}

/** An upgrade request that came after plain requests on a connection. */
export interface UpgradeNext {
  head: RequestHead;
  read: HeadRead;
  /** Cancels the deadline the upgrade's handshake runs under. */
  cancelDeadline: () => void;
}

/** Most bytes of an unread request body dropped to keep the connection. */
const DRAIN_LIMIT = 64 * 1024;
/** Most bytes buffered ahead (pipelined requests, or body being read). */
const READ_AHEAD = 64 * 1024;

const FORBIDDEN_METHOD = /^(?:CONNECT|TRACE|TRACK)$/i;

/** Where a request keeps the function that gives its `signal`. */
const SIGNAL = Symbol("signal");

/**
 * A `Request` whose `signal` is its connection's, aborted when the client
 * goes away. A subclass, not a property defined on each request: every
 * request keeps one shape (Deno's own code on `Request` stays
 * monomorphic), and it costs nothing to make.
 */
class ServedRequest extends Request {
  declare [SIGNAL]: () => AbortSignal;

  override get signal(): AbortSignal {
    return this[SIGNAL]();
  }
}

const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");

/**
 * Serves plain requests on `pending` from its first `head` on. Resolves
 * `null` when the connection is closed, or the upgrade request that came
 * next on it. The server calls it; apps reach it through `onRequest`.
 *
 * @example Two requests on one connection
 * ```ts
 * import { listen } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * const server = listen({
 *   addr: "127.0.0.1:0",
 *   handler() {},
 *   onRequest: (req) => new Response(new URL(req.url).pathname),
 * });
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
 * await conn.write(new TextEncoder().encode(
 *   "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
 * ));
 * let text = "";
 * const buffer = new Uint8Array(4096);
 * for (let n; (n = await conn.read(buffer)) !== null;) {
 *   text += new TextDecoder().decode(buffer.subarray(0, n));
 * }
 * conn.close();
 * assert.equal(text.match(/HTTP\/1.1 200 OK/g)?.length, 2);
 * assert.ok(text.endsWith("\r\n\r\n/b"));
 * await server.close();
 * ```
 */
export async function serveHttp(
  pending: PendingConn,
  first: { head: RequestHead; read: HeadRead; cancelDeadline: () => void },
  config: HandshakeConfig,
  context: HttpConnContext,
): Promise<UpgradeNext | null> {
  const timer = new ConnTimer(() => pending.cut());
  try {
    return await serveRequests(pending, first, config, context, timer);
  } finally {
    timer.stop();
  }
}

async function serveRequests(
  pending: PendingConn,
  first: { head: RequestHead; read: HeadRead; cancelDeadline: () => void },
  config: HandshakeConfig,
  context: HttpConnContext,
  timer: ConnTimer,
): Promise<UpgradeNext | null> {
  const { secure, info, tracker } = context;
  const phases = {
    enterRequest: () => tracker?.enter(pending, "request"),
    enterIdle: () => tracker?.enter(pending, "handshake"),
    closing: () => tracker?.closing() ?? false,
  };
  const conn = pending.conn;
  const reader = new ConnReader(
    conn,
    first.read.buffer,
    first.read.rest,
    Math.max(config.maxHandshakeSize + 4096, READ_AHEAD),
  );
  const scheme = secure ? "https" : "http";
  const fallbackHost = hostOf(info.localAddr);
  // Aborted when the client goes away: every request's `signal`.
  const gone = new AbortController();
  const cut = pending.signal;
  cut.addEventListener("abort", () => gone.abort(cut.reason), { once: true });
  const failed = (error: unknown): never => {
    timer.disarm();
    gone.abort(error);
    throw error;
  };
  // The rest of a write the kernel took only part of (rare: a full buffer).
  const writeRest = async (bytes: Uint8Array, offset: number) => {
    while (offset < bytes.length) {
      offset += await conn.write(bytes.subarray(offset));
    }
    timer.disarm();
  };
  // Not an async function: a response's one write settles in one then.
  const write = (bytes: Uint8Array): Promise<void> => {
    timer.arm(config.handshakeTimeout);
    let written: Promise<number>;
    try {
      written = conn.write(bytes);
    } catch (error) {
      timer.disarm();
      gone.abort(error);
      return Promise.reject(error);
    }
    return written.then((n) => {
      if (n < bytes.length) return writeRest(bytes, n).catch(failed);
      timer.disarm();
    }, failed);
  };
  const stallDeadline = () => pending.deadline(config.handshakeTimeout);
  const sendContinue = () => write(CONTINUE);
  let head = first.head;
  let cancelHead = first.cancelDeadline;
  const refuse = (status: number, message: string) => {
    cancelHead();
    return refuseRequest(pending, status, message);
  };

  // Notice the client leaving while the app works: once the app looks at
  // `req.signal` and no body is left to read, read ahead (the read the next
  // request waits on anyway) and abort at EOF. Apps that never look do not
  // pay for a read issued early. The state is the connection's (requests
  // are served one at a time), so nothing here is made per request.
  let body: RequestBody | null = null;
  let signalWanted = false;
  // Which request is being served, and which one a read-ahead loop is for.
  let serving = 0;
  let watchingFor = -1;
  const watch = async () => {
    const current = serving;
    if (!signalWanted || watchingFor === current || current < 0) return;
    if (body !== null && !body.done) return;
    watchingFor = current;
    while (serving === current && reader.hasRoom && !reader.ended) {
      if (!await reader.fill()) gone.abort(new Error("Client gone"));
    }
  };
  const signal = () => {
    signalWanted = true;
    watch();
    return gone.signal;
  };

  for (let count = 1;; count++) {
    serving = count;
    body = null;
    signalWanted = false;
    const method = head.method;
    const http10 = head.version === "HTTP/1.0";
    const connection = headerValue(head, "connection");
    const framing: ResponseFraming = {
      method,
      http10,
      keepAlive: count < config.maxRequestsPerConnection &&
        (http10
          ? hasToken(connection, "keep-alive")
          : !hasToken(connection, "close")),
    };

    const length = bodyLength(head, config.maxRequestBodySize);
    if (typeof length === "object" && length !== null) {
      return await refuse(length.status, length.message);
    }
    const url = requestUrl(head, scheme, fallbackHost);
    if (url === null) {
      return await refuse(
        400,
        `Invalid request target: ${JSON.stringify(head.target.slice(0, 64))}`,
      );
    }
    if (length !== null) {
      // RFC 9110 10.1.1: a client that waits for it is told to send the
      // body when the app first reads it; one the app never reads is not
      // sent at all.
      const expect = hasToken(headerValue(head, "expect"), "100-continue");
      body = new RequestBody(reader, {
        length,
        maxSize: config.maxRequestBodySize,
        sendContinue: expect ? sendContinue : null,
        deadline: stallDeadline,
        onEnd: watch,
      });
      reader.reserve(READ_AHEAD);
    }
    let request: ServedRequest;
    try {
      // A Request cannot carry the body of a GET or HEAD: it is dropped.
      const bodyless = method === "GET" || method === "HEAD";
      // A GET without the init dictionary: converting one costs a third
      // of what a Request costs.
      request = method === "GET"
        ? new ServedRequest(url)
        : new ServedRequest(url, {
          method,
          body: bodyless || body === null ? null : body.stream(),
        });
      // Appended one by one: passing `headers` or `signal` to the
      // constructor costs several times more (a copy that iterates a
      // sorted Headers, a dependent AbortSignal), per request.
      const headers = request.headers;
      for (const [name, value] of head.fields ?? head.headers) {
        // Valid already: the parser checked every name and value.
        headers.append(name, value);
      }
      request[SIGNAL] = signal;
    } catch {
      // Request refuses CONNECT, TRACE and TRACK, and a URL it cannot parse.
      if (FORBIDDEN_METHOD.test(method)) {
        return await refuse(405, `Method not allowed: ${method}`);
      }
      return await refuse(
        400,
        `Invalid request target: ${JSON.stringify(head.target.slice(0, 64))}`,
      );
    }
    cancelHead();
    phases.enterRequest();

    let response: Response;
    try {
      const result = config.onRequest!(request, info);
      // A Response returned at once is not awaited: a turn fewer.
      response = result instanceof Promise
        ? await pending.race(result)
        : result;
      if (!(response instanceof Response)) {
        throw new TypeError(
          `Invalid onRequest result: expected a Response, received ${typeof response}`,
        );
      }
    } catch (error) {
      serving = -1;
      if (pending.signal.aborted) return null;
      // The app failed reading a body the client sent wrong: its answer.
      if (body?.error == null) config.onError(error);
      response = internalError();
    }
    if (body?.error != null) {
      response.body?.cancel().catch(noop);
      serving = -1;
      return await refuse(body.error.status, body.error.message);
    }
    // A body the client waits to send and the app never read: the
    // connection cannot go on past it.
    if (body?.awaitingContinue || phases.closing()) framing.keepAlive = false;

    let result;
    try {
      result = await writeResponse(response, write, framing);
    } catch (error) {
      serving = -1;
      if (!(error instanceof BodyFailed)) {
        closeQuietly(conn);
        return null;
      }
      config.onError(error.cause);
      if (error.written) {
        closeQuietly(conn);
        return null;
      }
      try {
        await writeResponse(internalError(), write, {
          ...framing,
          keepAlive: false,
        });
      } catch {
        closeQuietly(conn);
        return null;
      }
      result = "incomplete";
    }
    serving = -1;
    phases.enterIdle();
    if (result !== "complete" || !framing.keepAlive) {
      await lingerClose(pending);
      return null;
    }
    if (body !== null && !body.done && !await body.drain(DRAIN_LIMIT)) {
      await lingerClose(pending);
      return null;
    }

    // -- The next request --
    if (reader.buffered === 0) {
      timer.arm(config.keepAliveTimeout);
      const more = await reader.fill();
      timer.disarm();
      if (!more || reader.buffered === 0) {
        closeQuietly(conn);
        return null;
      }
    }
    // Most heads come whole in one read: taken at once, with no deadline
    // and no await; a deadline only for one that does not.
    let raw: Awaited<ReturnType<ConnReader["readHead"]>> | null = reader
      .takeHead(config.maxHandshakeSize);
    cancelHead = noop;
    if (raw === null) {
      cancelHead = pending.deadline(config.handshakeTimeout);
      raw = await reader.readHead(config.maxHandshakeSize);
    }
    if (raw === "eof") {
      cancelHead();
      closeQuietly(conn);
      return null;
    }
    if (raw === "too_large") {
      return await refuse(
        431,
        `Request header fields too large: limit is ${config.maxHandshakeSize} bytes`,
      );
    }
    if (!(raw instanceof Uint8Array)) {
      return await refuse(raw.status, raw.message);
    }
    const parsed = parseRequestHead(raw);
    if ("status" in parsed) return await refuse(parsed.status, parsed.message);
    head = parsed;
    if (hasToken(headerValue(head, "upgrade"), "websocket")) {
      const { rest, buffer } = await reader.release();
      return {
        head,
        read: { head: raw, rest, buffer },
        cancelDeadline: cancelHead,
      };
    }
  }
}

function noop(): void {}

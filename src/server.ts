/**
 * `listen` and `accept`: the server side. Each connection reads an HTTP/1.1
 * head; an upgrade request (after the optional `upgrade` hook) becomes a
 * {@linkcode Socket}, a plain request goes to the optional `onRequest`.
 *
 * @module
 */

import { GOING_AWAY, INTERNAL_ERROR, NORMAL_CLOSURE } from "./close.ts";
import {
  acceptUpgrade,
  checkProtocol,
  selectProtocol,
  validateUpgrade,
} from "./handshake.ts";
import {
  encodeResponse,
  hasToken,
  parseRequestHead,
  type RequestHead,
} from "./http.ts";
import { closeQuietly, readRequestHead } from "./http_head.ts";
import { deadlinesOf } from "./deadlines.ts";
import { type Member, Members } from "./members.ts";
import {
  bodyLength,
  buildRequest,
  encodeHttpResponse,
  readBody,
  requestUrl,
} from "./http_request.ts";
import {
  Socket,
  type SocketLimits,
  socketLimits,
  type SocketOptions,
  type UpgradeRequestInfo,
} from "./socket.ts";
import { topicRegistry, Topics } from "./topics.ts";
import {
  type CompressionConfig,
  compressionConfig,
  type CompressionOptions,
  PerMessageDeflate,
} from "./deflate.ts";
import { encodeUtf8 } from "./utf8.ts";

/** Where a connection comes from, as the `upgrade` and `onRequest` hooks see it. */
export interface ConnectionInfo {
  /** The peer's address (for a Unix socket given to `accept`, its `Deno.UnixAddr`). */
  remoteAddr: Deno.NetAddr;
  /** This side's address. */
  localAddr: Deno.NetAddr;
}

/** A valid WebSocket upgrade request, as the `upgrade` hook sees it. */
export interface UpgradeRequest extends UpgradeRequestInfo {
  /** The subprotocols the client offers (`Sec-WebSocket-Protocol`), in its order. */
  protocols: string[];
}

/** What the `upgrade` hook returns to accept a connection. */
export interface UpgradeAccept<T = unknown> {
  /**
   * The subprotocol to speak: one the client offered, or `""` for none.
   * @default {the first offered one that is in the `protocols` option}
   */
  protocol?: string;
  /**
   * Extra headers for the 101 response (e.g. `Set-Cookie`). They cannot
   * replace the handshake's own (`Upgrade`, `Connection`,
   * `Sec-WebSocket-*`), which are dropped from here.
   */
  headers?: HeadersInit;
  /** Attached to the socket as `sock.data`. */
  data?: T;
}

/**
 * What the `upgrade` hook decides: a `Response` rejects the upgrade (its
 * status, headers and body are sent, then the connection is closed);
 * an {@linkcode UpgradeAccept} or nothing accepts it.
 */
export type UpgradeDecision<T = unknown> = Response | UpgradeAccept<T> | void;

/** A socket accepted by a server, with the `data` its `upgrade` hook attached. */
export type ServerSocket<T = unknown> = Socket & { data: T };

/** Options of the server-side handshake, shared by {@linkcode listen} and {@linkcode accept}. */
export interface HandshakeOptions<T = unknown> extends SocketOptions {
  /**
   * Subprotocols this server speaks. The first one in the client's list
   * that is also in this list is chosen; none when there is no match. The
   * `upgrade` hook can choose instead.
   * @default {[]}
   */
  protocols?: string[];
  /**
   * Called for every valid upgrade request before the 101 is sent: check
   * a token or the `Origin`, choose the subprotocol, attach `data`. Return
   * a `Response` to reject (e.g. 401 or 403), or nothing or an
   * {@linkcode UpgradeAccept} to accept. It runs within `handshakeTimeout`;
   * when it throws, the client gets 500 and the error goes to `onError`.
   */
  upgrade?: (
    req: UpgradeRequest,
    info: ConnectionInfo,
  ) => UpgradeDecision<T> | Promise<UpgradeDecision<T>>;
  /**
   * Serves plain HTTP requests (anything without `Upgrade: websocket`) on
   * the same port: a page, a health check. The request body is read whole
   * first, up to `maxRequestBodySize`. One request per connection: the
   * response goes out with `Content-Length` and `Connection: close`. When
   * it throws, the client gets 500 and the error goes to `onError`.
   * Without it, plain requests get 426.
   */
  onRequest?: (
    req: Request,
    info: ConnectionInfo,
  ) => Response | Promise<Response>;
  /** Where errors of `handler`, `upgrade` and `onRequest` go. @default {console.error} */
  onError?: (error: unknown) => void;
  /**
   * How long a client may take to send its request (head and body), and
   * the `upgrade` hook to decide, in ms.
   * @default {10000}
   */
  handshakeTimeout?: number;
  /**
   * Largest request head, in bytes; a bigger one gets 431.
   * @default {16384}
   */
  maxHandshakeSize?: number;
  /**
   * Largest body of a plain HTTP request, in bytes: a bigger
   * `Content-Length`, or a chunked body that grows past it, gets 413.
   * @default {1048576}
   */
  maxRequestBodySize?: number;
  /**
   * permessage-deflate (RFC 7692): `true` accepts clients that offer it
   * (browsers, `ws`, Python `websockets` do), with context takeover, a
   * 1024-byte threshold and level 1; an object sets those. Offers this
   * server cannot honour are declined, and the connection goes on
   * uncompressed. `Socket.extensions` shows what was agreed. Messages sent
   * with `publish` are never compressed (they are encoded once for all).
   * @default {false}
   */
  compression?: boolean | CompressionOptions;
}

/** Options of {@linkcode listen}. */
export interface ListenOptions<T = unknown> extends HandshakeOptions<T> {
  /**
   * Where to listen: `"127.0.0.1:8080"`, `":8080"` (all interfaces),
   * `"[::1]:8080"`, `"localhost:0"` (port 0: any free port).
   */
  addr: string;
  /**
   * Called once per accepted WebSocket, after the 101 was sent. When it
   * returns, the socket is closed (1000) if still open; when it throws or
   * rejects, the socket is closed with 1011 and the error goes to `onError`.
   */
  handler: (sock: ServerSocket<T>) => void | Promise<void>;
  /** Serve `wss://`. @default {false} */
  tls?: boolean;
  /** The certificate and key, PEM; required when `tls`. Deno serves one pair. */
  certs?: { cert: string; key: string }[];
  /** Listen queue size (Deno's `tcpBacklog`). @default {511} */
  backlog?: number;
  /**
   * Set `SO_REUSEPORT`, so several processes (or workers) can listen on
   * the same address and port; on Linux the kernel spreads connections
   * among them. Deno needs the `--unstable-net` flag for it.
   * @default {false}
   */
  reusePort?: boolean;
  /** Aborting it does what {@linkcode Server.close} does. */
  signal?: AbortSignal;
  /**
   * `publish` skips a subscriber with more than this many bytes waiting to
   * be sent: a slow reader misses messages instead of buffering them
   * without bound.
   * @default {1048576}
   */
  maxPublishBacklog?: number;
  /**
   * Most connections the server holds at once, in any state: in their
   * handshake, in `onRequest`, or open WebSockets. One more gets
   * `503 Service Unavailable` and is closed, so idle and never-upgraded
   * connections cannot pile up without bound.
   * @default {16384}
   */
  maxConnections?: number;
}

/** Options of {@linkcode accept}. */
export interface AcceptOptions<T = unknown> extends HandshakeOptions<T> {
  /**
   * Where `sock.subscribe` goes; publish with `topics.publish`. Without
   * it, `sock.subscribe` throws.
   */
  topics?: Topics;
}

/** The handshake options with their defaults applied. */
interface HandshakeConfig {
  limits: SocketLimits;
  protocols: string[];
  upgrade: HandshakeOptions["upgrade"];
  onRequest: HandshakeOptions["onRequest"];
  onError: (error: unknown) => void;
  handshakeTimeout: number;
  maxHandshakeSize: number;
  maxRequestBodySize: number;
  compression: CompressionConfig | null;
  topics: Topics | undefined;
  /** `ws`/`wss` and `http`/`https`, or undefined to ask the conn. */
  secure: boolean | undefined;
}

/** The reason a cut connection's `signal` is aborted with. */
const CUT = new Error("Connection cut");

/** One connection before it is a socket: it can be cut at any await. */
class PendingConn {
  readonly conn: Deno.Conn;
  // Made on first use: most connections are never cut and never race user
  // code, and an AbortController per connection was measurable under churn.
  #abort: AbortController | null = null;
  #aborted: Promise<never> | null = null;
  #cut = false;
  /** Where the server's {@linkcode ConnTracker} follows it. */
  phase: "handshake" | "request" = "handshake";
  member: Member<PendingConn> | null = null;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** Aborted when the connection is cut. */
  get signal(): AbortSignal {
    if (this.#abort === null) {
      this.#abort = new AbortController();
      if (this.#cut) this.#abort.abort(CUT);
    }
    return this.#abort.signal;
  }

  /** Closes the connection and rejects what {@linkcode race} waits on. */
  cut(): void {
    if (!this.#cut) {
      this.#cut = true;
      this.#abort?.abort(CUT);
    }
    closeQuietly(this.conn);
  }

  /** `promise`, unless the connection is cut first (user code may never settle). */
  race<V>(promise: V | Promise<V>): Promise<V> {
    if (this.#aborted === null) {
      const signal = this.signal;
      this.#aborted = signal.aborted
        ? Promise.reject(signal.reason)
        : new Promise((_, reject) => {
          signal.addEventListener("abort", () => reject(signal.reason), {
            once: true,
          });
        });
      this.#aborted.catch(noop);
    }
    return Promise.race([promise, this.#aborted]);
  }

  /** Cuts the connection after `ms` unless the returned function is called. */
  deadline(ms: number): () => void {
    return deadlinesOf(ms).add(() => this.cut()).cancel;
  }
}

/** How a server follows its connections through the handshake. */
interface ConnTracker {
  /** `handshake`: cut at once on shutdown; `request`: given closeTimeout. */
  enter(pending: PendingConn, phase: "handshake" | "request"): void;
  leave(pending: PendingConn): void;
}

/**
 * A listening WebSocket server, returned by {@linkcode listen}.
 *
 * @example Start, inspect, stop
 * ```ts
 * import { listen } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const server = listen({ addr: "127.0.0.1:0", handler() {} });
 * assert.ok(server.addr.port > 0);
 * assert.equal(server.connections, 0);
 * await server.close();
 * ```
 */
export class Server {
  /** The bound address, with the real port when 0 was asked. */
  readonly addr: Deno.NetAddr;
  /** Resolves when the server has shut down (by `close()` or `signal`). */
  readonly finished: Promise<void>;

  #listener: Deno.Listener;
  #handler: (sock: Socket) => void | Promise<void>;
  #config: HandshakeConfig;
  #topics: Topics;
  // Members, not Sets: see members.ts for what a Set costs under churn.
  #pending = new Members<PendingConn>();
  #sockets = new Members<Socket>();
  // Connections being served (handshake to close), and who waits for none.
  #active = 0;
  #allServed: PromiseWithResolvers<void> | null = null;
  #maxConnections: number;
  #refusing = new Members<Promise<void>>();
  #acceptLoop: Promise<void>;
  #closing: Promise<void> | null = null;
  #resolveFinished!: () => void;
  #signal: AbortSignal | undefined;
  #onAbort = () => void this.close();
  #tracker: ConnTracker = {
    enter: (pending, phase) => {
      pending.phase = phase;
      // Arrived after shutdown cut the others: cut it too.
      if (this.#closing !== null && phase === "handshake") pending.cut();
      pending.member ??= this.#pending.add(pending);
    },
    leave: (pending) => {
      if (pending.member !== null) this.#pending.remove(pending.member);
      pending.member = null;
    },
  };

  /**
   * Made by {@linkcode listen}; not meant to be called directly.
   *
   * @param listener the bound listener
   * @param options the validated options
   */
  constructor(listener: Deno.Listener, options: ListenOptions) {
    this.#listener = listener;
    this.#handler = options.handler;
    this.#maxConnections = options.maxConnections ?? 16_384;
    const config = handshakeConfig(options);
    this.#topics = new Topics({
      maxPublishBacklog: options.maxPublishBacklog,
      fragmentSize: config.limits.fragmentSize,
    });
    this.#config = { ...config, topics: this.#topics, secure: !!options.tls };
    this.addr = listener.addr as Deno.NetAddr;
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
    this.#acceptLoop = this.#accept();
    this.#signal = options.signal;
    if (this.#signal?.aborted) this.close();
    else this.#signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** How many WebSockets are open (upgraded and not yet closed). */
  get connections(): number {
    return this.#sockets.size;
  }

  /**
   * Sends a message to every socket subscribed to `topic` (see
   * `Socket.subscribe`): the frame is encoded once and the same bytes are
   * queued on each. A subscriber with more than `maxPublishBacklog` bytes
   * waiting to be sent is skipped (it misses this message), as is one that
   * is closing.
   *
   * @param topic the topic
   * @param data the payload; strings are sent as UTF-8
   * @param type `"text"` or `"binary"`
   * @returns how many subscribers the message was queued for
   * @throws {TypeError} `type` is not text or binary, or `data` is not a
   *   string or Uint8Array
   *
   * @example A room
   * ```ts
   * import { connect, listen } from "@silly/websocket";
   * import assert from "node:assert/strict";
   *
   * const server = listen({
   *   addr: "127.0.0.1:0",
   *   async handler(sock) {
   *     sock.subscribe("room");
   *     for await (const msg of sock) {
   *       if (msg.type === "text") server.publish("room", msg.data, "text");
   *     }
   *   },
   * });
   * const url = `ws://127.0.0.1:${server.addr.port}`;
   * const ann = await connect(url);
   * const bob = await connect(url);
   * while (server.subscriberCount("room") < 2) {
   *   await new Promise((resolve) => setTimeout(resolve, 5));
   * }
   * await ann.write("hi all", "text");
   * assert.deepEqual(await bob.read(), { type: "text", data: "hi all" });
   * assert.deepEqual(await ann.read(), { type: "text", data: "hi all" });
   * await ann.close();
   * await bob.close();
   * await server.close();
   * ```
   */
  publish(
    topic: string,
    data: string | Uint8Array,
    type: "text" | "binary" = "binary",
  ): number {
    return this.#topics.publish(topic, data, type);
  }

  /**
   * How many open sockets are subscribed to `topic`.
   *
   * @param topic the topic
   * @returns the number of subscribers
   */
  subscriberCount(topic: string): number {
    return this.#topics.subscriberCount(topic);
  }

  /**
   * Stops accepting, drops connections still in their handshake, sends
   * 1001 Going Away to open sockets and waits for their close handshakes
   * (each bounded by `closeTimeout`). Plain HTTP requests in `onRequest`
   * get `closeTimeout` to finish, then are cut (their `Request.signal`
   * aborts). Idempotent.
   *
   * @returns resolves when nothing is left open
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#signal?.removeEventListener("abort", this.#onAbort);
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#acceptLoop;
    for (const pending of this.#pending.values()) {
      if (pending.phase === "handshake") pending.cut();
    }
    for (const sock of this.#sockets.values()) {
      sock.close(GOING_AWAY, "Server shutting down").catch(noop);
    }
    const timer = setTimeout(() => {
      for (const pending of this.#pending.values()) {
        if (pending.phase === "request") pending.cut();
      }
    }, this.#config.limits.closeTimeout);
    if (this.#active > 0) {
      await (this.#allServed = Promise.withResolvers<void>()).promise;
    }
    await Promise.all(this.#refusing.values());
    clearTimeout(timer);
    this.#resolveFinished();
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (
          this.#closing !== null || error instanceof Deno.errors.BadResource
        ) return;
        // A failed accept (e.g. a TLS client that hung up, EMFILE) must not
        // stop the server.
        await new Promise((resolve) => setTimeout(resolve, 10));
        continue;
      }
      if (this.#active >= this.#maxConnections) {
        this.#refuse(conn);
        continue;
      }
      // Counted, not kept: a promise, a closure and a handle fewer per
      // connection.
      this.#active++;
      this.#serve(conn);
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    try {
      const sock = await handshake(conn, this.#config, this.#tracker);
      if (sock === null) return;
      const member = this.#sockets.add(sock);
      // The server is done with a connection when its socket is closed,
      // not when its handler returns: a handler stuck elsewhere cannot
      // hold up close().
      if (this.#closing !== null) {
        sock.close(GOING_AWAY, "Server shutting down").catch(noop);
      } else this.#runHandler(sock).catch(noop);
      await sock.closed;
      this.#sockets.remove(member);
    } catch (error) {
      this.#report(error);
    } finally {
      if (--this.#active === 0) this.#allServed?.resolve();
    }
  }

  async #runHandler(sock: Socket): Promise<void> {
    try {
      await this.#handler(sock);
    } catch (error) {
      this.#report(error);
      await sock.close(INTERNAL_ERROR, "Internal error").catch(noop);
      return;
    }
    await sock.close(NORMAL_CLOSURE).catch(noop);
  }

  /**
   * Over `maxConnections`: a short 503, then close. Not counted as a
   * connection; bounded to a second so a peer that stalls (a TLS client
   * that never finishes its handshake) cannot hold it.
   */
  #refuse(conn: Deno.Conn): void {
    const timer = setTimeout(() => closeQuietly(conn), 1000);
    const task = fail(
      conn,
      503,
      { "Retry-After": "1" },
      `Server busy: ${this.#maxConnections} connections open`,
    )
      .then(() => clearTimeout(timer), noop);
    const member = this.#refusing.add(task);
    task.finally(() => this.#refusing.remove(member));
  }

  #report(error: unknown): void {
    this.#config.onError(error);
  }
}

/**
 * Runs the server side of the handshake on `conn`. Resolves with the
 * socket, or `null` when the connection got an HTTP response instead
 * (rejected, malformed, or served by `onRequest`) and was closed.
 */
async function handshake(
  conn: Deno.Conn,
  config: HandshakeConfig,
  tracker: ConnTracker | null,
): Promise<Socket | null> {
  const pending = new PendingConn(conn);
  tracker?.enter(pending, "handshake");
  // Frames are coalesced per event-loop turn already; Nagle only adds delay.
  if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  const cancelDeadline = pending.deadline(config.handshakeTimeout);
  try {
    const maxSize = config.maxHandshakeSize;
    const read = await readRequestHead(conn, maxSize);
    if (read === "eof") return fail(conn);
    // The client may still be sending: answer, then linger so that its
    // unread bytes do not turn our close into a reset that loses the answer.
    if (read === "too_large") {
      cancelDeadline();
      return refuseRequest(
        pending,
        431,
        `Request header fields too large: limit is ${maxSize} bytes`,
      );
    }
    if ("status" in read) {
      // Bytes that cannot be HTTP/1.x: refused at once, not at the timeout.
      cancelDeadline();
      return refuseRequest(pending, read.status, read.message);
    }
    const request = parseRequestHead(read.head);
    if ("status" in request) {
      return fail(conn, request.status, {}, request.message);
    }
    const secure = config.secure ?? isTls(conn);
    const info = connectionInfo(conn);

    if (
      config.onRequest !== undefined &&
      !hasToken(request.headers.get("upgrade"), "websocket")
    ) {
      await serveRequest(pending, request, read.rest, config, secure, info, {
        headDone: () => cancelDeadline(),
        enterRequest: () => tracker?.enter(pending, "request"),
        enterLinger: () => tracker?.enter(pending, "handshake"),
      });
      return null;
    }

    const upgrade = validateUpgrade(request);
    if ("status" in upgrade) {
      return fail(conn, upgrade.status, upgrade.headers, upgrade.message);
    }
    const requestInfo = upgradeRequestInfo(request, secure, info);
    let protocol = selectProtocol(config.protocols, upgrade.protocols);
    let extraHeaders: Headers | null = null;
    let data: unknown = undefined;
    if (config.upgrade !== undefined) {
      let decision: UpgradeDecision;
      try {
        decision = await pending.race(
          config.upgrade(
            { ...requestInfo, protocols: upgrade.protocols },
            info,
          ),
        );
        if (!(decision instanceof Response) && decision != null) {
          if (typeof decision !== "object") {
            throw new TypeError(
              `Invalid upgrade decision: expected a Response, an object or nothing, received ${typeof decision}`,
            );
          }
          if (decision.protocol !== undefined) {
            protocol = checkProtocol(decision.protocol, upgrade.protocols);
          }
          if (decision.headers !== undefined) {
            extraHeaders = new Headers(decision.headers);
          }
          data = decision.data;
        }
      } catch (error) {
        if (pending.signal.aborted) return fail(conn);
        config.onError(error);
        decision = internalError();
      }
      if (decision instanceof Response) {
        cancelDeadline();
        await respond(pending, decision, request.method, config);
        return null;
      }
    }

    const accepted = acceptUpgrade(request, upgrade, {
      protocol,
      headers: extraHeaders,
      compression: config.compression,
    });
    await writeAll(conn, accepted.response);
    return new Socket({
      conn,
      client: false,
      head: read.rest,
      readBuffer: read.buffer,
      protocol,
      extensions: accepted.extensions,
      request: requestInfo,
      response: null,
      limits: config.limits,
      deflate: accepted.deflate === null ? null : new PerMessageDeflate({
        client: false,
        params: accepted.deflate,
        config: config.compression!,
        maxMessageSize: config.limits.maxMessageSize,
      }),
      topics: config.topics === undefined
        ? undefined
        : topicRegistry(config.topics),
      data,
    });
  } catch {
    // Reset by the peer, or cut by the handshake timeout or a shutdown.
    return fail(conn);
  } finally {
    cancelDeadline();
    tracker?.leave(pending);
  }
}

interface RequestPhases {
  /** The head and body were read: the handshake timeout is over. */
  headDone(): void;
  /** `onRequest` runs: shutdown gives it closeTimeout. */
  enterRequest(): void;
  /** The response is out: shutdown may cut the lingering close. */
  enterLinger(): void;
}

/** Reads the body of a plain HTTP request, runs `onRequest`, responds. */
async function serveRequest(
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
async function respond(
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
async function refuseRequest(
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

function internalError(): Response {
  return new Response("Internal server error\n", { status: 500 });
}

function upgradeRequestInfo(
  request: RequestHead,
  secure: boolean,
  info: ConnectionInfo,
): UpgradeRequestInfo {
  const scheme = secure ? "wss" : "ws";
  const host = request.headers.get("host") ?? hostOf(info.localAddr);
  return {
    method: request.method,
    url: upgradeUrl(scheme, host, request.target),
    headers: request.headers,
  };
}

// The URL of the last upgrade: clients of one server tend to ask for the
// same one, and parsing it was a measurable part of a short connection.
let lastUrl = { scheme: "", host: "", target: "", url: "" };

function upgradeUrl(scheme: string, host: string, target: string): string {
  const last = lastUrl;
  if (last.target === target && last.host === host && last.scheme === scheme) {
    return last.url;
  }
  let url: string;
  try {
    url = new URL(target, `${scheme}://${host}`).href;
  } catch {
    url = `${scheme}://${host}${target}`;
  }
  lastUrl = { scheme, host, target, url };
  return url;
}

function connectionInfo(conn: Deno.Conn): ConnectionInfo {
  return {
    remoteAddr: conn.remoteAddr as Deno.NetAddr,
    localAddr: conn.localAddr as Deno.NetAddr,
  };
}

function hostOf(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return "localhost";
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

function isTls(conn: Deno.Conn): boolean {
  return typeof (conn as Deno.TlsConn).handshake === "function";
}

function noop(): void {}

async function fail(
  conn: Deno.Conn,
  status?: number,
  headers: Record<string, string> = {},
  message = "",
): Promise<null> {
  if (status !== undefined) {
    try {
      await writeAll(conn, encodeResponse(status, headers, message + "\n"));
    } catch {
      // The client is gone; nothing to tell it.
    }
  }
  closeQuietly(conn);
  return null;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await conn.write(bytes.subarray(offset));
  }
}

function parseAddr(addr: unknown): { hostname: string; port: number } {
  if (typeof addr !== "string") {
    throw new TypeError(
      `Invalid option addr: expected a string like "127.0.0.1:8080", received ${typeof addr}`,
    );
  }
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(addr);
  const port = match ? Number(match[3]) : NaN;
  if (match === null || port > 65535) {
    throw new TypeError(
      `Invalid option addr: expected "host:port", ":port" or "[ipv6]:port", received ${
        JSON.stringify(addr)
      }`,
    );
  }
  const hostname = match[1] ?? (match[2] === "" ? "0.0.0.0" : match[2]);
  return { hostname, port };
}

/** Checks the handshake options and applies their defaults. */
function handshakeConfig(options: HandshakeOptions): HandshakeConfig {
  for (const name of ["upgrade", "onRequest", "onError"] as const) {
    const value = options[name];
    if (value !== undefined && typeof value !== "function") {
      throw new TypeError(
        `Invalid option ${name}: expected a function, received ${typeof value}`,
      );
    }
  }
  if (
    options.protocols !== undefined &&
    !(Array.isArray(options.protocols) &&
      options.protocols.every((p) => typeof p === "string"))
  ) {
    throw new TypeError(
      "Invalid option protocols: expected an array of strings",
    );
  }
  for (
    const name of [
      "handshakeTimeout",
      "maxHandshakeSize",
      "maxRequestBodySize",
    ] as const
  ) {
    const value = options[name];
    if (value !== undefined && !(typeof value === "number" && value > 0)) {
      throw new TypeError(
        `Invalid option ${name}: expected a positive number, received ${value}`,
      );
    }
  }
  const onError = options.onError ?? console.error;
  return {
    limits: socketLimits(options),
    protocols: options.protocols ?? [],
    upgrade: options.upgrade,
    onRequest: options.onRequest,
    onError: (error) => {
      try {
        onError(error);
      } catch {
        // An onError that throws must not take the server down.
      }
    },
    handshakeTimeout: options.handshakeTimeout ?? 10_000,
    maxHandshakeSize: options.maxHandshakeSize ?? 16 * 1024,
    maxRequestBodySize: options.maxRequestBodySize ?? 1024 * 1024,
    compression: compressionConfig(options.compression),
    topics: undefined,
    secure: undefined,
  };
}

/**
 * Starts a WebSocket server. Each connection runs the HTTP/1.1 upgrade;
 * each successful one is handed to `handler` as a {@linkcode Socket}. A
 * request that is not a valid upgrade gets 400 (malformed), 426 (plain
 * HTTP without `onRequest`, or a version other than 13) or 431 (head too
 * large), and is closed. Bytes that cannot start an HTTP/1.x request line
 * (a control byte, a method that is not a token, another HTTP version, a
 * line over 8 KiB) get their 400 at the read that brings them, without
 * waiting for the end of the head or `handshakeTimeout`.
 *
 * @typeParam T the type of `sock.data`, as the `upgrade` hook attaches it
 * @param options where to listen, the handler, hooks, TLS and limits
 * @returns the listening server
 * @throws {TypeError} an option is missing or invalid (the message names it)
 * @throws {Deno.errors.AddrInUse} the address is taken (and other bind errors)
 *
 * @example Echo server
 * ```ts
 * import { connect, listen } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const server = listen({
 *   addr: "127.0.0.1:0",
 *   async handler(sock) {
 *     const msg = await sock.read();
 *     if (msg?.type === "text") await sock.write(`Echo: ${msg.data}`, "text");
 *   },
 * });
 * const sock = await connect(`ws://127.0.0.1:${server.addr.port}`);
 * await sock.write("hi", "text");
 * assert.deepEqual(await sock.read(), { type: "text", data: "Echo: hi" });
 * assert.equal((await sock.read())?.type, "close");
 * await sock.close();
 * await server.close();
 * ```
 *
 * @example Authenticate in the upgrade hook, serve a page on the same port
 * ```ts
 * import { connect, listen, WebSocketError } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const server = listen({
 *   addr: "127.0.0.1:0",
 *   upgrade(req) {
 *     const user = new URL(req.url).searchParams.get("user");
 *     if (user === null) return new Response("Who are you?", { status: 401 });
 *     return { data: { user } };
 *   },
 *   async handler(sock) {
 *     await sock.write(`Hello, ${sock.data.user}`, "text");
 *   },
 *   onRequest: () => new Response("<h1>Hi</h1>", { headers: { "content-type": "text/html" } }),
 * });
 * const base = `127.0.0.1:${server.addr.port}`;
 *
 * const sock = await connect(`ws://${base}/?user=ann`);
 * assert.deepEqual(await sock.read(), { type: "text", data: "Hello, ann" });
 * await sock.close();
 *
 * const refused = await connect(`ws://${base}/`).catch((e) => e);
 * assert.ok(refused instanceof WebSocketError);
 * assert.match(refused.message, /401/);
 *
 * const page = await fetch(`http://${base}/`);
 * assert.equal(await page.text(), "<h1>Hi</h1>");
 * await server.close();
 * ```
 */
export function listen<T = unknown>(options: ListenOptions<T>): Server {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      "Invalid options: expected an object with addr and handler",
    );
  }
  const { hostname, port } = parseAddr(options.addr);
  if (typeof options.handler !== "function") {
    throw new TypeError(
      `Invalid option handler: expected a function, received ${typeof options
        .handler}`,
    );
  }
  if (
    options.backlog !== undefined &&
    !(Number.isInteger(options.backlog) && options.backlog > 0)
  ) {
    throw new TypeError(
      `Invalid option backlog: expected a positive integer, received ${options.backlog}`,
    );
  }
  if (
    options.signal !== undefined && !(options.signal instanceof AbortSignal)
  ) {
    throw new TypeError("Invalid option signal: expected an AbortSignal");
  }
  if (options.reusePort !== undefined) {
    if (typeof options.reusePort !== "boolean") {
      throw new TypeError(
        `Invalid option reusePort: expected a boolean, received ${typeof options
          .reusePort}`,
      );
    }
    // Without the flag, Deno ends the process instead of throwing.
    if (options.reusePort && !unstableNet()) {
      throw new TypeError(
        'Invalid option reusePort: Deno needs the --unstable-net flag (or "unstable": ["net"] in deno.json) for it',
      );
    }
  }
  if (
    options.maxConnections !== undefined &&
    !(Number.isInteger(options.maxConnections) && options.maxConnections > 0)
  ) {
    throw new TypeError(
      `Invalid option maxConnections: expected a positive integer, received ${options.maxConnections}`,
    );
  }
  handshakeConfig(options as HandshakeOptions);
  // Checks maxPublishBacklog before anything is bound.
  new Topics({ maxPublishBacklog: options.maxPublishBacklog });
  const reuse = options.reusePort ? { reusePort: true } : {};
  let listener: Deno.Listener;
  if (options.tls) {
    const certs = options.certs;
    if (!Array.isArray(certs) || certs.length === 0) {
      throw new TypeError(
        "Invalid option certs: required when tls is true, as [{ cert, key }] in PEM",
      );
    }
    if (certs.length > 1) {
      throw new TypeError(
        `Invalid option certs: Deno.listenTls serves one certificate, received ${certs.length}`,
      );
    }
    const { cert, key } = certs[0];
    if (typeof cert !== "string" || typeof key !== "string") {
      throw new TypeError(
        "Invalid option certs: cert and key must be PEM strings",
      );
    }
    listener = Deno.listenTls(
      {
        hostname,
        port,
        cert,
        key,
        tcpBacklog: options.backlog,
        ...reuse,
      } as Deno.ListenTlsOptions & Deno.TlsCertifiedKeyPem,
    );
  } else {
    listener = Deno.listen(
      {
        hostname,
        port,
        tcpBacklog: options.backlog,
        ...reuse,
      } as Deno.TcpListenOptions,
    );
  }
  return new Server(listener, options as ListenOptions);
}

/** Whether Deno runs with `--unstable-net` (it then has `listenDatagram`). */
function unstableNet(): boolean {
  return typeof (Deno as { listenDatagram?: unknown }).listenDatagram ===
    "function";
}

/**
 * Runs the server side of the WebSocket handshake, then the protocol, on a
 * connection you accepted yourself: from your own `Deno.listen` (a Unix
 * socket, a listener shared with other code) or `Deno.listenTls`. The
 * connection belongs to the library from here on: it becomes the socket's,
 * or it is closed.
 *
 * Plain HTTP requests go to `onRequest` (or get 426), and the upgrade hook
 * runs as with {@linkcode listen}.
 *
 * @typeParam T the type of `sock.data`, as the `upgrade` hook attaches it
 * @param conn a connection that has not been read from
 * @param options hooks, limits, and `topics` for `sock.subscribe`
 * @returns the socket, or `null` when the connection did not become a
 *   WebSocket (it got an HTTP response: a rejection, an error, or what
 *   `onRequest` returned; or it timed out or hung up) and is closed
 * @throws {TypeError} (as a rejection) `conn` is not a connection or an
 *   option is invalid (the message names it)
 *
 * @example A WebSocket on a Unix socket
 * ```ts ignore
 * import { accept } from "@silly/websocket";
 *
 * const listener = Deno.listen({ transport: "unix", path: "/tmp/app.sock" });
 * for await (const conn of listener) {
 *   accept(conn).then(async (sock) => {
 *     for await (const msg of sock ?? []) console.log(msg);
 *   });
 * }
 * ```
 *
 * @example Your own TCP listener
 * ```ts
 * import { accept, connect } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const served = (async () => {
 *   const sock = await accept(await listener.accept());
 *   const msg = await sock?.read();
 *   if (msg?.type === "text") await sock?.write(msg.data.toUpperCase(), "text");
 *   await sock?.close();
 * })();
 *
 * const client = await connect(`ws://127.0.0.1:${listener.addr.port}`);
 * await client.write("shout", "text");
 * assert.deepEqual(await client.read(), { type: "text", data: "SHOUT" });
 * await client.close();
 * await served;
 * listener.close();
 * ```
 */
export async function accept<T = unknown>(
  conn: Deno.Conn,
  options: AcceptOptions<T> = {},
): Promise<ServerSocket<T> | null> {
  if (
    typeof conn !== "object" || conn === null ||
    typeof (conn as Deno.Conn).read !== "function" ||
    typeof (conn as Deno.Conn).write !== "function"
  ) {
    throw new TypeError("Invalid argument conn: expected a Deno.Conn");
  }
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Invalid options: expected an object");
  }
  if (options.topics !== undefined && !(options.topics instanceof Topics)) {
    throw new TypeError("Invalid option topics: expected a Topics");
  }
  const config = handshakeConfig(options as HandshakeOptions);
  config.topics = options.topics;
  return await handshake(conn, config, null) as ServerSocket<T> | null;
}

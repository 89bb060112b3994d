/**
 * `listen` and `accept`: the server side. Each connection reads an HTTP/1.1
 * head; an upgrade request (after the optional `upgrade` hook) becomes a
 * {@linkcode Socket}, a plain request goes to the optional `onRequest`.
 *
 * @module
 */

import { GOING_AWAY, INTERNAL_ERROR, NORMAL_CLOSURE } from "./close.ts";
import { closeQuietly } from "./http_head.ts";
import { type Member, Members } from "./members.ts";
import {
  type AcceptOptions,
  type FinishListener,
  type HandshakeConfig,
  handshakeConfig,
  type HandshakeOptions,
  type ListenConfig,
  listenConfig,
  type ListenOptions,
  type ServerSocket,
} from "./options.ts";
import { fail, type PendingConn } from "./pending_conn.ts";
import type { BrokerStats } from "./broker.ts";
import { type Socket, startClose } from "./socket.ts";
import { type ConnTracker, serverHandshake } from "./server_handshake.ts";
import { Topics } from "./topics.ts";

export type {
  AcceptOptions,
  ConnectionInfo,
  HandshakeOptions,
  ListenOptions,
  ServerSocket,
  UpgradeAccept,
  UpgradeDecision,
  UpgradeRequest,
} from "./options.ts";

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
  #sockets = new Members<Socket, Served>();
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
  // What each socket's Served calls when the socket is finished.
  #servedBy: ServedBy = {
    finished: (served) => {
      this.#sockets.remove(served);
      this.#doneOne();
    },
  };
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
    closing: () => this.#closing !== null,
  };

  /**
   * Checks the options, binds and starts accepting: what
   * {@linkcode listen} does, which is the way to call it.
   *
   * @param options where to listen, the handler, hooks, TLS and limits
   * @throws {TypeError} an option is missing or invalid (the message names it)
   * @throws {Deno.errors.AddrInUse} the address is taken (and other bind errors)
   */
  constructor(options: ListenOptions) {
    const config = listenConfig(options);
    try {
      this.#listener = bind(config);
    } catch (error) {
      // The broker was opened with the topics: it must not outlive them.
      config.topics.close();
      throw error;
    }
    this.#handler = config.handler;
    this.#maxConnections = config.maxConnections;
    this.#topics = config.topics;
    this.#config = config;
    this.addr = this.#listener.addr as Deno.NetAddr;
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
    this.#acceptLoop = this.#accept();
    this.#signal = config.signal;
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
   * With the `broker` option, the message also reaches the subscribers of
   * every other server on the broker, each once, in this server's order;
   * local subscribers get it first, without a round trip. While the broker
   * is down only the local ones get it (see {@linkcode Server.brokerStats}).
   *
   * @param topic the topic
   * @param data the payload; strings are sent as UTF-8
   * @param type `"text"` or `"binary"`
   * @returns how many of this server's subscribers the message was queued for
   * @throws {TypeError} `type` is not text or binary, or `data` is not a
   *   string or Uint8Array
   * @throws {RangeError} with a broker, `topic` is longer than 65535 UTF-8
   *   bytes
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
   * How many open sockets of this server are subscribed to `topic` (not
   * counting other servers on the broker).
   *
   * @param topic the topic
   * @returns the number of subscribers
   */
  subscriberCount(topic: string): number {
    return this.#topics.subscriberCount(topic);
  }

  /**
   * With the `broker` option: what was published to and received from
   * other servers, and what was lost (published while the broker was down,
   * missing from other servers' sequences, malformed), and how many times
   * the broker reconnected.
   *
   * @returns the counts, or `null` when the server has no broker
   *
   * @example Counting what went through the broker
   * ```ts
   * import { listen, workerBroker } from "@silly/websocket";
   * import assert from "node:assert/strict";
   *
   * const server = listen({
   *   addr: "127.0.0.1:0",
   *   handler() {},
   *   broker: workerBroker("counts"),
   * });
   * server.publish("news", "hello", "text");
   * await new Promise((resolve) => setTimeout(resolve, 10));
   * const stats = server.brokerStats();
   * assert.equal(stats?.connected, true);
   * assert.equal(stats?.published, 1);
   * assert.equal(stats?.dropped, 0);
   * await server.close();
   * ```
   */
  brokerStats(): BrokerStats | null {
    return this.#topics.brokerStats();
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

  /**
   * `await using server = listen(...)`: {@linkcode close} at the end of
   * the block, waiting until nothing is left open (README: Web Streams).
   *
   * @example
   * ```ts ignore
   * await using server = listen({ addr: ":8080", handler });
   * ```
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
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
      startClose(sock, GOING_AWAY, "Server shutting down");
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
    await this.#topics.close();
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
    // The server is done with a connection when its socket is finished
    // (the socket tells `served`), not when its handler returns: a handler
    // stuck elsewhere cannot hold up close().
    const served = new Served(this.#servedBy);
    let sock: Socket | null = null;
    try {
      sock = await serverHandshake(conn, this.#config, this.#tracker, served);
      if (sock === null) return;
      served.value = sock;
      if (!served.finished) this.#sockets.insert(served);
      if (this.#closing !== null) {
        startClose(sock, GOING_AWAY, "Server shutting down");
      } else this.#runHandler(sock);
    } catch (error) {
      this.#report(error);
    } finally {
      if (sock === null) this.#doneOne();
    }
  }

  #doneOne(): void {
    if (--this.#active === 0) this.#allServed?.resolve();
  }

  // Not an async function: one suspended per connection cost more than
  // these two closures.
  #runHandler(sock: Socket): void {
    let handled;
    try {
      handled = this.#handler(sock);
    } catch (error) {
      this.#handlerFailed(sock, error);
      return;
    }
    Promise.resolve(handled).then(
      () => startClose(sock, NORMAL_CLOSURE),
      (error) => this.#handlerFailed(sock, error),
    );
  }

  #handlerFailed(sock: Socket, error: unknown): void {
    startClose(sock, INTERNAL_ERROR, "Internal error");
    try {
      this.#report(error);
    } catch {
      // onError threw: nothing more to do with it.
    }
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

function noop(): void {}

/** How a {@linkcode Served} tells its server. */
interface ServedBy {
  finished(served: Served): void;
}

/**
 * A server's socket: its place among the server's sockets, and what the
 * socket tells when it is finished.
 */
class Served implements Member<Socket>, FinishListener {
  value!: Socket;
  index = -1;
  finished = false;
  #by: ServedBy;

  constructor(by: ServedBy) {
    this.#by = by;
  }

  socketFinished(): void {
    this.finished = true;
    this.#by.finished(this);
  }
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
  return new Server(options as ListenOptions);
}

/** Binds the listener `config` asks for. */
function bind(config: ListenConfig): Deno.Listener {
  const reuse = config.reusePort ? { reusePort: true } : {};
  const { hostname, port, backlog: tcpBacklog } = config;
  if (config.tls !== null) {
    return Deno.listenTls(
      { hostname, port, ...config.tls, tcpBacklog, ...reuse } as
        & Deno.ListenTlsOptions
        & Deno.TlsCertifiedKeyPem,
    );
  }
  return Deno.listen(
    { hostname, port, tcpBacklog, ...reuse } as Deno.TcpListenOptions,
  );
}

/**
 * Runs the server side of the WebSocket handshake, then the protocol, on a
 * connection you accepted yourself: from your own `Deno.listen` (a Unix
 * socket, a listener shared with other code) or `Deno.listenTls`. The
 * connection belongs to the library from here on: it becomes the socket's,
 * or it is closed.
 *
 * Plain HTTP requests go to `onRequest` (or get 426), kept alive until the
 * client closes or upgrades, and the upgrade hook runs as with listen.
 *
 * @typeParam T the type of `sock.data`, as the `upgrade` hook attaches it
 * @param conn a connection that has not been read from
 * @param options hooks, limits, and `topics` for `sock.subscribe`
 * @returns the socket, or `null` when the connection did not become a
 *   WebSocket (it got HTTP responses: a rejection, an error, or what
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
  return await serverHandshake(conn, config, null) as ServerSocket<T> | null;
}

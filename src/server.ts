/**
 * `listen`: a WebSocket server on `Deno.listen` / `Deno.listenTls`.
 *
 * @module
 */

import { GOING_AWAY, INTERNAL_ERROR, NORMAL_CLOSURE } from "./close.ts";
import {
  acceptKey,
  encodeResponse,
  parseRequestHead,
  type RequestHead,
  validateUpgrade,
} from "./handshake.ts";
import { readHead } from "./http_head.ts";
import { Socket, socketLimits, type SocketOptions } from "./socket.ts";

/** Options of {@linkcode listen}. */
export interface ListenOptions extends SocketOptions {
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
  handler: (sock: Socket) => void | Promise<void>;
  /** Serve `wss://`. @default {false} */
  tls?: boolean;
  /** The certificate and key, PEM; required when `tls`. Deno serves one pair. */
  certs?: { cert: string; key: string }[];
  /** Listen queue size (Deno's `tcpBacklog`). @default {511} */
  backlog?: number;
  /**
   * Subprotocols this server speaks. The first one in the client's list
   * that is also in this list is chosen; none when there is no match.
   * @default {[]}
   */
  protocols?: string[];
  /** Where handler errors go. @default {console.error} */
  onError?: (error: unknown) => void;
  /**
   * How long a client may take to send its upgrade request, in ms.
   * @default {10000}
   */
  handshakeTimeout?: number;
  /**
   * Largest upgrade request head, in bytes; a bigger one gets 431.
   * @default {16384}
   */
  maxHandshakeSize?: number;
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

  #listener: Deno.Listener;
  #options: ListenOptions;
  #limits: ReturnType<typeof socketLimits>;
  #handshaking = new Set<Deno.Conn>();
  #sockets = new Set<Socket>();
  #tasks = new Set<Promise<void>>();
  #acceptLoop: Promise<void>;
  #closing: Promise<void> | null = null;
  #scheme: string;

  /**
   * Made by {@linkcode listen}; not meant to be called directly.
   *
   * @param listener the bound listener
   * @param options the validated options
   */
  constructor(listener: Deno.Listener, options: ListenOptions) {
    this.#listener = listener;
    this.#options = options;
    this.#limits = socketLimits(options);
    this.#scheme = options.tls ? "wss" : "ws";
    this.addr = listener.addr as Deno.NetAddr;
    this.#acceptLoop = this.#accept();
  }

  /** How many WebSockets are open (upgraded and not yet closed). */
  get connections(): number {
    return this.#sockets.size;
  }

  /**
   * Stops accepting, drops connections still in their handshake, sends
   * 1001 Going Away to open sockets and waits for their close handshakes
   * (each bounded by `closeTimeout`). Idempotent.
   *
   * @returns resolves when nothing is left open
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#acceptLoop;
    for (const conn of this.#handshaking) closeQuietly(conn);
    for (const sock of this.#sockets) {
      sock.close(GOING_AWAY, "Server shutting down").catch(() => {});
    }
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
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
      const task = this.#serve(conn).catch((error) => this.#report(error));
      this.#tasks.add(task);
      task.finally(() => this.#tasks.delete(task));
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const sock = await this.#handshake(conn);
    if (sock === null) return;
    this.#sockets.add(sock);
    // The server is done with a connection when its socket is closed, not
    // when its handler returns: a handler stuck elsewhere cannot hold up
    // close().
    const handled = this.#closing !== null
      ? sock.close(GOING_AWAY, "Server shutting down")
      : this.#runHandler(sock);
    handled.catch((error) => this.#report(error));
    await sock.closed;
    this.#sockets.delete(sock);
  }

  async #runHandler(sock: Socket): Promise<void> {
    try {
      await this.#options.handler(sock);
    } catch (error) {
      this.#report(error);
      await sock.close(INTERNAL_ERROR, "Internal error");
      return;
    }
    await sock.close(NORMAL_CLOSURE);
  }

  async #handshake(conn: Deno.Conn): Promise<Socket | null> {
    this.#handshaking.add(conn);
    // Frames are coalesced per event-loop turn already; Nagle only adds delay.
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
    const timer = setTimeout(
      () => closeQuietly(conn),
      this.#options.handshakeTimeout ?? 10_000,
    );
    try {
      const maxSize = this.#options.maxHandshakeSize ?? 16 * 1024;
      const read = await readHead(conn, maxSize);
      if (read === "eof") return fail(conn);
      if (read === "too_large") {
        return fail(
          conn,
          431,
          {},
          `Request header fields too large: limit is ${maxSize} bytes`,
        );
      }
      const request = parseRequestHead(read.head);
      if ("status" in request) {
        return fail(conn, request.status, {}, request.message);
      }
      const upgrade = validateUpgrade(request);
      if ("status" in upgrade) {
        return fail(conn, upgrade.status, upgrade.headers, upgrade.message);
      }

      const protocol = this.#selectProtocol(upgrade.protocols);
      const headers: Record<string, string> = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": await acceptKey(upgrade.key),
      };
      if (protocol !== "") headers["Sec-WebSocket-Protocol"] = protocol;
      await writeAll(conn, encodeResponse(101, headers));
      return new Socket({
        conn,
        client: false,
        head: read.rest,
        protocol,
        extensions: "",
        request: this.#requestInfo(request),
        response: null,
        limits: this.#limits,
      });
    } catch {
      // Reset by the peer, or closed by the handshake timeout.
      return fail(conn);
    } finally {
      clearTimeout(timer);
      this.#handshaking.delete(conn);
    }
  }

  #selectProtocol(offered: string[]): string {
    const supported = this.#options.protocols ?? [];
    return offered.find((p) => supported.includes(p)) ?? "";
  }

  #requestInfo(request: RequestHead) {
    const host = request.headers.get("host") ??
      `${this.addr.hostname}:${this.addr.port}`;
    let url: string;
    try {
      url = new URL(request.target, `${this.#scheme}://${host}`).href;
    } catch {
      url = `${this.#scheme}://${host}${request.target}`;
    }
    return { method: request.method, url, headers: request.headers };
  }

  #report(error: unknown): void {
    try {
      (this.#options.onError ?? console.error)(error);
    } catch {
      // An onError that throws must not take the server down.
    }
  }
}

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

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
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

/**
 * Starts a WebSocket server. Each connection runs the HTTP/1.1 upgrade;
 * each successful one is handed to `handler` as a {@linkcode Socket}. A
 * request that is not a valid upgrade gets 400 (malformed), 426 (plain
 * HTTP, or a version other than 13) or 431 (head too large), and is closed.
 *
 * @param options where to listen, the handler, TLS and limits
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
 */
export function listen(options: ListenOptions): Server {
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
  if (options.onError !== undefined && typeof options.onError !== "function") {
    throw new TypeError("Invalid option onError: expected a function");
  }
  if (options.protocols !== undefined && !Array.isArray(options.protocols)) {
    throw new TypeError(
      "Invalid option protocols: expected an array of strings",
    );
  }
  for (const name of ["handshakeTimeout", "maxHandshakeSize"] as const) {
    const value = options[name];
    if (value !== undefined && !(typeof value === "number" && value > 0)) {
      throw new TypeError(
        `Invalid option ${name}: expected a positive number, received ${value}`,
      );
    }
  }
  socketLimits(options);
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
    listener = Deno.listenTls({
      hostname,
      port,
      cert,
      key,
      tcpBacklog: options.backlog,
    });
  } else {
    listener = Deno.listen({ hostname, port, tcpBacklog: options.backlog });
  }
  return new Server(listener, options);
}

/**
 * The interop peers of tests/interop_test.ts: other WebSocket implementations (Deno's
 * built-in `WebSocket`, npm `ws`, and our own `Socket` playing the other
 * side) behind one small {@linkcode Peer} interface, and the pairings that
 * connect each of them to our library over loopback.
 *
 * Everything a pairing starts is registered on an `AsyncDisposableStack`
 * as soon as it exists, so a test that fails halfway still stops it all and
 * Deno's op and resource sanitizers stay on.
 *
 * @module
 */

import type { EventEmitter } from "node:events";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { WebSocket as WsClient, WebSocketServer } from "ws";
import {
  connect,
  type ListenOptions,
  type Server,
  type Socket,
} from "../mod.ts";
import { CERT, KEY, serve, TIMEOUT, urlOf, within } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function noop(): void {}

/** A FIFO of events that one side pushes and the test takes, bounded. */
class Mailbox<T> {
  #items: T[] = [];
  #waiters: ((item: T) => void)[] = [];

  push(item: T): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  }

  take(what: string): Promise<T> {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift()!);
    return within(
      new Promise<T>((resolve) => this.#waiters.push(resolve)),
      what,
    );
  }
}

/** A data message as a peer received it. */
export type PeerMessage = { type: "text"; data: string } | {
  type: "binary";
  data: Uint8Array;
};

/** The close a peer saw: its close event, or our close message. */
export interface PeerClose {
  code: number;
  reason: string;
}

/**
 * What a peer can do beyond sending messages and closing with a code, and
 * `ourServer`: the pair's `server` is the `listen` server that accepted `ours`.
 */
export type Capability =
  | "ping"
  | "fragment"
  | "interleave"
  | "invalidText"
  | "closeWithoutCode"
  | "drop"
  | "ourServer";

/** The other side of a connection, whatever implements it. */
export interface Peer {
  /** The subprotocol the peer believes was negotiated. */
  readonly protocol: string;
  /** Sends a text (string) or binary (Uint8Array) message. */
  send(data: string | Uint8Array): Promise<void>;
  /** `fragment`: sends one message as frames of `frameSize` payload bytes. */
  readonly sendFragmented:
    | ((data: string | Uint8Array, frameSize: number) => Promise<void>)
    | null;
  /**
   * `interleave`: sends the first `frameSize` bytes of a message, then a
   * ping with `pingData`, then the rest; resolves with the pong's payload.
   */
  readonly pingBetweenFragments:
    | ((
      data: string | Uint8Array,
      frameSize: number,
      pingData: Uint8Array,
    ) => Promise<Uint8Array>)
    | null;
  /** `invalidText`: sends `frames` as the frames of one text message, unchecked. */
  readonly sendTextBytes: ((frames: Uint8Array[]) => Promise<void>) | null;
  /** `ping`: sends a ping and resolves with the pong's payload. */
  readonly ping: ((data: Uint8Array) => Promise<Uint8Array>) | null;
  /** `drop`: closes TCP without a close frame. */
  readonly drop: (() => void) | null;
  /**
   * Starts the close handshake from the peer's side; without a code
   * (`closeWithoutCode`) the close frame has an empty payload.
   */
  close(code?: number, reason?: string): void;
  /** The next data message the peer received (bounded by {@linkcode TIMEOUT}). */
  next(): Promise<PeerMessage>;
  /** Resolves when the peer saw the connection close. */
  readonly closed: Promise<PeerClose>;
  /** Closes (or cuts) the connection if still open and waits until it is over. */
  dispose(): Promise<void>;
}

/**
 * Deno's built-in `WebSocket`, client or `Deno.upgradeWebSocket` side.
 * `sentProtocol` is for the server side, whose `protocol` property stays
 * `""` in Deno 2.9 even after it answered with a subprotocol.
 */
export function webPeer(
  socket: WebSocket,
  sentProtocol?: string,
): Peer & { opened: Promise<void> } {
  socket.binaryType = "arraybuffer";
  const inbox = new Mailbox<PeerMessage>();
  const opened = Promise.withResolvers<void>();
  opened.promise.catch(noop);
  const closed = Promise.withResolvers<PeerClose>();
  let error = "";
  socket.onopen = () => opened.resolve();
  socket.onerror = (event) => {
    error = (event as ErrorEvent).message ?? "error event";
    opened.reject(new Error(`Deno WebSocket failed: ${error}`));
  };
  socket.onclose = (event) => {
    opened.reject(
      new Error(`Deno WebSocket closed before opening: ${event.code} ${error}`),
    );
    closed.resolve({ code: event.code, reason: event.reason });
  };
  socket.onmessage = (event) => {
    inbox.push(
      typeof event.data === "string"
        ? { type: "text", data: event.data }
        : { type: "binary", data: new Uint8Array(event.data as ArrayBuffer) },
    );
  };
  return {
    get protocol() {
      return sentProtocol ?? socket.protocol;
    },
    send(data) {
      socket.send(data);
      return Promise.resolve();
    },
    // The built-in WebSocket sends every message as one frame of valid
    // UTF-8 or binary, has no ping API and always closes with a handshake.
    sendFragmented: null,
    pingBetweenFragments: null,
    sendTextBytes: null,
    ping: null,
    drop: null,
    close: (code, reason) => socket.close(code, reason),
    next: () => inbox.take("a message at the Deno WebSocket peer"),
    closed: closed.promise,
    opened: opened.promise,
    async dispose() {
      if (
        socket.readyState === WebSocket.CONNECTING ||
        socket.readyState === WebSocket.OPEN
      ) socket.close();
      await within(closed.promise, "the Deno WebSocket peer to close");
    },
  };
}

/** An npm `ws` WebSocket, client or `WebSocketServer` side. */
export function wsPeer(ws: WsClient): Peer & { opened: Promise<void> } {
  const inbox = new Mailbox<PeerMessage>();
  const pongs = new Mailbox<Uint8Array>();
  const opened = Promise.withResolvers<void>();
  opened.promise.catch(noop);
  if (ws.readyState === WsClient.OPEN) opened.resolve();
  const closed = Promise.withResolvers<PeerClose>();
  ws.on("open", () => opened.resolve());
  // Without an 'error' listener an EventEmitter throws the error.
  ws.on("error", (error: Error) => opened.reject(error));
  ws.on("close", (code: number, reason: Uint8Array) => {
    opened.reject(new Error(`ws closed before opening: ${code}`));
    closed.resolve({ code, reason: decoder.decode(reason) });
  });
  ws.on("message", (data: Uint8Array, isBinary: boolean) => {
    // ws hands out Buffers; copy into a plain Uint8Array for strict equality.
    inbox.push(
      isBinary
        ? { type: "binary", data: new Uint8Array(data) }
        : { type: "text", data: decoder.decode(data) },
    );
  });
  ws.on("pong", (data: Uint8Array) => pongs.push(new Uint8Array(data)));
  // ws's continuation API: each send with fin: false is one frame of the
  // same message; Uint8Array data with binary: false goes out as text,
  // unchecked.
  const send = (
    data: string | Uint8Array,
    options: { binary: boolean; fin: boolean },
  ) =>
    within(
      new Promise<void>((resolve, reject) =>
        ws.send(data, options, (error?: Error) =>
          error ? reject(error) : resolve())
      ),
      "the ws peer's send",
    );
  const frames = (data: string | Uint8Array, frameSize: number) => {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    const parts: Uint8Array[] = [];
    for (let offset = 0; offset < bytes.length; offset += frameSize) {
      parts.push(bytes.subarray(offset, offset + frameSize));
    }
    return parts;
  };
  const sendFrames = (parts: Uint8Array[], binary: boolean) =>
    Promise.all(
      parts.map((part, i) =>
        send(part, { binary, fin: i === parts.length - 1 })
      ),
    ).then(noop);
  return {
    get protocol() {
      return ws.protocol;
    },
    send: (data) => send(data, { binary: typeof data !== "string", fin: true }),
    sendFragmented: (data, frameSize) =>
      sendFrames(frames(data, frameSize), typeof data !== "string"),
    async pingBetweenFragments(data, frameSize, pingData) {
      const binary = typeof data !== "string";
      const [first, ...rest] = frames(data, frameSize);
      const sent = send(first, { binary, fin: false });
      ws.ping(pingData);
      await Promise.all([
        sent,
        ...rest.map((part, i) =>
          send(part, { binary, fin: i === rest.length - 1 })
        ),
      ]);
      return pongs.take("a pong at the ws peer");
    },
    sendTextBytes: (parts) => sendFrames(parts, false),
    ping(data) {
      ws.ping(data);
      return pongs.take("a pong at the ws peer");
    },
    drop: () => ws.terminate(),
    close: (code, reason) => ws.close(code, reason),
    next: () => inbox.take("a message at the ws peer"),
    closed: closed.promise,
    opened: opened.promise,
    async dispose() {
      // terminate() destroys the TCP socket at once, which also clears ws's
      // 30 s close timer; a clean close has already reached CLOSED.
      if (ws.readyState !== WsClient.CLOSED) ws.terminate();
      await within(closed.promise, "the ws peer to close");
    },
  };
}

/** Our own `Socket` playing the peer (for our client ↔ our server). */
function ourPeer(sock: Socket, fragmentSize: number | undefined): Peer {
  const inbox = new Mailbox<PeerMessage>();
  const pongs = new Mailbox<Uint8Array>();
  const closed = Promise.withResolvers<PeerClose>();
  const pump = (async () => {
    for await (const msg of sock) {
      if (msg.type === "text" || msg.type === "binary") inbox.push(msg);
      else if (msg.type === "pong") pongs.push(msg.data);
      else if (msg.type === "close") {
        closed.resolve({ code: msg.code, reason: msg.reason });
      }
    }
  })();
  const type = (data: string | Uint8Array) =>
    typeof data === "string" ? "text" : "binary";
  return {
    get protocol() {
      return sock.protocol;
    },
    send: (data) =>
      within(sock.write(data, type(data)), "our peer socket's write()"),
    sendFragmented(data, frameSize) {
      // Our socket fragments by itself; the pairing configured the size.
      if (frameSize !== fragmentSize) {
        throw new Error(
          `Peer was opened with fragmentSize ${fragmentSize}, not ${frameSize}`,
        );
      }
      return within(
        sock.write(data, type(data)),
        "our peer socket's write()",
      );
    },
    // Our socket queues a ping behind the fragments written before it.
    pingBetweenFragments: null,
    // write(bytes, "text") sends the bytes as they are.
    sendTextBytes: (frames) =>
      within(
        sock.write(
          new Uint8Array(frames.flatMap((frame) => [...frame])),
          "text",
        ),
        "our peer socket's write()",
      ),
    async ping(data) {
      await within(sock.write(data, "ping"), "our peer socket's ping");
      return pongs.take("a pong at our peer socket");
    },
    drop: () => sock.conn.close(),
    // close() always sends a code: closeWithoutCode is not a capability.
    close: (code, reason) => void sock.close(code, reason).catch(noop),
    next: () => inbox.take("a message at our peer socket"),
    closed: closed.promise,
    async dispose() {
      await within(sock.close(), "our peer socket to close");
      await within(pump, "our peer socket's reader to end");
    },
  };
}

/**
 * `serve` from tests/_helpers.ts, whose disposal (`Server.close()`) is
 * bounded by {@linkcode TIMEOUT}.
 */
export function serveBounded(
  handler: ListenOptions["handler"],
  options: Partial<ListenOptions> = {},
): Server & AsyncDisposable {
  const server = serve(handler, options);
  return Object.assign(server, {
    [Symbol.asyncDispose]: () => within(server.close(), "our server to close"),
  });
}

/** Our socket and the peer at the other end, disposed together. */
export interface Pair extends AsyncDisposable {
  /** Our library's end of the connection. */
  ours: Socket;
  /** The other implementation's end. */
  peer: Peer;
  /** The `listen` server that accepted `ours` (capability `ourServer`), else `null`. */
  server: Server | null;
}

/** How a test wants its pair opened. */
export interface PairOptions {
  /** `fragmentSize` for our socket(s). */
  fragmentSize?: number;
  /** `maxMessageSize` for our socket(s). */
  maxMessageSize?: number;
  /** The client offers ["a", "b"] and the server picks "b". */
  subprotocols?: boolean;
}

/** One peer implementation, connected to our library one way. */
export interface Pairing {
  /** How the pairing reads in a test name. */
  name: string;
  /** What the pair can do; cases that need more are skipped. */
  can: ReadonlySet<Capability>;
  open(options?: PairOptions): Promise<Pair>;
}

/** Our close timeout in these tests: a close that hangs ends well inside {@linkcode TIMEOUT}. */
const CLOSE_TIMEOUT = 2000;
const OFFERED = ["a", "b"];
const TLS_OPTIONS = { tls: true, certs: [{ cert: CERT, key: KEY }] };
// close() without arguments sends a close frame with an empty payload.
const BUILTIN_CAN = new Set<Capability>(["closeWithoutCode"]);
const WS_CAN = new Set<Capability>([
  "ping",
  "fragment",
  "interleave",
  "invalidText",
  "closeWithoutCode",
  "drop",
]);
const OURS_CAN = new Set<Capability>([
  "ping",
  "fragment",
  "invalidText",
  "drop",
]);

function withOurServer(can: ReadonlySet<Capability>): ReadonlySet<Capability> {
  return new Set([...can, "ourServer"]);
}

async function build(
  open: (
    stack: AsyncDisposableStack,
  ) => Promise<Omit<Pair, typeof Symbol.asyncDispose>>,
): Promise<Pair> {
  const stack = new AsyncDisposableStack();
  try {
    const pair = await open(stack);
    return { ...pair, [Symbol.asyncDispose]: () => stack.disposeAsync() };
  } catch (error) {
    await stack.disposeAsync().catch(noop);
    throw error;
  }
}

function socketOptions(options: PairOptions) {
  return {
    fragmentSize: options.fragmentSize,
    maxMessageSize: options.maxMessageSize,
    closeTimeout: CLOSE_TIMEOUT,
  };
}

/** Our `listen` server, holding each socket open until it closes. */
function ourServer(
  stack: AsyncDisposableStack,
  options: PairOptions,
  tls: boolean,
): { server: Server; url: string; accepted: Promise<Socket> } {
  const accepted = Promise.withResolvers<Socket>();
  const listenOptions: Partial<ListenOptions> = {
    ...socketOptions(options),
    protocols: options.subprotocols ? ["b"] : [],
    ...(tls ? TLS_OPTIONS : {}),
  };
  const server = stack.use(serveBounded((sock) => {
    accepted.resolve(sock);
    return sock.closed.then(noop);
  }, listenOptions));
  return { server, url: urlOf(server, "/", tls), accepted: accepted.promise };
}

function ourClient(
  stack: AsyncDisposableStack,
  url: string,
  options: PairOptions,
  tls: boolean,
): Promise<Socket> {
  return within(
    connect(url, {
      ...socketOptions(options),
      // Gives up before the deadline below, so a failed connect leaves nothing pending.
      handshakeTimeout: TIMEOUT - 1000,
      protocols: options.subprotocols ? OFFERED : [],
      caCerts: tls ? [CERT] : undefined,
    }),
    "our client to connect",
  ).then((sock) => {
    stack.defer(() => within(sock.close(), "our client to close"));
    return sock;
  });
}

/** (a) Deno's built-in `WebSocket` client → our `listen` server. */
const builtinClientToOurServer: Pairing = {
  name: "Deno WebSocket client → our server",
  can: withOurServer(BUILTIN_CAN),
  open: (options = {}) =>
    build(async (stack) => {
      const { server, url, accepted } = ourServer(stack, options, false);
      const peer = webPeer(
        new WebSocket(url, options.subprotocols ? OFFERED : []),
      );
      stack.defer(() => peer.dispose());
      await within(peer.opened, "the Deno WebSocket client to open");
      const ours = await within(accepted, "our server to accept");
      stack.defer(() => within(ours.close(), "our server socket to close"));
      return { ours, peer, server };
    }),
};

/** (b) Our `connect` client → `Deno.serve` + `Deno.upgradeWebSocket`. */
function ourClientToDenoServe(tls: boolean): Pairing {
  return {
    name: `our client → Deno.serve${tls ? " TLS" : ""} upgradeWebSocket server`,
    can: BUILTIN_CAN,
    open: (options = {}) =>
      build(async (stack) => {
        const upgraded = Promise.withResolvers<
          Peer & { opened: Promise<void> }
        >();
        const server = Deno.serve({
          hostname: "127.0.0.1",
          port: 0,
          onListen() {},
          ...(tls ? { cert: CERT, key: KEY } : {}),
        }, (request) => {
          const { socket, response } = Deno.upgradeWebSocket(
            request,
            options.subprotocols ? { protocol: "b" } : {},
          );
          upgraded.resolve(
            webPeer(
              socket,
              response.headers.get("sec-websocket-protocol") ?? "",
            ),
          );
          return response;
        });
        stack.defer(() => within(server.shutdown(), "Deno.serve to shut down"));
        const host = tls ? "localhost" : "127.0.0.1";
        const ours = await ourClient(
          stack,
          `${tls ? "wss" : "ws"}://${host}:${server.addr.port}/`,
          options,
          tls,
        );
        const peer = await within(upgraded.promise, "Deno.serve to upgrade");
        stack.defer(() => peer.dispose());
        await within(peer.opened, "the Deno.serve WebSocket to open");
        return { ours, peer, server: null };
      }),
  };
}

/** (c) npm `ws` client → our `listen` server. */
function wsClientToOurServer(tls: boolean): Pairing {
  return {
    name: `ws client → our${tls ? " TLS" : ""} server`,
    can: withOurServer(WS_CAN),
    open: (options = {}) =>
      build(async (stack) => {
        const { server, url, accepted } = ourServer(stack, options, tls);
        const peer = wsPeer(
          new WsClient(
            url,
            options.subprotocols ? OFFERED : [],
            tls ? { ca: CERT } : {},
          ),
        );
        stack.defer(() => peer.dispose());
        await within(peer.opened, "the ws client to open");
        const ours = await within(accepted, "our server to accept");
        stack.defer(() => within(ours.close(), "our server socket to close"));
        return { ours, peer, server };
      }),
  };
}

/** (d) Our `connect` client → npm `ws` `WebSocketServer` (on `node:https` for TLS). */
function ourClientToWsServer(tls: boolean): Pairing {
  return {
    name: `our client → ws${tls ? " TLS" : ""} WebSocketServer`,
    can: WS_CAN,
    open: (options = {}) =>
      build(async (stack) => {
        const handleProtocols = (offered: Set<string>) =>
          offered.has("b") ? "b" : false;
        let wss: WebSocketServer;
        let listening: EventEmitter;
        if (tls) {
          const https = createHttpsServer({ cert: CERT, key: KEY });
          stack.defer(() =>
            within(
              new Promise<void>((resolve, reject) =>
                https.close((error?: Error) =>
                  error ? reject(error) : resolve()
                )
              ),
              "the https server to close",
            )
          );
          wss = new WebSocketServer({ server: https, handleProtocols });
          https.listen(0, "127.0.0.1");
          listening = https;
        } else {
          wss = new WebSocketServer({
            host: "127.0.0.1",
            port: 0,
            handleProtocols,
          });
          listening = wss;
        }
        const connected = Promise.withResolvers<Peer>();
        wss.on("connection", (ws: WsClient) => connected.resolve(wsPeer(ws)));
        stack.defer(async () => {
          // wss.close() stops its own listener (not an external server's)
          // but leaves accepted sockets open.
          for (const client of wss.clients) client.terminate();
          await within(
            new Promise<void>((resolve, reject) =>
              wss.close((error?: Error) => error ? reject(error) : resolve())
            ),
            "the ws server to close",
          );
        });
        await within(
          new Promise((resolve, reject) => {
            listening.once("listening", resolve);
            listening.once("error", reject);
          }),
          "the ws server to listen",
        );
        const port = (wss.address() as AddressInfo).port;
        const url = tls
          ? `wss://localhost:${port}/`
          : `ws://127.0.0.1:${port}/`;
        const ours = await ourClient(stack, url, options, tls);
        const peer = await within(
          connected.promise,
          "the ws server to accept",
        );
        stack.defer(() => peer.dispose());
        return { ours, peer, server: null };
      }),
  };
}

/** (e) Our `connect` client → our `listen` server; the server socket is the peer. */
function ourClientToOurServer(tls: boolean): Pairing {
  return {
    name: `our client → our${tls ? " TLS" : ""} server`,
    can: OURS_CAN,
    open: (options = {}) =>
      build(async (stack) => {
        const { url, accepted } = ourServer(stack, options, tls);
        const ours = await ourClient(stack, url, options, tls);
        const peer = ourPeer(
          await within(accepted, "our server to accept"),
          options.fragmentSize,
        );
        stack.defer(() => peer.dispose());
        return { ours, peer, server: null };
      }),
  };
}

/** Every pairing the shared case list runs against. */
export const PAIRINGS: Pairing[] = [
  builtinClientToOurServer,
  ourClientToDenoServe(false),
  wsClientToOurServer(false),
  ourClientToWsServer(false),
  ourClientToOurServer(false),
  wsClientToOurServer(true),
  ourClientToDenoServe(true),
  ourClientToWsServer(true),
  ourClientToOurServer(true),
];

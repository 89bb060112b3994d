/**
 * Every option of `listen`, `accept` and the socket, in one place: the
 * types users write, and the one function per entry point that checks them
 * and applies the defaults. Each option is checked once, before anything
 * is bound.
 *
 * @module
 */

import { numberOption } from "./check.ts";
import type { Broker } from "./broker.ts";
import type { CompressionConfig, CompressionOptions } from "./deflate.ts";
import { compressionConfig } from "./deflate_codec.ts";
import type { UpgradeRequestInfo, UpgradeResponseInfo } from "./handshake.ts";
import type { PerMessageDeflate } from "./deflate_codec.ts";
import type { TopicRegistry } from "./topics.ts";
import type { Socket } from "./socket.ts";
import { Topics } from "./topics.ts";

// -- Limits and timers of every socket --

/** Limits and timers shared by `listen` and `connect`. */
export interface SocketOptions {
  /**
   * Largest data message accepted, in bytes, all fragments together. A
   * larger one fails the connection with 1009 as soon as a frame header
   * announces it.
   * @default {16777216}
   */
  maxMessageSize?: number;
  /**
   * Largest payload of a single data frame, in bytes.
   * @default {maxMessageSize}
   */
  maxFrameSize?: number;
  /**
   * Largest data message received in pieces with `readStream()`, in bytes
   * (`maxMessageSize` bounds the messages `read()` returns whole). A
   * frame of a streamed message is bounded by `maxFrameSize` when that is
   * set, else by this.
   * @default {1073741824}
   */
  maxStreamedMessageSize?: number;
  /**
   * Data messages longer than this are sent as several frames.
   * @default {65536}
   */
  fragmentSize?: number;
  /**
   * How long to wait for the peer's close frame (and for our own close
   * frame to be written) before the TCP connection is cut, in ms.
   * @default {5000}
   */
  closeTimeout?: number;
  /**
   * When this many bytes of received messages wait unread, the socket stops
   * reading from TCP until the application catches up (backpressure). It
   * also stops reading while more than this (or `writeHighWaterMark`, if
   * larger) waits to be sent, so a peer that does not read what it makes
   * us send (pongs to a ping flood, echoes) is throttled, not buffered for.
   * @default {1048576}
   */
  maxQueuedBytes?: number;
  /**
   * `bufferedAmount` up to which a `write` resolves at once. A write that
   * takes it over resolves only once the OS has taken enough to bring it
   * back to this: an awaiting writer waits for a slow peer instead of
   * buffering for it. 0 makes every write wait for its bytes to be handed
   * to the OS.
   * @default {65536}
   */
  writeHighWaterMark?: number;
  /**
   * Bytes accepted by `write` and not yet taken by the OS beyond which the
   * peer counts as not reading: the next write that would go past it drops
   * the connection (close message 1006, the write rejects with
   * `SOCKET_CLOSED`). A single write to an empty buffer may be bigger.
   * Awaiting each `write` keeps the buffer near `writeHighWaterMark` and
   * never hits this; code that does not await is bounded by it.
   * @default {16777216}
   */
  maxBufferedAmount?: number;
  /**
   * Keepalive: after this many ms without a byte from the peer, send it a
   * ping; 0 turns keepalive off. All sockets share one timer per setting.
   * @default {30000}
   */
  pingInterval?: number;
  /**
   * With keepalive on, a peer that sends nothing (no pong, no data) this
   * long after the ping is dropped: the socket ends with a 1006 close
   * message.
   * @default {30000}
   */
  pongTimeout?: number;
}

/** The limits with their defaults applied. */
export interface SocketLimits {
  maxMessageSize: number;
  maxFrameSize: number;
  maxStreamedMessageSize: number;
  maxStreamedFrameSize: number;
  fragmentSize: number;
  closeTimeout: number;
  maxQueuedBytes: number;
  writeHighWaterMark: number;
  maxBufferedAmount: number;
  pingInterval: number;
  pongTimeout: number;
}

/** What `listen` and `connect` hand to a new {@linkcode Socket}. */
export interface SocketInit {
  conn: Deno.Conn;
  client: boolean;
  /** Bytes read past the HTTP head: the start of the first frame. */
  head: Uint8Array;
  /**
   * The buffer the head was read into (`head` may be a view of it): reading
   * goes on into it once `head` was processed.
   */
  readBuffer?: Uint8Array;
  protocol: string;
  extensions: string;
  request: UpgradeRequestInfo;
  response: UpgradeResponseInfo | null;
  limits: SocketLimits;
  /** The permessage-deflate codec, when the handshake negotiated it. */
  deflate?: PerMessageDeflate | null;
  /** Server side: where `subscribe` and `unsubscribe` go. */
  topics?: TopicRegistry;
  /** Server side: what the upgrade hook attached. */
  data?: unknown;
  /** Told when the socket is finished, as `closed` settles (its server). */
  onFinish?: FinishListener | null;
}

/**
 * What a server keeps per connection to hear of its end: `await
 * sock.closed` kept a suspended async function and two promises for as
 * long as the connection lived.
 */
export interface FinishListener {
  socketFinished(): void;
}

/** Applies the defaults to {@linkcode SocketOptions}, checking each value. */
export function socketLimits(options: SocketOptions): SocketLimits {
  const positive = numberOption;
  const maxMessageSize = positive(
    "maxMessageSize",
    options.maxMessageSize,
    16 * 1024 * 1024,
  );
  const pingInterval = positive(
    "pingInterval",
    options.pingInterval,
    30_000,
    true,
  );
  const maxStreamedMessageSize = positive(
    "maxStreamedMessageSize",
    options.maxStreamedMessageSize,
    1024 * 1024 * 1024,
  );
  return {
    maxMessageSize,
    maxFrameSize: positive(
      "maxFrameSize",
      options.maxFrameSize,
      maxMessageSize,
    ),
    maxStreamedMessageSize,
    maxStreamedFrameSize: options.maxFrameSize ?? maxStreamedMessageSize,
    fragmentSize: positive("fragmentSize", options.fragmentSize, 64 * 1024),
    closeTimeout: positive("closeTimeout", options.closeTimeout, 5000),
    maxQueuedBytes: positive(
      "maxQueuedBytes",
      options.maxQueuedBytes,
      1024 * 1024,
      true,
    ),
    writeHighWaterMark: positive(
      "writeHighWaterMark",
      options.writeHighWaterMark,
      64 * 1024,
      true,
    ),
    maxBufferedAmount: positive(
      "maxBufferedAmount",
      options.maxBufferedAmount,
      16 * 1024 * 1024,
    ),
    pingInterval,
    pongTimeout: positive(
      "pongTimeout",
      options.pongTimeout,
      30_000,
    ),
  };
}

// -- The server side --

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
   * the same port, as an HTTP/1.1 server: pass a framework's `fetch` (a
   * Hono app's `app.fetch`) as it is. Connections are kept alive (see
   * `keepAliveTimeout`, `maxRequestsPerConnection`) and pipelined
   * requests answered in order; `req.body` streams, up to
   * `maxRequestBodySize`; the response body is streamed as it is produced
   * (`Content-Length` when the whole body is at hand, chunked otherwise);
   * `req.signal` aborts when the client goes away. An upgrade request may
   * come after plain ones on the same connection. When it throws, the
   * client gets 500 and the error goes to `onError`. Without it, plain
   * requests get 426.
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
   * How long a plain HTTP connection may stay idle between requests
   * (keep-alive) before it is closed, in ms.
   * @default {5000}
   */
  keepAliveTimeout?: number;
  /**
   * Most plain HTTP requests served on one connection: the last one's
   * response says `Connection: close`.
   * @default {1000}
   */
  maxRequestsPerConnection?: number;
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
   * Shares this server's topics with other servers (Workers, processes,
   * hosts): `publish` also reaches their subscribers, and theirs reach
   * this server's, at most once and in each publisher's order. Use
   * `workerBroker(name)` for the Workers of one process, `redisBroker`
   * from `@silly/websocket/redis` across processes and hosts. The broker
   * becomes the server's: `close()` closes it. See `server.brokerStats()`.
   * @default {none: topics reach this server's sockets only}
   */
  broker?: Broker;
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
export interface HandshakeConfig {
  limits: SocketLimits;
  protocols: string[];
  upgrade: HandshakeOptions["upgrade"];
  onRequest: HandshakeOptions["onRequest"];
  onError: (error: unknown) => void;
  handshakeTimeout: number;
  maxHandshakeSize: number;
  maxRequestBodySize: number;
  keepAliveTimeout: number;
  maxRequestsPerConnection: number;
  compression: CompressionConfig | null;
  topics: Topics | undefined;
  /** `ws`/`wss` and `http`/`https`, or undefined to ask the conn. */
  secure: boolean | undefined;
}

/** Checks the handshake options and applies their defaults. */
export function handshakeConfig(options: HandshakeOptions): HandshakeConfig {
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
      "keepAliveTimeout",
      "maxRequestsPerConnection",
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
    keepAliveTimeout: options.keepAliveTimeout ?? 5000,
    maxRequestsPerConnection: options.maxRequestsPerConnection ?? 1000,
    compression: compressionConfig(options.compression),
    topics: undefined,
    secure: undefined,
  };
}

/** {@linkcode ListenOptions} with their defaults applied. */
export interface ListenConfig extends HandshakeConfig {
  hostname: string;
  port: number;
  handler: (sock: Socket) => void | Promise<void>;
  /** The certificate and key when serving `wss://`. */
  tls: { cert: string; key: string } | null;
  backlog: number | undefined;
  reusePort: boolean;
  signal: AbortSignal | undefined;
  maxConnections: number;
  topics: Topics;
}

/** Checks the options of `listen` and applies their defaults. */
export function listenConfig(options: ListenOptions): ListenConfig {
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
  let tls: { cert: string; key: string } | null = null;
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
    tls = { cert, key };
  }
  const config = handshakeConfig(options as HandshakeOptions);
  return {
    ...config,
    hostname,
    port,
    handler: options.handler as (sock: Socket) => void | Promise<void>,
    tls,
    backlog: options.backlog,
    reusePort: options.reusePort ?? false,
    signal: options.signal,
    maxConnections: options.maxConnections ?? 16_384,
    topics: new Topics({
      maxPublishBacklog: options.maxPublishBacklog,
      fragmentSize: config.limits.fragmentSize,
      broker: options.broker,
    }),
    secure: !!options.tls,
  };
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

/** Whether Deno runs with `--unstable-net` (it then has `listenDatagram`). */
function unstableNet(): boolean {
  return typeof (Deno as { listenDatagram?: unknown }).listenDatagram ===
    "function";
}

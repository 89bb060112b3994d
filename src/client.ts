/**
 * `connect`: a WebSocket client on `Deno.connect` / `Deno.connectTls`,
 * directly or through an HTTP proxy's `CONNECT` tunnel, following
 * redirects when asked to.
 *
 * @module
 */

import { WebSocketError } from "./errors.ts";
import { clientRequest, generateKey, processResponse } from "./handshake.ts";
import { parseResponseHead, type ResponseHead } from "./http.ts";
import { closeQuietly, type HeadRead, readHead } from "./http_head.ts";
import type { CompressionConfig, CompressionOptions } from "./deflate.ts";
import { compressionConfig, PerMessageDeflate } from "./deflate_codec.ts";
import { socketLimits, type SocketOptions } from "./options.ts";
import {
  checkConnectResponse,
  connectRequest,
  proxyFor,
  type ProxyTarget,
} from "./proxy.ts";
import {
  CREDENTIAL_HEADERS,
  REDIRECT_STATUSES,
  redirectTarget,
} from "./redirect.ts";
import { Socket } from "./socket.ts";

/** Options of {@linkcode connect}. */
export interface ConnectOptions extends SocketOptions {
  /** Extra request headers (the seed's `header` table). */
  headers?: HeadersInit;
  /** Subprotocols to offer, in order of preference. @default {[]} */
  protocols?: string[];
  /**
   * PEM CA certificates to trust for `wss://` (a private CA), on top of
   * the system's; an `https:` proxy's certificate is checked with them too.
   */
  caCerts?: string[];
  /** Aborts the connection attempt. */
  signal?: AbortSignal;
  /**
   * How long the TCP, TLS and HTTP handshakes may take, in ms, all told:
   * the proxy's `CONNECT` and every redirect count against it.
   * @default {10000}
   */
  handshakeTimeout?: number;
  /** Largest handshake response head (the proxy's too), in bytes. @default {16384} */
  maxHandshakeSize?: number;
  /**
   * permessage-deflate (RFC 7692): `true` offers it (with context takeover,
   * a 1024-byte threshold and level 1); an object sets those and what to ask
   * of the server. A server may decline; `Socket.extensions` shows what was
   * agreed. A response outside the offer fails with `BAD_HANDSHAKE`.
   * @default {false}
   */
  compression?: boolean | CompressionOptions;
  /**
   * An HTTP proxy to tunnel through with `CONNECT`: `http://host:port`, or
   * `https://` for TLS to the proxy (then only `ws://` URLs: Deno cannot
   * run TLS inside TLS). Credentials in the URL (`http://user:pass@host`,
   * percent-encoded) are sent as `Proxy-Authorization: Basic`. `false`
   * connects directly whatever the environment says. Without it,
   * `HTTPS_PROXY` (`wss://`), `HTTP_PROXY` (`ws://`), `ALL_PROXY` and
   * `NO_PROXY` are read as Deno's `fetch` reads them, when `--allow-env`
   * grants them (no permission: no proxy, no prompt).
   *
   * @default {undefined} the environment
   *
   * @example Through a corporate proxy
   * ```ts ignore
   * import { connect } from "@silly/websocket";
   *
   * const sock = await connect("wss://echo.example/", {
   *   proxy: "http://ann:s%40cret@proxy.corp:3128",
   * });
   * ```
   */
  proxy?: string | URL | false;
  /**
   * Follows 301, 302, 303, 307 and 308 answers to the upgrade request, to
   * their `Location` (`http:` read as `ws:`, `https:` as `wss:`). A
   * `wss:` to `ws:` downgrade is refused (`BAD_REDIRECT`); once a redirect
   * leaves the origin, `Authorization`, `Cookie` and `Proxy-Authorization`
   * are no longer sent. Off: a 3xx is a `BAD_HANDSHAKE`.
   *
   * @default {false}
   *
   * @example Following a moved endpoint
   * ```ts
   * import { connect, listen } from "@silly/websocket";
   * import assert from "node:assert/strict";
   *
   * const server = listen({
   *   addr: "127.0.0.1:0",
   *   upgrade(req) {
   *     if (new URL(req.url).pathname === "/old") {
   *       return new Response(null, { status: 308, headers: { Location: "/new" } });
   *     }
   *   },
   *   handler() {},
   * });
   * const sock = await connect(`ws://127.0.0.1:${server.addr.port}/old`, {
   *   followRedirects: true,
   * });
   * assert.equal(new URL(sock.request.url).pathname, "/new");
   * await sock.close();
   * await server.close();
   * ```
   */
  followRedirects?: boolean;
  /**
   * With `followRedirects`, how many redirects to follow; one more fails
   * with `BAD_REDIRECT`.
   *
   * @default {10}
   *
   * @example At most one hop
   * ```ts ignore
   * import { connect } from "@silly/websocket";
   *
   * await connect("wss://example.com/", { followRedirects: true, maxRedirects: 1 });
   * ```
   */
  maxRedirects?: number;
}

/**
 * Opens a WebSocket connection: TCP (or TLS for `wss://`), through an HTTP
 * proxy's `CONNECT` tunnel when one applies, then the HTTP/1.1 upgrade,
 * following redirects if `followRedirects` says so.
 *
 * @param url a `ws://` or `wss://` URL
 * @param options headers, subprotocols, CA certificates, abort signal,
 * limits, proxy, redirects
 * @returns the open socket
 * @throws {WebSocketError} (as a rejection) `INVALID_URL`, `CONNECTION_FAILED`,
 * `TLS_FAILED`, `HANDSHAKE_TIMEOUT`, `ABORTED`, `BAD_HANDSHAKE`,
 * `PROXY_ERROR` or `BAD_REDIRECT`; the message says what was seen
 * @throws {TypeError} (as a rejection) an invalid option
 *
 * @example Send a message and read the reply
 * ```ts
 * import { connect, listen } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const server = listen({
 *   addr: "127.0.0.1:0",
 *   protocols: ["chat"],
 *   async handler(sock) {
 *     for await (const msg of sock) if (msg.type === "text") await sock.write(msg.data.toUpperCase(), "text");
 *   },
 * });
 * const sock = await connect(`ws://127.0.0.1:${server.addr.port}/room`, { protocols: ["chat"] });
 * assert.equal(sock.protocol, "chat");
 * await sock.write("hello", "text");
 * assert.deepEqual(await sock.read(), { type: "text", data: "HELLO" });
 * await sock.close();
 * await server.close();
 * ```
 */
export async function connect(
  url: string | URL,
  options: ConnectOptions = {},
): Promise<Socket> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new WebSocketError("INVALID_URL", `Invalid URL: ${String(url)}`);
  }
  if (target.protocol !== "ws:" && target.protocol !== "wss:") {
    throw new WebSocketError(
      "INVALID_URL",
      `Invalid URL: scheme must be ws: or wss:, received ${target.protocol}`,
    );
  }
  if (target.hash !== "") {
    throw new WebSocketError(
      "INVALID_URL",
      `Invalid URL: a WebSocket URL has no fragment, received ${target.hash}`,
    );
  }
  const limits = socketLimits(options);
  const compression = compressionConfig(options.compression);
  const protocols = options.protocols ?? [];
  if (
    !Array.isArray(protocols) ||
    !protocols.every((p) =>
      typeof p === "string" && /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(p)
    )
  ) {
    throw new TypeError(
      "Invalid option protocols: expected an array of tokens",
    );
  }
  if (new Set(protocols).size !== protocols.length) {
    throw new TypeError("Invalid option protocols: duplicates are not allowed");
  }
  const followRedirects = options.followRedirects ?? false;
  if (typeof followRedirects !== "boolean") {
    throw new TypeError(
      `Invalid option followRedirects: expected a boolean, received ${followRedirects}`,
    );
  }
  const maxRedirects = options.maxRedirects ?? 10;
  if (!Number.isInteger(maxRedirects) || maxRedirects < 0) {
    throw new TypeError(
      `Invalid option maxRedirects: expected a non-negative integer, received ${maxRedirects}`,
    );
  }
  // Checked before any I/O: a bad proxy option is a TypeError.
  let proxy = proxyFor(target, options.proxy);
  const headers = new Headers(options.headers);
  const timeout = options.handshakeTimeout ?? 10_000;
  const maxSize = options.maxHandshakeSize ?? 16 * 1024;
  const signal = options.signal;
  if (signal?.aborted) {
    throw new WebSocketError(
      "ABORTED",
      "Connect aborted: the signal was already aborted",
    );
  }

  const upgrade: Upgrade = {
    protocols,
    limits,
    maxSize,
    compression,
    followRedirects,
  };

  // Whatever interrupts the handshake (timeout, abort) aborts the connect
  // or closes the conn so the pending operation fails, and says why.
  const dial: Dial = {
    controller: new AbortController(),
    conn: null,
    interrupted: null,
    waitingFor: "the upgrade",
  };
  const interrupt = (error: WebSocketError) => {
    dial.interrupted ??= error;
    dial.controller.abort(error);
    if (dial.conn !== null) closeQuietly(dial.conn);
  };
  const timer = setTimeout(
    () =>
      interrupt(
        new WebSocketError(
          "HANDSHAKE_TIMEOUT",
          `Handshake timeout: no upgrade within ${timeout} ms${
            dial.waitingFor === "the upgrade"
              ? ""
              : `, waiting for ${dial.waitingFor}`
          }`,
        ),
      ),
    timeout,
  );
  const onAbort = () =>
    interrupt(
      new WebSocketError("ABORTED", "Connect aborted", {
        cause: signal?.reason,
      }),
    );
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (let redirects = 0;; redirects++) {
      const { conn, rest } = await open(
        dial,
        target,
        proxy,
        options.caCerts,
        maxSize,
      );
      let result: Socket | ResponseHead;
      try {
        result = await handshake(conn, rest, target, headers, upgrade);
      } catch (error) {
        closeQuietly(conn);
        if (dial.interrupted !== null) throw dial.interrupted;
        if (error instanceof WebSocketError) throw error;
        throw new WebSocketError(
          "BAD_HANDSHAKE",
          `Handshake failed: ${errorMessage(error)}`,
          { cause: error },
        );
      }
      if (result instanceof Socket) return result;
      // A redirect: this connection is done with, the next URL gets its own.
      closeQuietly(conn);
      dial.conn = null;
      const next = redirectTarget(result, target);
      if (next instanceof WebSocketError) throw next;
      if (redirects === maxRedirects) {
        throw new WebSocketError(
          "BAD_REDIRECT",
          `Redirect not followed: more than ${maxRedirects} redirects, the last to ${next.href}`,
        );
      }
      if (next.origin !== target.origin) {
        for (const name of CREDENTIAL_HEADERS) headers.delete(name);
      }
      target = next;
      proxy = proxyFor(target, options.proxy);
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** The state of one `connect` call, shared with what interrupts it. */
interface Dial {
  controller: AbortController;
  /** The connection to close when interrupted. */
  conn: Deno.Conn | null;
  interrupted: WebSocketError | null;
  /** What the handshake is waiting for, for the timeout's message. */
  waitingFor: string;
}

/**
 * Opens the byte stream to `url`'s server: TCP, to the proxy and through
 * its tunnel when there is one, then TLS for `wss:`. `rest` holds what the
 * server already sent (bytes that followed the proxy's `200`).
 */
async function open(
  dial: Dial,
  url: URL,
  proxy: ProxyTarget | null,
  caCerts: string[] | undefined,
  maxSize: number,
): Promise<{ conn: Deno.Conn; rest: Uint8Array }> {
  const secure = url.protocol === "wss:";
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = url.port === "" ? (secure ? 443 : 80) : Number(url.port);
  if (proxy !== null && proxy.secure && secure) {
    throw new WebSocketError(
      "PROXY_ERROR",
      `Proxy not supported: wss: through an https: proxy (${proxy.label}) needs TLS inside TLS, which Deno cannot do; use an http: proxy`,
    );
  }
  let tcp: Deno.TcpConn;
  dial.waitingFor = proxy === null ? "the upgrade" : "the proxy to accept";
  try {
    dial.conn = tcp = await Deno.connect({
      hostname: proxy?.hostname ?? hostname,
      port: proxy?.port ?? port,
      signal: dial.controller.signal,
    });
    // Frames are coalesced per event-loop turn already; Nagle only adds delay.
    tcp.setNoDelay(true);
  } catch (error) {
    throw dial.interrupted ??
      new WebSocketError(
        "CONNECTION_FAILED",
        proxy === null
          ? `Connection failed: ${errorMessage(error)}`
          : `Connection to proxy failed: ${proxy.label}: ${
            errorMessage(error)
          }`,
        { cause: error },
      );
  }
  let conn: Deno.Conn = tcp;
  let rest: Uint8Array = new Uint8Array(0);
  if (proxy !== null) {
    if (proxy.secure) {
      conn = await startTls(
        dial,
        tcp,
        proxy.hostname,
        caCerts,
        "TLS handshake with proxy failed",
      );
    }
    rest = await tunnel(dial, conn, url, port, proxy, maxSize);
    dial.waitingFor = "the upgrade";
    if (secure && rest.length > 0) {
      closeQuietly(conn);
      throw new WebSocketError(
        "PROXY_ERROR",
        `Proxy failed: ${rest.length} bytes followed the 200 to CONNECT before TLS began`,
      );
    }
  }
  if (secure) {
    conn = await startTls(dial, tcp, hostname, caCerts, "TLS handshake failed");
  }
  return { conn, rest };
}

async function startTls(
  dial: Dial,
  tcp: Deno.TcpConn,
  hostname: string,
  caCerts: string[] | undefined,
  what: string,
): Promise<Deno.TlsConn> {
  let conn: Deno.Conn = tcp;
  try {
    const tls = await Deno.startTls(tcp, { hostname, caCerts });
    dial.conn = conn = tls;
    if (dial.interrupted !== null) throw dial.interrupted;
    await tls.handshake();
    return tls;
  } catch (error) {
    closeQuietly(conn);
    throw dial.interrupted ??
      new WebSocketError("TLS_FAILED", `${what}: ${errorMessage(error)}`, {
        cause: error,
      });
  }
}

/**
 * Asks the proxy on `conn` for a tunnel to `url`'s host and `port` (RFC
 * 9110 9.3.6). Resolves with the bytes that followed the proxy's 2xx head:
 * they are the server's.
 */
async function tunnel(
  dial: Dial,
  conn: Deno.Conn,
  url: URL,
  port: number,
  proxy: ProxyTarget,
  maxSize: number,
): Promise<Uint8Array> {
  const authority = `${url.hostname}:${port}`;
  const failed = (seen: string) =>
    new WebSocketError(
      "PROXY_ERROR",
      `Proxy failed: CONNECT ${authority} via ${proxy.label}: ${seen}`,
    );
  dial.waitingFor = "the proxy to answer CONNECT";
  let read: HeadRead | "too_large" | "eof";
  try {
    const request = connectRequest(url.hostname, port, proxy);
    for (let offset = 0; offset < request.length;) {
      offset += await conn.write(request.subarray(offset));
    }
    read = await readHead(conn, maxSize);
  } catch (error) {
    closeQuietly(conn);
    throw dial.interrupted ?? failed(errorMessage(error));
  }
  let error: WebSocketError | null;
  if (read === "eof") {
    error = failed("the proxy closed the connection without answering");
  } else if (read === "too_large") {
    error = failed(`response head over ${maxSize} bytes`);
  } else {
    const response = parseResponseHead(read.head);
    error = typeof response === "string"
      ? failed(response)
      : checkConnectResponse(response, authority, proxy);
  }
  if (error !== null) {
    closeQuietly(conn);
    throw error;
  }
  return (read as HeadRead).rest.slice();
}

/** What every upgrade request of one `connect` shares. */
interface Upgrade {
  protocols: string[];
  limits: ReturnType<typeof socketLimits>;
  maxSize: number;
  compression: CompressionConfig | null;
  followRedirects: boolean;
}

/**
 * The upgrade on `conn`. Resolves with the socket, or, with
 * `followRedirects`, with the server's redirect response.
 */
async function handshake(
  conn: Deno.Conn,
  rest: Uint8Array,
  url: URL,
  headers: Headers,
  { protocols, limits, maxSize, compression, followRedirects }: Upgrade,
): Promise<Socket | ResponseHead> {
  const offer = { key: generateKey(), protocols, compression };
  const request = clientRequest(url, headers, offer);
  for (let offset = 0; offset < request.length;) {
    offset += await conn.write(request.subarray(offset));
  }
  const read = await readHead(conn, maxSize, rest);
  const bad = (message: string) => new WebSocketError("BAD_HANDSHAKE", message);
  if (read === "eof") {
    throw bad(
      "Handshake failed: the server closed the connection before responding",
    );
  }
  if (read === "too_large") {
    throw bad(`Handshake failed: response head over ${maxSize} bytes`);
  }
  const response = parseResponseHead(read.head);
  if (typeof response === "string") throw bad(`Handshake failed: ${response}`);
  if (followRedirects && REDIRECT_STATUSES.has(response.status)) {
    return response;
  }
  const agreed = processResponse(response, offer);
  if (agreed instanceof WebSocketError) throw agreed;
  const deflate = agreed.deflate === null ? null : new PerMessageDeflate({
    client: true,
    params: agreed.deflate,
    config: compression!,
    maxMessageSize: limits.maxMessageSize,
  });
  const requestHeaders = new Headers(headers);
  return new Socket({
    conn,
    client: true,
    head: read.rest,
    readBuffer: read.buffer,
    protocol: agreed.protocol,
    extensions: agreed.extensions,
    request: { method: "GET", url: url.href, headers: requestHeaders },
    response: { status: response.status, headers: response.headers },
    limits,
    deflate,
  });
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * `connect`: a WebSocket client on `Deno.connect` / `Deno.connectTls`.
 *
 * @module
 */

import { WebSocketError } from "./errors.ts";
import { clientRequest, generateKey, processResponse } from "./handshake.ts";
import { parseResponseHead } from "./http.ts";
import { closeQuietly, readHead } from "./http_head.ts";
import type { CompressionConfig, CompressionOptions } from "./deflate.ts";
import { compressionConfig, PerMessageDeflate } from "./deflate_codec.ts";
import { socketLimits, type SocketOptions } from "./options.ts";
import { Socket } from "./socket.ts";

/** Options of {@linkcode connect}. */
export interface ConnectOptions extends SocketOptions {
  /** Extra request headers (the seed's `header` table). */
  headers?: HeadersInit;
  /** Subprotocols to offer, in order of preference. @default {[]} */
  protocols?: string[];
  /** PEM CA certificates to trust for `wss://` (a private CA). */
  caCerts?: string[];
  /** Aborts the connection attempt. */
  signal?: AbortSignal;
  /** How long the TCP, TLS and HTTP handshakes may take, in ms. @default {10000} */
  handshakeTimeout?: number;
  /** Largest handshake response head, in bytes. @default {16384} */
  maxHandshakeSize?: number;
  /**
   * permessage-deflate (RFC 7692): `true` offers it (with context takeover,
   * a 1024-byte threshold and level 1); an object sets those and what to ask
   * of the server. A server may decline; `Socket.extensions` shows what was
   * agreed. A response outside the offer fails with `BAD_HANDSHAKE`.
   * @default {false}
   */
  compression?: boolean | CompressionOptions;
}

/**
 * Opens a WebSocket connection: TCP (or TLS for `wss://`), then the HTTP/1.1
 * upgrade.
 *
 * @param url a `ws://` or `wss://` URL
 * @param options headers, subprotocols, CA certificates, abort signal, limits
 * @returns the open socket
 * @throws {WebSocketError} (as a rejection) `INVALID_URL`, `CONNECTION_FAILED`,
 * `TLS_FAILED`, `HANDSHAKE_TIMEOUT`, `ABORTED` or `BAD_HANDSHAKE`; the
 * message says what was seen
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
  const headers = new Headers(options.headers);
  const secure = target.protocol === "wss:";
  const hostname = target.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = target.port === "" ? (secure ? 443 : 80) : Number(target.port);
  const timeout = options.handshakeTimeout ?? 10_000;
  const signal = options.signal;
  if (signal?.aborted) {
    throw new WebSocketError(
      "ABORTED",
      "Connect aborted: the signal was already aborted",
    );
  }

  // Whatever interrupts the handshake (timeout, abort) aborts the connect
  // or closes the conn so the pending operation fails, and says why.
  const controller = new AbortController();
  let conn: Deno.Conn | null = null;
  let interrupted: WebSocketError | null = null;
  const interrupt = (error: WebSocketError) => {
    interrupted ??= error;
    controller.abort(error);
    if (conn !== null) closeQuietly(conn);
  };
  const timer = setTimeout(
    () =>
      interrupt(
        new WebSocketError(
          "HANDSHAKE_TIMEOUT",
          `Handshake timeout: no upgrade within ${timeout} ms`,
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
    let tcp: Deno.TcpConn;
    try {
      conn = tcp = await Deno.connect({
        hostname,
        port,
        signal: controller.signal,
      });
      // Frames are coalesced per event-loop turn already; Nagle only adds delay.
      tcp.setNoDelay(true);
    } catch (error) {
      throw interrupted ??
        new WebSocketError(
          "CONNECTION_FAILED",
          `Connection failed: ${errorMessage(error)}`,
          { cause: error },
        );
    }
    if (secure) {
      try {
        conn = await Deno.startTls(tcp, { hostname, caCerts: options.caCerts });
        if (interrupted !== null) throw interrupted;
        await (conn as Deno.TlsConn).handshake();
      } catch (error) {
        closeQuietly(conn);
        throw interrupted ??
          new WebSocketError(
            "TLS_FAILED",
            `TLS handshake failed: ${errorMessage(error)}`,
            { cause: error },
          );
      }
    }
    try {
      return await handshake(
        conn,
        target,
        headers,
        protocols,
        limits,
        options.maxHandshakeSize ?? 16 * 1024,
        compression,
      );
    } catch (error) {
      closeQuietly(conn);
      if (interrupted !== null) throw interrupted;
      if (error instanceof WebSocketError) throw error;
      throw new WebSocketError(
        "BAD_HANDSHAKE",
        `Handshake failed: ${errorMessage(error)}`,
        { cause: error },
      );
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

async function handshake(
  conn: Deno.Conn,
  url: URL,
  headers: Headers,
  protocols: string[],
  limits: ReturnType<typeof socketLimits>,
  maxSize: number,
  compression: CompressionConfig | null,
): Promise<Socket> {
  const offer = { key: generateKey(), protocols, compression };
  const request = clientRequest(url, headers, offer);
  for (let offset = 0; offset < request.length;) {
    offset += await conn.write(request.subarray(offset));
  }
  const read = await readHead(conn, maxSize);
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

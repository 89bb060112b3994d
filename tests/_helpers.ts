/**
 * Shared helpers for tests that run over real loopback sockets.
 *
 * @module
 */

import { encodeFrame } from "../src/frame.ts";
import {
  listen,
  type ListenOptions,
  type Server,
  type Socket,
} from "../mod.ts";

/** The localhost certificate and key under tests/fixtures/. */
export const CERT: string = Deno.readTextFileSync(
  new URL("./fixtures/localhost.crt", import.meta.url),
);
/** The key that goes with {@linkcode CERT}. */
export const KEY: string = Deno.readTextFileSync(
  new URL("./fixtures/localhost.key", import.meta.url),
);

/** Starts a server on 127.0.0.1:0; dispose it with `await using`. */
export function serve(
  handler: ListenOptions["handler"],
  options: Partial<ListenOptions> = {},
): Server & AsyncDisposable {
  const server = listen({ addr: "127.0.0.1:0", handler, ...options });
  return Object.assign(server, {
    [Symbol.asyncDispose]: () => server.close(),
  });
}

/** Echoes text and binary messages until the close, awaiting each write. */
export async function echo(sock: Socket): Promise<void> {
  for await (const msg of sock) {
    if (msg.type === "text" || msg.type === "binary") {
      await sock.write(msg.data, msg.type);
    }
  }
}

/** Reads and drops everything until the close. */
export async function drain(sock: Socket): Promise<void> {
  for await (const _ of sock) { /* drop */ }
}

/** `ws://127.0.0.1:<port>` (or `wss://localhost:<port>`) for a server. */
export function urlOf(server: Server, path = "/", secure = false): string {
  return secure
    ? `wss://localhost:${server.addr.port}${path}`
    : `ws://127.0.0.1:${server.addr.port}${path}`;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A client-side mask key fixed for tests. */
export const TEST_KEY: Uint8Array = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);

/** A masked client frame (what a browser sends). */
export function clientFrame(
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(0),
  options: { fin?: boolean; rsv1?: boolean } = {},
): Uint8Array {
  const bytes = typeof payload === "string" ? encoder.encode(payload) : payload;
  return encodeFrame(opcode, bytes, { ...options, maskingKey: TEST_KEY });
}

/**
 * A raw TCP connection that speaks bytes, for feeding a server what no
 * well-behaved client would send.
 */
export class RawClient implements AsyncDisposable {
  conn: Deno.TcpConn;
  #buffer = new Uint8Array(0);

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Connects and completes a valid upgrade; the 101 head is consumed. */
  static async upgrade(port: number, extraHeaders = ""): Promise<RawClient> {
    const client = await RawClient.connect(port);
    await client.send(upgradeRequest(port, extraHeaders));
    const head = await client.readHead();
    if (!head.startsWith("HTTP/1.1 101")) {
      throw new Error(`Upgrade failed: ${head}`);
    }
    return client;
  }

  /** Writes all bytes (a string is sent as UTF-8). */
  async send(data: Uint8Array | string): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    for (let offset = 0; offset < bytes.length;) {
      offset += await this.conn.write(bytes.subarray(offset));
    }
  }

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    let n: number | null;
    try {
      n = await this.conn.read(chunk);
    } catch {
      n = null;
    }
    if (n === null) return false;
    const next = new Uint8Array(this.#buffer.length + n);
    next.set(this.#buffer);
    next.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = next;
    return true;
  }

  /** Reads an HTTP head (up to the blank line) as text. */
  async readHead(): Promise<string> {
    for (;;) {
      const text = decoder.decode(this.#buffer);
      const end = text.indexOf("\r\n\r\n");
      if (end !== -1) {
        this.#buffer = this.#buffer.subarray(
          encoder.encode(text.slice(0, end + 4)).length,
        );
        return text.slice(0, end + 4);
      }
      if (!await this.#fill()) return text;
    }
  }

  /** Reads everything until the server closes the connection. */
  async readToEnd(): Promise<Uint8Array> {
    while (await this.#fill()) { /* keep reading */ }
    const all = this.#buffer;
    this.#buffer = new Uint8Array(0);
    return all;
  }

  /**
   * Reads one unmasked server frame, or `null` at EOF.
   */
  async readFrame(): Promise<
    { fin: boolean; opcode: number; payload: Uint8Array } | null
  > {
    for (;;) {
      const b = this.#buffer;
      if (b.length >= 2) {
        let length = b[1] & 0x7f;
        let offset = 2;
        if (length === 126 && b.length >= 4) {
          length = (b[2] << 8) | b[3];
          offset = 4;
        } else if (length === 127 && b.length >= 10) {
          length = Number(
            new DataView(b.buffer, b.byteOffset + 2, 8).getBigUint64(0),
          );
          offset = 10;
        }
        if ((b[1] & 0x7f) < 126 || offset > 2) {
          if (b.length >= offset + length) {
            this.#buffer = b.subarray(offset + length);
            return {
              fin: (b[0] & 0x80) !== 0,
              opcode: b[0] & 0x0f,
              payload: b.slice(offset, offset + length),
            };
          }
        }
      }
      if (!await this.#fill()) return null;
    }
  }

  /**
   * Reads frames until a close frame; returns its code and reason, or
   * `null` if the connection ended without one.
   */
  async readClose(): Promise<{ code: number; reason: string } | null> {
    for (;;) {
      const frame = await this.readFrame();
      if (frame === null) return null;
      if (frame.opcode === 0x8) {
        const p = frame.payload;
        return {
          code: p.length >= 2 ? (p[0] << 8) | p[1] : 1005,
          reason: decoder.decode(p.subarray(2)),
        };
      }
    }
  }

  /** Resolves true when the server has closed the TCP connection. */
  async closedByPeer(): Promise<boolean> {
    await this.readToEnd();
    return true;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** A valid client upgrade request for 127.0.0.1:`port`. */
export function upgradeRequest(port: number, extraHeaders = ""): string {
  return `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`;
}

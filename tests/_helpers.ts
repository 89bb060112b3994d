/**
 * Shared helpers for tests that run over real loopback sockets.
 *
 * @module
 */

import { encodeFrame } from "../src/frame.ts";
import { RawConn } from "./_raw_helpers.ts";
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
 * A raw TCP client that speaks bytes, for feeding a server what no
 * well-behaved client would send.
 */
export class RawClient extends RawConn {
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

  /** Reads one (unmasked) server frame, or `null` at EOF. */
  async readFrame(): Promise<
    { fin: boolean; opcode: number; payload: Uint8Array } | null
  > {
    const frame = await this.readRawFrame();
    return frame && {
      fin: frame.fin,
      opcode: frame.opcode,
      payload: frame.payload,
    };
  }

  /**
   * Reads frames until a close frame; returns its code and reason, or
   * `null` if the connection ended without one.
   */
  async readClose(): Promise<{ code: number; reason: string } | null> {
    const close = await this.readRawClose();
    return close && { code: close.code, reason: close.reason };
  }

  /** Resolves true when the server has closed the TCP connection. */
  async closedByPeer(): Promise<boolean> {
    await this.readToEnd();
    return true;
  }
}

/** A valid client upgrade request for 127.0.0.1:`port`. */
export function upgradeRequest(port: number, extraHeaders = ""): string {
  return `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`;
}

/**
 * Runs `tests/fixtures/<name>` in its own process (`--allow-net`, and
 * `--allow-read` for these helpers' certificate) with V8 flags; resolves
 * with its exit code and output.
 */
export async function runFixture(
  name: string,
  v8Flags: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const fixture = new URL(`./fixtures/${name}`, import.meta.url);
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      `--v8-flags=${v8Flags}`,
      fixture.pathname,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code,
    stdout: decoder.decode(stdout),
    stderr: decoder.decode(stderr),
  };
}

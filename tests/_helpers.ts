/**
 * The shared helpers of the tests: bounded waits on the real clock, servers
 * on loopback, bytes and frames built by hand, raw TCP peers on either side
 * of a connection, and child processes. Fixtures of one subject live apart,
 * named for what they drive: `_fake_time.ts` (a virtual clock),
 * `_interop_peers.ts` (other WebSocket implementations), `_chromium.ts`
 * (the browser) and `_examples.ts` (the scripts in examples/).
 *
 * @module
 */

import { joinBytes } from "../src/buffers.ts";
import { encodeFrame } from "../src/frame.ts";
import { acceptKey } from "../src/handshake.ts";
import {
  connect,
  type ConnectOptions,
  listen,
  type ListenOptions,
  type Message,
  type Server,
  type Socket,
} from "../mod.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// -- Time --------------------------------------------------------------------
//
// These run on the real clock even while a FakeTime replaces the globals:
// they are taken when this module loads, before any test can patch them.

const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;
const realNow = performance.now.bind(performance);

/** How long any single wait in the tests may take before it fails, in ms. */
export const TIMEOUT = 5_000;

/**
 * `promise`, or a rejection naming `what` once `ms` real milliseconds have
 * passed: a hang fails the test instead of blocking CI.
 */
export function within<T>(
  promise: Promise<T>,
  what = "the operation",
  ms = TIMEOUT,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = realSetTimeout(
      () => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() =>
    realClearTimeout(timer)
  );
}

/** Resolves true if `promise` settles (either way) within `ms`, else false. */
export async function settlesWithin(
  promise: Promise<unknown>,
  ms: number,
): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = realSetTimeout(() => resolve(false), ms);
  });
  const settled = promise.then(() => true, () => true);
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    realClearTimeout(timer);
  }
}

/** Resolves after `ms` real milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => realSetTimeout(resolve, ms));
}

/** Polls `predicate` every 5 ms until it holds, failing after {@linkcode TIMEOUT}. */
export async function waitFor(
  predicate: () => boolean,
  what = "a condition",
): Promise<void> {
  const deadline = realNow() + TIMEOUT;
  while (!predicate()) {
    if (realNow() > deadline) {
      throw new Error(`Timed out after ${TIMEOUT} ms waiting for ${what}`);
    }
    await sleep(5);
  }
}

// -- Servers on loopback -----------------------------------------------------

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

/** `ws://127.0.0.1:<port>` (or `wss://localhost:<port>`) for a server. */
export function urlOf(server: Server, path = "/", secure = false): string {
  return secure
    ? `wss://localhost:${server.addr.port}${path}`
    : `ws://127.0.0.1:${server.addr.port}${path}`;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/**
 * A server on 127.0.0.1:0 that keeps every message it receives, up to and
 * with the close; `done` resolves when the (first) socket ends.
 */
export function recordingServer(
  options: Partial<ListenOptions> = {},
): Server & AsyncDisposable & { received: Message[]; done: Promise<void> } {
  const received: Message[] = [];
  const done = Promise.withResolvers<void>();
  const server = serve(async (sock) => {
    for await (const msg of sock) received.push(msg);
    done.resolve();
  }, options);
  return Object.assign(server, { received, done: done.promise });
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

/** Reads every message of `sock` up to and with the close message. */
export async function readAll(sock: Socket): Promise<Message[]> {
  const messages: Message[] = [];
  for await (const message of sock) messages.push(message);
  return messages;
}

/** The next text, binary or close message, skipping pings and pongs. */
export async function readData(sock: Socket): Promise<Message | null> {
  while (true) {
    const msg = await sock.read();
    if (msg?.type !== "ping" && msg?.type !== "pong") return msg;
  }
}

// -- Bytes and frames --------------------------------------------------------

/** UTF-8 bytes of a string. */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Lines of `text`, without the empty last one. */
export function lines(text: string): string[] {
  return text.split("\n").filter((line) => line !== "");
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  return joinBytes(parts);
}

/** A client-side mask key fixed for tests. */
export const TEST_KEY: Uint8Array = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);

/** A masked client frame (what a browser sends). */
export function clientFrame(
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(0),
  options: { fin?: boolean; rsv1?: boolean } = {},
): Uint8Array {
  const bytes = typeof payload === "string" ? utf8(payload) : payload;
  return encodeFrame(opcode, bytes, { ...options, maskingKey: TEST_KEY });
}

/** An unmasked server frame (what a server sends). */
export function serverFrame(
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(0),
  options: { fin?: boolean; rsv1?: boolean; maskingKey?: Uint8Array } = {},
): Uint8Array {
  const bytes = typeof payload === "string" ? utf8(payload) : payload;
  return encodeFrame(opcode, bytes, options);
}

/** A close frame payload: the code in network byte order, then the reason. */
export function closePayload(
  code: number,
  reason: Uint8Array | string = "",
): Uint8Array {
  const reasonBytes = typeof reason === "string" ? utf8(reason) : reason;
  return concat(new Uint8Array([code >>> 8, code & 0xff]), reasonBytes);
}

/** A valid client upgrade request for 127.0.0.1:`port`. */
export function upgradeRequest(port: number, extraHeaders = ""): string {
  return `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`;
}

/** JSON-like text that compresses well, different for each `seed`. */
export function jsonText(items: number, seed = 0): string {
  return JSON.stringify(
    Array.from({ length: items }, (_, i) => ({
      id: seed * 100_000 + i,
      name: `user-${(i * 7919 + seed) % 1000}`,
      online: i % 3 === 0,
      tags: ["alpha", "beta", "gamma"].slice(0, i % 4),
    })),
  );
}

/** Bytes that do not compress (a seeded xorshift, not crypto: any length). */
export function noise(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

// -- Raw peers ---------------------------------------------------------------

/** A frame as the raw peer read it; `payload` is already unmasked. */
export interface RawFrame {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  /** The 7-bit length field as sent (0-125, 126 or 127). */
  lengthField: number;
  payload: Uint8Array;
}

/**
 * One raw TCP connection with a read buffer, either side: frames are read
 * masked or not. {@linkcode RawPeer} (the server end of our client) and
 * {@linkcode RawClient} (a client that feeds our server) are its two
 * faces.
 */
export class RawConn implements AsyncDisposable {
  conn: Deno.TcpConn;
  #buffer: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  #closed = false;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
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
    this.#buffer = concat(this.#buffer, chunk.subarray(0, n));
    return true;
  }

  /** Writes all bytes (a string is sent as UTF-8). */
  async send(data: Uint8Array | string): Promise<void> {
    const bytes = typeof data === "string" ? utf8(data) : data;
    for (let offset = 0; offset < bytes.length;) {
      offset += await this.conn.write(bytes.subarray(offset));
    }
  }

  /**
   * Reads an HTTP head up to and with the blank line; at EOF, what came
   * (`""` if nothing).
   */
  async readHead(): Promise<string> {
    for (;;) {
      const b = this.#buffer;
      for (let i = 0; i + 3 < b.length; i++) {
        if (
          b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10
        ) {
          this.#buffer = b.slice(i + 4);
          return decoder.decode(b.subarray(0, i + 4));
        }
      }
      if (!await this.#fill()) return decoder.decode(b);
    }
  }

  /** Reads one frame, masked or not, or `null` at EOF. */
  protected async readRawFrame(): Promise<RawFrame | null> {
    for (;;) {
      const frame = this.#parseFrame();
      if (frame !== null) return frame;
      if (!await this.#fill()) return null;
    }
  }

  #parseFrame(): RawFrame | null {
    const b = this.#buffer;
    if (b.length < 2) return null;
    const masked = (b[1] & 0x80) !== 0;
    const lengthField = b[1] & 0x7f;
    let offset = 2;
    let length = lengthField;
    if (lengthField === 126) {
      if (b.length < 4) return null;
      length = (b[2] << 8) | b[3];
      offset = 4;
    } else if (lengthField === 127) {
      if (b.length < 10) return null;
      length = Number(
        new DataView(b.buffer, b.byteOffset + 2, 8).getBigUint64(0),
      );
      offset = 10;
    }
    const keyOffset = offset;
    if (masked) offset += 4;
    if (b.length < offset + length) return null;
    const payload = b.slice(offset, offset + length);
    if (masked) {
      for (let i = 0; i < payload.length; i++) {
        payload[i] ^= b[keyOffset + (i & 3)];
      }
    }
    this.#buffer = b.slice(offset + length);
    return {
      fin: (b[0] & 0x80) !== 0,
      rsv: (b[0] >> 4) & 0x7,
      opcode: b[0] & 0x0f,
      masked,
      lengthField,
      payload,
    };
  }

  /**
   * Reads frames until a close frame and returns it with its code and
   * reason, or `null` if the connection ended without one.
   */
  protected async readRawClose(): Promise<
    { code: number; reason: string; frame: RawFrame } | null
  > {
    for (;;) {
      const frame = await this.readRawFrame();
      if (frame === null) return null;
      if (frame.opcode === 0x8) {
        const p = frame.payload;
        return {
          code: p.length >= 2 ? (p[0] << 8) | p[1] : 1005,
          reason: decoder.decode(p.subarray(2)),
          frame,
        };
      }
    }
  }

  /** Reads until the other side closes the connection; returns what came. */
  async readToEnd(): Promise<Uint8Array> {
    while (await this.#fill()) { /* keep reading */ }
    const all = this.#buffer;
    this.#buffer = new Uint8Array(0);
    return all;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
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

/** The server end of a connection from our client, seen raw. */
export class RawPeer extends RawConn {
  /** Reads one frame, masked or not, or `null` at EOF. */
  readFrame(): Promise<RawFrame | null> {
    return this.readRawFrame();
  }

  /**
   * Reads frames until a close frame and returns it with its code and
   * reason, or `null` if the connection ended without one.
   */
  readClose(): Promise<
    { code: number; reason: string; frame: RawFrame } | null
  > {
    return this.readRawClose();
  }

  /**
   * Server side: reads the upgrade request and answers 101 with the right
   * `Sec-WebSocket-Accept` and `extraHeaders` (lines ending in CRLF).
   * Returns the request head.
   */
  async acceptUpgrade(extraHeaders = ""): Promise<string> {
    const head = await this.readHead();
    const key = /^sec-websocket-key:\s*(\S+)\s*$/im.exec(head)?.[1] ?? "";
    await this.send(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n${extraHeaders}\r\n`,
    );
    return head;
  }
}

/**
 * A raw TCP server on 127.0.0.1:0 for driving our client. Dispose it with
 * `await using`: that closes the listener and every accepted connection.
 */
export class RawServer implements AsyncDisposable {
  readonly listener: Deno.TcpListener;
  #peers: RawPeer[] = [];

  constructor() {
    this.listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  }

  /** The bound port. */
  get port(): number {
    return this.listener.addr.port;
  }

  /** `ws://127.0.0.1:<port><path>`. */
  url(path = "/"): string {
    return `ws://127.0.0.1:${this.port}${path}`;
  }

  /** Accepts the next connection. */
  async accept(): Promise<RawPeer> {
    const peer = new RawPeer(await this.listener.accept());
    this.#peers.push(peer);
    return peer;
  }

  [Symbol.asyncDispose](): Promise<void> {
    for (const peer of this.#peers) peer.close();
    try {
      this.listener.close();
    } catch {
      // Already closed.
    }
    return Promise.resolve();
  }
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

/**
 * Connects our client to a {@linkcode RawServer}, which answers the
 * upgrade by hand with `extraHeaders`. Returns both ends and the request
 * head the raw server read.
 */
export async function connectToRaw(
  raw: RawServer,
  options: ConnectOptions = {},
  extraHeaders = "",
): Promise<{ sock: Socket; peer: RawPeer; request: string }> {
  const accepted = raw.accept();
  const connecting = connect(raw.url(), options);
  const peer = await within(accepted, "the raw server to accept");
  const request = await within(
    peer.acceptUpgrade(extraHeaders),
    "the upgrade request",
  );
  const sock = await within(connecting, "connect()");
  return { sock, peer, request };
}

/**
 * The raw peer's half of a close started by our client: read its close
 * frame, echo the code, wait for it to close TCP. Returns the close frame.
 */
export async function answerClose(
  peer: RawPeer,
): Promise<{ code: number; reason: string; frame: RawFrame }> {
  const close = await within(peer.readClose(), "the client's close frame");
  if (close === null) {
    throw new Error("The connection ended without a close frame");
  }
  await peer.send(serverFrame(0x8, closePayload(close.code)));
  await within(peer.readToEnd(), "the client to close TCP");
  return close;
}

// -- Processes ---------------------------------------------------------------

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

/**
 * Stops `child`: SIGTERM (or `signal`), then SIGKILL if it has not exited
 * after `graceMs`.
 */
export async function stopChild(
  child: Deno.ChildProcess,
  graceMs: number,
  signal: Deno.Signal | null = "SIGTERM",
): Promise<Deno.CommandStatus> {
  const kill = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch {
      // Already gone.
    }
  };
  if (signal !== null) kill(signal);
  const timer = realSetTimeout(() => kill("SIGKILL"), graceMs);
  const status = await child.status;
  realClearTimeout(timer);
  return status;
}

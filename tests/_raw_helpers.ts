/**
 * Extra helpers for the socket-level tests (socket_test.ts, server_test.ts,
 * client_test.ts, bad_input_test.ts): bounded waits, and a raw TCP
 * *server* that does the 101 by hand, to watch what our client sends and
 * feed it what no well-behaved server would.
 *
 * @module
 */

import { encodeFrame } from "../src/frame.ts";
import { acceptKey } from "../src/handshake.ts";
import {
  connect,
  type ConnectOptions,
  type Message,
  type Socket,
} from "../mod.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** How long any single wait in these tests may take before it fails. */
export const WAIT_LIMIT = 5_000;

/** Resolves `promise`, or rejects if it takes longer than `ms`. */
export function within<T>(
  promise: Promise<T>,
  what = "the operation",
  ms = WAIT_LIMIT,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `predicate` until it holds, failing after {@linkcode WAIT_LIMIT}. */
export async function waitFor(
  predicate: () => boolean,
  what = "a condition",
): Promise<void> {
  const deadline = Date.now() + WAIT_LIMIT;
  while (!predicate()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${WAIT_LIMIT} ms waiting for ${what}`);
    }
    await delay(5);
  }
}

/** Reads every message of `sock` up to and with the close message. */
export async function readAll(sock: Socket): Promise<Message[]> {
  const messages: Message[] = [];
  for await (const message of sock) messages.push(message);
  return messages;
}

/** UTF-8 bytes of a string. */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
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
 * `RawClient` (in `_helpers.ts`) are its two faces.
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
  const timer = setTimeout(() => kill("SIGKILL"), graceMs);
  const status = await child.status;
  clearTimeout(timer);
  return status;
}

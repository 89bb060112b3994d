/**
 * Raw-TCP peers for the abuse suite: frames built by hand (masked or not,
 * RSV1 when asked), an upgrade done by hand on either side, and a reader
 * that parses what comes back. Nothing here uses the library under test.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Opcodes used here (RFC 6455 5.2). */
export const TEXT = 0x1;
/** Binary frame opcode. */
export const BINARY = 0x2;
/** Close frame opcode. */
export const CLOSE = 0x8;
/** Ping frame opcode. */
export const PING = 0x9;
/** Pong frame opcode. */
export const PONG = 0xa;

/** The masking key of every client frame built here. */
const MASKING_KEY = [0x37, 0xfa, 0x21, 0x3d];

/**
 * One frame. `masked` for client frames; `declaredLength` announces a
 * payload length other than the bytes given (half a frame).
 */
export function frame(
  opcode: number,
  payload: Uint8Array,
  options: {
    masked: boolean;
    fin?: boolean;
    rsv1?: boolean;
    declaredLength?: number;
  },
): Uint8Array {
  const length = options.declaredLength ?? payload.length;
  const ext = length < 126 ? 0 : length < 0x10000 ? 2 : 8;
  const maskBytes = options.masked ? 4 : 0;
  const out = new Uint8Array(2 + ext + maskBytes + payload.length);
  out[0] = (options.fin === false ? 0 : 0x80) | (options.rsv1 ? 0x40 : 0) |
    opcode;
  const maskBit = options.masked ? 0x80 : 0;
  let o = 2;
  if (ext === 0) out[1] = maskBit | length;
  else if (ext === 2) {
    out[1] = maskBit | 126;
    out[2] = length >>> 8;
    out[3] = length & 0xff;
    o = 4;
  } else {
    out[1] = maskBit | 127;
    new DataView(out.buffer).setBigUint64(2, BigInt(length));
    o = 10;
  }
  if (options.masked) {
    out.set(MASKING_KEY, o);
    o += 4;
    for (let i = 0; i < payload.length; i++) {
      out[o + i] = payload[i] ^ MASKING_KEY[i & 3];
    }
  } else {
    out.set(payload, o);
  }
  return out;
}

/** A valid client upgrade request for 127.0.0.1:`port`. */
export function upgradeRequest(port: number, extraHeaders = ""): Uint8Array {
  return encoder.encode(
    `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`,
  );
}

/** `Sec-WebSocket-Accept` for a key (RFC 6455 4.2.2). */
export async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    encoder.encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
  );
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/** Writes all of `bytes`. */
export async function writeAll(
  conn: Deno.Conn,
  bytes: Uint8Array,
): Promise<void> {
  for (let offset = 0; offset < bytes.length;) {
    offset += await conn.write(bytes.subarray(offset));
  }
}

/** Resolves with `promise`, or with `fallback` after `ms`. */
export function orTimeout<T, F>(
  promise: Promise<T>,
  ms: number,
  fallback: F,
): Promise<T | F> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<F>((resolve) => {
      timer = setTimeout(() => resolve(fallback), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A frame as read: the payload unmasked. */
export interface ReadFrame {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** Reads HTTP heads and frames from a connection, with a buffer of its own. */
export class Reader {
  readonly conn: Deno.Conn;
  #buffer = new Uint8Array(0);
  /** Set once the peer closed or reset the connection. */
  ended = false;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** Reads once more; false at EOF or on an error (a reset). */
  async fill(size = 64 * 1024): Promise<boolean> {
    if (this.ended) return false;
    const chunk = new Uint8Array(size);
    let n: number | null = null;
    try {
      n = await this.conn.read(chunk);
    } catch {
      n = null;
    }
    if (n === null) {
      this.ended = true;
      return false;
    }
    const merged = new Uint8Array(this.#buffer.length + n);
    merged.set(this.#buffer);
    merged.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = merged;
    return true;
  }

  /** The head up to and with the blank line, or what came before EOF. */
  async readHead(): Promise<string> {
    for (;;) {
      const end = indexOfBlankLine(this.#buffer);
      if (end !== -1) {
        const head = decoder.decode(this.#buffer.subarray(0, end));
        this.#buffer = this.#buffer.slice(end);
        return head;
      }
      if (!await this.fill(4096)) return decoder.decode(this.#buffer);
    }
  }

  /** The next frame, or `null` at EOF. */
  async readFrame(): Promise<ReadFrame | null> {
    for (;;) {
      const parsed = this.#parse();
      if (parsed !== null) return parsed;
      if (!await this.fill()) return null;
    }
  }

  /** Reads until EOF or a reset; the bytes that came. */
  async readToEnd(): Promise<Uint8Array> {
    while (await this.fill()) { /* keep reading */ }
    return this.#buffer;
  }

  #parse(): ReadFrame | null {
    const b = this.#buffer;
    if (b.length < 2) return null;
    const masked = (b[1] & 0x80) !== 0;
    let length = b[1] & 0x7f;
    let o = 2;
    if (length === 126) {
      if (b.length < 4) return null;
      length = (b[2] << 8) | b[3];
      o = 4;
    } else if (length === 127) {
      if (b.length < 10) return null;
      length = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(2));
      o = 10;
    }
    const keyAt = o;
    if (masked) o += 4;
    if (b.length < o + length) return null;
    const payload = b.slice(o, o + length);
    if (masked) {
      for (let i = 0; i < length; i++) payload[i] ^= b[keyAt + (i & 3)];
    }
    this.#buffer = b.slice(o + length);
    return {
      fin: (b[0] & 0x80) !== 0,
      rsv1: (b[0] & 0x40) !== 0,
      opcode: b[0] & 0x0f,
      payload,
    };
  }
}

function indexOfBlankLine(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) {
      return i + 4;
    }
  }
  return -1;
}

/**
 * Connects to 127.0.0.1:`port` and upgrades; throws unless the answer is
 * a 101. Returns the connection, its reader and the response head.
 */
export async function upgrade(
  port: number,
  extraHeaders = "",
): Promise<{ conn: Deno.TcpConn; reader: Reader; head: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, upgradeRequest(port, extraHeaders));
    const reader = new Reader(conn);
    const head = await reader.readHead();
    if (!head.startsWith("HTTP/1.1 101")) {
      throw new Error(`Upgrade refused: ${head.split("\r\n")[0]}`);
    }
    return { conn, reader, head };
  } catch (error) {
    try {
      conn.close();
    } catch { /* already closed */ }
    throw error;
  }
}

/**
 * Server side of an upgrade done by hand: reads the request, answers 101
 * with the right `Sec-WebSocket-Accept` and `extraHeaders` (CRLF-ended
 * lines). Returns the request head.
 */
export async function acceptUpgrade(
  reader: Reader,
  extraHeaders = "",
): Promise<string> {
  const head = await reader.readHead();
  const key = /^sec-websocket-key:\s*(\S+)\s*$/im.exec(head)?.[1] ?? "";
  await writeAll(
    reader.conn,
    encoder.encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n${extraHeaders}\r\n`,
    ),
  );
  return head;
}

/** Closes `conn`, ignoring that it may be closed already. */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

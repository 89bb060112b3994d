/**
 * The raw-TCP WebSocket load generator. Independent of the library: it does
 * its own upgrade, sends precomputed masked frames and counts echoes with a
 * minimal parser, so every contestant is driven by the same client.
 *
 * Modes:
 * - `echo`: `--conns` connections each keep `--window` messages of
 *   `--size` bytes in flight (`--text` for UTF-8 text, `--frag N` to send
 *   each message as fragments of N bytes); counts echoed messages.
 * - `churn`: `--conns` workers each loop: connect, handshake, one echo,
 *   close handshake (our close frame, the server's, then the server's FIN);
 *   counts completed connections. (run.ts drives S5 with `churn.c`, the
 *   same loop in C, when a C compiler is installed: this one saturates its
 *   own core first.)
 * - `fanout`: `--conns` connections to `/fanout`; the last one sends
 *   `--size`-byte messages that the server writes to every connection,
 *   keeping `--window` broadcasts in flight; counts deliveries.
 *
 * Prints `MARK start`, `MARK end`, then `RESULT <json>` (see _common.ts).
 *
 * Run: deno run --allow-net bench/load.ts --port 8080 --mode echo --conns 64 --size 32 --window 32
 *
 * @module
 */

import {
  binaryPayload,
  maskedFrame,
  measure,
  num,
  parseFlags,
  report,
  sleep,
  utf8Text,
  writeAll,
} from "./_common.ts";

const flags = parseFlags(Deno.args);
const port = num(flags, "port", 0);
const mode = flags.mode ?? "echo";
const conns = num(flags, "conns", 64);
const size = num(flags, "size", 32);
const windowSize = num(flags, "window", 32);
const frag = num(flags, "frag", 0);
const warmup = num(flags, "warmup", 1);
const duration = num(flags, "duration", 3);
const text = flags.text === "true";
const connectConcurrency = num(flags, "connect-concurrency", 64);

const encoder = new TextEncoder();

// ---------------------------------------------------------------- frames

const OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8;

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** One message as wire bytes: one frame, or fragments of `frag` bytes. */
function messageBytes(payload: Uint8Array, opcode: number, frag: number) {
  if (frag <= 0 || payload.length <= frag) {
    return maskedFrame(true, opcode, payload);
  }
  const frames: Uint8Array[] = [];
  for (let o = 0; o < payload.length; o += frag) {
    const end = Math.min(o + frag, payload.length);
    frames.push(
      maskedFrame(
        end === payload.length,
        o === 0 ? opcode : OP_CONT,
        payload.subarray(o, end),
      ),
    );
  }
  return concat(frames);
}

// ---------------------------------------------------------------- parser

/**
 * Minimal parser for the server's (unmasked) frames: skips payloads and
 * counts complete data messages, payload bytes and close frames.
 */
class Parser {
  #hdr = new Uint8Array(14);
  #hdrLen = 0;
  #need = 2;
  #remaining = 0;
  #inPayload = false;
  #fin = false;
  #opcode = 0;
  messages = 0;
  bytes = 0;
  closes = 0;

  /** Consumes a chunk; returns the data messages it completed. */
  feed(b: Uint8Array): number {
    const n = b.length;
    let i = 0;
    let done = 0;
    while (i < n) {
      if (this.#inPayload) {
        const take = Math.min(this.#remaining, n - i);
        this.#remaining -= take;
        i += take;
        if (this.#opcode < 8) this.bytes += take;
        if (this.#remaining === 0) {
          this.#inPayload = false;
          done += this.#end();
        }
        continue;
      }
      const h = this.#hdr;
      while (this.#hdrLen < this.#need && i < n) {
        h[this.#hdrLen++] = b[i++];
        if (this.#hdrLen === 2) {
          const len7 = h[1] & 0x7f;
          this.#need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) +
            (h[1] & 0x80 ? 4 : 0);
        }
      }
      if (this.#hdrLen < this.#need) break;
      this.#fin = (h[0] & 0x80) !== 0;
      this.#opcode = h[0] & 0x0f;
      const len7 = h[1] & 0x7f;
      this.#remaining = len7 === 126
        ? (h[2] << 8) | h[3]
        : len7 === 127
        ? Number(new DataView(h.buffer).getBigUint64(2))
        : len7;
      this.#hdrLen = 0;
      this.#need = 2;
      if (this.#remaining === 0) done += this.#end();
      else this.#inPayload = true;
    }
    return done;
  }

  #end(): number {
    if (this.#opcode >= 8) {
      if (this.#opcode === OP_CLOSE) this.closes++;
      return 0;
    }
    if (!this.#fin) return 0;
    this.messages++;
    return 1;
  }
}

// ---------------------------------------------------------------- handshake

const HANDSHAKE_END = encoder.encode("\r\n\r\n");

function indexOfEnd(buf: Uint8Array, len: number): number {
  outer: for (let i = 0; i + 4 <= len; i++) {
    for (let j = 0; j < 4; j++) {
      if (buf[i + j] !== HANDSHAKE_END[j]) continue outer;
    }
    return i + 4;
  }
  return -1;
}

/** Connects and upgrades; returns the conn and bytes read past the head. */
async function open(
  path: string,
): Promise<{ conn: Deno.Conn; rest: Uint8Array }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    conn.setNoDelay(true);
    await writeAll(
      conn,
      encoder.encode(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
          "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
          "Sec-WebSocket-Version: 13\r\n\r\n",
      ),
    );
    const buf = new Uint8Array(4096);
    let len = 0;
    for (;;) {
      const n = await conn.read(buf.subarray(len));
      if (n === null) throw new Error("EOF during handshake");
      len += n;
      const end = indexOfEnd(buf, len);
      if (end < 0) {
        if (len === buf.length) throw new Error("handshake too long");
        continue;
      }
      const head = new TextDecoder().decode(buf.subarray(0, end));
      if (!head.startsWith("HTTP/1.1 101")) {
        throw new Error(`handshake: ${head.split("\r\n")[0]}`);
      }
      return { conn, rest: buf.slice(end, len) };
    }
  } catch (error) {
    try {
      conn.close();
    } catch { /* already closed */ }
    throw error;
  }
}

/** Opens `count` connections, at most `connectConcurrency` at a time. */
async function openMany(count: number, path: string) {
  const out: { conn: Deno.Conn; rest: Uint8Array }[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      out[i] = await open(path);
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(connectConcurrency, count) }, worker),
  );
  return out;
}

// ---------------------------------------------------------------- modes

let stopped = false;
let errors = 0;

/** A connection with a pump that sends `owed` messages from a burst buffer. */
class Peer {
  parser = new Parser();
  #owed = 0;
  #writing = false;
  constructor(
    readonly conn: Deno.Conn,
    readonly burst: Uint8Array,
    readonly messageLength: number,
    readonly burstCount: number,
  ) {}

  /** Whether a write is waiting for the server to read. */
  get writing(): boolean {
    return this.#writing;
  }

  send(k: number): void {
    this.#owed += k;
    if (!this.#writing) this.#pump();
  }

  async #pump(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#owed > 0 && !stopped) {
        const k = Math.min(this.#owed, this.burstCount);
        this.#owed -= k;
        await writeAll(
          this.conn,
          this.burst.subarray(0, k * this.messageLength),
        );
      }
    } catch {
      if (!stopped) errors++;
    }
    this.#writing = false;
  }

  /** Reads until EOF, calling `onChunk` with the messages each read completed. */
  async readLoop(
    rest: Uint8Array,
    readSize: number,
    onChunk: (peer: Peer, k: number) => void,
  ): Promise<void> {
    if (rest.length > 0) onChunk(this, this.parser.feed(rest));
    const buf = new Uint8Array(readSize);
    try {
      for (;;) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        onChunk(this, this.parser.feed(buf.subarray(0, n)));
      }
    } catch {
      // reset
    }
    if (!stopped) errors++;
  }
}

function burstOf(message: Uint8Array, copies: number): Uint8Array {
  return concat(Array.from({ length: copies }, () => message));
}

function payloadBytes(): { payload: Uint8Array; opcode: number } {
  return text
    ? { payload: encoder.encode(utf8Text(size)), opcode: OP_TEXT }
    : { payload: binaryPayload(size), opcode: OP_BINARY };
}

async function echoMode(): Promise<never> {
  const { payload, opcode } = payloadBytes();
  const message = messageBytes(payload, opcode, frag);
  const burst = burstOf(message, windowSize);
  const opened = await openMany(conns, "/");
  const peers = opened.map(({ conn }) =>
    new Peer(conn, burst, message.length, windowSize)
  );
  const readSize = size >= 64 * 1024 ? 256 * 1024 : 64 * 1024;
  const onChunk = (peer: Peer, k: number) => {
    if (k > 0 && !stopped) peer.send(k);
  };
  peers.forEach((peer, i) => {
    peer.readLoop(opened[i].rest, readSize, onChunk);
    peer.send(windowSize);
  });
  const counter = () => {
    let count = 0, bytes = 0;
    for (const p of peers) {
      count += p.parser.messages;
      bytes += p.parser.bytes;
    }
    return { count, bytes };
  };
  const m = await measure(warmup, duration, counter);
  stopped = true;
  const blocked = peers.filter((p) => p.writing).length;
  return report({
    ...m,
    rate: m.count / m.seconds,
    mbps: m.bytes / m.seconds / 1e6,
    errors,
    connections: peers.length,
    note: m.maxStallMs >= 200
      ? `stalled ${m.maxStallMs} ms; at the end ${blocked} of ${peers.length} connections had a write blocked (server not reading)`
      : undefined,
  });
}

async function fanoutMode(): Promise<never> {
  const message = maskedFrame(true, OP_BINARY, binaryPayload(size));
  const burst = burstOf(message, windowSize);
  const opened = await openMany(conns, "/fanout");
  const peers = opened.map(({ conn }) =>
    new Peer(conn, burst, message.length, windowSize)
  );
  // Every connection registers before the first broadcast.
  await sleep(300);
  const driver = peers[peers.length - 1];
  const n = peers.length;
  let sent = 0;
  let delivered = 0;
  const refill = () => {
    if (stopped) return;
    // Broadcasts not yet seen by every connection (approximately).
    const outstanding = sent - Math.floor(delivered / n);
    if (outstanding < windowSize) {
      const k = windowSize - outstanding;
      sent += k;
      driver.send(k);
    }
  };
  const onChunk = (_peer: Peer, k: number) => {
    delivered += k;
    if (k > 0) refill();
  };
  peers.forEach((peer, i) => peer.readLoop(opened[i].rest, 64 * 1024, onChunk));
  refill();
  const counter = () => {
    let bytes = 0;
    for (const p of peers) bytes += p.parser.bytes;
    return { count: delivered, bytes };
  };
  const m = await measure(warmup, duration, counter);
  stopped = true;
  return report({
    ...m,
    rate: m.count / m.seconds,
    mbps: m.bytes / m.seconds / 1e6,
    errors,
    connections: peers.length,
    note: `broadcasts sent: ${sent}`,
  });
}

async function churnMode(): Promise<never> {
  const { payload, opcode } = payloadBytes();
  const message = maskedFrame(true, opcode, payload);
  const closeFrame = maskedFrame(true, OP_CLOSE, new Uint8Array([0x03, 0xe8]));
  let completed = 0;
  let timeouts = 0;
  // Time spent in: connect + upgrade, echo, close frames, server's FIN.
  const phases = [0, 0, 0, 0];

  const once = async () => {
    const buf = new Uint8Array(4096);
    const t0 = performance.now();
    const { conn, rest } = await open("/");
    const t1 = performance.now();
    // A connection that has not finished in 5 s is cut and counted.
    const watchdog = setTimeout(() => {
      timeouts++;
      try {
        conn.close();
      } catch { /* closed */ }
    }, 5000);
    try {
      const parser = new Parser();
      parser.feed(rest);
      await writeAll(conn, message);
      while (parser.messages < 1) {
        const n = await conn.read(buf);
        if (n === null) throw new Error("EOF before echo");
        parser.feed(buf.subarray(0, n));
      }
      const t2 = performance.now();
      await writeAll(conn, closeFrame);
      while (parser.closes < 1) {
        const n = await conn.read(buf);
        if (n === null) throw new Error("EOF before close frame");
        parser.feed(buf.subarray(0, n));
      }
      const t3 = performance.now();
      // The server closes TCP first (RFC 6455 7.1.1).
      while ((await conn.read(buf)) !== null) { /* drain */ }
      const t4 = performance.now();
      completed++;
      phases[0] += t1 - t0;
      phases[1] += t2 - t1;
      phases[2] += t3 - t2;
      phases[3] += t4 - t3;
    } finally {
      clearTimeout(watchdog);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };

  const worker = async () => {
    while (!stopped) {
      try {
        await once();
      } catch {
        if (!stopped) errors++;
        await sleep(10);
      }
    }
  };
  for (let i = 0; i < conns; i++) worker();
  const m = await measure(warmup, duration, () => ({
    count: completed,
    bytes: completed * size,
  }));
  stopped = true;
  return report({
    ...m,
    rate: m.count / m.seconds,
    mbps: m.bytes / m.seconds / 1e6,
    errors,
    connections: conns,
    note: `mean ms per connection: upgrade ${
      (phases[0] / completed).toFixed(2)
    }, echo ${(phases[1] / completed).toFixed(2)}, close frames ${
      (phases[2] / completed).toFixed(2)
    }, FIN ${(phases[3] / completed).toFixed(2)}${
      timeouts > 0 ? `; ${timeouts} close timeouts` : ""
    }`,
  });
}

try {
  if (mode === "echo") await echoMode();
  else if (mode === "fanout") await fanoutMode();
  else if (mode === "churn") await churnMode();
  else throw new TypeError(`unknown --mode ${mode}`);
} catch (error) {
  console.error(`load: ${error instanceof Error ? error.message : error}`);
  Deno.exit(1);
}

/**
 * Generators, mutators and oracles shared by the property tests
 * (`tests/fuzz_test.ts`, seeded and bounded to seconds) and the long fuzz
 * run (`fuzz/run.ts`, minutes).
 *
 * Everything here is pure and deterministic for a given seed: the frame
 * stream generator knows which messages its bytes must decode to, and
 * {@linkcode driveProtocol} feeds bytes to a {@linkcode Protocol} the way
 * `Socket`'s read loop does (a reused read buffer, and reads straight into
 * a big payload through `directTarget()`), recording what comes out.
 *
 * @module
 */

import { joinBytes } from "../src/buffers.ts";
import { decodeClosePayload, isValidCloseCode } from "../src/close.ts";
import {
  encodeFrame,
  OPCODE_BINARY,
  OPCODE_CLOSE,
  OPCODE_CONTINUATION,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
} from "../src/frame.ts";
import { type Message, Protocol } from "../src/protocol.ts";

const encoder = new TextEncoder();

// -- Seeded randomness --

/** A seeded PRNG (mulberry32): the same seed gives the same sequence. */
export class Random {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** `true` with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }

  /**
   * A payload size up to `max`, biased towards the edges that matter to
   * the codec: 0, the 125/126/127 and 65535/65536 length-class borders.
   */
  size(max: number): number {
    const edges = [0, 1, 125, 126, 127, 65535, 65536, 65537].filter((n) =>
      n <= max
    );
    const roll = this.next();
    if (roll < 0.25) return this.pick(edges);
    if (roll < 0.7) return this.int(Math.min(max, 200) + 1);
    return this.int(max + 1);
  }
}

// -- Valid frame streams --

/** Frames of a valid stream and the messages they must decode to. */
export interface ValidStream {
  /** The frames, concatenated. */
  bytes: Uint8Array;
  /** What `deliver` must receive, in order, the close message included. */
  messages: Message[];
  /** The payloads the protocol must answer with a pong, in order. */
  pongs: Uint8Array[];
  /** Where each frame starts in `bytes` (for mutators). */
  frameStarts: number[];
}

/** Options of {@linkcode validStream}. */
export interface ValidStreamOptions {
  /** Mask every frame (a client's frames, as a server receives them). */
  masked: boolean;
  /** At most this many messages before the close. @default {12} */
  maxMessages?: number;
  /** Largest data message, in bytes. @default {70000} */
  maxSize?: number;
  /** Probability that the stream ends with a close frame. @default {0.7} */
  closeChance?: number;
}

const TEXT_POOLS: [number, number][] = [
  [0x20, 0x7e], // ASCII
  [0x80, 0x7ff], // 2 bytes
  [0x800, 0xd7ff], // 3 bytes, below the surrogates
  [0xe000, 0xffff], // 3 bytes, above them (U+FEFF, U+FFFF included)
  [0x10000, 0x10ffff], // 4 bytes
];

/** Random text of roughly `bytes` UTF-8 bytes (valid: no lone surrogates). */
export function randomText(rng: Random, bytes: number): string {
  let text = "";
  let size = 0;
  while (size < bytes) {
    const [lo, hi] = rng.pick(TEXT_POOLS);
    const cp = rng.range(lo, hi);
    text += String.fromCodePoint(cp);
    size += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return text;
}

/** Close codes that may appear on the wire, weighted to the named ones. */
function randomCloseCode(rng: Random): number {
  if (rng.chance(0.5)) {
    return rng.pick([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011]);
  }
  if (rng.chance(0.2)) return rng.range(1012, 1014);
  return rng.range(3000, 4999);
}

/** A random close reason of at most `limit` UTF-8 bytes. */
function randomReason(rng: Random, limit = 123): string {
  if (rng.chance(0.3)) return "";
  let reason = randomText(rng, rng.int(limit + 1));
  while (encoder.encode(reason).length > limit) reason = reason.slice(0, -1);
  // slice() may have cut a surrogate pair: drop a trailing lone half.
  return reason.replace(/[\ud800-\udbff]$/, "");
}

/** Cuts `bytes` into `parts` pieces at random positions (some may be empty). */
function cut(rng: Random, bytes: Uint8Array, parts: number): Uint8Array[] {
  const points = [0, bytes.length];
  for (let i = 1; i < parts; i++) points.push(rng.int(bytes.length + 1));
  points.sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    out.push(bytes.subarray(points[i], points[i + 1]));
  }
  return out;
}

/**
 * A random valid frame stream: text and binary messages, some fragmented
 * (text cut inside characters too) with pings and pongs between the
 * fragments, optionally ending with a close frame.
 */
export function validStream(
  rng: Random,
  options: ValidStreamOptions,
): ValidStream {
  const {
    masked,
    maxMessages = 12,
    maxSize = 70_000,
    closeChance = 0.7,
  } = options;
  const frames: Uint8Array[] = [];
  const frameStarts: number[] = [];
  const messages: Message[] = [];
  const pongs: Uint8Array[] = [];
  let offset = 0;
  const frame = (
    opcode: number,
    payload: Uint8Array,
    fin = true,
  ) => {
    const maskingKey = masked ? rng.bytes(4) : undefined;
    const bytes = encodeFrame(opcode, payload, { fin, maskingKey });
    frameStarts.push(offset);
    frames.push(bytes);
    offset += bytes.length;
  };
  const control = () => {
    const data = rng.bytes(rng.pick([0, 1, rng.int(126), 125]));
    if (rng.chance(0.5)) {
      frame(OPCODE_PING, data);
      messages.push({ type: "ping", data });
      pongs.push(data);
    } else {
      frame(OPCODE_PONG, data);
      messages.push({ type: "pong", data });
    }
  };

  const count = rng.int(maxMessages + 1);
  for (let i = 0; i < count; i++) {
    if (rng.chance(0.25)) {
      control();
      continue;
    }
    const isText = rng.chance(0.5);
    let payload: Uint8Array;
    let message: Message;
    if (isText) {
      const data = randomText(rng, rng.size(maxSize));
      payload = encoder.encode(data);
      message = { type: "text", data };
    } else {
      payload = rng.bytes(rng.size(maxSize));
      message = { type: "binary", data: payload };
    }
    const opcode = isText ? OPCODE_TEXT : OPCODE_BINARY;
    if (rng.chance(0.6)) {
      frame(opcode, payload);
    } else {
      const pieces = cut(rng, payload, rng.range(2, 6));
      pieces.forEach((piece, index) => {
        if (index > 0 && rng.chance(0.3)) control();
        frame(
          index === 0 ? opcode : OPCODE_CONTINUATION,
          piece,
          index === pieces.length - 1,
        );
      });
    }
    messages.push(message);
  }
  if (rng.chance(closeChance)) {
    if (rng.chance(0.1)) {
      frame(OPCODE_CLOSE, new Uint8Array(0));
      messages.push({ type: "close", code: 1005, reason: "" });
    } else {
      const code = randomCloseCode(rng);
      const reason = randomReason(rng);
      const reasonBytes = encoder.encode(reason);
      const payload = new Uint8Array(2 + reasonBytes.length);
      payload[0] = code >>> 8;
      payload[1] = code & 0xff;
      payload.set(reasonBytes, 2);
      frame(OPCODE_CLOSE, payload);
      messages.push({ type: "close", code, reason });
    }
  }
  const bytes = new Uint8Array(offset);
  let at = 0;
  for (const f of frames) {
    bytes.set(f, at);
    at += f.length;
  }
  return { bytes, messages, pongs, frameStarts };
}

// -- Mutations --

const INTERESTING_BYTES = [
  0x00,
  0x01,
  0x7d,
  0x7e,
  0x7f,
  0x80,
  0x81,
  0x88,
  0x89,
  0x8a,
  0xfe,
  0xff,
  0xc0,
  0xed,
  0xf4,
  0xf5,
];

/**
 * One random mutation of `input` (which is not modified): bit flips,
 * interesting bytes (often at a frame header), inserts, deletes,
 * duplicated ranges, truncation, random tails.
 */
export function mutate(
  rng: Random,
  input: Uint8Array,
  frameStarts: number[] = [],
): Uint8Array {
  const bytes = input.slice();
  const at = (n = bytes.length) => rng.int(Math.max(1, n));
  const header = () =>
    frameStarts.length > 0 && rng.chance(0.6)
      ? Math.min(
        rng.pick(frameStarts) + rng.int(2),
        Math.max(0, bytes.length - 1),
      )
      : at();
  switch (rng.int(10)) {
    case 0: { // flip a bit
      if (bytes.length === 0) return rng.bytes(1);
      bytes[header()] ^= 1 << rng.int(8);
      return bytes;
    }
    case 1: { // an interesting byte
      if (bytes.length === 0) return rng.bytes(1);
      bytes[header()] = rng.pick(INTERESTING_BYTES);
      return bytes;
    }
    case 2: { // a random byte
      if (bytes.length === 0) return rng.bytes(1);
      bytes[at()] = rng.int(256);
      return bytes;
    }
    case 3: { // insert random bytes
      const pos = rng.int(bytes.length + 1);
      const extra = rng.bytes(rng.range(1, 16));
      return concatBytes(bytes.subarray(0, pos), extra, bytes.subarray(pos));
    }
    case 4: { // delete a range
      const pos = at();
      const end = Math.min(bytes.length, pos + rng.range(1, 16));
      return concatBytes(bytes.subarray(0, pos), bytes.subarray(end));
    }
    case 5: { // duplicate a range
      const pos = at();
      const end = Math.min(bytes.length, pos + rng.range(1, 64));
      return concatBytes(
        bytes.subarray(0, end),
        bytes.subarray(pos, end),
        bytes.subarray(end),
      );
    }
    case 6: // truncate
      return bytes.subarray(0, at(bytes.length + 1));
    case 7: { // random tail after a valid prefix
      const pos = rng.int(bytes.length + 1);
      return concatBytes(bytes.subarray(0, pos), rng.bytes(rng.range(1, 32)));
    }
    case 8: { // a frame header declaring a big 64-bit length
      if (frameStarts.length === 0 || bytes.length < 2) return rng.bytes(10);
      const start = rng.pick(frameStarts);
      if (start + 1 >= bytes.length) return bytes;
      const length = rng.bytes(8);
      // Mostly with the top bit clear, as RFC 6455 5.2 requires.
      if (rng.chance(0.8)) length[0] &= 0x7f;
      if (rng.chance(0.5)) length.fill(0, 0, rng.int(8));
      bytes[start + 1] = (bytes[start + 1] & 0x80) | 127;
      return concatBytes(
        bytes.subarray(0, start + 2),
        length,
        bytes.subarray(start + 2),
      );
    }
    default: { // several bit flips
      if (bytes.length === 0) return rng.bytes(1);
      for (let i = rng.range(2, 8); i > 0; i--) bytes[at()] ^= 1 << rng.int(8);
      return bytes;
    }
  }
}

/** Concatenates byte arrays. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  return joinBytes(parts);
}

// -- Driving a Protocol --

/** A control frame the protocol asked to send. */
export interface SentControl {
  opcode: number;
  payload: Uint8Array;
}

/** What a {@linkcode Protocol} did with an input. */
export interface Outcome {
  /** Messages delivered, in order. */
  messages: Message[];
  /** The `size` passed with each message. */
  sizes: number[];
  /** Control frames it asked to send (pongs, the close frame). */
  controls: SentControl[];
  /** `closeTransport` calls: `false` after a clean close, `true` after failing. */
  transport: boolean[];
  /** Bytes consumed before the protocol stopped reading (or all of them). */
  consumed: number;
  /** Anything thrown out of the protocol (must never happen). */
  thrown?: unknown;
}

/** How {@linkcode driveProtocol} chunks the input. */
export interface DriveOptions {
  /** Server side (frames must be masked) when `false`. */
  client: boolean;
  maxMessageSize?: number;
  maxFrameSize?: number;
  /**
   * Largest read, in bytes; each read takes 1 to this many (random), or
   * exactly this many without `rng`.
   */
  readSize: number;
  /** Chooses read sizes; without it every read is `readSize`. */
  rng?: Random;
  /**
   * Payloads spanning reads with at least this much left are read into
   * `directTarget()` as Socket does; 0 turns that path off.
   */
  directMinimum?: number;
  /** Overwrite the read buffer after each `receive` (catches aliasing). */
  scribble?: boolean;
}

/**
 * Feeds `input` to a fresh {@linkcode Protocol} like `Socket`'s read loop:
 * reads of random size into one reused buffer, or straight into the
 * payload buffer offered by `directTarget()`. Stops once the protocol has
 * received or failed a close, as the socket stops reading.
 */
export function driveProtocol(
  input: Uint8Array,
  options: DriveOptions,
): Outcome {
  const outcome: Outcome = {
    messages: [],
    sizes: [],
    controls: [],
    transport: [],
    consumed: 0,
  };
  const protocol = new Protocol({
    deliver(message, size) {
      outcome.messages.push(message);
      outcome.sizes.push(size);
    },
    sendControl(opcode, payload) {
      // The socket copies it into its write buffer at once; so do we.
      outcome.controls.push({ opcode, payload: payload.slice() });
    },
    closeTransport(failed) {
      outcome.transport.push(failed);
    },
  }, {
    client: options.client,
    maxMessageSize: options.maxMessageSize ?? 16 * 1024 * 1024,
    maxFrameSize: options.maxFrameSize ?? options.maxMessageSize ??
      16 * 1024 * 1024,
  });
  const { readSize, rng, directMinimum = 0, scribble = false } = options;
  const buffer = new Uint8Array(readSize);
  let pos = 0;
  try {
    while (pos < input.length && !protocol.closeReceived) {
      const want = rng ? 1 + rng.int(readSize) : readSize;
      const direct = directMinimum > 0
        ? protocol.directTarget(directMinimum)
        : null;
      if (direct !== null) {
        const n = Math.min(want, direct.length, input.length - pos);
        direct.set(input.subarray(pos, pos + n));
        pos += n;
        protocol.advance(n);
      } else {
        const n = Math.min(want, input.length - pos);
        buffer.set(input.subarray(pos, pos + n));
        pos += n;
        protocol.receive(buffer.subarray(0, n));
        if (scribble) buffer.fill(0xee, 0, n);
      }
    }
  } catch (error) {
    outcome.thrown = error;
  }
  outcome.consumed = pos;
  return outcome;
}

// -- Oracles --

/** Close codes a peer's bytes may make this side fail with. */
export const FAILURE_CODES: readonly number[] = [1002, 1007, 1009];

/** The close code of a sent close payload (1005 when empty). */
function sentCloseCode(payload: Uint8Array): number {
  return payload.length >= 2 ? (payload[0] << 8) | payload[1] : 1005;
}

/**
 * Checks what must hold for any input, valid or not. Returns what is
 * wrong, or `null`.
 *
 * - nothing is thrown out of the protocol;
 * - at most one close message, and nothing after it;
 * - a failure closes with 1002, 1007 or 1009: the close frame sent, the
 *   close message delivered and the one `closeTransport(true)` agree;
 * - a clean close (the peer's close frame) delivers a code that may be
 *   on the wire (or 1005 for none), is answered with the same code, and
 *   ends with `closeTransport(false)`;
 * - no close at all: nothing sent but pongs, no `closeTransport`;
 * - every ping is answered with a pong carrying its data, in order;
 * - data messages stay within `maxMessageSize`, control data within 125
 *   bytes, and sent close payloads within 125 bytes.
 */
export function checkInvariants(
  outcome: Outcome,
  maxMessageSize = 16 * 1024 * 1024,
): string | null {
  if (outcome.thrown !== undefined) {
    return `threw ${describe(outcome.thrown)}`;
  }
  const { messages, controls, transport } = outcome;
  const closeIndex = messages.findIndex((m) => m.type === "close");
  if (closeIndex !== -1 && closeIndex !== messages.length - 1) {
    return `delivered ${
      messages.length - 1 - closeIndex
    } message(s) after the close message`;
  }
  const closeControls = controls.filter((c) => c.opcode === OPCODE_CLOSE);
  if (closeControls.length > 1) return "sent more than one close frame";
  for (const c of controls) {
    if (c.payload.length > 125) {
      return `sent a control frame of ${c.payload.length} bytes`;
    }
  }
  for (const m of messages) {
    if (m.type === "text" && typeof m.data !== "string") {
      return "a text message without a string";
    }
    if (m.type === "binary" && !(m.data instanceof Uint8Array)) {
      return "a binary message without bytes";
    }
    if (
      (m.type === "text" || m.type === "binary") &&
      (m.type === "text" ? encoder.encode(m.data).length : m.data.length) >
        maxMessageSize
    ) return "a data message over maxMessageSize";
    if ((m.type === "ping" || m.type === "pong") && m.data.length > 125) {
      return `a ${m.type} of ${m.data.length} bytes`;
    }
  }
  // Pongs answer the pings delivered before our close frame went out.
  const pings = messages.filter((m) => m.type === "ping");
  const pongs = controls.filter((c) => c.opcode === OPCODE_PONG);
  if (pongs.length !== pings.length) {
    return `${pings.length} ping(s) but ${pongs.length} pong(s)`;
  }
  for (let i = 0; i < pongs.length; i++) {
    if (
      !equalBytes(pongs[i].payload, (pings[i] as { data: Uint8Array }).data)
    ) {
      return `pong ${i} does not echo its ping`;
    }
  }
  if (
    controls.some((c) => c.opcode !== OPCODE_PONG && c.opcode !== OPCODE_CLOSE)
  ) {
    return "sent a control frame other than pong or close";
  }
  if (closeIndex === -1) {
    if (closeControls.length > 0) return "sent a close frame without closing";
    if (transport.length > 0) {
      return "closed the transport without a close message";
    }
    return null;
  }
  const close = messages[closeIndex] as { code: number; reason: string };
  if (transport.length !== 1) {
    return `closeTransport called ${transport.length} times`;
  }
  if (closeControls.length !== 1) return "closed without sending a close frame";
  const sentCode = sentCloseCode(closeControls[0].payload);
  const sent = decodeClosePayload(closeControls[0].payload);
  if (!sent.ok) return `sent an invalid close payload (${sent.message})`;
  if (transport[0]) {
    if (!FAILURE_CODES.includes(close.code)) {
      return `failed with close code ${close.code} (${close.reason})`;
    }
    if (sentCode !== close.code) {
      return `failed with ${close.code} but sent ${sentCode}`;
    }
  } else {
    if (close.code !== 1005 && !isValidCloseCode(close.code)) {
      return `clean close with code ${close.code}`;
    }
    if (sentCode !== close.code) {
      return `answered close ${close.code} with ${sentCode}`;
    }
  }
  return null;
}

/** Whether two outcomes delivered, sent and closed the same. */
export function sameOutcome(a: Outcome, b: Outcome): string | null {
  if (a.messages.length !== b.messages.length) {
    return `${a.messages.length} vs ${b.messages.length} messages`;
  }
  for (let i = 0; i < a.messages.length; i++) {
    if (!sameMessage(a.messages[i], b.messages[i])) {
      return `message ${i} differs: ${brief(a.messages[i])} vs ${
        brief(b.messages[i])
      }`;
    }
  }
  if (a.controls.length !== b.controls.length) {
    return `${a.controls.length} vs ${b.controls.length} control frames sent`;
  }
  for (let i = 0; i < a.controls.length; i++) {
    if (
      a.controls[i].opcode !== b.controls[i].opcode ||
      !equalBytes(a.controls[i].payload, b.controls[i].payload)
    ) return `control frame ${i} differs`;
  }
  if (a.transport.join() !== b.transport.join()) {
    return `closeTransport ${a.transport.join()} vs ${b.transport.join()}`;
  }
  return null;
}

/** Whether two messages are equal, bytes compared by value. */
export function sameMessage(a: Message, b: Message): boolean {
  if (a.type !== b.type) return false;
  if (a.type === "close" && b.type === "close") {
    return a.code === b.code && a.reason === b.reason;
  }
  if (a.type === "text" && b.type === "text") return a.data === b.data;
  return equalBytes(
    (a as { data: Uint8Array }).data,
    (b as { data: Uint8Array }).data,
  );
}

/** Whether two byte arrays hold the same bytes. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A short description of a message, for failure reports. */
export function brief(m: Message | undefined): string {
  if (m === undefined) return "nothing";
  if (m.type === "close") return `close ${m.code} ${JSON.stringify(m.reason)}`;
  if (m.type === "text") return `text of ${m.data.length} chars`;
  return `${m.type} of ${m.data.length} bytes`;
}

/** A one-line description of a thrown value. */
export function describe(error: unknown): string {
  return error instanceof Error
    ? `${error.name}: ${error.message}`
    : String(error);
}

/** Hex of the first `limit` bytes, for reproducing a failure. */
export function hex(bytes: Uint8Array, limit = 64): string {
  const shown = Array.from(
    bytes.subarray(0, limit),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  return bytes.length > limit ? `${shown}... (${bytes.length} bytes)` : shown;
}

// -- HTTP upgrade requests --

/**
 * A valid upgrade request head, with some harmless variety. Header values
 * are Latin-1 text unless `utf8Values`, which adds a value of any Unicode
 * text (sent as its UTF-8 bytes: obs-text, RFC 9110 5.5).
 */
export function validRequest(rng: Random, utf8Values = false): string {
  const fields: [string, string][] = [
    ["Host", rng.pick(["127.0.0.1:8080", "example.com", "[::1]:80", "x"])],
    [
      rng.pick(["Upgrade", "upgrade", "UPGRADE"]),
      rng.pick(["websocket", "WebSocket"]),
    ],
    [
      "Connection",
      rng.pick(["Upgrade", "keep-alive, Upgrade", "upgrade", "Upgrade,foo"]),
    ],
    ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="],
    ["Sec-WebSocket-Version", "13"],
  ];
  if (rng.chance(0.4)) {
    fields.push(["Sec-WebSocket-Protocol", rng.pick(["chat", "a, b", "v1.x"])]);
  }
  if (rng.chance(0.3)) {
    fields.push([
      "Sec-WebSocket-Extensions",
      "permessage-deflate; client_max_window_bits",
    ]);
  }
  if (rng.chance(0.4)) fields.push(["Origin", "http://example.com"]);
  if (utf8Values) fields.push(["X-Extra", randomText(rng, rng.range(1, 40))]);
  else if (rng.chance(0.3)) fields.push(["X-Extra", latin1Text(rng, 40)]);
  // Shuffle: header order must not matter.
  for (let i = fields.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [fields[i], fields[j]] = [fields[j], fields[i]];
  }
  const target = rng.pick(["/", "/chat?room=1", "/a/b/../c", "*", "/%zz"]);
  let head = `GET ${target} HTTP/1.1\r\n`;
  for (const [name, value] of fields) {
    head += `${name}:${rng.pick([" ", "", "  ", "\t"])}${value}\r\n`;
  }
  return head + "\r\n";
}

/** Random visible Latin-1 text (no leading or trailing space). */
function latin1Text(rng: Random, max: number): string {
  let text = "";
  for (let n = rng.range(1, max); n > 0; n--) {
    text += String.fromCharCode(
      rng.chance(0.7) ? rng.range(0x21, 0x7e) : rng.range(0xa1, 0xff),
    );
  }
  return text;
}

const HEAD_TOKENS = [
  "\r\n",
  "\n",
  "\r",
  ":",
  " ",
  "\t",
  "\x00",
  "\x7f",
  "\xff",
  ",",
  "GET",
  "HTTP/1.1",
  "HTTP/1.0",
  "HTTP/2.0",
  "Upgrade",
  "websocket",
  "Connection",
  "Sec-WebSocket-Key",
  "Sec-WebSocket-Version",
  "13",
  "Host",
  "\r\n ",
  "\r\n\t",
  "=",
  "==",
  "%",
  "é",
  "😀",
];

/**
 * One random mutation of a request head (text): a token inserted or
 * replaced, a line dropped or duplicated, a case change, a long value, or
 * a byte-level mutation of its Latin-1 bytes.
 */
export function mutateHead(rng: Random, head: string): string {
  // Past 64 KiB, a head only tests the size limit: keep mutants small.
  if (head.length > 64 * 1024) head = head.slice(0, rng.int(64 * 1024));
  const pos = rng.int(head.length + 1);
  switch (rng.int(8)) {
    case 0:
      return head.slice(0, pos) + rng.pick(HEAD_TOKENS) + head.slice(pos);
    case 1: {
      const end = Math.min(head.length, pos + rng.range(1, 8));
      return head.slice(0, pos) + rng.pick(HEAD_TOKENS) + head.slice(end);
    }
    case 2: {
      const lines = head.split("\r\n");
      lines.splice(rng.int(lines.length), 1);
      return lines.join("\r\n");
    }
    case 3: {
      const lines = head.split("\r\n");
      const i = rng.int(lines.length);
      lines.splice(i, 0, lines[i]);
      return lines.join("\r\n");
    }
    case 4:
      return rng.chance(0.5) ? head.toLowerCase() : head.toUpperCase();
    case 5:
      return head.slice(0, pos) + "a".repeat(rng.pick([100, 1000, 20000])) +
        head.slice(pos);
    case 6:
      return head.slice(0, pos);
    default: {
      const bytes = mutate(rng, latin1Bytes(head));
      return latin1String(bytes);
    }
  }
}

/** Bytes as a string of the same code units (0-255), any length. */
export function latin1String(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return text;
}

/** The Latin-1 bytes of a string (code points above 0xFF as UTF-8). */
export function latin1Bytes(text: string): Uint8Array {
  // Non-Latin-1 characters are sent as their UTF-8 bytes, as a client would.
  const out: number[] = [];
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp <= 0xff) out.push(cp);
    else out.push(...encoder.encode(ch));
  }
  return new Uint8Array(out);
}

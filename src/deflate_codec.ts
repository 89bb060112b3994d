/**
 * The permessage-deflate codec of one connection (RFC 7692 7.2):
 * {@linkcode PerMessageDeflate} compresses whole messages and inflates
 * frames as they come, stopping as soon as a message passes
 * `maxMessageSize` (so a small "zip bomb" never inflates in full).
 * Inflating is synchronous, so a compressed message keeps its place among
 * the control frames around it. The zlib streams come from
 * `zlib_stream.ts`; what was negotiated, from `deflate.ts`.
 *
 * @module
 */

import { CODEC_SCRATCH_SIZE, codecScratch, joinBytes } from "./buffers.ts";
import { INVALID_FRAME_PAYLOAD_DATA, MESSAGE_TOO_BIG } from "./close.ts";
import {
  checkCompressionOptions,
  type CompressionConfig,
  type DeflateParams,
} from "./deflate.ts";
import { FrameError } from "./frame.ts";
import {
  acquireStream,
  releaseStream,
  SYNC_FLUSH_END as TAIL,
  type ZlibStream,
  zlibUsable,
} from "./zlib_stream.ts";

/** RFC 7692 7.2.3.6: an empty message, compressed. */
const EMPTY_BLOCK = new Uint8Array([0x00]);

/**
 * Checks the `compression` option and applies its defaults (see
 * {@linkcode checkCompressionOptions}), as this runtime can honour it.
 *
 * @returns the settings, or `null` when compression is off (`false`,
 *   `undefined`, or a runtime whose `node:zlib` cannot be driven
 *   synchronously)
 * @throws {TypeError} a field is invalid (the message names it)
 */
export function compressionConfig(value: unknown): CompressionConfig | null {
  const config = checkCompressionOptions(value);
  return config !== null && zlibUsable() ? config : null;
}

/** What {@linkcode PerMessageDeflate} needs to know about its connection. */
export interface PerMessageDeflateInit {
  /** Which side this is. */
  client: boolean;
  /** What the handshake agreed on. */
  params: DeflateParams;
  /** This side's settings (threshold, level). */
  config: CompressionConfig;
  /** Largest inflated message, in bytes. */
  maxMessageSize: number;
}

/**
 * The compressor and decompressor of one connection (RFC 7692 7.2). zlib
 * state is made on first use, and shared between connections for a
 * direction without context takeover. Synchronous; {@linkcode close} when
 * the connection is over.
 */
export class PerMessageDeflate {
  /** Data messages shorter than this are sent uncompressed. */
  readonly threshold: number;

  #level: number;
  #deflateBits: number;
  #deflateReset: boolean;
  #inflateBits: number;
  #inflateReset: boolean;
  #maxMessageSize: number;
  #deflater: ZlibStream | null = null;
  #inflater: ZlibStream | null = null;
  // The message being inflated: its inflated size, and how many of its
  // compressed bytes zlib took.
  #messageSize = 0;
  #messageInput = 0;
  // The bound on the message being inflated.
  #limit = 0;
  #closed = false;
  // RFC 7692 7.2.3.4: a peer may end its DEFLATE stream with a final block
  // (BFINAL) at the end of a message; zlib then stops, and the next bytes
  // start a new stream that, with context takeover, still refers to the
  // old window. Raw inflate here cannot keep a window across streams nor
  // take one as a dictionary (Deno's node:zlib ignores `dictionary` for
  // raw streams), so the codec keeps the last window of output itself and
  // replays it into the new stream as stored blocks. It records output
  // during the first message of a stream, and from then on only for a
  // peer that has ended a stream: a peer that never does costs nothing
  // after its first message.
  #history: Uint8Array | null = null;
  #historyAt = 0;
  #historyLength = 0;
  // Whether #history holds the current stream's whole window.
  #historyValid = true;
  #streamMessages = 0;
  #peerEndsStreams = false;
  #messageRestarts = 0;

  /** Sets up the codec; zlib state is made on first use. */
  constructor(init: PerMessageDeflateInit) {
    const { client, params, config } = init;
    this.threshold = config.threshold;
    this.#level = config.level;
    // zlib cannot make a raw stream with an 8-bit window and uses 9 for
    // it. Its longest match distance with 9 bits is 250 bytes (the window
    // less MIN_LOOKAHEAD), inside what a peer's 256-byte window holds.
    const bits = (value: number | true | undefined, own?: number) =>
      Math.max(
        9,
        Math.min(typeof value === "number" ? value : 15, own ?? 15),
      );
    if (client) {
      this.#deflateBits = bits(
        params.clientMaxWindowBits,
        config.clientMaxWindowBits,
      );
      this.#deflateReset = params.clientNoContextTakeover ||
        config.clientNoContextTakeover;
      this.#inflateBits = bits(params.serverMaxWindowBits);
      this.#inflateReset = params.serverNoContextTakeover;
    } else {
      this.#deflateBits = bits(
        params.serverMaxWindowBits,
        config.serverMaxWindowBits,
      );
      this.#deflateReset = params.serverNoContextTakeover;
      this.#inflateBits = bits(params.clientMaxWindowBits);
      this.#inflateReset = params.clientNoContextTakeover;
    }
    this.#maxMessageSize = init.maxMessageSize;
  }

  /**
   * Compresses one whole message (RFC 7692 7.2.1).
   *
   * @returns the payload to send with RSV1 set, or `null` to send the
   *   message uncompressed (it did not shrink, and without context
   *   takeover the peer's state does not depend on it)
   */
  compress(payload: Uint8Array): Uint8Array | null {
    if (this.#closed) throw new Error("Compressor closed");
    const stream = this.#deflater ??
      acquireStream(true, this.#deflateBits, this.#level);
    this.#deflater = stream;
    const parts: Uint8Array[] = [];
    let total: number;
    try {
      total = deflateInto(stream, payload, parts);
    } finally {
      if (this.#deflateReset) {
        releaseStream(stream);
        this.#deflater = null;
      }
    }
    // RFC 7692 7.2.1: remove the 0x00 0x00 0xff 0xff that ends the flush.
    const length = total - 4;
    if (length <= 0) return EMPTY_BLOCK;
    if (this.#deflateReset && length >= payload.length) return null;
    if (parts.length === 1) return parts[0].subarray(0, length);
    return joinBytes(parts, total).subarray(0, length);
  }

  /**
   * Compresses one piece of a message sent in pieces (RFC 7692 7.2.1 over
   * the whole message): each piece is flushed, so it can go out at once.
   * The 0x00 0x00 0xff 0xff that ends a flush is held back and put at the
   * start of the next piece, so the message's last frame can leave it out
   * as 7.2.1 asks: end the message with {@linkcode compressEnd}.
   *
   * @param payload the piece
   * @param first whether it is the message's first piece
   * @returns the bytes to send for this piece
   */
  compressPiece(payload: Uint8Array, first: boolean): Uint8Array {
    if (this.#closed) throw new Error("Compressor closed");
    const stream = this.#deflater ??
      acquireStream(true, this.#deflateBits, this.#level);
    this.#deflater = stream;
    const parts: Uint8Array[] = [];
    const total = deflateInto(stream, payload, parts);
    const prefix = first ? 0 : TAIL.length;
    const out = new Uint8Array(prefix + total - TAIL.length);
    if (!first) out.set(TAIL);
    let at = prefix;
    for (const part of parts) {
      const room = out.length - at;
      if (room <= 0) break;
      out.set(room < part.length ? part.subarray(0, room) : part, at);
      at += part.length;
    }
    return out;
  }

  /**
   * Ends a message sent with {@linkcode compressPiece}.
   *
   * @param empty no piece was sent
   * @returns the payload of the message's last frame: empty (the held-back
   *   0x00 0x00 0xff 0xff is left out), or RFC 7692 7.2.3.6's empty
   *   message when there was no piece
   */
  compressEnd(empty: boolean): Uint8Array {
    if (this.#deflateReset && this.#deflater !== null) {
      releaseStream(this.#deflater);
      this.#deflater = null;
    }
    return empty ? EMPTY_BLOCK : new Uint8Array(0);
  }

  /**
   * Inflates one frame of a compressed message, handing the output to
   * `sink` in pieces (views valid during the call only) as it comes. On
   * the last frame, appends RFC 7692 7.2.2's 0x00 0x00 0xff 0xff.
   *
   * @param payload the frame's payload
   * @param fin whether it is the message's last frame
   * @param sink takes each piece; returning `false` stops inflating
   * @param maxSize the bound on the inflated message (a streamed message
   *   has its own); `maxMessageSize` when absent
   * @throws {FrameError} 1009 as soon as the message passes
   *   `maxSize`; 1007 for data zlib cannot inflate
   */
  inflate(
    payload: Uint8Array,
    fin: boolean,
    sink: (chunk: Uint8Array) => boolean,
    maxSize: number = this.#maxMessageSize,
  ): void {
    if (this.#closed) throw new Error("Decompressor closed");
    this.#limit = maxSize;
    try {
      if (payload.length > 0 && !this.#run(payload, sink, false)) return;
      // An empty compressed message is the single byte 0x00 (RFC 7692
      // 7.2.3.6); a peer that sends no byte at all means the same, and the
      // tail alone would leave zlib inside a block.
      if (fin && this.#messageInput > 0) this.#run(TAIL, sink, true);
    } catch (error) {
      this.#endMessage();
      if (error instanceof FrameError) throw error;
      throw new FrameError(
        INVALID_FRAME_PAYLOAD_DATA,
        `Invalid compressed data: ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
    if (fin) this.#endMessage();
  }

  /** Frees the zlib state. The codec must not be used afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#deflater?.close();
    this.#inflater?.close();
    this.#deflater = this.#inflater = null;
  }

  #endMessage(): void {
    this.#messageSize = 0;
    this.#messageInput = 0;
    this.#messageRestarts = 0;
    this.#streamMessages++;
    if (!this.#peerEndsStreams && this.#history !== null) {
      // Past its first message without a final block: stop recording.
      this.#history = null;
      this.#historyValid = false;
    }
    if (this.#inflateReset && this.#inflater !== null) {
      releaseStream(this.#inflater);
      this.#inflater = null;
    }
  }

  /** @returns `false` when `sink` asked to stop */
  #run(
    input: Uint8Array,
    sink: (chunk: Uint8Array) => boolean,
    tail: boolean,
  ): boolean {
    const stream = this.#inflater ??= acquireStream(
      false,
      this.#inflateBits,
      0,
    );
    const buffer = codecScratch();
    const record = !this.#inflateReset &&
      (this.#streamMessages === 0 || this.#peerEndsStreams);
    let offset = 0;
    let remaining = input.length;
    for (;;) {
      // Ask for one byte over the limit at most: the message fails as soon
      // as that byte exists, and no more is inflated.
      const room = Math.min(
        CODEC_SCRATCH_SIZE,
        this.#limit - this.#messageSize + 1,
      );
      const n = stream.write(input, offset, remaining, buffer, room);
      const consumed = remaining - stream.availableIn;
      offset += consumed;
      remaining = stream.availableIn;
      this.#messageInput += consumed;
      if (n > 0) {
        this.#messageSize += n;
        if (this.#messageSize > this.#limit) {
          throw new FrameError(
            MESSAGE_TOO_BIG,
            `Message too big: limit is ${this.#limit} bytes, inflated to more`,
          );
        }
        if (record) this.#record(buffer.subarray(0, n));
        if (!sink(buffer.subarray(0, n))) return false;
      }
      if (n === room) continue;
      if (remaining === 0) return true;
      // Room left and input left: the peer ended the DEFLATE stream with a
      // final block (RFC 7692 7.2.3.4). What follows starts a new stream:
      // the empty stored block of the example's last byte and our tail, or
      // the next message. One per message: a peer cannot make us replay
      // the window for every few bytes it sends.
      if (this.#messageRestarts > 0) {
        throw new Error("more than one final block in a message");
      }
      this.#messageRestarts++;
      this.#restart(stream);
      // Only (part of) our 0x00 0x00 0xff 0xff is left: it would just
      // open an empty block of the new stream.
      if (tail) return true;
    }
  }

  /** Starts a new stream after a final block, with the window if kept. */
  #restart(stream: ZlibStream): void {
    stream.reset();
    this.#streamMessages = 0;
    if (this.#inflateReset) return;
    const window = this.#historyValid ? this.#window() : null;
    this.#peerEndsStreams = true;
    this.#historyValid = true;
    if (window === null) {
      // The window was not kept: the new stream starts empty, and a
      // reference into the old one fails as invalid data (1007), never as
      // wrong bytes.
      this.#history = null;
      this.#historyLength = this.#historyAt = 0;
      return;
    }
    if (window.length === 0) return;
    // A stored block (RFC 1951 3.2.4), not final, whose output (the old
    // window) is dropped: the new stream's window is the old one.
    const length = window.length;
    const block = new Uint8Array(5 + length);
    block[1] = length & 0xff;
    block[2] = length >>> 8;
    block[3] = ~length & 0xff;
    block[4] = (~length >>> 8) & 0xff;
    block.set(window, 5);
    const buffer = codecScratch();
    stream.write(block, 0, block.length, buffer, CODEC_SCRATCH_SIZE);
  }

  /** Keeps the last window of output (see #history). */
  #record(chunk: Uint8Array): void {
    const size = 1 << this.#inflateBits;
    const ring = this.#history ??= new Uint8Array(size);
    const length = chunk.length;
    if (length >= size) {
      ring.set(chunk.subarray(length - size));
      this.#historyAt = 0;
      this.#historyLength = size;
      return;
    }
    const at = this.#historyAt;
    const first = Math.min(length, size - at);
    ring.set(chunk.subarray(0, first), at);
    if (first < length) ring.set(chunk.subarray(first), 0);
    this.#historyAt = (at + length) % size;
    this.#historyLength = Math.min(size, this.#historyLength + length);
  }

  /** The kept window, oldest byte first. */
  #window(): Uint8Array {
    const ring = this.#history;
    if (ring === null) return new Uint8Array(0);
    if (this.#historyLength < ring.length) {
      return ring.slice(0, this.#historyLength);
    }
    const at = this.#historyAt;
    const window = new Uint8Array(ring.length);
    window.set(ring.subarray(at));
    window.set(ring.subarray(0, at), ring.length - at);
    return window;
  }
}

/**
 * Runs `payload` through the deflate `stream` (which flushes), pushing the
 * output onto `parts` in copies of the codec's scratch buffer.
 *
 * @returns the bytes of output
 */
function deflateInto(
  stream: ZlibStream,
  payload: Uint8Array,
  parts: Uint8Array[],
): number {
  const buffer = codecScratch();
  let total = 0;
  let offset = 0;
  let remaining = payload.length;
  for (;;) {
    const n = stream.write(
      payload,
      offset,
      remaining,
      buffer,
      CODEC_SCRATCH_SIZE,
    );
    offset += remaining - stream.availableIn;
    remaining = stream.availableIn;
    if (n > 0) {
      parts.push(buffer.slice(0, n));
      total += n;
    }
    if (n < CODEC_SCRATCH_SIZE) break;
  }
  return total;
}

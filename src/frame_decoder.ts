/**
 * The incremental frame decoder (RFC 6455 5.2): takes byte chunks split at
 * any point and checks every header rule and limit before buffering any
 * payload.
 *
 * Pure: no I/O, no timers, no promises.
 *
 * @module
 */

import { MESSAGE_TOO_BIG, PROTOCOL_ERROR } from "./close.ts";
import {
  type Frame,
  FrameError,
  MAX_CONTROL_PAYLOAD,
  OPCODE_BINARY,
  OPCODE_CONTINUATION,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
} from "./frame.ts";
import { keyBytes, mask, maskInto } from "./mask.ts";
import { allocatePayload, SLAB_COPY_MAX, slabRoom } from "./buffers.ts";

/** Limits and rules for {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /**
   * `true` on a server (RFC 6455 5.1: a client masks every frame),
   * `false` on a client (a server masks none).
   */
  requireMask: boolean;
  /** Largest payload of one data frame, in bytes. */
  maxFrameSize: number;
  /** Largest data message (all its fragments), in bytes. */
  maxMessageSize: number;
  /** Whether RSV1 may be set on the first frame of a data message. */
  allowRsv1?: boolean;
  /**
   * Gather the fragments of an uncompressed binary message into one buffer
   * as they arrive (see {@linkcode FrameDecoder.message}).
   */
  assembleBinary?: boolean;
  /** Largest message, and frame, streamed in pieces (`streamMessages`). */
  maxStreamedMessageSize?: number;
  maxStreamedFrameSize?: number;
  /**
   * Copy the payload of a small binary or control frame that lies whole in
   * the fed chunk into memory the caller owns (the shared slab of
   * `copyBytes`), unmasking as it copies: one pass instead of unmasking in
   * place and copying later.
   */
  copySmall?: boolean;
}

const HEADER = 0;
const LENGTH_16 = 1;
const LENGTH_64 = 2;
const MASKING_KEY = 3;
const PAYLOAD = 4;

const EMPTY = new Uint8Array(0);
// Up to this, a spanning payload gets its exact size (see the class doc).
// Growing smaller ones with what came cut half-sent 64 KiB frames' memory
// by a third, and the speed of 1 MiB echoes by as much.
const EXACT_CAPACITY_MAX = 1024 * 1024;

/**
 * Incremental frame decoder: `feed()` a chunk, then call `next()` until it
 * returns `false`; after each `true`, `fin`, `rsv1`, `opcode` and `payload`
 * describe one complete frame.
 *
 * Limits, reserved bits, opcodes, masking, control-frame rules and the
 * order of continuation frames are checked as soon as the header is
 * decoded, before any payload is buffered; a violation throws
 * {@linkcode FrameError} and the decoder must not be used again.
 *
 * A payload that lies whole inside the fed chunk is returned as a view of
 * it (`payloadOwned` is `false`), unmasked in place: copy it before the
 * chunk's memory is reused. A payload that spans chunks is gathered into a
 * buffer of its own (`payloadOwned` is `true`), allocated when its first
 * bytes arrive: at its exact size up to 1 MiB, beyond that growing with
 * what came (at most four times it), so a declared length alone never
 * allocates.
 *
 * With `assembleBinary`, the fragments of an uncompressed binary message
 * are instead gathered, as they arrive, into one buffer for the whole
 * message (growing fourfold, so at most four times what came): each
 * fragment's `payload` is a view of it, valid until the next frame, and
 * after the last fragment `message` is the whole message, owned by the
 * caller. No fragment is copied twice and none is concatenated at the end.
 */
export class FrameDecoder {
  /** FIN bit of the last complete frame. */
  fin = false;
  /** RSV1 bit of the last complete frame. */
  rsv1 = false;
  /** Opcode of the frame being decoded or last completed. */
  opcode = 0;
  /** Payload length declared by the frame being decoded or last completed. */
  payloadLength = 0;
  /** Unmasked payload of the last complete frame. */
  payload: Uint8Array = EMPTY;
  /** Whether `payload` is a buffer of its own rather than a view of a chunk. */
  payloadOwned = false;
  /**
   * With `assembleBinary`: whether the last complete frame was a fragment
   * of a binary message gathered into the message buffer.
   */
  assembled = false;
  /**
   * With `assembleBinary`: after the last fragment of a binary message,
   * the whole message (owned by the caller); otherwise `null`.
   */
  message: Uint8Array | null = null;
  /**
   * Set by the caller: data messages that start from now on come out of
   * `next()` in pieces as the bytes arrive, unbuffered: `payload` is a
   * piece (a view of the fed chunk), `partial` says more of its frame is
   * to come; limits are `maxStreamedMessageSize` and `maxStreamedFrameSize`.
   */
  streamMessages = false;
  /** Whether the data message in progress is streamed in pieces. */
  streaming = false;
  /** For a streamed frame: whether `payload` is not the frame's last piece. */
  partial = false;

  #requireMask: boolean;
  #maxFrameSize: number;
  #maxMessageSize: number;
  #allowRsv1: boolean;
  #assembleBinary: boolean;
  #streamMessageMax: number;
  #streamFrameMax: number;
  #copySmall: boolean;

  #state = HEADER;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  // Header fields that straddle chunks are gathered here (at most 8 bytes).
  // Made the first time a header straddles chunks: most connections never
  // need it.
  #scratch: Uint8Array | null = null;
  #scratchLength = 0;
  #src: Uint8Array = EMPTY;
  #srcOffset = 0;

  #masked = false;
  // The frame's masking key as a number; see #maskingKey.
  #key = 0;
  #buffer: Uint8Array<ArrayBuffer> | null = null;
  #filled = 0;
  // Bytes of #buffer that partialPayload() already unmasked.
  #unmasked = 0;

  // Opcode of the fragmented data message in progress, 0 if none.
  #fragmentOpcode = 0;
  #messageSize = 0;
  // assembleBinary: the frame being decoded belongs to an assembled message,
  // whose fragments so far fill #message up to #messageFilled.
  #assembling = false;
  #message: Uint8Array<ArrayBuffer> | null = null;
  #messageFilled = 0;

  /** A decoder at the start of a stream of frames. */
  constructor(options: FrameDecoderOptions) {
    this.#requireMask = options.requireMask;
    this.#maxFrameSize = options.maxFrameSize;
    this.#maxMessageSize = options.maxMessageSize;
    this.#allowRsv1 = options.allowRsv1 ?? false;
    this.#assembleBinary = options.assembleBinary ?? false;
    this.#streamMessageMax = options.maxStreamedMessageSize ?? Infinity;
    this.#streamFrameMax = options.maxStreamedFrameSize ?? Infinity;
    this.#copySmall = options.copySmall ?? false;
  }

  /** Sets the chunk that the following `next()` calls consume. */
  feed(chunk: Uint8Array): void {
    this.#chunk = chunk;
    this.#pos = 0;
  }

  /**
   * Forgets the last frame's payload and message and the fed chunk, once
   * they were taken: a connection that goes quiet must not keep its last
   * message (or the read buffer it came in) alive until the next frame.
   */
  release(): void {
    this.payload = EMPTY;
    this.message = null;
    this.#chunk = this.#src = EMPTY;
    this.#pos = 0;
  }

  /** Bytes of the fed chunk not consumed yet. */
  get pending(): number {
    return this.#chunk.length - this.#pos;
  }

  /**
   * Decodes the next frame from the fed chunk.
   *
   * @returns `true` when a frame is complete, `false` when more bytes are
   * needed
   * @throws {FrameError} when the peer broke the protocol or a limit
   */
  next(): boolean {
    for (;;) {
      switch (this.#state) {
        case HEADER: {
          if (!this.#need(2)) return false;
          this.#decodeHeader(
            this.#src[this.#srcOffset],
            this.#src[this.#srcOffset + 1],
          );
          break;
        }
        case LENGTH_16: {
          if (!this.#need(2)) return false;
          const s = this.#src, o = this.#srcOffset;
          this.#setPayloadLength((s[o] << 8) | s[o + 1]);
          break;
        }
        case LENGTH_64: {
          if (!this.#need(8)) return false;
          const s = this.#src, o = this.#srcOffset;
          // RFC 6455 5.2: the most significant bit MUST be 0.
          if (s[o] & 0x80) {
            throw new FrameError(
              PROTOCOL_ERROR,
              "Invalid frame header: 64-bit payload length has its most significant bit set",
            );
          }
          const high =
            ((s[o] << 24) | (s[o + 1] << 16) | (s[o + 2] << 8) | s[o + 3]) >>>
            0;
          const low = ((s[o + 4] << 24) | (s[o + 5] << 16) | (s[o + 6] << 8) |
            s[o + 7]) >>> 0;
          this.#setPayloadLength(high * 0x1_0000_0000 + low);
          break;
        }
        case MASKING_KEY: {
          if (!this.#need(4)) return false;
          const s = this.#src, o = this.#srcOffset;
          this.#key = s[o] | s[o + 1] << 8 | s[o + 2] << 16 | s[o + 3] << 24;
          this.#state = PAYLOAD;
          break;
        }
        default:
          return this.#readPayload();
      }
    }
  }

  /**
   * Where the next read may land to go straight into a payload that spans
   * reads, or `null`. After reading `n` bytes into it, call
   * {@linkcode FrameDecoder.advance} instead of `feed()`.
   *
   * @param minimum the least room worth reading into directly
   */
  directTarget(minimum: number): Uint8Array | null {
    if (this.streaming && this.opcode < 0x8) return null;
    if (this.#assembling && this.opcode < 0x8) {
      // Into the message buffer once it exists (a declared length alone
      // allocates nothing), never past the end of this frame.
      if (this.#state !== PAYLOAD) return null;
      const remaining = this.payloadLength - this.#filled;
      if (
        remaining < minimum || (this.#message === null && this.#filled === 0)
      ) {
        return null;
      }
      const at = this.#messageFilled + this.#filled;
      const buffer = this.#reserveMessage(at + minimum);
      return buffer.subarray(at, Math.min(buffer.length, at + remaining));
    }
    const buffer = this.#buffer;
    if (this.#state !== PAYLOAD || buffer === null) return null;
    const remaining = this.payloadLength - this.#filled;
    if (remaining < minimum) return null;
    if (
      buffer.length < this.payloadLength &&
      buffer.length - this.#filled < minimum
    ) {
      this.#grow(
        Math.min(
          this.payloadLength,
          Math.max(buffer.length * 4, this.#filled + minimum),
        ),
      );
    }
    return this.#buffer!.subarray(this.#filled);
  }

  /**
   * The payload of the data frame still arriving, as far as it came:
   * unmasked, a view of the frame's buffer that the next call to `next()`
   * or `feed()` may move. `null` when no payload byte is buffered (no frame
   * in progress, a control frame, or a fragment of a binary message that
   * `assembleBinary` gathers elsewhere).
   *
   * Lets the caller look at a frame before it is whole, e.g. to fail
   * invalid UTF-8 at the read that brings it (RFC 6455 8.1).
   */
  partialPayload(): Uint8Array | null {
    const buffer = this.#buffer;
    if (
      this.#state !== PAYLOAD || buffer === null || this.opcode >= 0x8 ||
      this.#assembling
    ) return null;
    const filled = this.#filled;
    const unmasked = this.#unmasked;
    if (this.#masked && unmasked < filled) {
      mask(buffer.subarray(unmasked, filled), this.#maskingKey, unmasked);
      this.#unmasked = filled;
    }
    return buffer.subarray(0, filled);
  }

  /** The connection is over: frees (detaches) a partial payload at once. */
  dispose(): void {
    this.#buffer?.buffer.transfer(0);
    this.#message?.buffer.transfer(0);
    this.#buffer = this.#message = null;
  }

  /** Records `n` bytes read into the {@linkcode directTarget}. */
  advance(n: number): void {
    this.#filled += n;
    this.feed(EMPTY);
  }

  /**
   * Decodes every complete frame in `chunk` (after any earlier partial
   * frame). Payload views stay valid while `chunk` is not modified.
   *
   * @throws {FrameError} when the peer broke the protocol or a limit
   */
  push(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = [];
    this.feed(chunk);
    while (this.next()) {
      frames.push({
        fin: this.fin,
        rsv1: this.rsv1,
        opcode: this.opcode,
        payload: this.payload,
      });
    }
    return frames;
  }

  #need(n: number): boolean {
    const chunk = this.#chunk;
    const available = chunk.length - this.#pos;
    if (this.#scratchLength === 0 && available >= n) {
      this.#src = chunk;
      this.#srcOffset = this.#pos;
      this.#pos += n;
      return true;
    }
    // Nothing to keep: no scratch buffer, which every socket would hold
    // from its first drained chunk on.
    if (available === 0) return false;
    const take = Math.min(n - this.#scratchLength, available);
    const scratch = this.#scratch ??= new Uint8Array(8);
    for (let i = 0; i < take; i++) {
      scratch[this.#scratchLength++] = chunk[this.#pos++];
    }
    if (this.#scratchLength < n) return false;
    this.#src = scratch;
    this.#srcOffset = 0;
    this.#scratchLength = 0;
    return true;
  }

  #decodeHeader(b0: number, b1: number): void {
    const fin = (b0 & 0x80) !== 0;
    const rsv1 = (b0 & 0x40) !== 0;
    const opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    const length = b1 & 0x7f;

    // RFC 6455 5.2: RSV bits MUST be 0 unless an extension defines them.
    if (b0 & 0x30) {
      throw new FrameError(
        PROTOCOL_ERROR,
        "Invalid frame header: RSV2 or RSV3 is set",
      );
    }
    if (opcode >= 0x8) {
      if (opcode > OPCODE_PONG) {
        throw new FrameError(
          PROTOCOL_ERROR,
          `Invalid frame header: unknown opcode ${opcode}`,
        );
      }
      // RFC 6455 5.5: control frames MUST NOT be fragmented and MUST have a
      // payload length of 125 bytes or less.
      if (!fin) {
        throw new FrameError(
          PROTOCOL_ERROR,
          "Invalid frame header: fragmented control frame",
        );
      }
      if (length > MAX_CONTROL_PAYLOAD) {
        throw new FrameError(
          PROTOCOL_ERROR,
          `Invalid frame header: control frame payload must be 125 bytes or less, received ${
            length === 126 ? "more than 125" : "more than 65535"
          } bytes`,
        );
      }
      // RFC 7692 6.1: RSV1 is never set on a control frame.
      if (rsv1) {
        throw new FrameError(
          PROTOCOL_ERROR,
          "Invalid frame header: RSV1 is set on a control frame",
        );
      }
    } else if (opcode === OPCODE_CONTINUATION) {
      // RFC 6455 5.4: a continuation needs a fragmented message in progress.
      if (this.#fragmentOpcode === 0) {
        throw new FrameError(
          PROTOCOL_ERROR,
          "Invalid frame sequence: continuation frame with no message to continue",
        );
      }
      // RFC 7692 6.1: RSV1 is set on the first frame of a message only.
      if (rsv1) {
        throw new FrameError(
          PROTOCOL_ERROR,
          "Invalid frame header: RSV1 is set on a continuation frame",
        );
      }
    } else if (opcode === OPCODE_TEXT || opcode === OPCODE_BINARY) {
      if (this.#fragmentOpcode !== 0) {
        throw new FrameError(
          PROTOCOL_ERROR,
          "Invalid frame sequence: new data message before the fragmented one ended",
        );
      }
      if (rsv1 && !this.#allowRsv1) {
        throw new FrameError(
          PROTOCOL_ERROR,
          "Invalid frame header: RSV1 is set without a negotiated extension",
        );
      }
    } else {
      throw new FrameError(
        PROTOCOL_ERROR,
        `Invalid frame header: unknown opcode ${opcode}`,
      );
    }
    // RFC 6455 5.1: a server MUST close the connection upon receiving an
    // unmasked frame; a client MUST close it upon receiving a masked frame.
    if (masked !== this.#requireMask) {
      throw new FrameError(
        PROTOCOL_ERROR,
        masked
          ? "Invalid frame header: frame from the server is masked"
          : "Invalid frame header: frame from the client is not masked",
      );
    }

    this.fin = fin;
    this.rsv1 = rsv1;
    this.opcode = opcode;
    this.#masked = masked;
    if (length === 126) this.#state = LENGTH_16;
    else if (length === 127) this.#state = LENGTH_64;
    else this.#setPayloadLength(length);
  }

  #setPayloadLength(length: number): void {
    this.payloadLength = length;
    const opcode = this.opcode;
    if (opcode < 0x8) {
      if (opcode !== OPCODE_CONTINUATION) this.streaming = this.streamMessages;
      const streaming = this.streaming;
      const maxFrameSize = streaming
        ? this.#streamFrameMax
        : this.#maxFrameSize;
      const maxMessageSize = streaming
        ? this.#streamMessageMax
        : this.#maxMessageSize;
      // Limits are checked here, before any payload byte is buffered.
      if (length > maxFrameSize) {
        throw new FrameError(
          MESSAGE_TOO_BIG,
          `Frame too big: limit is ${maxFrameSize} bytes, received ${length} bytes`,
        );
      }
      const messageSize =
        (opcode === OPCODE_CONTINUATION ? this.#messageSize : 0) + length;
      if (messageSize > maxMessageSize) {
        throw new FrameError(
          MESSAGE_TOO_BIG,
          `Message too big: limit is ${maxMessageSize} bytes, received ${messageSize} bytes or more`,
        );
      }
      if (opcode !== OPCODE_CONTINUATION) {
        this.#assembling = !this.fin && opcode === OPCODE_BINARY &&
          !this.rsv1 && this.#assembleBinary && !streaming;
      }
      if (this.fin) {
        this.#fragmentOpcode = 0;
        this.#messageSize = 0;
      } else {
        if (opcode !== OPCODE_CONTINUATION) this.#fragmentOpcode = opcode;
        this.#messageSize = messageSize;
      }
      this.#filled = 0;
    }
    this.#state = this.#masked ? MASKING_KEY : PAYLOAD;
  }

  #readPayload(): boolean {
    if (this.streaming && this.opcode < 0x8) return this.#readPiece();
    if (this.#assembling && this.opcode < 0x8) return this.#readFragment();
    const length = this.payloadLength;
    const chunk = this.#chunk;
    const available = chunk.length - this.#pos;
    let buffer = this.#buffer;
    if (buffer === null) {
      if (available >= length) {
        const start = this.#pos;
        this.#pos = start + length;
        if (
          this.#copySmall && length <= SLAB_COPY_MAX && length > 0 &&
          !this.rsv1 && (this.opcode === OPCODE_BINARY ||
            this.opcode === OPCODE_PING || this.opcode === OPCODE_PONG)
        ) return this.#completeCopy(chunk, start, length);
        return this.#complete(chunk.subarray(start, start + length), false);
      }
      // Nothing is allocated until payload bytes arrive; then a payload
      // up to EXACT_CAPACITY_MAX gets its exact size (read into directly,
      // never copied again), a bigger one grows with what came.
      if (available === 0) return false;
      this.#filled = 0;
      buffer = this.#grow(
        length <= EXACT_CAPACITY_MAX
          ? length
          : Math.max(EXACT_CAPACITY_MAX, available),
      );
    }
    const take = Math.min(length - this.#filled, available);
    if (take > 0) {
      if (this.#filled + take > buffer.length) {
        buffer = this.#grow(
          Math.min(length, Math.max(buffer.length * 4, this.#filled + take)),
        );
      }
      buffer.set(chunk.subarray(this.#pos, this.#pos + take), this.#filled);
      this.#filled += take;
      this.#pos += take;
    }
    if (this.#filled < length) return false;
    this.#buffer = null;
    return this.#complete(buffer, true);
  }

  /** {@linkcode #complete} for `copySmall`: unmasks while it copies. */
  #completeCopy(chunk: Uint8Array, start: number, length: number): true {
    const payload = slabRoom(length);
    const key = this.#maskingKey;
    if (length < 64) {
      // One loop costs less than a view of the chunk and a call.
      if (this.#masked) {
        for (let i = 0; i < length; i++) {
          payload[i] = chunk[start + i] ^ key[i & 3];
        }
      } else for (let i = 0; i < length; i++) payload[i] = chunk[start + i];
    } else {
      const source = chunk.subarray(start, start + length);
      if (this.#masked) maskInto(source, key, payload, 0);
      else payload.set(source);
    }
    return this.#done(payload, true, false);
  }

  /** The key as bytes: a `Uint8Array` per socket cost about 200 bytes. */
  get #maskingKey(): Uint8Array {
    return keyBytes(this.#key);
  }

  #grow(capacity: number): Uint8Array<ArrayBuffer> {
    const next = allocatePayload(capacity, "Frame");
    if (this.#buffer !== null) next.set(this.#buffer.subarray(0, this.#filled));
    this.#buffer = next;
    return next;
  }

  #complete(payload: Uint8Array, owned: boolean, assembled = false): true {
    if (this.#masked) {
      const unmasked = this.#unmasked;
      if (unmasked === 0) mask(payload, this.#maskingKey);
      else {
        mask(payload.subarray(unmasked), this.#maskingKey, unmasked);
        this.#unmasked = 0;
      }
    }
    return this.#done(payload, owned, assembled);
  }

  /** A frame is complete with `payload`, unmasked already. */
  #done(payload: Uint8Array, owned: boolean, assembled: boolean): true {
    this.payload = payload;
    this.payloadOwned = owned;
    this.assembled = assembled;
    this.message = null;
    this.#state = HEADER;
    return true;
  }

  /** `next()` for a streamed frame: what the chunk holds of it, unmasked. */
  #readPiece(): boolean {
    const length = this.payloadLength;
    const filled = this.#filled;
    const chunk = this.#chunk;
    const take = Math.min(length - filled, chunk.length - this.#pos);
    if (take === 0 && length > 0) return false;
    const start = this.#pos;
    const piece = chunk.subarray(start, start + take);
    this.#pos = start + take;
    if (this.#masked) mask(piece, this.#maskingKey, filled);
    this.#filled = filled + take;
    this.payload = piece;
    this.payloadOwned = false;
    this.partial = this.#filled < length;
    if (!this.partial) this.#state = HEADER;
    return true;
  }

  /** {@linkcode FrameDecoder.next} for a fragment of an assembled message. */
  #readFragment(): boolean {
    const length = this.payloadLength;
    const base = this.#messageFilled;
    const chunk = this.#chunk;
    const take = Math.min(length - this.#filled, chunk.length - this.#pos);
    if (take > 0) {
      const at = base + this.#filled;
      const buffer = this.#reserveMessage(at + take);
      buffer.set(chunk.subarray(this.#pos, this.#pos + take), at);
      this.#filled += take;
      this.#pos += take;
    }
    if (this.#filled < length) return false;
    const end = base + length;
    const buffer = this.#message;
    this.#complete(
      buffer === null ? EMPTY : buffer.subarray(base, end),
      false,
      true,
    );
    this.#messageFilled = end;
    this.#filled = 0;
    if (this.fin) {
      this.#assembling = false;
      this.#message = null;
      this.#messageFilled = 0;
      // Growth is fourfold: give back what the message does not use.
      const message = buffer === null
        ? new Uint8Array(0)
        : end === buffer.length
        ? buffer
        : new Uint8Array(buffer.buffer.transfer(end));
      this.message = message;
      // The old buffer was detached by transfer().
      this.payload = message.subarray(base, end);
    }
    return true;
  }

  /**
   * The message buffer with room for `needed` bytes: grown at least
   * fourfold, to the end of the current frame when that is 1 MiB or less,
   * never past the message limit.
   */
  #reserveMessage(needed: number): Uint8Array<ArrayBuffer> {
    const buffer = this.#message;
    if (buffer !== null && needed <= buffer.length) return buffer;
    const frameEnd = this.#messageFilled + this.payloadLength;
    const capacity = Math.min(
      this.#maxMessageSize,
      Math.max(
        needed,
        (buffer?.length ?? 0) * 4,
        frameEnd <= EXACT_CAPACITY_MAX ? frameEnd : 0,
      ),
    );
    const next = allocatePayload(capacity, "Message");
    if (buffer !== null) {
      next.set(buffer.subarray(0, this.#messageFilled + this.#filled));
    }
    this.#message = next;
    return next;
  }
}

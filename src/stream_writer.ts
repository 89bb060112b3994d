/**
 * Messages in pieces, the sending side: `Socket.write(stream, type)` sends
 * a `ReadableStream` or `AsyncIterable` as one fragmented message (RFC
 * 6455 5.4), each piece as it comes, with the write backpressure applied
 * per piece; with permessage-deflate, each piece is compressed as it goes.
 * A `readStream()` binary message is taken from the read buffer directly.
 *
 * @module
 */

import type { PerMessageDeflate } from "./deflate_codec.ts";
import { OPCODE_BINARY, OPCODE_CONTINUATION, OPCODE_TEXT } from "./frame.ts";
import type { WriteQueue } from "./write_queue.ts";
import { giveWriteBuffer, takeWriteBuffer } from "./buffers.ts";
import { type DirectSource, directSource } from "./message_stream.ts";

/** What `write(stream)` accepts. */
export type StreamSource =
  | ReadableStream<Uint8Array | string>
  | AsyncIterable<Uint8Array | string>;

/** What {@linkcode writeStream} needs of its socket. */
export interface StreamWriteTarget {
  writes: WriteQueue;
  fragmentSize: number;
  deflate: PerMessageDeflate | null;
  /**
   * Why a data frame of `size` bytes cannot be queued now (the close
   * handshake began, the buffer is full): the rejection to return, or
   * `null`.
   */
  refusal(size: number): Promise<never> | null;
  /** Whether `refusal(size)` is `null`, found without its side effects. */
  accepts(size: number): boolean;
  /** The source failed, or compressing did: close with 1011. */
  failed(what: "source" | "compression"): void;
}

const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

/** Whether `data` is a stream or async iterable that `write` sends in pieces. */
export function isStreamSource(data: unknown): data is StreamSource {
  return typeof data === "object" && data !== null &&
    (data instanceof ReadableStream ||
      typeof (data as AsyncIterable<unknown>)[Symbol.asyncIterator] ===
        "function");
}

/**
 * Sends the pieces of `source` as one message of `opcode` (text or
 * binary): each non-empty piece as one or more frames as soon as it comes,
 * then a last, empty frame with FIN (the end of a source is known only
 * once it ended). Resolves as a write does, after the last frame.
 *
 * @throws what the source threw (as a rejection), after the socket began
 *   closing with 1011; a `TypeError` for a piece that is neither bytes nor
 *   a string
 */
export async function writeStream(
  target: StreamWriteTarget,
  source: StreamSource,
  opcode: number,
): Promise<void> {
  if (target.deflate === null && source instanceof ReadableStream) {
    const direct = directSource(source);
    if (direct !== null) return writeDirect(target, direct, opcode);
  }
  const iterator = piecesOf(source);
  const { writes, deflate, fragmentSize } = target;
  let sent = false;
  // A high surrogate ending a string piece waits for its low half.
  let surrogate = "";
  /** Queues a piece as frames without FIN; `false` if compressing failed. */
  const pushPiece = (piece: Uint8Array): boolean => {
    let payload = piece;
    if (deflate !== null) {
      try {
        payload = deflate.compressPiece(piece, !sent);
      } catch {
        target.failed("compression");
        return false;
      }
    }
    writes.pushPiece(
      sent ? OPCODE_CONTINUATION : opcode,
      payload,
      deflate !== null && !sent,
      fragmentSize,
    );
    sent = true;
    return true;
  };
  writes.holdData();
  try {
    for (;;) {
      let result: IteratorResult<unknown>;
      try {
        result = await iterator.next();
      } catch (error) {
        target.failed("source");
        throw error;
      }
      if (result.done) break;
      let value = result.value;
      if (typeof value === "string") {
        const text = surrogate + value;
        const last = text.charCodeAt(text.length - 1);
        surrogate = last >= 0xd800 && last <= 0xdbff ? text.slice(-1) : "";
        value = encoder.encode(surrogate === "" ? text : text.slice(0, -1));
      } else if (!(value instanceof Uint8Array)) {
        await stop(iterator);
        target.failed("source");
        throw new TypeError(
          `Cannot write: a stream must yield strings or Uint8Arrays, received ${typeof value}`,
        );
      }
      const piece = value as Uint8Array;
      if (piece.length === 0) continue;
      const refusal = target.refusal(piece.length);
      if (refusal !== null) {
        await stop(iterator);
        return refusal;
      }
      if (!pushPiece(piece)) {
        await stop(iterator);
        return target.refusal(0) ?? undefined;
      }
      await writes.ready();
    }
    if (surrogate !== "" && !pushPiece(encoder.encode(surrogate))) {
      return target.refusal(0) ?? undefined;
    }
    const last = deflate === null ? EMPTY : deflate.compressEnd(!sent);
    const refusal = target.refusal(last.length);
    if (refusal !== null) return refusal;
    writes.push(
      true,
      deflate !== null && !sent,
      sent ? OPCODE_CONTINUATION : opcode,
      last,
    );
  } finally {
    writes.releaseData();
  }
  return writes.ready();
}

/**
 * {@linkcode writeStream} of a `readStream()` binary message, without
 * permessage-deflate: each piece goes from the socket's read buffer into
 * the write buffer as it comes (copied once, as a whole message is), and
 * the last piece's last frame has FIN (no empty last frame: the end of the
 * message is known with its last piece).
 */
async function writeDirect(
  target: StreamWriteTarget,
  source: DirectSource,
  opcode: number,
): Promise<void> {
  const { writes, fragmentSize } = target;
  let sent = false;
  // The size of pieces left because they could not be queued.
  let left = 0;
  let finished = false;
  const take = (pieces: Uint8Array[], ends: boolean): boolean => {
    let size = 0;
    for (const piece of pieces) size += piece.length;
    if (!target.accepts(size)) {
      left = size;
      return false;
    }
    writes.reservePieces(size, pieces.length, fragmentSize);
    const last = ends ? pieces.length - 1 : -1;
    for (let i = 0; i < pieces.length; i++) {
      // Copied: the read buffer is read into again once this returns. The
      // last piece's last frame ends the message.
      writes.pushPiece(
        sent ? OPCODE_CONTINUATION : opcode,
        pieces[i],
        false,
        fragmentSize,
        false,
        i === last,
      );
      sent = true;
    }
    finished = ends;
    return true;
  };
  writes.holdData();
  try {
    for (;;) {
      let more: boolean;
      try {
        more = await source.pieces(take);
      } catch (error) {
        target.failed("source");
        throw error;
      }
      if (left > 0) {
        const refusal = target.refusal(left);
        left = 0;
        if (refusal !== null) {
          await source.cancel().catch(noop);
          return refusal;
        }
        continue;
      }
      if (!more || finished) break;
      await writes.ready();
    }
    if (!finished) {
      const refusal = target.refusal(0);
      if (refusal !== null) return refusal;
      writes.push(true, false, sent ? OPCODE_CONTINUATION : opcode, EMPTY);
    }
  } finally {
    writes.releaseData();
  }
  return writes.ready();
}

/** The opcode `write(stream, type)` sends, from its `type`. */
export function streamOpcode(type: string): number | undefined {
  return type === "text"
    ? OPCODE_TEXT
    : type === "binary"
    ? OPCODE_BINARY
    : undefined;
}

/** Bytes a byte stream is read into at a time, one buffer reused. */
const BYOB_SIZE = 256 * 1024;

/**
 * The pieces of `source`. A byte stream (such as a `readStream()` message)
 * is read with a BYOB reader into one buffer, reused: each piece is queued
 * (copied, or written and awaited) before the next read.
 */
function piecesOf(source: StreamSource): AsyncIterator<unknown> {
  if (source instanceof ReadableStream) {
    let reader: ReadableStreamBYOBReader;
    try {
      reader = source.getReader({ mode: "byob" });
    } catch {
      // Not a byte stream.
      return source[Symbol.asyncIterator]();
    }
    // A pooled buffer: a new one is zero-filled, every message.
    let buffer: ArrayBuffer | null = takeWriteBuffer(BYOB_SIZE)
      .buffer as ArrayBuffer;
    const done = (): IteratorReturnResult<undefined> => {
      if (buffer !== null) giveWriteBuffer(new Uint8Array(buffer));
      buffer = null;
      return { done: true, value: undefined };
    };
    return {
      async next() {
        const { done: end, value } = await reader.read(
          new Uint8Array(buffer!),
        );
        if (end) {
          reader.releaseLock();
          // Transferred by the read: the buffer is the view's now.
          buffer = value?.buffer as ArrayBuffer ?? null;
          return done();
        }
        buffer = value.buffer as ArrayBuffer;
        return { done: false, value };
      },
      async return() {
        await reader.cancel();
        buffer = null;
        return { done: true, value: undefined };
      },
    };
  }
  return source[Symbol.asyncIterator]();
}

/** Ends a source early (cancels a stream); its own failure is not ours. */
async function stop(iterator: AsyncIterator<unknown>): Promise<void> {
  try {
    await iterator.return?.();
  } catch {
    // The source failed while being stopped: nothing more to send.
  }
}

function noop(): void {}

/**
 * A socket's data writes while a message goes out in pieces: they wait
 * their turn behind it, in order (control frames do not: they may go
 * between its fragments, RFC 6455 5.4).
 */
export class DataLane {
  #tail: Promise<void> | null = null;

  /** A message is going out in pieces, or data writes wait behind one. */
  get busy(): boolean {
    return this.#tail !== null;
  }

  /** Runs `write` once the data writes queued before it are done. */
  behind(write: () => Promise<void>): Promise<void> {
    if (this.#tail === null) {
      const done = write();
      this.#chain(done);
      return done;
    }
    const result = this.#tail.then(write);
    this.#chain(result);
    return result;
  }

  #chain(write: Promise<void>): void {
    const tail = write.then(noop, noop);
    this.#tail = tail;
    tail.then(() => {
      if (this.#tail === tail) this.#tail = null;
    });
  }
}

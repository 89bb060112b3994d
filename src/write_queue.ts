/**
 * The per-socket write queue: frames written in one turn of the event loop
 * are gathered into one buffer and handed to the OS in one `write`.
 *
 * @module
 */

import {
  giveWriteBuffer,
  takeWriteBuffer,
  WRITE_BUFFER_SIZE,
  WRITE_KEEP_LIMIT,
} from "./buffers.ts";
import {
  frameHeaderSize,
  OPCODE_CONTINUATION,
  writeFrameHeader,
} from "./frame.ts";
import { mask, maskInto, nextMaskingKey } from "./mask.ts";
import {
  type Batch,
  newBatch,
  noop,
  recycleBatch,
  scheduleFlush,
  scheduleSharedFlush,
  type SharedLog,
} from "./write_batch.ts";

export { SharedLog } from "./write_batch.ts";

/** The part of a `Deno.Conn` the queue writes to. */
export interface Writer {
  write(p: Uint8Array): Promise<number>;
}

/** Payloads at least this big are written from the caller's buffer, uncopied. */
const COPY_LIMIT = 256 * 1024;
/**
 * Pre-encoded frames (one `publish` to many sockets) at least this big are
 * shared, not copied into each socket's buffer.
 */
const SHARE_LIMIT = 16 * 1024;

// Queued bytes from which a write starts at once (in a microtask, so what
// the caller queues in the same job still joins it) instead of at the end
// of the event-loop turn.
const EAGER_FLUSH = 64 * 1024;
// The most of the last batch's size a new batch's buffer starts with.
const LENGTH_HINT_MAX = EAGER_FLUSH;

const encoder = new TextEncoder();
const RESOLVED = Promise.resolve();

/** Who a {@linkcode WriteQueue} tells when a write fails. */
export interface WriteQueueOwner {
  /** A write failed with `cause`: returns the error writers get. */
  writeFailed(cause: unknown): unknown;
}

/**
 * Encodes frames into a shared buffer and flushes it once per event-loop
 * turn. Pushing never waits: {@linkcode WriteQueue.ready} says when the
 * writer may go on (at once under the high-water mark, else once the OS has
 * taken enough), {@linkcode WriteQueue.flush} when the bytes were handed to
 * the OS.
 */
export class WriteQueue {
  #writer: Writer;
  #maskFrames: boolean;
  #owner: WriteQueueOwner;

  #buffer: Uint8Array | null = null;
  #spare: Uint8Array | null = null;
  #length = 0;
  // Bytes the last batch's buffer held: the next batch's buffer starts at
  // that size, rather than growing (and copying) its way there again.
  #lastLength = 0;
  // Bytes of #buffer already moved into the batch's parts.
  #sealed = 0;
  #batch: Batch | null = null;
  // The batch being written, for flush() callers who come while it is.
  #writing: Batch | null = null;
  #highWaterMark: number;
  // Writers waiting for bufferedAmount to drop to the high-water mark.
  #drain: PromiseWithResolvers<void> | null = null;
  // The read loop, waiting for bufferedAmount to drop to #lowWaterMark.
  #lowWaiter: (() => void) | null = null;
  #lowWaterMark = 0;
  #scheduled = false;
  // In the pass over batches of published frames only (scheduleSharedFlush).
  #sharedScheduled = false;
  #eager = false;
  #flushing = false;
  #failure: unknown = null;
  #makeFailure: (() => unknown) | null = null;
  #idle: (() => void)[] = [];
  // Pre-encoded frames held back while a message goes out in pieces.
  #held: Uint8Array[] | null = null;
  // A batch of published frames only: their range of a topic's log, written
  // as a view of it (see pushShared).
  #log: SharedLog | null = null;
  #logStart = 0;
  #logEnd = 0;

  /** Bytes accepted and not yet handed to the OS. */
  bufferedAmount = 0;

  /**
   * @param writer where bytes go
   * @param maskFrames mask every frame with a fresh key (client side)
   * @param onError called once when a write fails; returns the error that
   *   pending flushes and later writes reject with
   * @param highWaterMark bytes of `bufferedAmount` up to which
   *   {@linkcode ready} resolves at once
   */
  constructor(
    writer: Writer,
    maskFrames: boolean,
    owner: WriteQueueOwner,
    highWaterMark = 64 * 1024,
  ) {
    this.#writer = writer;
    this.#maskFrames = maskFrames;
    this.#owner = owner;
    this.#highWaterMark = highWaterMark;
  }

  /**
   * What a writer awaits after pushing: resolved at once while
   * `bufferedAmount` is at or under the high-water mark, otherwise when the
   * OS has taken enough to bring it back under (or the queue failed: a
   * frame lost with the connection is not its writer's error).
   */
  ready(): Promise<void> {
    const batch = this.#batch;
    if (batch !== null && batch.borrowed) {
      // The caller's buffer is written uncopied: it is theirs again only
      // once it was written.
      return batch.promise.then(noop, noop);
    }
    if (this.bufferedAmount <= this.#highWaterMark) return RESOLVED;
    return (this.#drain ??= Promise.withResolvers<void>()).promise;
  }

  /**
   * Resolves once `bufferedAmount` is at or under `lowWaterMark`, or the
   * queue failed (one waiter at a time: the socket's read loop).
   */
  drained(lowWaterMark: number): Promise<void> {
    if (this.bufferedAmount <= lowWaterMark || this.#makeFailure !== null) {
      return RESOLVED;
    }
    this.#lowWaterMark = lowWaterMark;
    return new Promise((resolve) => this.#lowWaiter = resolve);
  }

  /**
   * Resolves when everything queued so far was handed to the OS; rejects
   * with the queue's failure when the connection was lost before that.
   */
  flush(): Promise<void> {
    if (this.#makeFailure !== null) return rejected(this.#error());
    const batch = this.#batch ?? this.#writing;
    return batch === null ? RESOLVED : batch.promise;
  }

  /** Set once a write failed or the queue was closed; later writes reject with it. */
  get failure(): unknown {
    return this.#makeFailure === null ? null : this.#error();
  }

  #error(): unknown {
    if (this.#failure === null) this.#failure = this.#makeFailure!();
    return this.#failure;
  }

  /**
   * Queues one frame. Returns whether it was queued (not once the queue
   * failed).
   */
  push(
    fin: boolean,
    rsv1: boolean,
    opcode: number,
    payload: Uint8Array,
    borrow = true,
  ): boolean {
    if (this.#makeFailure !== null) return false;
    const length = payload.length;
    const masked = this.#maskFrames;
    const headerSize = frameHeaderSize(length, masked);
    // RFC 6455 5.3: a fresh, unpredictable key for every frame.
    const key = masked ? nextMaskingKey() : undefined;
    const batch = this.#batch ??= newBatch();
    if (length < COPY_LIMIT || masked || !borrow) {
      const buffer = this.#reserve(headerSize + length);
      let offset = writeFrameHeader(
        buffer,
        this.#length,
        fin,
        rsv1,
        opcode,
        length,
        key,
      );
      if (key) maskInto(payload, key, buffer, offset);
      else buffer.set(payload, offset);
      offset += length;
      this.#length = offset;
    } else {
      const buffer = this.#reserve(headerSize);
      this.#length = writeFrameHeader(
        buffer,
        this.#length,
        fin,
        rsv1,
        opcode,
        length,
        key,
      );
      this.#seal(batch);
      batch.parts.push(payload);
      batch.borrowed = true;
    }
    this.bufferedAmount += headerSize + length;
    this.#schedule();
    return true;
  }

  /**
   * Queues one unfragmented frame whose payload is `text` as UTF-8,
   * encoded straight into the write buffer. The caller made sure
   * `text.length * 3` fits in one frame. Returns whether it was queued.
   */
  pushString(opcode: number, text: string): boolean {
    if (this.#makeFailure !== null) return false;
    const masked = this.#maskFrames;
    const maxLength = text.length * 3;
    const headerMax = frameHeaderSize(maxLength, masked);
    this.#batch ??= newBatch();
    const buffer = this.#reserve(headerMax + maxLength);
    const start = this.#length;
    let payloadStart = start + headerMax;
    const length =
      encoder.encodeInto(text, buffer.subarray(payloadStart)).written;
    const headerSize = frameHeaderSize(length, masked);
    if (headerSize < headerMax) {
      // The text came out shorter than the worst case: a smaller header.
      buffer.copyWithin(
        start + headerSize,
        payloadStart,
        payloadStart + length,
      );
      payloadStart = start + headerSize;
    }
    const key = masked ? nextMaskingKey() : undefined;
    writeFrameHeader(buffer, start, true, false, opcode, length, key);
    if (key) mask(buffer.subarray(payloadStart, payloadStart + length), key);
    this.#length = payloadStart + length;
    this.bufferedAmount += headerSize + length;
    this.#schedule();
    return true;
  }

  /**
   * Queues bytes that are already one or more whole frames (encoded once,
   * written to many sockets). The bytes are not copied: do not modify them.
   * Returns whether they were queued (not once the queue failed).
   */
  pushEncoded(frame: Uint8Array): boolean {
    if (this.#makeFailure !== null) return false;
    if (this.#held !== null) {
      // A message is going out in pieces: its frames must not be split.
      this.#held.push(frame);
      this.bufferedAmount += frame.length;
      return true;
    }
    const batch = this.#batch ??= newBatch();
    if (frame.length < SHARE_LIMIT) {
      const buffer = this.#reserve(frame.length);
      buffer.set(frame, this.#length);
      this.#length += frame.length;
    } else {
      this.#seal(batch);
      batch.parts.push(frame);
    }
    this.bufferedAmount += frame.length;
    this.#schedule();
    return true;
  }

  /**
   * Queues the frames at `start` to `end` of a topic's log (see
   * {@linkcode SharedLog}). While the batch holds nothing else, the range
   * grows with each frame appended to the log after it and is written as a
   * view of the log; anything else queued copies it into the write buffer
   * first. Returns whether it was queued (not once the queue failed).
   */
  pushShared(log: SharedLog, start: number, end: number): boolean {
    if (this.#makeFailure !== null) return false;
    if (this.#held !== null) {
      return this.pushEncoded(log.bytes.subarray(start, end));
    }
    if (this.#log === log && this.#logEnd === start) this.#logEnd = end;
    else if (this.#batch === null) {
      this.#batch = newBatch();
      this.#log = log;
      this.#logStart = start;
      this.#logEnd = end;
    } else return this.pushEncoded(log.bytes.subarray(start, end));
    this.bufferedAmount += end - start;
    if (this.bufferedAmount >= EAGER_FLUSH) this.#schedule();
    else if (!this.#flushing) this.#scheduleShared();
    return true;
  }

  /** Moves a batch's range of a log into the write buffer. */
  #unshare(): void {
    const log = this.#log!;
    this.#log = null;
    const length = this.#logEnd - this.#logStart;
    const buffer = this.#reserve(length);
    buffer.set(log.bytes.subarray(this.#logStart, this.#logEnd), this.#length);
    this.#length += length;
  }

  /**
   * A data message goes out in pieces from now on: until
   * {@linkcode releaseData}, pre-encoded frames (`publish`) wait, so that
   * they do not land between its fragments.
   */
  holdData(): void {
    this.#held ??= [];
  }

  /** The message sent in pieces is over: queues the frames that waited. */
  releaseData(): void {
    const held = this.#held;
    this.#held = null;
    if (held === null || this.#makeFailure !== null) return;
    for (const frame of held) {
      this.bufferedAmount -= frame.length;
      this.pushEncoded(frame);
    }
  }

  /** A batch of published frames only waits for the next shared pass. */
  #scheduleShared(): void {
    if (!this.#sharedScheduled) {
      this.#sharedScheduled = true;
      scheduleSharedFlush(this);
    }
  }

  #schedule(): void {
    if (this.#flushing) return;
    if (this.bufferedAmount >= EAGER_FLUSH) {
      // Enough to make a write worth it now: waiting for the turn's end
      // only delays it (a big echo waited for the next message's reads).
      if (!this.#eager) {
        this.#eager = true;
        queueMicrotask(() => this.#flush());
      }
    } else if (!this.#scheduled) {
      this.#scheduled = true;
      scheduleFlush(this);
    }
  }

  /** Resolves when everything queued so far was written (or failed). */
  idle(): Promise<void> {
    return new Promise((resolve) => this.whenIdle(resolve));
  }

  /**
   * {@linkcode idle} without a promise: calls `callback` once everything
   * queued so far was written (or failed), in a microtask if that is now.
   */
  whenIdle(callback: () => void): void {
    if (this.#batch === null && !this.#flushing) queueMicrotask(callback);
    else this.#idle.push(callback);
  }

  /** Fails the queue: pending flushes and later writes reject with `error`. */
  fail(error: unknown): void {
    this.failWith(() => error);
  }

  /**
   * Like {@linkcode fail}, but the error is made only if something needs
   * it (a pending or later write): most connections end with nothing
   * queued, and an Error's stack trace is not free.
   */
  failWith(makeError: () => unknown): void {
    if (this.#makeFailure !== null) return;
    this.#makeFailure = makeError;
    const batch = this.#batch;
    this.#batch = null;
    if (batch !== null) batch.reject(this.#error());
    // The spare is never part of a write in progress (the buffer may be).
    if (this.#spare !== null) giveWriteBuffer(this.#spare);
    this.#buffer = this.#spare = null;
    this.#held = this.#log = null;
    this.#length = this.#sealed = 0;
    this.bufferedAmount = 0;
    this.#wakeDrain();
    this.#wakeIdle();
  }

  /**
   * Queues a data message, as several frames when it is longer than
   * `fragmentSize`; RFC 7692 6.1: RSV1 goes on the first frame only.
   * Returns `false` when the queue no longer accepts frames.
   */
  pushMessage(
    opcode: number,
    bytes: Uint8Array,
    rsv1: boolean,
    fragmentSize: number,
  ): boolean {
    if (bytes.length <= fragmentSize) {
      return this.push(true, rsv1, opcode, bytes);
    }
    // Room for every fragment at once, rather than growing per fragment.
    this.#reserveFragments(bytes.length, fragmentSize);
    let ok = true;
    for (let offset = 0; ok && offset < bytes.length; offset += fragmentSize) {
      const end = Math.min(offset + fragmentSize, bytes.length);
      ok = this.push(
        end === bytes.length,
        rsv1 && offset === 0,
        offset === 0 ? opcode : OPCODE_CONTINUATION,
        bytes.subarray(offset, end),
      );
    }
    return ok;
  }

  /**
   * Queues one piece of a message sent in pieces, as frames of at most
   * `fragmentSize`, none with FIN: the first with `opcode` (and `rsv1`),
   * the others as continuations. With `borrow` false, `bytes` are copied
   * whatever their size: the caller may change them once this returns;
   * with `fin`, the last frame ends the message. Returns `false` when the
   * queue no longer accepts frames.
   */
  pushPiece(
    opcode: number,
    bytes: Uint8Array,
    rsv1: boolean,
    fragmentSize: number,
    borrow = true,
    fin = false,
  ): boolean {
    this.#reserveFragments(bytes.length, fragmentSize, borrow);
    let ok = true;
    for (let offset = 0; ok && offset < bytes.length; offset += fragmentSize) {
      ok = this.push(
        fin && offset + fragmentSize >= bytes.length,
        rsv1 && offset === 0,
        offset === 0 ? opcode : OPCODE_CONTINUATION,
        bytes.subarray(offset, offset + fragmentSize),
        borrow,
      );
    }
    return ok;
  }

  /**
   * Makes room in one step for a message of `length` bytes about to be
   * pushed as fragments of `fragmentSize`, when they will be copied into
   * the write buffer.
   */
  #reserveFragments(
    length: number,
    fragmentSize: number,
    borrow = true,
  ): void {
    if (this.#makeFailure !== null) return;
    if (fragmentSize >= COPY_LIMIT && !this.#maskFrames && borrow) return;
    const frames = Math.ceil(length / fragmentSize);
    this.#reserve(
      length + frames * frameHeaderSize(fragmentSize, this.#maskFrames),
    );
  }

  /**
   * Makes room in one step for `length` bytes about to be pushed with
   * `pushPiece(…, borrow = false)` in `pieces` pieces, rather than growing
   * (and copying) the buffer piece by piece.
   */
  reservePieces(length: number, pieces: number, fragmentSize: number): void {
    if (this.#makeFailure !== null) return;
    const frames = Math.ceil(length / fragmentSize) + pieces;
    this.#reserve(length + frames * frameHeaderSize(fragmentSize, true));
  }

  #reserve(size: number): Uint8Array {
    if (this.#log !== null) this.#unshare();
    let buffer = this.#buffer;
    if (buffer === null) {
      // A big frame sizes its batch on its own: no hint added to it.
      const wanted = size < LENGTH_HINT_MAX ? this.#lastLength + size : size;
      const spare = this.#spare;
      this.#spare = null;
      if (spare !== null && spare.length >= wanted) buffer = spare;
      else {
        // Too small for this batch: back to its pool, not garbage.
        if (spare !== null) giveWriteBuffer(spare);
        buffer = takeWriteBuffer(Math.max(WRITE_BUFFER_SIZE, wanted));
      }
      this.#buffer = buffer;
      this.#length = this.#sealed = 0;
    } else if (this.#length + size > buffer.length) {
      // Move what is not sealed yet into a bigger buffer, so the batch
      // stays one contiguous write: a copy is cheaper than a system call
      // for anything below COPY_LIMIT.
      const pending = this.#length - this.#sealed;
      const next = takeWriteBuffer(Math.max(buffer.length * 2, pending + size));
      next.set(buffer.subarray(this.#sealed, this.#length));
      // No batch part is a view of it: back to its pool, not garbage.
      if (this.#sealed === 0) giveWriteBuffer(buffer);
      buffer = next;
      this.#buffer = buffer;
      this.#length = pending;
      this.#sealed = 0;
    }
    return buffer;
  }

  #seal(batch: Batch): void {
    if (this.#log !== null) this.#unshare();
    if (this.#buffer !== null && this.#length > this.#sealed) {
      batch.parts.push(this.#buffer.subarray(this.#sealed, this.#length));
      this.#sealed = this.#length;
    }
  }

  /**
   * Starts writing what is queued (internal: the per-turn scheduler calls
   * it; a method rather than a closure per queue).
   */
  writeNow(): void {
    this.#flush();
  }

  // The write in progress: the batch's part being written, its index, how
  // much of it the OS took, and the write buffer to recycle after it.
  // Callbacks rather than an async loop: no promise and no suspended frame
  // per batch, which under fan-out is one per subscriber per turn.
  #part: Uint8Array | null = null;
  #partIndex = 0;
  #offset = 0;
  #written: Uint8Array | null = null;
  readonly #onWritten = (n: number): void => this.#wrote(n);
  readonly #onWriteFailed = (cause: unknown): void => this.#writeFailed(cause);

  #flush(): void {
    this.#scheduled = this.#sharedScheduled = this.#eager = false;
    // Scheduled twice (at the turn's end, then eagerly): one flush runs.
    if (this.#flushing) return;
    this.#flushing = true;
    this.#next();
  }

  /** Writes the next batch, or ends the flush when there is none. */
  #next(afterWrite = false): void {
    const batch = this.#batch;
    if (
      afterWrite && this.#log !== null && this.bufferedAmount < EAGER_FLUSH &&
      this.#makeFailure === null
    ) {
      // Published frames came while writing: they wait for the next shared
      // pass, with everything else published until then.
      this.#flushing = false;
      this.#scheduleShared();
      return;
    }
    if (batch === null || this.#makeFailure !== null) {
      this.#flushing = false;
      if (this.#batch === null && this.#spare !== null) {
        // Nothing queued: an idle socket holds no write buffer. A small
        // one goes back to the pool of its size.
        giveWriteBuffer(this.#spare);
        this.#spare = null;
      }
      this.#wakeIdle();
      return;
    }
    const log = this.#log;
    if (log !== null) {
      // Published frames only: their range of the log, as it is.
      this.#log = null;
      batch.parts.push(log.view(this.#logStart, this.#logEnd));
    } else this.#seal(batch);
    this.#written = this.#buffer;
    this.#lastLength = Math.min(this.#length, LENGTH_HINT_MAX);
    this.#batch = null;
    this.#writing = batch;
    this.#buffer = null;
    this.#length = this.#sealed = 0;
    this.#partIndex = 0;
    if (batch.parts.length === 0) this.#batchWritten(batch);
    else this.#writePart(batch.parts[0]);
  }

  #writePart(part: Uint8Array): void {
    this.#part = part;
    this.#offset = 0;
    this.#issue(part);
  }

  #issue(bytes: Uint8Array): void {
    let written: Promise<number>;
    try {
      written = this.#writer.write(bytes);
    } catch (cause) {
      this.#writeFailed(cause);
      return;
    }
    written.then(this.#onWritten, this.#onWriteFailed);
  }

  #wrote(n: number): void {
    // Counted down as the OS takes bytes, so a writer waiting at the
    // high-water mark goes on before a big batch is done.
    this.bufferedAmount -= n;
    this.#wakeDrain();
    const part = this.#part!;
    this.#offset += n;
    if (this.#offset < part.length) {
      this.#issue(part.subarray(this.#offset));
      return;
    }
    const batch = this.#writing!;
    if (++this.#partIndex < batch.parts.length) {
      this.#writePart(batch.parts[this.#partIndex]);
      return;
    }
    this.#batchWritten(batch);
  }

  #batchWritten(batch: Batch): void {
    this.#part = null;
    this.#writing = null;
    const written = this.#written;
    this.#written = null;
    if (written !== null) {
      if (written.length > WRITE_KEEP_LIMIT) giveWriteBuffer(written);
      else if (this.#spare === null) this.#spare = written;
      else {
        // Two idle buffers (frames came in while this one was being
        // written): keep the bigger, and the other for the next queue
        // rather than letting the next overlap allocate one.
        const other = this.#spare;
        const keepWritten = written.length > other.length;
        this.#spare = keepWritten ? written : other;
        giveWriteBuffer(keepWritten ? other : written);
      }
    }
    batch.resolve();
    recycleBatch(batch);
    this.#next(true);
  }

  #writeFailed(cause: unknown): void {
    const batch = this.#writing!;
    this.#part = null;
    this.#writing = null;
    this.#written = null;
    const error = this.#owner.writeFailed(cause);
    batch.reject(error);
    this.fail(error);
    this.#flushing = false;
    if (this.#batch === null && this.#spare !== null) {
      giveWriteBuffer(this.#spare);
      this.#spare = null;
    }
    this.#wakeIdle();
  }

  #wakeDrain(): void {
    const failed = this.#makeFailure !== null;
    if (this.bufferedAmount <= this.#highWaterMark || failed) {
      this.#drain?.resolve();
      this.#drain = null;
    }
    if (
      this.#lowWaiter !== null &&
      (this.bufferedAmount <= this.#lowWaterMark || failed)
    ) {
      const wake = this.#lowWaiter;
      this.#lowWaiter = null;
      wake();
    }
  }

  #wakeIdle(): void {
    if (this.#idle.length === 0) return;
    if (this.#batch !== null && this.#makeFailure === null) return;
    for (const resolve of this.#idle.splice(0)) resolve();
  }
}

function rejected(error: unknown): Promise<void> {
  const promise = Promise.reject(error);
  promise.catch(noop);
  return promise;
}

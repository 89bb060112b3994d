/**
 * Every buffer that outlives one call, and the pools that keep them: the
 * read buffers a socket reads into, the write buffers a write queue
 * gathers frames in, the slab small received payloads are copied into,
 * and the scratch buffer of the deflate codec. Under connection churn,
 * allocating a read buffer and a write buffer per connection kept the
 * garbage collector busy, so ended connections leave theirs here for new
 * ones; the pools are bounded, and what they hold is counted for the
 * memory tests.
 *
 * No I/O, no timers, no promises: the pure core (`protocol.ts`) copies
 * payloads through it.
 *
 * @module
 */

import { MESSAGE_TOO_BIG } from "./close.ts";
import { FrameError } from "./frame.ts";

/** At most `max` idle buffers of exactly `size` bytes. */
export class BufferPool {
  /** The size of every buffer in the pool, in bytes. */
  readonly size: number;
  readonly #max: number;
  readonly #idle: Uint8Array[] = [];

  /** An empty pool of `size`-byte buffers that keeps at most `max`. */
  constructor(size: number, max: number) {
    this.size = size;
    this.#max = max;
  }

  /** Bytes held by the idle buffers. */
  get idleBytes(): number {
    return this.#idle.length * this.size;
  }

  /** An idle buffer, or a new one. */
  take(): Uint8Array {
    return this.#idle.pop() ?? new Uint8Array(this.size);
  }

  /**
   * Gives back a buffer nothing reads or writes any more and no view of
   * which is kept. Anything but a whole buffer of `size` bytes is dropped.
   */
  give(buffer: Uint8Array): void {
    if (
      buffer.length === this.size && buffer.byteOffset === 0 &&
      buffer.buffer.byteLength === this.size && this.#idle.length < this.#max
    ) this.#idle.push(buffer);
  }
}

// -- Read buffers --

// Which buffer a socket's next read goes into. Every read that may wait
// goes into the connection's own small buffer: a pending read holds its
// buffer for as long as the peer is silent, and most connections are
// silent most of the time. A read that fills its buffer means more is
// waiting: the next one (which completes at once) takes a pooled 8 KiB
// buffer, then bigger ones up to 256 KiB; a read that drains the socket
// goes back to the small buffer.

/**
 * Read buffers of busy connections, 8 KiB each: a socket takes one when a
 * read fills its small buffer, and gives it back when it goes quiet.
 */
export const readBuffers: BufferPool = new BufferPool(8 * 1024, 128);

/**
 * The size of the buffer a quiet socket reads into: a pending read holds
 * its buffer for as long as the peer is silent, so this is paid by every
 * idle connection (it was 2 KiB, most of what an idle socket held). A read
 * that fills it moves to a pooled 8 KiB buffer, as before.
 */
export const SMALL_READ = 512;

/**
 * The size of a connection's first read buffer, the one its HTTP head is
 * read into: a browser's upgrade request is 500 to 700 bytes without
 * cookies, and a bigger head grows it.
 */
export const HEAD_READ = 1024;

/**
 * Below this, a read that drained the socket goes back to the small
 * buffer; a burst this big keeps the bigger one for the next.
 */
const BURST_READ = 2048;

/** The biggest buffer a read grows to. */
const READ_SIZE_MAX = 256 * 1024;

/**
 * The connection's own small buffer: the one its head was read into when
 * that was a small one, else a new one.
 */
export function smallReadBuffer(
  headBuffer: Uint8Array | undefined,
): Uint8Array {
  return headBuffer !== undefined && headBuffer.length === SMALL_READ
    ? headBuffer
    : new Uint8Array(SMALL_READ);
}

/**
 * The buffer for the next read after `n` bytes came into `buffer`: a
 * bigger one when they filled it, the small one when they did not.
 */
export function nextReadBuffer(
  buffer: Uint8Array,
  small: Uint8Array,
  n: number,
): Uint8Array {
  if (n === buffer.length) {
    if (buffer === small) return readBuffers.take();
    if (buffer.length >= READ_SIZE_MAX) return buffer;
    readBuffers.give(buffer);
    return new Uint8Array(buffer.length * 2);
  }
  // Drained with a little: quiet again. With more (a burst that fits),
  // the same buffer suits the next burst.
  if (n >= BURST_READ) return buffer;
  if (buffer !== small) readBuffers.give(buffer);
  return small;
}

/**
 * Whether a read of `n` bytes into `buffer` (after one that `filled` its
 * buffer, or not) calls for another buffer: the tail of a burst that
 * filled the last buffer keeps the big one, as bursts of a few KiB would
 * otherwise take two reads each.
 */
export function needsOtherBuffer(
  buffer: Uint8Array,
  n: number,
  filled: boolean,
): boolean {
  return n === buffer.length || n >= BURST_READ || !filled;
}

/** Gives a read buffer back once nothing reads into it or views it. */
export function releaseReadBuffer(buffer: Uint8Array): void {
  readBuffers.give(buffer);
}

/**
 * A zeroed buffer for a frame's payload or an assembled message; a failed
 * allocation is the peer's message too big (1009).
 */
export function allocatePayload(
  capacity: number,
  what: string,
): Uint8Array<ArrayBuffer> {
  try {
    return new Uint8Array(capacity);
  } catch {
    throw new FrameError(
      MESSAGE_TOO_BIG,
      `${what} too big: cannot allocate ${capacity} bytes`,
    );
  }
}

/** A payload spanning reads with this much left is read into directly. */
export const DIRECT_READ_MIN = 16 * 1024;

/**
 * After reading this much, a socket lets the event loop turn before it
 * reads again. Reads that find data waiting complete at once, and so do
 * writes, so a busy connection could otherwise go on in microtasks: 33 to
 * 55 MiB were read between two turns of the loop, holding up timers, other
 * sockets and V8's own tasks (with 1 MiB echoes the loop turned 1,500
 * times a second instead of 15,000, and collections fell behind).
 */
export const TURN_BYTES = 4 * 1024 * 1024;

// -- Write buffers --

/** The size a write queue's buffer starts at. */
export const WRITE_BUFFER_SIZE = 4 * 1024;
/** A buffer bigger than this is not kept by its queue once written... */
export const WRITE_KEEP_LIMIT = 256 * 1024;
/**
 * ...but goes to a pool shared by every queue, at most POOL_BYTES in all:
 * a new buffer is zero-filled, which cost as much as copying the frames
 * into it when echoing 1 MiB messages. The bound is what a server keeps
 * after a burst of big messages.
 */
const POOL_BYTES = 8 * 1024 * 1024;
const pool: Uint8Array[] = [];
let pooledBytes = 0;

// Idle buffers of WRITE_BUFFER_SIZE: a queue takes one when it has frames
// to write and gives it back once they were written, so an idle socket
// holds none. 1,024 of them (4 MiB) serve a publish to 1,000 sockets per
// turn without allocating.
const smallBuffers = new BufferPool(WRITE_BUFFER_SIZE, 1024);

// Idle buffers of 8 KiB to 256 KiB, by power of two, 1 MiB of each size
// (6 MiB in all): a queue that gives its buffer back when idle takes a
// grown one again for its next burst instead of zero-filling a new one.
// Half as many let a quarter of the 16 KiB batches of 64 busy sockets
// (S2's echo) allocate: the pool kept 32 and dropped the rest.
const mediumBuffers = [128, 64, 32, 16, 8, 4].map((max, i) =>
  new BufferPool(WRITE_BUFFER_SIZE << (i + 1), max)
);

/** The pool of medium buffers that serves `size` (8 KiB < size ≤ 256 KiB). */
function mediumPool(size: number): BufferPool {
  // 2^13 = 8 KiB is the first class.
  return mediumBuffers[Math.max(0, 32 - Math.clz32(size - 1) - 13)];
}

/** Gives a buffer nothing writes from any more back to its pool, if any. */
export function giveWriteBuffer(buffer: Uint8Array): void {
  const length = buffer.length;
  if (length <= WRITE_BUFFER_SIZE) smallBuffers.give(buffer);
  else if (length <= WRITE_KEEP_LIMIT) mediumPool(length).give(buffer);
  else poolBuffer(buffer);
}

/** A pooled write buffer of at least `size` bytes, or a new one. */
export function takeWriteBuffer(size: number): Uint8Array {
  if (size <= WRITE_BUFFER_SIZE) return smallBuffers.take();
  if (size <= WRITE_KEEP_LIMIT) return mediumPool(size).take();
  for (let i = 0; i < pool.length; i++) {
    if (pool[i].length >= size) {
      const buffer = pool[i];
      pool[i] = pool[pool.length - 1];
      pool.pop();
      pooledBytes -= buffer.length;
      return buffer;
    }
  }
  return new Uint8Array(size);
}

/** Gives a written buffer bigger than WRITE_KEEP_LIMIT to the pool. */
function poolBuffer(buffer: Uint8Array): void {
  // Full: make room by dropping smaller ones, which are cheaper to make.
  while (pooledBytes + buffer.length > POOL_BYTES && pool.length > 0) {
    let smallest = 0;
    for (let i = 1; i < pool.length; i++) {
      if (pool[i].length < pool[smallest].length) smallest = i;
    }
    if (pool[smallest].length >= buffer.length) return;
    pooledBytes -= pool[smallest].length;
    pool[smallest] = pool[pool.length - 1];
    pool.pop();
  }
  if (pooledBytes + buffer.length > POOL_BYTES) return;
  pool.push(buffer);
  pooledBytes += buffer.length;
}

/** Bytes held by the pool of big write buffers (for tests). */
export function pooledWriteBytes(): number {
  return pooledBytes;
}

/** Bytes held by the pools of small and medium write buffers (for tests). */
export function pooledSmallWriteBytes(): number {
  let bytes = smallBuffers.idleBytes;
  for (const pool of mediumBuffers) bytes += pool.idleBytes;
  return bytes;
}

// -- Received payloads --

// Small payloads are copied out of the read buffer into a shared slab, so a
// message costs a view, not an ArrayBuffer of its own (allocating those is
// the single biggest cost of a small message). A retained message keeps at
// most one slab alive.
const SLAB_SIZE = 64 * 1024;
/** Largest payload that {@linkcode copyBytes} copies into the slab. */
export const SLAB_COPY_MAX = 4 * 1024;
let slab = new Uint8Array(SLAB_SIZE);
let slabOffset = 0;

/**
 * Room for `length` bytes (1 to {@linkcode SLAB_COPY_MAX}) in the slab,
 * for the caller to fill and own (never written again by us).
 */
export function slabRoom(length: number): Uint8Array {
  if (slabOffset + length > SLAB_SIZE) {
    slab = new Uint8Array(SLAB_SIZE);
    slabOffset = 0;
  }
  const start = slabOffset;
  // Keep views 8-byte aligned so typed-array views over them stay cheap.
  slabOffset = (start + length + 7) & ~7;
  // Not subarray(): it looks up a species constructor, a third slower.
  return new Uint8Array(slab.buffer, start, length);
}

/**
 * `parts` copied end to end into one new buffer of `size` bytes (by
 * default, their total length).
 */
export function joinBytes(
  parts: Uint8Array[],
  size: number = parts.reduce((n, part) => n + part.length, 0),
): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** A copy of `bytes` that the caller owns (never written again by us). */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  const length = bytes.length;
  if (length > SLAB_COPY_MAX) return bytes.slice();
  if (length === 0) return new Uint8Array(0);
  const room = slabRoom(length);
  room.set(bytes);
  return room;
}

// -- The deflate codec's output --

/** Size of {@linkcode codecScratch}. */
export const CODEC_SCRATCH_SIZE = 64 * 1024;
let scratch: Uint8Array | null = null;

/**
 * Where the deflate codec's output goes first: one buffer for all
 * connections, as the codec is synchronous.
 */
export function codecScratch(): Uint8Array {
  return scratch ??= new Uint8Array(CODEC_SCRATCH_SIZE);
}

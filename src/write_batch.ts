/**
 * What the write queues share: the batch of frames waiting for the OS, the
 * one flush per event-loop turn for every queue with frames waiting, and
 * the logs that `publish` appends frames to so that its subscribers can
 * write the same bytes without a copy each.
 *
 * @module
 */

import { setImmediate, setTimeout } from "node:timers";

/** What the per-turn flush calls. */
export interface Flushable {
  writeNow(): void;
}

/** Does nothing (a rejection handler). */
export function noop(): void {}

// Every queue with frames waiting is flushed from one setImmediate per
// event-loop turn, not one each: a publish to 1,000 sockets schedules once.
let flushes: Flushable[] = [];
let spareFlushes: Flushable[] = [];

function runFlushes(): void {
  const due = flushes;
  flushes = spareFlushes;
  for (let i = 0; i < due.length; i++) due[i].writeNow();
  due.length = 0;
  spareFlushes = due;
}

/**
 * The least time from the end of one pass that writes published frames
 * from a topic's log to the start of the next, in ms. Under steady
 * publishing the next pass waits out the rest, so each subscriber gets what
 * was published meanwhile in one write call rather than one per turn; a
 * publish after a quiet moment goes out at the end of its turn. The price:
 * under load, a published frame waits up to this long. Under S6 (1,000
 * subscribers, 8 broadcasts in flight, the server's core saturated) it
 * halved the write calls per broadcast, and the broadcasts' round trip got
 * shorter, not longer (bench/RESULTS.md).
 */
export const SHARED_PASS_INTERVAL = 4;

let sharedFlushes: Flushable[] = [];
let lastSharedPass = -Infinity;

function runSharedFlushes(): void {
  const due = sharedFlushes;
  sharedFlushes = [];
  for (let i = 0; i < due.length; i++) due[i].writeNow();
  lastSharedPass = performance.now();
}

/**
 * Flushes `queue`, whose batch is published frames only, in the next pass
 * over such queues: at the end of this turn, or {@linkcode
 * SHARED_PASS_INTERVAL} after the last pass.
 */
export function scheduleSharedFlush(queue: Flushable): void {
  if (sharedFlushes.length === 0) {
    const wait = lastSharedPass + SHARED_PASS_INTERVAL - performance.now();
    if (wait <= 0) setImmediate(runSharedFlushes);
    else setTimeout(runSharedFlushes, wait);
  }
  sharedFlushes.push(queue);
}

/** Flushes `queue` at the end of this event-loop turn. */
export function scheduleFlush(queue: Flushable): void {
  if (flushes.length === 0) setImmediate(runFlushes);
  flushes.push(queue);
}

/**
 * Frames waiting for the OS, and the promise that `flush()` waits on, made
 * only if somebody asks for it.
 */
export class Batch {
  parts: Uint8Array[] = [];
  // A part is the caller's own buffer, not a copy.
  borrowed = false;
  #promise: Promise<void> | null = null;
  #resolve: (() => void) | null = null;
  #reject: ((error: unknown) => void) | null = null;

  get promise(): Promise<void> {
    if (this.#promise === null) {
      const { promise, resolve, reject } = Promise.withResolvers<void>();
      // A flush nobody awaits must not become an unhandled rejection that
      // kills the process when the peer goes away; awaiting callers still
      // see the error.
      promise.catch(noop);
      this.#promise = promise;
      this.#resolve = resolve;
      this.#reject = reject;
    }
    return this.#promise;
  }

  resolve(): void {
    this.#resolve?.();
  }

  reject(error: unknown): void {
    this.#reject?.(error);
  }

  /** Nobody holds its promise: it may be used again once written. */
  get unclaimed(): boolean {
    return this.#promise === null;
  }
}

// Written batches nobody waited on, for the next ones: under fan-out
// every subscriber flushes a batch per turn.
const spareBatches: Batch[] = [];

/** An empty batch, reused if one is spare. */
export function newBatch(): Batch {
  return spareBatches.pop() ?? new Batch();
}

/** Takes back a written batch, unless somebody holds its promise. */
export function recycleBatch(batch: Batch): void {
  if (batch.unclaimed && spareBatches.length < 1024) {
    batch.parts.length = 0;
    batch.borrowed = false;
    spareBatches.push(batch);
  }
}

/**
 * Frames published on one topic, one after the other in one buffer. A
 * subscriber that gets every frame of the topic has a contiguous range of
 * it waiting, written as a view of this buffer: no copy per subscriber,
 * and subscribers with the same range write the same view. Bytes once
 * appended are never written again; a full log is replaced, not reused.
 */
export class SharedLog {
  readonly bytes: Uint8Array;
  length = 0;
  // The last views handed out: subscribers flushed in one pass mostly
  // have the same range.
  #views: (Uint8Array | null)[] = [null, null, null, null];
  #next = 0;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
  }

  /** Appends `frame`; returns where it starts, or -1 when it does not fit. */
  append(frame: Uint8Array): number {
    const start = this.length;
    if (start + frame.length > this.bytes.length) return -1;
    this.bytes.set(frame, start);
    this.length = start + frame.length;
    return start;
  }

  /** The bytes from `start` to `end`, as a view. */
  view(start: number, end: number): Uint8Array {
    const views = this.#views;
    const length = end - start;
    for (let i = 0; i < views.length; i++) {
      const view = views[i];
      if (
        view !== null && view.byteOffset === start && view.length === length
      ) return view;
    }
    const view = this.bytes.subarray(start, end);
    views[this.#next] = view;
    this.#next = (this.#next + 1) & 3;
    return view;
  }
}

/**
 * A virtual clock for the tests of keepalive, close and handshake timeouts:
 * {@linkcode FakeTime} replaces `setTimeout`, `clearTimeout`, `setInterval`,
 * `clearInterval`, `Date.now` and `performance.now` on `globalThis` until it
 * is disposed, and runs the timers only when the test moves time on.
 *
 * The library reads these globals when it sets a timer, not when it loads,
 * so a FakeTime made at the start of a test governs every timer that test's
 * sockets and servers set. Real I/O still happens on the real clock: between
 * two timers, {@linkcode FakeTime.tickAsync} gives the event loop a real
 * turn, and a test waits for what comes over the wire with `within` or
 * `waitFor` from `_helpers.ts`, which run on the real clock whatever is
 * installed. `setImmediate` and `queueMicrotask` are left alone: the write
 * path's flushes are I/O, not time.
 *
 * @module
 */

const real = {
  setTimeout: globalThis.setTimeout,
  clearTimeout: globalThis.clearTimeout,
  setInterval: globalThis.setInterval,
  clearInterval: globalThis.clearInterval,
  dateNow: Date.now,
  performanceNow: performance.now.bind(performance),
};

/**
 * One real turn of the event loop: pending I/O and its promise jobs run.
 * A zero-length real timeout, not `setImmediate`: immediates run before
 * Deno polls for I/O again, so a peer's answer would not get through.
 */
function realTurn(): Promise<void> {
  return new Promise((resolve) => real.setTimeout(resolve, 0));
}

interface Timer {
  id: number;
  /** Virtual time at which it is due. */
  at: number;
  /** Order of setting, for timers due at the same time. */
  seq: number;
  /** The period of an interval, or null for a timeout. */
  period: number | null;
  callback: (...args: unknown[]) => void;
  args: unknown[];
}

// Far above the ids Deno gives real timers, so a real timer set before the
// clock was installed can still be cleared through it.
const FIRST_ID = 2 ** 30;
// How many timers disposal runs at most before it calls one endless.
const DRAIN_LIMIT = 10_000;

let installed: FakeTime | null = null;

/**
 * A virtual clock installed on `globalThis` from construction until
 * disposal (`using time = new FakeTime()`). It starts at the real
 * `performance.now()` (rounded up to a whole ms) and `Date.now()`, and
 * moves only with
 * {@linkcode tick} and {@linkcode tickAsync}.
 *
 * Declare it before the servers and sockets of the test, so it is disposed
 * after them: disposal runs the timers still pending (a keepalive's last
 * sweep, a cancelled deadline's timer), as the real clock would have,
 * then restores the globals. A timer that keeps coming back after every
 * socket is closed fails the test there.
 */
export class FakeTime implements Disposable {
  #now: number;
  readonly #dateOffset: number;
  readonly #timers = new Map<number, Timer>();
  #nextId = FIRST_ID;
  #seq = 0;

  constructor() {
    if (installed !== null) throw new Error("A FakeTime is already installed");
    // Whole milliseconds, so sums of whole delays stay exact.
    this.#now = Math.ceil(real.performanceNow());
    this.#dateOffset = real.dateNow() - this.#now;
    installed = this;
    const g = globalThis as Record<string, unknown>;
    g.setTimeout = (callback: unknown, ms?: number, ...args: unknown[]) =>
      this.#set(callback, ms, args, false);
    g.setInterval = (callback: unknown, ms?: number, ...args: unknown[]) =>
      this.#set(callback, ms, args, true);
    g.clearTimeout = g.clearInterval = (id?: number) => this.#clear(id);
    Date.now = () => Math.floor(this.#now + this.#dateOffset);
    (performance as { now: () => number }).now = () => this.#now;
  }

  /** The virtual `performance.now()`. */
  get now(): number {
    return this.#now;
  }

  /** How many timers are pending. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Virtual ms until the next timer is due, or null when none is pending. */
  get nextIn(): number | null {
    const next = this.#next(Infinity);
    return next === null ? null : next.at - this.#now;
  }

  #set(
    callback: unknown,
    ms: number | undefined,
    args: unknown[],
    repeat: boolean,
  ): number {
    if (typeof callback !== "function") {
      throw new TypeError("FakeTime runs function callbacks only");
    }
    const delay = Math.max(repeat ? 1 : 0, Number(ms) || 0);
    const id = this.#nextId++;
    this.#timers.set(id, {
      id,
      at: this.#now + delay,
      seq: this.#seq++,
      period: repeat ? delay : null,
      callback: callback as Timer["callback"],
      args,
    });
    return id;
  }

  #clear(id: number | undefined): void {
    if (id === undefined) return;
    if (!this.#timers.delete(id)) real.clearTimeout(id);
  }

  /** The earliest timer due at or before `until`. */
  #next(until: number): Timer | null {
    let next: Timer | null = null;
    for (const timer of this.#timers.values()) {
      if (
        timer.at <= until &&
        (next === null || timer.at < next.at ||
          (timer.at === next.at && timer.seq < next.seq))
      ) next = timer;
    }
    return next;
  }

  /** Moves the clock to `timer`'s time and runs it. */
  #run(timer: Timer): void {
    this.#now = Math.max(this.#now, timer.at);
    if (timer.period === null) this.#timers.delete(timer.id);
    else {
      timer.at += timer.period;
      timer.seq = this.#seq++;
    }
    timer.callback(...timer.args);
  }

  /** Resolves `ms` from now on the virtual clock, once a tick gets there. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.#set(resolve, ms, [], false));
  }

  /**
   * Moves the clock `ms` on, running each timer due by then in order, with
   * the clock at its due time; timers those set run too if due in time.
   * No I/O runs meanwhile: for timers that lead to I/O, use
   * {@linkcode tickAsync}.
   */
  tick(ms: number): void {
    const until = this.#now + ms;
    for (let timer; (timer = this.#next(until)) !== null;) this.#run(timer);
    this.#now = until;
  }

  /**
   * Like {@linkcode tick}, but gives the event loop real turns before,
   * between and after the timers, so the promise jobs and the I/O they
   * start can go on as they would between two real timers.
   */
  async tickAsync(ms: number, turns = 2): Promise<void> {
    const until = this.#now + ms;
    await this.settle(turns);
    for (let timer; (timer = this.#next(until)) !== null;) {
      this.#run(timer);
      await this.settle(turns);
    }
    this.#now = until;
  }

  /**
   * Moves the clock on `step` ms at a time, as {@linkcode tickAsync} does,
   * until `promise` settles, and returns what it settles with: for a timer
   * that real I/O arms at a moment the test cannot see (a server's
   * deadline for a connection it accepts). How late the clock may then be
   * is a step or a few; it fails after `limit` virtual ms.
   */
  async tickUntil<T>(
    promise: Promise<T>,
    step = 10,
    limit = 60_000,
  ): Promise<T> {
    let settled = false;
    const watched = promise.finally(() => settled = true);
    watched.catch(() => {});
    for (let moved = 0; !settled; moved += step) {
      if (moved >= limit) {
        throw new Error(`Nothing settled within ${limit} virtual ms`);
      }
      await this.tickAsync(step);
    }
    return await watched;
  }

  /** Real turns of the event loop with the clock standing still. */
  async settle(turns = 2): Promise<void> {
    for (let i = 0; i < turns; i++) await realTurn();
  }

  /**
   * Runs what is still pending, as the real clock would have, and
   * restores the real globals.
   *
   * @throws {Error} when timers keep coming back (an interval of a socket
   *   still open): they are dropped and named
   */
  [Symbol.dispose](): void {
    try {
      for (let runs = 0; this.#timers.size > 0; runs++) {
        if (runs === DRAIN_LIMIT) {
          const left = [...this.#timers.values()]
            .map((t) => t.callback.name || "anonymous").join(", ");
          throw new Error(
            `FakeTime disposed with timers that never stop: ${left}`,
          );
        }
        this.#run(this.#next(Infinity)!);
      }
    } finally {
      this.#timers.clear();
      Object.assign(globalThis, {
        setTimeout: real.setTimeout,
        clearTimeout: real.clearTimeout,
        setInterval: real.setInterval,
        clearInterval: real.clearInterval,
      });
      Date.now = real.dateNow;
      delete (performance as { now?: unknown }).now;
      installed = null;
    }
  }
}

/**
 * Coarse timeouts for kept-alive plain HTTP connections: the idle wait
 * between requests and each response write. One sweep every
 * {@linkcode SWEEP_MS} checks them all, so arming and disarming one is a
 * `Date.now()` and a field write. A `Deadline` (see `deadlines.ts`) costs
 * a clock op and an allocation, and every request armed two.
 *
 * @module
 */

/** How often armed timers are checked: a timeout fires up to this late. */
export const SWEEP_MS = 100;

const timers = new Set<ConnTimer>();
let sweeper: ReturnType<typeof setInterval> | undefined;

function sweep(): void {
  const now = Date.now();
  for (const timer of timers) timer.check(now);
}

/**
 * One connection's timeout: armed for a span, disarmed when what it
 * guards is done, expired by the sweep.
 *
 * @example
 * ```ts
 * import { ConnTimer } from "./http_timer.ts";
 * import assert from "node:assert/strict";
 *
 * let expired = false;
 * const timer = new ConnTimer(() => expired = true);
 * timer.arm(10);
 * await new Promise((resolve) => setTimeout(resolve, 250));
 * assert.ok(expired);
 * timer.stop();
 * ```
 */
export class ConnTimer {
  #at = Infinity;
  #onExpire: () => void;
  #registered = false;

  /** @param onExpire called once per arming that is not disarmed in time */
  constructor(onExpire: () => void) {
    this.#onExpire = onExpire;
  }

  /** Expires in `ms` (within {@linkcode SWEEP_MS} after) unless disarmed. */
  arm(ms: number): void {
    this.#at = Date.now() + ms;
    if (!this.#registered) {
      this.#registered = true;
      timers.add(this);
      if (sweeper === undefined) {
        sweeper = setInterval(sweep, SWEEP_MS);
        // It guards connections, whose own reads keep the process alive.
        Deno.unrefTimer(sweeper);
      }
    }
  }

  /** Cancels the arming. */
  disarm(): void {
    this.#at = Infinity;
  }

  /** Stops for good: the connection is done. */
  stop(): void {
    this.#at = Infinity;
    if (!this.#registered) return;
    this.#registered = false;
    timers.delete(this);
    if (timers.size === 0 && sweeper !== undefined) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  }

  /** Called by the sweep. */
  check(now: number): void {
    if (this.#at <= now) {
      this.#at = Infinity;
      this.#onExpire();
    }
  }
}

/**
 * Many timeouts of one duration on one timer. Every connection has a
 * handshake deadline and a close deadline; a `setTimeout` and a
 * `clearTimeout` each were a measurable part of a short connection's cost.
 * Deadlines of the same duration expire in the order they were set, so a
 * FIFO and one (unref'd) timer armed for its head are enough.
 *
 * @module
 */

/** A pending deadline; `cancel()` it when what it guards is done. */
export interface Deadline {
  cancel(): void;
}

interface Entry extends Deadline {
  at: number;
  callback: (() => void) | null;
}

/** Deadlines of `ms` milliseconds, each calling its callback when it expires. */
export class Deadlines {
  readonly ms: number;
  #queue: Entry[] = [];
  #head = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(ms: number) {
    this.ms = ms;
  }

  /** Calls `callback` in `ms` milliseconds unless cancelled first. */
  add(callback: () => void): Deadline {
    const entry: Entry = {
      at: performance.now() + this.ms,
      callback,
      cancel: () => {
        if (entry.callback === null) return;
        entry.callback = null;
        this.#trim();
      },
    };
    this.#queue.push(entry);
    if (this.#timer === undefined) this.#arm();
    return entry;
  }

  /** Drops cancelled entries at the head. */
  #trim(): void {
    const queue = this.#queue;
    while (this.#head < queue.length && queue[this.#head].callback === null) {
      this.#head++;
    }
    if (this.#head === queue.length) {
      // The timer stays set (it is unref'd: it keeps no process alive) and
      // finds nothing to do: clearing it only to set it again for the next
      // deadline cost more, under connection churn, than letting it fire.
      queue.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > queue.length) {
      queue.splice(0, this.#head);
      this.#head = 0;
    }
  }

  #arm(): void {
    const head = this.#queue[this.#head];
    this.#timer = setTimeout(
      this.#fire,
      Math.max(0, head.at - performance.now()),
    );
    // Deadlines guard connections, whose own reads keep the process alive.
    Deno.unrefTimer(this.#timer);
  }

  #fire = (): void => {
    this.#timer = undefined;
    const now = performance.now();
    const queue = this.#queue;
    while (this.#head < queue.length && queue[this.#head].at <= now) {
      const entry = queue[this.#head++];
      const callback = entry.callback;
      entry.callback = null;
      callback?.();
    }
    this.#trim();
    if (this.#head < queue.length && this.#timer === undefined) this.#arm();
  };
}

const shared = new Map<number, Deadlines>();

/** The {@linkcode Deadlines} of `ms` milliseconds shared by every caller. */
export function deadlinesOf(ms: number): Deadlines {
  let deadlines = shared.get(ms);
  if (deadlines === undefined) {
    deadlines = new Deadlines(ms);
    shared.set(ms, deadlines);
  }
  return deadlines;
}

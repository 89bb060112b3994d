/**
 * Keepalive for every socket of one setting on one timer: a ping after
 * `pingInterval` of silence from the peer, a drop when it then stays silent
 * for `pongTimeout`. A socket notes that it heard from the peer with two
 * field writes per read; no socket has a timer, a closure or a promise of
 * its own for it.
 *
 * @module
 */

import { type Member, Members } from "./members.ts";

/** What a {@linkcode Keepalive} does to the sockets it watches. */
export interface KeepaliveHooks<T> {
  /** The peer has been silent for `pingInterval`: send it a ping. */
  ping(item: T): void;
  /** The peer stayed silent for `pongTimeout` after the ping: drop it. */
  expire(item: T): void;
  /**
   * Whether this side stopped reading because its own application is
   * behind: the peer's answer may be sitting unread, so it is not blamed.
   */
  readPaused(item: T): boolean;
}

/** One watched socket: its place among the others and when it was heard from. */
export interface Watch<T> extends Member<T> {
  /** The tick at which the peer was last heard from. */
  heard: number;
  /** The tick of our outstanding ping, -1 when none. */
  pinged: number;
}

/** The sockets of one (pingInterval, pongTimeout), swept by one timer. */
export class Keepalive<T> {
  /** Sweeps so far: the clock a socket reads when it hears from its peer. */
  ticks = 0;
  readonly #watches = new Members<T, Watch<T>>();
  readonly #hooks: KeepaliveHooks<T>;
  readonly #tickMs: number;
  readonly #pingTicks: number;
  readonly #pongTicks: number;
  #timer: ReturnType<typeof setInterval> | undefined;

  /**
   * @param pingInterval ms of silence before a ping
   * @param pongTimeout ms of silence after the ping before the drop
   * @param hooks what to do to a socket
   */
  constructor(
    pingInterval: number,
    pongTimeout: number,
    hooks: KeepaliveHooks<T>,
  ) {
    // A quarter of the shorter period, so either acts at most a quarter
    // late; at least 10 ms and at most a second between sweeps.
    const tickMs = Math.min(
      1000,
      Math.max(10, Math.floor(Math.min(pingInterval, pongTimeout) / 4)),
    );
    this.#tickMs = tickMs;
    this.#pingTicks = Math.max(1, Math.round(pingInterval / tickMs));
    this.#pongTicks = Math.max(1, Math.round(pongTimeout / tickMs));
    this.#hooks = hooks;
  }

  /** How many sockets are watched. */
  get size(): number {
    return this.#watches.size;
  }

  /** Watches a socket; {@linkcode remove} it when its connection is over. */
  add(value: T): Watch<T> {
    const watch = this.#watches.insert({
      value,
      index: 0,
      heard: this.ticks,
      pinged: -1,
    });
    if (this.#timer === undefined) {
      this.#timer = setInterval(this.#sweep, this.#tickMs);
      // The connections' own reads keep the process alive, not keepalive.
      Deno.unrefTimer(this.#timer);
    }
    return watch;
  }

  /** Stops watching; the timer stops at the first sweep with none left. */
  remove(watch: Watch<T>): void {
    this.#watches.remove(watch);
  }

  #sweep = (): void => {
    if (this.#watches.size === 0) {
      // Not stopped in remove(): under churn the set empties and fills
      // again all the time.
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    const ticks = ++this.ticks;
    const hooks = this.#hooks;
    const pings: T[] = [];
    const expired: T[] = [];
    this.#watches.forEachMember((watch) => {
      if (watch.pinged < 0) {
        if (ticks - watch.heard >= this.#pingTicks) {
          watch.pinged = ticks;
          pings.push(watch.value);
        }
      } else if (ticks - watch.pinged >= this.#pongTicks) {
        if (hooks.readPaused(watch.value)) watch.pinged = ticks; // once more
        else expired.push(watch.value);
      }
    });
    // Acted on after the walk: a socket may leave the array meanwhile.
    for (const item of pings) hooks.ping(item);
    for (const item of expired) hooks.expire(item);
  };
}

/** The two settings a keepalive is made of. */
export interface Timings {
  pingInterval: number;
  pongTimeout: number;
}

/** One {@linkcode Keepalive} per setting, made when first asked for. */
export class Keepalives<T> {
  readonly #hooks: KeepaliveHooks<T>;
  readonly #bySetting = new Map<string, Keepalive<T>>();
  #lastTimings: Timings | null = null;
  #last: Keepalive<T> | null = null;

  /** @param hooks what every keepalive made here does to a socket */
  constructor(hooks: KeepaliveHooks<T>) {
    this.#hooks = hooks;
  }

  /** The keepalive shared by every socket with these timings. */
  for(timings: Timings): Keepalive<T> {
    // A server's sockets share one limits object: look it up once.
    if (timings === this.#lastTimings) return this.#last!;
    const key = `${timings.pingInterval}/${timings.pongTimeout}`;
    let keepalive = this.#bySetting.get(key);
    if (keepalive === undefined) {
      keepalive = new Keepalive(
        timings.pingInterval,
        timings.pongTimeout,
        this.#hooks,
      );
      this.#bySetting.set(key, keepalive);
    }
    this.#lastTimings = timings;
    this.#last = keepalive;
    return keepalive;
  }
}

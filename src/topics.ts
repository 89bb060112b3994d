/**
 * Topics: which server-side sockets hear which topic, and `publish`, which
 * encodes a message once and queues the same bytes on every subscriber,
 * and hands them to the broker, if there is one, for the other servers.
 *
 * @module
 */

import { numberOption } from "./check.ts";
import { setImmediate } from "node:timers";
import type { Broker, BrokerEvents, BrokerStats } from "./broker.ts";
import {
  decodeEnvelope,
  encodeEnvelope,
  MAX_ENVELOPE_MESSAGES,
  MAX_TOPIC_BYTES,
  type NodeId,
  randomNodeId,
} from "./envelope.ts";
import {
  encodeFrame,
  OPCODE_BINARY,
  OPCODE_CONTINUATION,
  OPCODE_TEXT,
} from "./frame.ts";
import { type Member, Members } from "./members.ts";

const encoder = new TextEncoder();

/** Options of {@linkcode Topics}. */
export interface TopicsOptions {
  /**
   * A subscriber whose `bufferedAmount` (bytes queued and not yet taken by
   * the OS) is over this many bytes is skipped by `publish`: it misses that
   * message instead of buffering without bound. Use `Infinity` to never
   * skip.
   * @default {1048576}
   */
  maxPublishBacklog?: number;
  /**
   * Published messages longer than this are sent as several frames.
   * @default {65536}
   */
  fragmentSize?: number;
  /**
   * Shares these topics with other servers (Workers, processes, hosts):
   * `publish` also hands each message to the broker, and messages other
   * servers publish on a topic reach the subscribers here. The broker
   * becomes this `Topics`' (or this server's): `close()` closes it.
   */
  broker?: Broker;
  /**
   * With a broker: how long after a topic's last local subscriber leaves
   * the broker is told to stop delivering it, in ms, so that a socket
   * that leaves and comes back costs no round trip to the broker.
   * @default {1000}
   */
  unsubscribeDelay?: number;
}

/** What `publish` needs of a subscribed socket. */
export interface Subscriber {
  /** Bytes queued on the socket and not yet taken by the OS. */
  readonly bufferedAmount: number;
  /**
   * Queues an already encoded (unmasked) frame; `false`, queuing nothing,
   * when the socket no longer accepts data.
   */
  push(frame: Uint8Array): boolean;
}

/**
 * The server's side of topics, as sockets see it: a socket keeps the
 * handle of each subscription and gives each back when its connection is
 * over.
 */
export interface TopicRegistry {
  /** Adds a subscriber to the topic; the handle removes it. */
  subscribe(subscriber: Subscriber, topic: string): Member<Subscriber>;
  /** Removes what {@linkcode subscribe} added. */
  unsubscribe(topic: string, member: Member<Subscriber>): void;
}

// Each Topics' registry, kept out of its public API.
const registries = new WeakMap<Topics, TopicRegistry>();

/**
 * Returns the registry that sockets of `topics` report to (for `listen`
 * and `accept`; not part of the public API).
 */
export function topicRegistry(topics: Topics): TopicRegistry {
  return registries.get(topics)!;
}

/**
 * A set of topics that server-side sockets subscribe to, with
 * {@linkcode Topics.publish} to send one message to every subscriber.
 *
 * Every `Server` has one (`server.publish`); make your own for sockets of
 * `accept` and pass it as its `topics` option. Subscriptions end when the
 * connection does.
 *
 * Without a broker, topics live in one process: a message published here
 * reaches only the subscribers connected here. With one (the `broker`
 * option: `workerBroker` for the Workers of a process, `redisBroker` from
 * `@silly/websocket/redis` across processes and hosts), it also reaches
 * the subscribers of every other `Topics` (or server) on that broker: at
 * most once, in the order each publisher published on the topic, local
 * subscribers first and without a round trip. What is lost on the way is
 * counted in {@linkcode Topics.brokerStats}.
 *
 * @example Publish to the sockets of your own listener
 * ```ts
 * import { accept, connect, Topics } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const topics = new Topics();
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const served = (async () => {
 *   const sock = await accept(await listener.accept(), { topics });
 *   sock?.subscribe("news");
 *   await sock?.closed;
 * })();
 *
 * const client = await connect(`ws://127.0.0.1:${listener.addr.port}`);
 * while (topics.subscriberCount("news") === 0) {
 *   await new Promise((resolve) => setTimeout(resolve, 5));
 * }
 * assert.equal(topics.publish("news", "extra!", "text"), 1);
 * assert.deepEqual(await client.read(), { type: "text", data: "extra!" });
 * await client.close();
 * await served;
 * listener.close();
 * ```
 */
export class Topics {
  // Subscribers are Members, not Sets, and each socket keeps its own
  // subscriptions: no table keyed by sockets that come and go (see
  // members.ts for what that costs under churn).
  #subscribers = new Map<string, Members<Subscriber>>();
  #maxPublishBacklog: number;
  #fragmentSize: number;
  #remote: Remote | null = null;

  /**
   * Makes an empty set of topics, shared through `broker` if one is given
   * (which it opens now).
   *
   * @param options the backlog bound, fragment size and broker
   * @throws {TypeError} `maxPublishBacklog` or `fragmentSize` is not a
   *   positive number, `unsubscribeDelay` is negative, `broker` is not a
   *   {@linkcode Broker} or belongs to another `Topics` already
   */
  constructor(options: TopicsOptions = {}) {
    this.#maxPublishBacklog = numberOption(
      "maxPublishBacklog",
      options.maxPublishBacklog,
      1024 * 1024,
    );
    this.#fragmentSize = numberOption(
      "fragmentSize",
      options.fragmentSize,
      64 * 1024,
    );
    const delay = options.unsubscribeDelay ?? 1000;
    if (typeof delay !== "number" || !(delay >= 0)) {
      throw new TypeError(
        `Invalid option unsubscribeDelay: expected a non-negative number, received ${delay}`,
      );
    }
    if (options.broker !== undefined) {
      this.#remote = new Remote(
        checkBroker(options.broker),
        delay,
        (topic, messages) => {
          const sockets = this.#subscribers.get(topic);
          if (sockets === undefined) return;
          for (const frames of messages) this.#deliver(sockets, frames);
        },
      );
    }
    registries.set(this, {
      subscribe: (subscriber, topic) => {
        let subscribers = this.#subscribers.get(topic);
        if (subscribers === undefined) {
          subscribers = new Members();
          this.#subscribers.set(topic, subscribers);
          this.#remote?.join(topic);
        }
        return subscribers.add(subscriber);
      },
      unsubscribe: (topic, member) => {
        const subscribers = this.#subscribers.get(topic);
        if (subscribers === undefined) return;
        subscribers.remove(member);
        if (subscribers.size === 0) {
          this.#subscribers.delete(topic);
          this.#remote?.leave(topic);
        }
      },
    });
  }

  /**
   * How many open sockets are subscribed to `topic` (here: not counting
   * other servers on the broker).
   *
   * @param topic the topic
   * @returns the number of subscribers, 0 for a topic nobody subscribed to
   */
  subscriberCount(topic: string): number {
    return this.#subscribers.get(String(topic))?.size ?? 0;
  }

  /**
   * Sends a message to every socket subscribed to `topic`. The frame is
   * encoded once and the same bytes are queued on each subscriber (with
   * whatever else that socket writes in the same event-loop turn). A
   * subscriber whose `bufferedAmount` is over `maxPublishBacklog` is
   * skipped and does not get this message; one that is closing is skipped
   * too. Write failures are not reported here: a socket whose connection
   * fails closes and leaves its topics.
   *
   * With a broker, the same bytes then go to the broker (the messages of
   * one event-loop turn together), and the other servers queue them on
   * their subscribers as they are. While the broker is down the message
   * still reaches the local subscribers; the others miss it, and it is
   * counted in {@linkcode Topics.brokerStats} (`unsent`).
   *
   * @param topic the topic
   * @param data the payload; strings are sent as UTF-8
   * @param type `"text"` or `"binary"`
   * @returns how many local subscribers the message was queued for
   * @throws {TypeError} `type` is not text or binary, or `data` is not a
   *   string or Uint8Array
   * @throws {RangeError} with a broker, `topic` is longer than 65535 UTF-8
   *   bytes
   */
  publish(
    topic: string,
    data: string | Uint8Array,
    type: "text" | "binary" = "binary",
  ): number {
    if (type !== "text" && type !== "binary") {
      throw new TypeError(
        `Cannot publish: type must be text or binary, received ${String(type)}`,
      );
    }
    let payload: Uint8Array;
    if (typeof data === "string") payload = encoder.encode(data);
    else if (data instanceof Uint8Array) payload = data;
    else {
      throw new TypeError(
        `Cannot publish: data must be a string or Uint8Array, received ${typeof data}`,
      );
    }
    topic = String(topic);
    const sockets = this.#subscribers.get(topic);
    const remote = this.#remote;
    if (remote === null) {
      if (sockets === undefined) return 0;
    } else if (
      topic.length > MAX_TOPIC_BYTES / 3 &&
      encoder.encode(topic).length > MAX_TOPIC_BYTES
    ) {
      throw new RangeError(
        `Cannot publish: a topic shared through a broker must be ${MAX_TOPIC_BYTES} bytes or less, received ${
          encoder.encode(topic).length
        } bytes`,
      );
    }
    const frames = encodeMessage(
      type === "text" ? OPCODE_TEXT : OPCODE_BINARY,
      payload,
      this.#fragmentSize,
    );
    // Local subscribers first: they never wait for the broker.
    const queued = sockets === undefined ? 0 : this.#deliver(sockets, frames);
    remote?.send(topic, frames);
    return queued;
  }

  /**
   * What was sent and received through the broker, and what was lost.
   *
   * @returns the counts, or `null` without a broker
   *
   * @example Counts after a publish
   * ```ts
   * import { Topics, workerBroker } from "@silly/websocket";
   * import assert from "node:assert/strict";
   *
   * const topics = new Topics({ broker: workerBroker("stats") });
   * topics.publish("t", "hi", "text");
   * await new Promise((resolve) => setTimeout(resolve, 10));
   * const stats = topics.brokerStats();
   * assert.equal(stats?.published, 1);
   * assert.equal(stats?.dropped, 0);
   * assert.equal(new Topics().brokerStats(), null);
   * await topics.close();
   * ```
   */
  brokerStats(): BrokerStats | null {
    return this.#remote?.stats() ?? null;
  }

  /**
   * Sends what is waiting for the broker and closes it (if there is one):
   * messages from other servers stop arriving, and later publishes reach
   * local subscribers only. `Server.close` calls it. Idempotent.
   *
   * @returns resolves when the broker is closed
   *
   * @example Closed at the end of the scope
   * ```ts
   * import { Topics, workerBroker } from "@silly/websocket";
   *
   * await using topics = new Topics({ broker: workerBroker("app") });
   * topics.publish("t", "bye", "text");
   * ```
   */
  close(): Promise<void> {
    return this.#remote?.close() ?? Promise.resolve();
  }

  /** Same as {@linkcode Topics.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Queues `frames` on every subscriber that has room; returns how many. */
  #deliver(sockets: Members<Subscriber>, frames: Uint8Array): number {
    const limit = this.#maxPublishBacklog;
    let queued = 0;
    // Queuing never removes a subscriber: walking the members is safe.
    sockets.forEach((subscriber) => {
      if (subscriber.bufferedAmount <= limit && subscriber.push(frames)) {
        queued++;
      }
    });
    return queued;
  }
}

// Brokers already given to a Topics: each carries one node's messages.
const brokersInUse = new WeakSet<Broker>();

function checkBroker(broker: Broker): Broker {
  if (
    typeof broker !== "object" || broker === null ||
    (["open", "subscribe", "unsubscribe", "publish", "close"] as const)
      .some((name) => typeof broker[name] !== "function")
  ) {
    throw new TypeError(
      "Invalid option broker: expected a Broker (open, subscribe, unsubscribe, publish, close)",
    );
  }
  if (brokersInUse.has(broker)) {
    throw new TypeError(
      "Invalid option broker: it belongs to another Topics already",
    );
  }
  brokersInUse.add(broker);
  return broker;
}

// An envelope is sent before it grows past this (unless one message alone
// is bigger): a broker's subscribers get bounded chunks.
const MAX_ENVELOPE_BYTES = 256 * 1024;
// Publish sequence numbers kept, one per topic; past this the oldest
// topic's is forgotten and starts again at 1 (receivers take a sequence
// that goes back to 1 for a restart, and drop any other that goes back as
// a duplicate).
const MAX_SEQUENCES = 65_536;
// Publishers remembered per topic on the receiving side; past this the
// topic starts afresh (a gap across that moment goes uncounted).
const MAX_PUBLISHERS = 1024;
// Node ids as map keys: 53 of their 64 bits, a safe integer.
const HIGH_KEY_MASK = 0x1f_ffff;

/** Messages of one topic waiting for the end of the turn. */
interface Outgoing {
  first: number;
  frames: Uint8Array[];
  bytes: number;
}

/** The broker side of a Topics: interest, envelopes, sequence numbers, counts. */
class Remote implements BrokerEvents {
  #broker: Broker;
  #deliver: (topic: string, messages: Uint8Array[]) => void;
  #node: NodeId = randomNodeId();
  #delay: number;
  #closing: Promise<void> | null = null;
  #up = false;
  #wasUp = false;
  #published = 0;
  #received = 0;
  #unsent = 0;
  #missed = 0;
  #malformed = 0;
  #reconnects = 0;
  // Topics the broker was asked to deliver, each with the last sequence
  // number seen from each publisher.
  #interest = new Map<string, Map<number, number>>();
  // Joined this turn, not yet told to the broker.
  #joining: string[] = [];
  // Topics without local subscribers, since when (performance.now()).
  #leaving = new Map<string, number>();
  #leaveTimer: ReturnType<typeof setTimeout> | undefined;
  // This node's next sequence number per topic.
  #sequences = new Map<string, number>();
  #outgoing = new Map<string, Outgoing>();
  #flushScheduled = false;
  // Topics with publishes the broker has not acknowledged yet, how many.
  #inFlight = new Map<string, number>();

  constructor(
    broker: Broker,
    delay: number,
    deliver: (topic: string, messages: Uint8Array[]) => void,
  ) {
    this.#broker = broker;
    this.#delay = delay;
    this.#deliver = deliver;
    broker.open(this);
  }

  stats(): BrokerStats {
    return {
      connected: this.#up,
      published: this.#published,
      received: this.#received,
      dropped: this.#unsent + this.#missed + this.#malformed,
      unsent: this.#unsent,
      missed: this.#missed,
      malformed: this.#malformed,
      reconnects: this.#reconnects,
    };
  }

  // -- Interest --

  /** A topic got its first local subscriber. */
  join(topic: string): void {
    if (this.#closing !== null) return;
    if (this.#leaving.delete(topic)) return;
    if (this.#interest.has(topic)) return;
    this.#interest.set(topic, new Map());
    this.#joining.push(topic);
    this.#schedule();
  }

  /** A topic lost its last local subscriber. */
  leave(topic: string): void {
    if (this.#closing !== null || !this.#interest.has(topic)) return;
    this.#leaving.set(topic, performance.now());
    this.#leaveTimer ??= setTimeout(() => this.#sweep(), this.#delay);
  }

  #sweep(): void {
    this.#leaveTimer = undefined;
    const now = performance.now();
    const gone: string[] = [];
    let next = Infinity;
    for (const [topic, since] of this.#leaving) {
      if (now - since >= this.#delay) {
        this.#leaving.delete(topic);
        this.#interest.delete(topic);
        gone.push(topic);
      } else next = Math.min(next, since + this.#delay - now);
    }
    if (next !== Infinity) {
      this.#leaveTimer = setTimeout(() => this.#sweep(), next);
    }
    if (gone.length === 0) return;
    // Joined and left within one turn: the broker never heard of it.
    const told = gone.filter((topic) => !this.#unjoin(topic));
    if (told.length > 0) this.#call(() => this.#broker.unsubscribe(told));
  }

  #unjoin(topic: string): boolean {
    const index = this.#joining.indexOf(topic);
    if (index < 0) return false;
    this.#joining.splice(index, 1);
    return true;
  }

  // -- Sending --

  /** Sends one encoded message at the end of the turn. */
  send(topic: string, frames: Uint8Array): void {
    if (this.#closing !== null) return;
    const previous = this.#sequences.get(topic);
    let sequence: number;
    if (previous === undefined) {
      if (this.#sequences.size >= MAX_SEQUENCES) {
        this.#sequences.delete(this.#sequences.keys().next().value!);
      }
      sequence = 1;
    } else sequence = previous === 0xffff_ffff ? 1 : previous + 1;
    this.#sequences.set(topic, sequence);
    // Numbered even when it cannot go: the other nodes count it missing.
    if (!this.#up) {
      this.#unsent++;
      return;
    }
    let batch = this.#outgoing.get(topic);
    if (
      batch !== undefined &&
      (batch.first + batch.frames.length !== sequence ||
        batch.frames.length === MAX_ENVELOPE_MESSAGES ||
        batch.bytes + frames.length > MAX_ENVELOPE_BYTES)
    ) {
      this.#publish(topic, batch);
      batch = undefined;
    }
    if (batch === undefined) {
      batch = { first: sequence, frames: [], bytes: 0 };
      this.#outgoing.set(topic, batch);
    }
    batch.frames.push(frames);
    batch.bytes += frames.length;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#joining.length > 0) {
      const joining = this.#joining;
      this.#joining = [];
      this.#call(() => this.#broker.subscribe(joining));
    }
    for (const [topic, batch] of this.#outgoing) {
      // While the broker still works on this topic's last envelope, the
      // next one waits for it and grows: under load, messages of several
      // turns travel together; when idle, each turn's go at once.
      if (!this.#inFlight.has(topic)) this.#publish(topic, batch);
    }
  }

  #publish(topic: string, batch: Outgoing): void {
    this.#outgoing.delete(topic);
    const count = batch.frames.length;
    const topicBytes = encoder.encode(topic);
    const envelope = encodeEnvelope(
      this.#node,
      batch.first,
      topicBytes,
      batch.frames,
    );
    let sent: void | Promise<unknown>;
    try {
      sent = this.#broker.publish(topic, envelope);
    } catch {
      this.#unsent += count;
      return;
    }
    if (sent instanceof Promise) {
      this.#inFlight.set(topic, (this.#inFlight.get(topic) ?? 0) + 1);
      sent.then(
        () => this.#published += count,
        () => this.#unsent += count,
      ).finally(() => this.#settled(topic));
    } else this.#published += count;
  }

  /** The broker acknowledged (or failed) one of `topic`'s envelopes. */
  #settled(topic: string): void {
    const left = this.#inFlight.get(topic)! - 1;
    if (left > 0) this.#inFlight.set(topic, left);
    else {
      this.#inFlight.delete(topic);
      if (this.#outgoing.has(topic) && this.#closing === null) {
        this.#schedule();
      }
    }
  }

  /** Calls the broker; what it throws is its own failure, not the caller's. */
  #call(fn: () => void): void {
    try {
      fn();
    } catch {
      // A broker that fails to (un)subscribe is down: it reports that.
    }
  }

  // -- Receiving (BrokerEvents) --

  message(data: Uint8Array): void {
    if (this.#closing !== null) return;
    const envelope = decodeEnvelope(data);
    if (envelope === null) {
      this.#malformed++;
      return;
    }
    const { node, sequence, topic, messages } = envelope;
    const mine = this.#node;
    if (node.high === mine.high && node.low === mine.low) return;
    const publishers = this.#interest.get(topic);
    if (publishers === undefined) return;
    const key = (node.high & HIGH_KEY_MASK) * 0x1_0000_0000 + node.low;
    const last = publishers.get(key);
    if (last !== undefined) {
      const ahead = (sequence - last) >>> 0;
      if (ahead === 0 || ahead >= 0x8000_0000) {
        // Going back: the publisher numbers the topic from 1 again (it
        // forgot it), or these messages were delivered here already.
        if (sequence !== 1) return;
      } else if (ahead > 1) this.#missed += ahead - 1;
    } else if (publishers.size >= MAX_PUBLISHERS) publishers.clear();
    publishers.set(key, (sequence + messages.length - 1) >>> 0);
    this.#received += messages.length;
    this.#deliver(topic, messages);
  }

  status(up: boolean): void {
    if (up === this.#up || this.#closing !== null) return;
    this.#up = up;
    if (up && this.#wasUp) this.#reconnects++;
    if (up) this.#wasUp = true;
  }

  // -- Closing --

  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearTimeout(this.#leaveTimer);
      this.#leaveTimer = undefined;
      // What was published before close still goes.
      for (const [topic, batch] of this.#outgoing) this.#publish(topic, batch);
      this.#outgoing.clear();
      this.#up = false;
      try {
        await this.#broker.close();
      } catch {
        // Closing a broker that failed: nothing left to do.
      }
    })();
    return this.#closing;
  }
}

/** One data message as unmasked frames, fragmented like `Socket.write`. */
function encodeMessage(
  opcode: number,
  payload: Uint8Array,
  fragmentSize: number,
): Uint8Array {
  if (payload.length <= fragmentSize) return encodeFrame(opcode, payload);
  const frames: Uint8Array[] = [];
  let size = 0;
  for (let offset = 0; offset < payload.length; offset += fragmentSize) {
    const end = Math.min(offset + fragmentSize, payload.length);
    const frame = encodeFrame(
      offset === 0 ? opcode : OPCODE_CONTINUATION,
      payload.subarray(offset, end),
      { fin: end === payload.length },
    );
    frames.push(frame);
    size += frame.length;
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const frame of frames) {
    out.set(frame, offset);
    offset += frame.length;
  }
  return out;
}

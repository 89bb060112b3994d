/**
 * Topics: which server-side sockets hear which topic, and `publish`, which
 * encodes a message once and queues the same bytes on every subscriber,
 * and hands them to the broker, if there is one, for the other servers.
 *
 * @module
 */

import { numberOption } from "./check.ts";
import type { Broker, BrokerStats } from "./broker.ts";
import { joinBytes } from "./buffers.ts";
import { MAX_TOPIC_BYTES } from "./envelope.ts";
import {
  encodeFrame,
  OPCODE_BINARY,
  OPCODE_CONTINUATION,
  OPCODE_TEXT,
} from "./frame.ts";
import { type Member, Members } from "./members.ts";
import { Remote } from "./topics_remote.ts";
import { SharedLog } from "./write_batch.ts";

// Frames up to this size, published to at least SHARED_MIN_SUBSCRIBERS,
// are appended to the topic's log of LOG_SIZE bytes and written from it
// (see SharedLog): one copy per publish instead of one per subscriber.
const SHARED_MAX_FRAME = 2 * 1024;
const SHARED_MIN_SUBSCRIBERS = 8;
const LOG_SIZE = 16 * 1024;

/** A topic's subscribers, and the log its small frames go through. */
class TopicSubscribers extends Members<Subscriber> {
  log: SharedLog | null = null;
}

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
  /**
   * Queues the frames at `start` to `end` of `log`, which is never written
   * again; like {@linkcode push} otherwise (which is called with a view of
   * them when this is missing).
   */
  pushShared?(log: SharedLog, start: number, end: number): boolean;
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
  #subscribers = new Map<string, TopicSubscribers>();
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
          subscribers = new TopicSubscribers();
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
   * whatever else that socket writes in the same event-loop turn; while
   * publishes keep coming, a topic's subscribers write them at most every
   * 4 ms, each in one write call: see the README's Topics section). A
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
  #deliver(sockets: TopicSubscribers, frames: Uint8Array): number {
    const limit = this.#maxPublishBacklog;
    let queued = 0;
    if (
      frames.length <= SHARED_MAX_FRAME &&
      sockets.size >= SHARED_MIN_SUBSCRIBERS
    ) {
      let log = sockets.log;
      let start = log === null ? -1 : log.append(frames);
      if (start < 0) {
        log = sockets.log = new SharedLog(LOG_SIZE);
        start = log.append(frames);
      }
      const end = start + frames.length;
      sockets.forEach((subscriber) => {
        if (
          subscriber.bufferedAmount <= limit &&
          (subscriber.pushShared?.(log!, start, end) ??
            subscriber.push(log!.bytes.subarray(start, end)))
        ) queued++;
      });
      return queued;
    }
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
  return joinBytes(frames, size);
}

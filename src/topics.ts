/**
 * Topics: which server-side sockets hear which topic, and `publish`, which
 * encodes a message once and queues the same bytes on every subscriber.
 *
 * @module
 */

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
 * Topics live in one process. Servers in several processes (for example
 * one per core with `reusePort`) each have their own, so a message published
 * in one reaches only the subscribers connected to that process: relay it
 * through a shared broker (Redis pub/sub, NATS, or a `BroadcastChannel`
 * between workers of one process) and publish it in each.
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

  /**
   * Makes an empty set of topics.
   *
   * @param options the backlog bound and fragment size
   * @throws {TypeError} `maxPublishBacklog` or `fragmentSize` is not a
   *   positive number
   */
  constructor(options: TopicsOptions = {}) {
    this.#maxPublishBacklog = checkPositive(
      "maxPublishBacklog",
      options.maxPublishBacklog,
      1024 * 1024,
    );
    this.#fragmentSize = checkPositive(
      "fragmentSize",
      options.fragmentSize,
      64 * 1024,
    );
    registries.set(this, {
      subscribe: (subscriber, topic) => {
        let subscribers = this.#subscribers.get(topic);
        if (subscribers === undefined) {
          subscribers = new Members();
          this.#subscribers.set(topic, subscribers);
        }
        return subscribers.add(subscriber);
      },
      unsubscribe: (topic, member) => {
        const subscribers = this.#subscribers.get(topic);
        if (subscribers === undefined) return;
        subscribers.remove(member);
        if (subscribers.size === 0) this.#subscribers.delete(topic);
      },
    });
  }

  /**
   * How many open sockets are subscribed to `topic`.
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
   * @param topic the topic
   * @param data the payload; strings are sent as UTF-8
   * @param type `"text"` or `"binary"`
   * @returns how many subscribers the message was queued for
   * @throws {TypeError} `type` is not text or binary, or `data` is not a
   *   string or Uint8Array
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
    const sockets = this.#subscribers.get(String(topic));
    if (sockets === undefined) return 0;
    const frames = encodeMessage(
      type === "text" ? OPCODE_TEXT : OPCODE_BINARY,
      payload,
      this.#fragmentSize,
    );
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

function checkPositive(
  name: string,
  value: number | undefined,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value > 0)) {
    throw new TypeError(
      `Invalid option ${name}: expected a positive number, received ${value}`,
    );
  }
  return value;
}

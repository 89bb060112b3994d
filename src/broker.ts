/**
 * Brokers: what carries a topic's messages from the server that publishes
 * them to the servers (Workers, processes, hosts) whose sockets subscribe.
 * The {@linkcode Broker} interface, the counters a server keeps about it,
 * and {@linkcode workerBroker} for the Workers of one process.
 *
 * @module
 */

/**
 * What a {@linkcode Broker} reports to the `Topics` that owns it.
 *
 * @example A broker reports that it is up, then passes on what arrives
 * ```ts
 * import type { Broker, BrokerEvents } from "@silly/websocket";
 *
 * function channelBroker(channel: BroadcastChannel): Broker {
 *   return {
 *     open(events: BrokerEvents) {
 *       channel.onmessage = (event) => events.message(event.data);
 *       events.status(true);
 *     },
 *     subscribe() {},
 *     unsubscribe() {},
 *     publish(_topic, data) {
 *       channel.postMessage(data);
 *     },
 *     close() {
 *       channel.close();
 *       return Promise.resolve();
 *     },
 *   };
 * }
 * ```
 */
export interface BrokerEvents {
  /**
   * Bytes that a node published, as the broker got them. They are checked
   * here: a malformed message is dropped and counted, never delivered.
   */
  message(data: Uint8Array): void;
  /**
   * The broker is up (connected and subscribed: messages flow both ways)
   * or down (publishes are dropped and counted, messages from other nodes
   * are lost). Going up after being down counts as a reconnect.
   */
  status(up: boolean): void;
}

/**
 * A way to send a topic's messages to the other servers that share it
 * (pub/sub): Redis (`redisBroker` from `@silly/websocket/redis`), a
 * `BroadcastChannel` between Workers ({@linkcode workerBroker}), or your
 * own over NATS or anything with channels.
 *
 * A broker belongs to one `Topics` (the one `listen({ broker })` makes, or
 * `new Topics({ broker })`), which calls {@linkcode Broker.open} once, then
 * the rest, and {@linkcode Broker.close} when the server closes. The bytes
 * it carries are opaque to the broker: an envelope with the topic, the
 * publishing node and sequence numbers, and the encoded frames. A broker
 * delivers what other nodes publish on the topics it was asked for (what
 * else it delivers is ignored); it may also deliver a node's own messages
 * back to it (they are recognised and skipped). Delivery may lose messages
 * (they are counted from gaps in the sequence numbers) but must keep the
 * order of each publisher's messages on a topic.
 *
 * @example A broker that connects two Topics in one process
 * ```ts
 * import { type Broker, type BrokerEvents, Topics } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * // Every broker of the bus hears what any other publishes.
 * function busBroker(bus: Set<BrokerEvents>): Broker {
 *   let me: BrokerEvents | undefined;
 *   return {
 *     open(events) {
 *       me = events;
 *       bus.add(events);
 *       events.status(true);
 *     },
 *     subscribe() {},
 *     unsubscribe() {},
 *     publish(_topic, data) {
 *       for (const other of bus) if (other !== me) other.message(data);
 *     },
 *     close() {
 *       bus.delete(me!);
 *       return Promise.resolve();
 *     },
 *   };
 * }
 *
 * const bus = new Set<BrokerEvents>();
 * const a = new Topics({ broker: busBroker(bus) });
 * const b = new Topics({ broker: busBroker(bus) });
 * a.publish("news", "hello", "text");
 * await new Promise((resolve) => setTimeout(resolve, 10));
 * assert.equal(a.brokerStats()?.published, 1);
 * await a.close();
 * await b.close();
 * ```
 */
export interface Broker {
  /**
   * Starts the broker (connects, if it has to): called once, first, by the
   * `Topics` that takes it. Report up and down, and what arrives, to
   * `events`.
   */
  open(events: BrokerEvents): void;
  /**
   * Deliver the messages of these topics from now on: a local socket
   * subscribed to each, and none was before. Called at most once per
   * event-loop turn, with every topic that turn added. A broker that is
   * down keeps the list and subscribes when it is back.
   */
  subscribe(topics: string[]): void;
  /**
   * Stop delivering these topics: their last local socket left (some time
   * ago, so a socket that leaves and comes back does not cost a round
   * trip). Batched like {@linkcode Broker.subscribe}.
   */
  unsubscribe(topics: string[]): void;
  /**
   * Sends `data` to the other nodes subscribed to `topic`. Throwing or
   * rejecting means it was not sent: its messages are counted as dropped
   * (`unsent`). A broker must not queue without bound while it is down:
   * refuse instead. A returned promise should settle when the broker has
   * taken the message (Redis: the `PUBLISH` reply); until then, the
   * topic's next messages wait and then go together, so that a busy
   * broker gets fewer, bigger messages.
   */
  publish(topic: string, data: Uint8Array): void | Promise<unknown>;
  /** Leaves every topic and disconnects; resolves when nothing is left open. */
  close(): Promise<void>;
}

/**
 * What a server (or a `Topics`) counts about its broker, from
 * `server.brokerStats()`. Every count starts at 0 and only grows; counts
 * are of messages (one `publish`), except `malformed`.
 *
 * @example Watching for losses
 * ```ts
 * import { type BrokerStats, listen, workerBroker } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const server = listen({
 *   addr: "127.0.0.1:0",
 *   handler() {},
 *   broker: workerBroker("watch"),
 * });
 * const stats: BrokerStats | null = server.brokerStats();
 * assert.equal(stats?.dropped, 0);
 * if (stats !== null && stats.dropped > 0) console.warn("lost", stats);
 * await server.close();
 * ```
 */
export interface BrokerStats {
  /** Whether the broker is up now. */
  connected: boolean;
  /** Messages this node handed to the broker, which took them. */
  published: number;
  /** Messages from other nodes delivered to this node's subscribers. */
  received: number;
  /** Everything lost: `unsent + missed + malformed`. */
  dropped: number;
  /** Messages published here that never reached the broker (it was down, or refused or failed them). */
  unsent: number;
  /** Messages of other nodes that never arrived here, found from gaps in their sequence numbers. */
  missed: number;
  /** Messages from the broker that were not valid envelopes, dropped unread. */
  malformed: number;
  /** Times the broker came back up after being down. */
  reconnects: number;
}

// The channel name's prefix, so that an application's own channels of the
// same name do not mix with ours.
const CHANNEL_PREFIX = "@silly/websocket:";

/**
 * A broker for the Workers of one process, over a `BroadcastChannel`
 * named after `name`: give each Worker's `listen` a `workerBroker` of the
 * same name and a publish in any Worker reaches the subscribers of all.
 *
 * Every Worker hears every message (a `BroadcastChannel` has no topics),
 * and one that falls far behind loses messages (Deno keeps 256 per
 * receiver): the sequence numbers in each message count what was lost in
 * `brokerStats().missed`. Messages published in one event-loop turn travel
 * together, so a burst is one message on the channel per topic.
 *
 * @param name the channel: the same in every Worker that should share topics
 * @returns a broker for one `listen` (or `Topics`)
 * @throws {TypeError} `name` is not a string
 *
 * @example Two servers sharing topics through a channel
 * ```ts
 * import { connect, listen, workerBroker } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * // In a real program each server runs in its own Worker.
 * const handler = (sock: { subscribe(t: string): void; closed: Promise<unknown> }) => {
 *   sock.subscribe("news");
 *   return sock.closed.then(() => {});
 * };
 * const one = listen({ addr: "127.0.0.1:0", handler, broker: workerBroker("doc") });
 * const two = listen({ addr: "127.0.0.1:0", handler, broker: workerBroker("doc") });
 *
 * const reader = await connect(`ws://127.0.0.1:${two.addr.port}`);
 * while (two.subscriberCount("news") === 0) {
 *   await new Promise((resolve) => setTimeout(resolve, 5));
 * }
 * one.publish("news", "from one", "text");
 * assert.deepEqual(await reader.read(), { type: "text", data: "from one" });
 * assert.equal(two.brokerStats()?.received, 1);
 * await reader.close();
 * await one.close();
 * await two.close();
 * ```
 */
export function workerBroker(name: string): Broker {
  if (typeof name !== "string") {
    throw new TypeError(
      `Invalid argument name: expected a string, received ${typeof name}`,
    );
  }
  let channel: BroadcastChannel | null = null;
  return {
    open(events: BrokerEvents): void {
      channel = new BroadcastChannel(CHANNEL_PREFIX + name);
      channel.onmessage = (event: MessageEvent) => events.message(event.data);
      // A malformed message (one that cannot be cloned here) counts as one.
      channel.onmessageerror = () => events.message(new Uint8Array(0));
      events.status(true);
    },
    // Every Worker hears every topic: the receiving Topics skips the ones
    // nobody there subscribed to.
    subscribe(): void {},
    unsubscribe(): void {},
    publish(_topic: string, data: Uint8Array): void {
      if (channel === null) throw new Error("Broker is closed");
      channel.postMessage(data);
    },
    close(): Promise<void> {
      channel?.close();
      channel = null;
      return Promise.resolve();
    },
  };
}

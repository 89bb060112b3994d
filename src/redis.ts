/**
 * `redisBroker`: topics shared across processes and hosts over Redis
 * pub/sub, with `ioredis` (the one third-party dependency of the library,
 * and only of this entry point).
 *
 * Two connections per broker: one publishes (no offline queue: while it is
 * down a publish is refused and counted, never queued), one subscribes
 * (ioredis subscribes again to every channel after a reconnect). Both
 * reconnect on their own with a capped, jittered exponential backoff.
 *
 * @module
 */

import { numberOption } from "./check.ts";
import { Buffer } from "node:buffer";
import { Redis, type RedisOptions } from "ioredis";
import type { Broker, BrokerEvents } from "./broker.ts";

/**
 * Options of {@linkcode redisBroker}.
 *
 * @example A shared Redis with a password, one prefix per application
 * ```ts ignore
 * import { redisBroker, type RedisBrokerOptions } from "@silly/websocket/redis";
 *
 * const options: RedisBrokerOptions = {
 *   url: "redis://:secret@redis.internal:6379/0",
 *   prefix: "chat:",
 *   onError: (error) => console.warn("redis:", error),
 * };
 * const broker = redisBroker(options);
 * ```
 */
export interface RedisBrokerOptions {
  /**
   * The server: `redis://[[user]:password@]host[:port][/db]`, or
   * `rediss://` for TLS.
   * @default {"redis://127.0.0.1:6379"}
   */
  url?: string;
  /**
   * Prepended to each topic to make its Redis channel, so that several
   * applications can share one Redis.
   * @default {"ws:"}
   */
  prefix?: string;
  /**
   * Bytes of publishes sent to Redis and not yet acknowledged beyond which
   * a publish is refused (and counted as unsent): a Redis that is slow or
   * unreachable without the connection dropping yet cannot make us buffer
   * without bound.
   * @default {8388608}
   */
  maxPendingBytes?: number;
  /**
   * Longest wait between two reconnection attempts, in ms. The wait starts
   * at about 50 ms and doubles at each failed attempt up to this.
   * @default {2000}
   */
  maxReconnectDelay?: number;
  /**
   * Called with connection errors (refused, reset, authentication). The
   * broker reconnects by itself either way; `brokerStats()` shows whether
   * it is connected.
   * @default {ignore them}
   */
  onError?: (error: unknown) => void;
}

/** One of the two connections, and whether it is ready. */
interface Connection {
  client: Redis;
  ready: boolean;
}

/**
 * A {@linkcode Broker} over Redis pub/sub, for servers in several
 * processes or on several hosts: give each server's `listen` a
 * `redisBroker` on the same Redis, and `server.publish` reaches the
 * subscribers of all of them.
 *
 * Each topic is a Redis channel (`prefix` + topic), subscribed to while a
 * local socket is subscribed to the topic. The messages of one event-loop
 * turn on a topic go in one `PUBLISH`. Delivery is at most once: while
 * Redis is unreachable, or when Redis cuts a subscriber that reads too
 * slowly (`client-output-buffer-limit pubsub`), messages are lost and
 * counted (`brokerStats()`: `unsent` on the publisher, `missed` on the
 * receivers), local delivery goes on, and the broker reconnects and
 * subscribes again on its own.
 *
 * @param options the Redis URL, channel prefix and bounds
 * @returns a broker for one `listen` (or `Topics`); it connects when the
 *   server starts and disconnects when the server closes
 * @throws {TypeError} an option is invalid (the message names it)
 *
 * @example Two servers, one Redis
 * ```ts ignore
 * import { listen } from "@silly/websocket";
 * import { redisBroker } from "@silly/websocket/redis";
 *
 * // Run this in each process (each host), on the same Redis.
 * const server = listen({
 *   addr: ":8080",
 *   broker: redisBroker({ url: "redis://10.0.0.5:6379" }),
 *   async handler(sock) {
 *     sock.subscribe("chat");
 *     for await (const msg of sock) {
 *       if (msg.type === "text") server.publish("chat", msg.data, "text");
 *     }
 *   },
 * });
 * ```
 */
export function redisBroker(options: RedisBrokerOptions = {}): Broker {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Invalid options: expected an object");
  }
  const url = options.url ?? "redis://127.0.0.1:6379";
  if (typeof url !== "string" || !/^rediss?:\/\//.test(url)) {
    throw new TypeError(
      `Invalid option url: expected a redis:// or rediss:// URL, received ${
        JSON.stringify(url)
      }`,
    );
  }
  const prefix = options.prefix ?? "ws:";
  if (typeof prefix !== "string") {
    throw new TypeError(
      `Invalid option prefix: expected a string, received ${typeof prefix}`,
    );
  }
  const maxPendingBytes = numberOption(
    "maxPendingBytes",
    options.maxPendingBytes,
    8 * 1024 * 1024,
  );
  const maxReconnectDelay = numberOption(
    "maxReconnectDelay",
    options.maxReconnectDelay,
    2000,
  );
  const onError = options.onError ?? noop;
  if (typeof onError !== "function") {
    throw new TypeError(
      `Invalid option onError: expected a function, received ${typeof onError}`,
    );
  }
  const report = (error: unknown) => {
    try {
      onError(error);
    } catch {
      // An onError that throws must not take the broker down.
    }
  };

  const common: RedisOptions = {
    // Back off from about 50 ms, doubling, up to the cap; jittered so that
    // every server of a cluster does not knock at once when Redis returns.
    retryStrategy: (attempt: number) =>
      Math.round(
        Math.min(maxReconnectDelay, 50 * 2 ** Math.min(attempt - 1, 16)) *
          (0.5 + Math.random() / 2),
      ),
    // ioredis queues a command up to this many reconnections; none here.
    maxRetriesPerRequest: 0,
    lazyConnect: true,
  };
  let events: BrokerEvents | null = null;
  let publisher: Connection | null = null;
  let subscriber: Connection | null = null;
  let pendingBytes = 0;
  let closing: Promise<void> | null = null;

  const update = () => {
    events?.status(
      closing === null && publisher !== null && publisher.ready &&
        subscriber !== null && subscriber.ready,
    );
  };
  const connection = (redisOptions: RedisOptions): Connection => {
    const client = new Redis(url, { ...common, ...redisOptions });
    const conn = { client, ready: false };
    client.on("ready", () => {
      conn.ready = true;
      update();
    });
    client.on("close", () => {
      conn.ready = false;
      update();
    });
    client.on("error", report);
    client.connect().catch(noop);
    return conn;
  };

  return {
    open(brokerEvents: BrokerEvents): void {
      if (events !== null) throw new Error("Broker is open already");
      events = brokerEvents;
      publisher = connection({
        // A publish while Redis is away is refused at once (and counted),
        // not queued for later.
        enableOfflineQueue: false,
        // A PUBLISH cut by a disconnection may have been delivered:
        // sending it again could deliver it twice.
        autoResendUnfulfilledCommands: false,
      });
      subscriber = connection({
        autoResubscribe: true,
        // A SUBSCRIBE made while Redis is away waits for it (one per
        // topic: bounded by the topics subscribed to).
        maxRetriesPerRequest: null,
      });
      subscriber.client.on(
        "messageBuffer",
        (_channel: Buffer, message: Buffer) => events?.message(message),
      );
    },

    subscribe(topics: string[]): void {
      if (subscriber === null || closing !== null) return;
      const client = subscriber.client;
      for (const channels of chunks(topics, prefix)) {
        client.subscribe(...channels).catch(report);
      }
    },

    unsubscribe(topics: string[]): void {
      if (subscriber === null || closing !== null) return;
      const client = subscriber.client;
      for (const channels of chunks(topics, prefix)) {
        client.unsubscribe(...channels).catch(report);
      }
    },

    publish(topic: string, data: Uint8Array): Promise<unknown> {
      if (publisher === null || !publisher.ready || closing !== null) {
        throw new Error("Cannot publish: Redis is not connected");
      }
      const size = data.byteLength;
      if (pendingBytes + size > maxPendingBytes && pendingBytes > 0) {
        throw new Error(
          `Cannot publish: ${pendingBytes} bytes wait for Redis already`,
        );
      }
      pendingBytes += size;
      // ioredis sends a Buffer as bytes (a plain Uint8Array as text).
      const bytes = Buffer.from(data.buffer, data.byteOffset, size);
      return publisher.client.publish(prefix + topic, bytes).finally(() =>
        pendingBytes -= size
      );
    },

    close(): Promise<void> {
      closing ??= (async () => {
        update();
        await Promise.all([publisher, subscriber].map(async (conn) => {
          if (conn === null) return;
          const client = conn.client;
          if (client.status === "end") return;
          const ended = new Promise<void>((resolve) =>
            client.once("end", resolve)
          );
          if (conn.ready) {
            // QUIT after what was sent: the last publishes still go out.
            await client.quit().catch(() => client.disconnect());
          } else client.disconnect();
          await ended;
        }));
      })();
      return closing;
    },
  };
}

// Channels per SUBSCRIBE: a turn that adds 100,000 topics must not spread
// them all into one call's arguments.
const CHANNELS_PER_COMMAND = 1000;

/** The channels of `topics`, a bounded number at a time. */
function* chunks(topics: string[], prefix: string): Generator<string[]> {
  for (let i = 0; i < topics.length; i += CHANNELS_PER_COMMAND) {
    yield topics.slice(i, i + CHANNELS_PER_COMMAND).map((t) => prefix + t);
  }
}

function noop(): void {}

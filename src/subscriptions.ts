/**
 * A server-side socket's topics: which ones it hears, and the
 * {@linkcode Subscriber} that `publish` pushes frames through.
 *
 * @module
 */

import type { Member } from "./members.ts";
import type { Protocol } from "./protocol.ts";
import type { Subscriber, TopicRegistry } from "./topics.ts";
import type { SharedLog, WriteQueue } from "./write_queue.ts";

/** A socket as `publish` sees it. */
class SocketSubscriber implements Subscriber {
  #protocol: Protocol;
  #writes: WriteQueue;

  constructor(protocol: Protocol, writes: WriteQueue) {
    this.#protocol = protocol;
    this.#writes = writes;
  }

  get bufferedAmount(): number {
    return this.#writes.bufferedAmount;
  }

  push(frame: Uint8Array): boolean {
    return this.#protocol.open && this.#writes.pushEncoded(frame);
  }

  pushShared(log: SharedLog, start: number, end: number): boolean {
    return this.#protocol.open && this.#writes.pushShared(log, start, end);
  }
}

/**
 * One socket's subscriptions, each topic with its place among the topic's
 * subscribers. Made when the socket first subscribes.
 */
export class Subscriptions {
  #registry: TopicRegistry;
  #subscriber: Subscriber;
  #members = new Map<string, Member<Subscriber>>();

  constructor(registry: TopicRegistry, protocol: Protocol, writes: WriteQueue) {
    this.#registry = registry;
    this.#subscriber = new SocketSubscriber(protocol, writes);
  }

  /** Starts hearing `topic`; nothing when already subscribed. */
  add(topic: string): void {
    if (this.#members.has(topic)) return;
    this.#members.set(topic, this.#registry.subscribe(this.#subscriber, topic));
  }

  /** Stops hearing `topic`; nothing when not subscribed. */
  delete(topic: string): void {
    const member = this.#members.get(topic);
    if (member === undefined) return;
    this.#members.delete(topic);
    this.#registry.unsubscribe(topic, member);
  }

  /** Leaves every topic: the socket is closed. */
  clear(): void {
    for (const [topic, member] of this.#members) {
      this.#registry.unsubscribe(topic, member);
    }
    this.#members.clear();
  }
}

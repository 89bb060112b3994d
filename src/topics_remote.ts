/**
 * The broker side of `Topics`: which topics the broker is asked
 * to deliver here, the envelopes of one turn's publishes, the sequence
 * numbers that find what was lost, and the counts of `brokerStats()`.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { Broker, BrokerEvents, BrokerStats } from "./broker.ts";
import {
  decodeEnvelope,
  encodeEnvelope,
  MAX_ENVELOPE_MESSAGES,
  type NodeId,
  randomNodeId,
} from "./envelope.ts";

const encoder = new TextEncoder();

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
export class Remote implements BrokerEvents {
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

/**
 * Topics with a broker (src/topics.ts, src/broker.ts): interest announced
 * and withdrawn, envelopes sent once per turn, messages from other nodes
 * delivered as they are, own messages, gaps, duplicates and malformed input
 * counted; `workerBroker` between real Workers.
 */

import assert from "node:assert/strict";
import { type Broker, type BrokerEvents, listen, Topics } from "../mod.ts";
import {
  decodeEnvelope,
  encodeEnvelope,
  type NodeId,
  randomNodeId,
} from "../src/envelope.ts";
import { encodeFrame, OPCODE_TEXT } from "../src/frame.ts";
import { type Subscriber, topicRegistry } from "../src/topics.ts";
import { sleep as delay, waitFor, within } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A broker the test drives by hand, recording every call. */
class FakeBroker implements Broker {
  events: BrokerEvents | null = null;
  calls: string[] = [];
  sent: { topic: string; data: Uint8Array }[] = [];
  failWith: "throw" | "reject" | null = null;
  closed = 0;

  open(events: BrokerEvents): void {
    this.events = events;
    events.status(true);
  }
  subscribe(topics: string[]): void {
    this.calls.push(`subscribe ${topics.join(",")}`);
  }
  unsubscribe(topics: string[]): void {
    this.calls.push(`unsubscribe ${topics.join(",")}`);
  }
  publish(topic: string, data: Uint8Array): void | Promise<unknown> {
    if (this.failWith === "throw") throw new Error("down");
    if (this.failWith === "reject") return Promise.reject(new Error("lost"));
    this.sent.push({ topic, data });
  }
  close(): Promise<void> {
    this.closed++;
    return Promise.resolve();
  }
}

/** A subscriber that keeps what it is given, as text. */
class Inbox implements Subscriber {
  bufferedAmount = 0;
  frames: Uint8Array[] = [];
  push(frame: Uint8Array): boolean {
    this.frames.push(frame);
    return true;
  }
  /** The payloads of single unfragmented short text frames. */
  get texts(): string[] {
    return this.frames.map((frame) => decoder.decode(frame.subarray(2)));
  }
}

function textFrame(data: string): Uint8Array {
  return encodeFrame(OPCODE_TEXT, encoder.encode(data));
}

/** An envelope from another node. */
function envelopeFrom(
  node: NodeId,
  sequence: number,
  topic: string,
  ...texts: string[]
): Uint8Array {
  return encodeEnvelope(
    node,
    sequence,
    encoder.encode(topic),
    texts.map(textFrame),
  );
}

/** Waits for the end of the turn (setImmediate, as the flush). */
function nextTurn(): Promise<void> {
  return delay(1);
}

// -- Interest --

Deno.test("a Topics tells its broker about the topics of one turn in one call, and only the first subscriber of each", async () => {
  const broker = new FakeBroker();
  await using topics = new Topics({ broker });
  const registry = topicRegistry(topics);
  registry.subscribe(new Inbox(), "a");
  registry.subscribe(new Inbox(), "a");
  registry.subscribe(new Inbox(), "b");
  assert.deepEqual(broker.calls, [], "nothing before the turn ends");
  await nextTurn();
  assert.deepEqual(broker.calls, ["subscribe a,b"]);
  registry.subscribe(new Inbox(), "b");
  await nextTurn();
  assert.deepEqual(broker.calls, ["subscribe a,b"]);
});

Deno.test("a topic's last subscriber leaving withdraws it after unsubscribeDelay, unless one comes back first", async () => {
  const broker = new FakeBroker();
  await using topics = new Topics({ broker, unsubscribeDelay: 50 });
  const registry = topicRegistry(topics);
  const a = registry.subscribe(new Inbox(), "a");
  const b = registry.subscribe(new Inbox(), "b");
  await nextTurn();
  registry.unsubscribe("a", a);
  registry.unsubscribe("b", b);
  await delay(10);
  // "b" comes back before the delay: no round trip for it.
  registry.subscribe(new Inbox(), "b");
  await waitFor(() => broker.calls.length === 2, "the withdrawal");
  assert.deepEqual(broker.calls, ["subscribe a,b", "unsubscribe a"]);
  await delay(80);
  assert.deepEqual(broker.calls, ["subscribe a,b", "unsubscribe a"]);
});

Deno.test("a topic joined and left at once leaves the broker as it found it", async () => {
  const broker = new FakeBroker();
  await using topics = new Topics({ broker, unsubscribeDelay: 0 });
  const registry = topicRegistry(topics);
  registry.unsubscribe("x", registry.subscribe(new Inbox(), "x"));
  await delay(20);
  // Withdrawn before the turn ended: never told; after: told both.
  assert.ok(
    broker.calls.length === 0 ||
      broker.calls.join() === "subscribe x,unsubscribe x",
    broker.calls.join(),
  );
});

// -- Sending --

Deno.test("publish() delivers locally at once and sends the same frames to the broker once per turn, numbered", async () => {
  const broker = new FakeBroker();
  await using topics = new Topics({ broker });
  const inbox = new Inbox();
  topicRegistry(topics).subscribe(inbox, "t");
  assert.equal(topics.publish("t", "one", "text"), 1);
  assert.equal(topics.publish("t", "two", "text"), 1);
  assert.equal(topics.publish("other", "three", "text"), 0);
  assert.deepEqual(inbox.texts, ["one", "two"], "local delivery is at once");
  assert.equal(broker.sent.length, 0);
  await nextTurn();
  assert.deepEqual(broker.sent.map((s) => s.topic), ["t", "other"]);
  const first = decodeEnvelope(broker.sent[0].data)!;
  assert.equal(first.sequence, 1);
  assert.deepEqual(first.messages, inbox.frames);
  topics.publish("t", "four", "text");
  await nextTurn();
  assert.equal(decodeEnvelope(broker.sent[2].data)!.sequence, 3);
  assert.equal(decodeEnvelope(broker.sent[1].data)!.sequence, 1);
  assert.equal(topics.brokerStats()!.published, 4);
});

Deno.test("while the broker has not acknowledged a topic's envelope, the next turns' messages wait and go together, in order", async () => {
  const acks: (() => void)[] = [];
  const broker = new FakeBroker();
  const publish = broker.publish.bind(broker);
  broker.publish = (topic, data) => {
    publish(topic, data);
    return new Promise<void>((resolve) => acks.push(resolve));
  };
  await using topics = new Topics({ broker });
  topics.publish("t", "1", "text");
  await nextTurn();
  assert.equal(broker.sent.length, 1);
  topics.publish("t", "2", "text");
  await nextTurn();
  topics.publish("t", "3", "text");
  topics.publish("other", "x", "text"); // another topic does not wait
  await nextTurn();
  assert.deepEqual(broker.sent.map((s) => s.topic), ["t", "other"]);
  acks.shift()!();
  await nextTurn();
  assert.equal(broker.sent.length, 3);
  const held = decodeEnvelope(broker.sent[2].data)!;
  assert.equal(held.sequence, 2);
  assert.deepEqual(held.messages, [textFrame("2"), textFrame("3")]);
  for (const ack of acks) ack();
  await nextTurn();
  assert.equal(topics.brokerStats()!.published, 4);
});

Deno.test("publishes while the broker is down, or that it throws or rejects, are counted as unsent; local delivery goes on", async () => {
  const broker = new FakeBroker();
  await using topics = new Topics({ broker });
  const inbox = new Inbox();
  topicRegistry(topics).subscribe(inbox, "t");
  broker.events!.status(false);
  topics.publish("t", "a", "text");
  broker.events!.status(true);
  broker.failWith = "throw";
  topics.publish("t", "b", "text");
  await nextTurn();
  broker.failWith = "reject";
  topics.publish("t", "c", "text");
  await nextTurn();
  await delay(1);
  assert.deepEqual(inbox.texts, ["a", "b", "c"]);
  const stats = topics.brokerStats()!;
  assert.equal(stats.unsent, 3);
  assert.equal(stats.dropped, 3);
  assert.equal(stats.published, 0);
  assert.equal(stats.reconnects, 1);
  assert.equal(broker.sent.length, 0);
});

Deno.test("publish() with a broker throws a RangeError for a topic over 65535 bytes", async () => {
  await using topics = new Topics({ broker: new FakeBroker() });
  assert.throws(
    () => topics.publish("\u00e9".repeat(40_000), "x"),
    (e: unknown) =>
      e instanceof RangeError && /65535 bytes or less/.test(e.message),
  );
});

// -- Receiving --

Deno.test("messages from another node reach the topic's subscribers as they are, in order", async () => {
  const broker = new FakeBroker();
  await using topics = new Topics({ broker });
  const inbox = new Inbox();
  topicRegistry(topics).subscribe(inbox, "t");
  const other = randomNodeId();
  const envelope = envelopeFrom(other, 1, "t", "x", "y");
  broker.events!.message(envelope);
  broker.events!.message(envelopeFrom(other, 3, "t", "z"));
  assert.deepEqual(inbox.texts, ["x", "y", "z"]);
  // The very bytes of the envelope: no copy, no re-encoding.
  assert.equal(inbox.frames[0].buffer, envelope.buffer);
  // A topic nobody here subscribed to is ignored, not counted.
  broker.events!.message(envelopeFrom(other, 1, "elsewhere", "w"));
  const stats = topics.brokerStats()!;
  assert.equal(stats.received, 3);
  assert.equal(stats.dropped, 0);
});

Deno.test("a node's own messages coming back from the broker are not delivered twice", async () => {
  const broker = new FakeBroker();
  await using topics = new Topics({ broker });
  const inbox = new Inbox();
  topicRegistry(topics).subscribe(inbox, "t");
  topics.publish("t", "mine", "text");
  await nextTurn();
  broker.events!.message(broker.sent[0].data);
  assert.deepEqual(inbox.texts, ["mine"]);
  assert.equal(topics.brokerStats()!.received, 0);
});

Deno.test("gaps in another node's sequence numbers are counted as missed; repeats are dropped; a restart at 1 is taken", async () => {
  const broker = new FakeBroker();
  await using topics = new Topics({ broker });
  const inbox = new Inbox();
  topicRegistry(topics).subscribe(inbox, "t");
  const other = randomNodeId();
  const events = broker.events!;
  events.message(envelopeFrom(other, 10, "t", "10")); // the first seen: no gap
  events.message(envelopeFrom(other, 11, "t", "11", "12"));
  events.message(envelopeFrom(other, 16, "t", "16")); // 13 to 15 lost
  events.message(envelopeFrom(other, 16, "t", "16 again"));
  events.message(envelopeFrom(other, 12, "t", "12 again"));
  events.message(envelopeFrom(other, 1, "t", "1")); // numbered afresh
  events.message(envelopeFrom(other, 2, "t", "2"));
  // Another node has numbers of its own.
  events.message(envelopeFrom(randomNodeId(), 500, "t", "500"));
  assert.deepEqual(inbox.texts, ["10", "11", "12", "16", "1", "2", "500"]);
  const stats = topics.brokerStats()!;
  assert.equal(stats.missed, 3);
  assert.equal(stats.received, 7);
});

Deno.test("a malformed message from the broker is dropped and counted, never delivered, never thrown", async () => {
  const broker = new FakeBroker();
  await using topics = new Topics({ broker });
  const inbox = new Inbox();
  topicRegistry(topics).subscribe(inbox, "t");
  const events = broker.events!;
  const valid = envelopeFrom(randomNodeId(), 1, "t", "ok");
  const inputs: unknown[] = [
    new Uint8Array(0),
    valid.subarray(0, 20),
    "a string",
    null,
    { not: "bytes" },
  ];
  for (const input of inputs) events.message(input as Uint8Array);
  assert.deepEqual(inbox.texts, []);
  assert.equal(topics.brokerStats()!.malformed, inputs.length);
  events.message(valid);
  assert.deepEqual(inbox.texts, ["ok"]);
});

// -- Options and lifecycle --

Deno.test("new Topics() and listen() throw a TypeError naming broker for something that is not one, or one already in use", async () => {
  for (const broker of [{}, null, 42, { open() {} }]) {
    assert.throws(
      () => new Topics({ broker: broker as unknown as Broker }),
      (e: unknown) => e instanceof TypeError && /broker/.test(e.message),
    );
    assert.throws(
      () =>
        listen({
          addr: "127.0.0.1:0",
          handler() {},
          broker: broker as unknown as Broker,
        }),
      (e: unknown) => e instanceof TypeError && /broker/.test(e.message),
    );
  }
  const broker = new FakeBroker();
  await using _topics = new Topics({ broker });
  assert.throws(
    () => new Topics({ broker }),
    (e: unknown) => e instanceof TypeError && /another Topics/.test(e.message),
  );
  assert.throws(
    () => new Topics({ broker: new FakeBroker(), unsubscribeDelay: -1 }),
    (e: unknown) =>
      e instanceof TypeError && /unsubscribeDelay/.test(e.message),
  );
});

Deno.test("close() sends what was published this turn, closes the broker once and stops receiving", async () => {
  const broker = new FakeBroker();
  const topics = new Topics({ broker, unsubscribeDelay: 10_000 });
  const inbox = new Inbox();
  const registry = topicRegistry(topics);
  const member = registry.subscribe(inbox, "t");
  topics.publish("t", "last", "text");
  // A withdrawal timer is pending: close() must clear it (the sanitizer
  // checks).
  registry.unsubscribe("t", member);
  await Promise.all([topics.close(), topics.close()]);
  assert.equal(broker.closed, 1);
  assert.equal(broker.sent.length, 1);
  broker.events!.message(envelopeFrom(randomNodeId(), 1, "t", "late"));
  assert.equal(topics.brokerStats()!.received, 0);
  assert.equal(topics.brokerStats()!.connected, false);
});

Deno.test("server.close() closes the server's broker, and a failed bind closes it too", async () => {
  const broker = new FakeBroker();
  const server = listen({ addr: "127.0.0.1:0", handler() {}, broker });
  assert.equal(server.brokerStats()!.connected, true);
  const second = new FakeBroker();
  assert.throws(
    () =>
      listen({
        addr: `127.0.0.1:${server.addr.port}`,
        handler() {},
        broker: second,
      }),
    Deno.errors.AddrInUse,
  );
  await server.close();
  assert.equal(broker.closed, 1);
  await waitFor(() => second.closed === 1, "the unused broker to close");
  const plain = listen({ addr: "127.0.0.1:0", handler() {} });
  assert.equal(plain.brokerStats(), null);
  await plain.close();
});

// -- workerBroker between Workers --

/** A Worker running tests/fixtures/broker_worker.ts. */
class BrokerWorker {
  #worker: Worker;
  #replies: ((value: unknown) => void)[] = [];

  constructor(name: string) {
    this.#worker = new Worker(
      new URL("./fixtures/broker_worker.ts", import.meta.url),
      { type: "module", name },
    );
    this.#worker.onmessage = (event) => this.#replies.shift()?.(event.data);
  }

  /** Sends a command, resolves with the worker's reply. */
  ask(command: Record<string, unknown>): Promise<unknown> {
    const reply = new Promise((resolve) => this.#replies.push(resolve));
    this.#worker.postMessage(command);
    return within(reply, `the worker to do ${command.type}`, 10_000);
  }

  async stop(): Promise<void> {
    await this.ask({ type: "stop" });
    this.#worker.terminate();
  }
}

Deno.test("workerBroker: a publish in one Worker reaches the subscribers of the other, once each and in order", async () => {
  const channel = `test-${crypto.randomUUID()}`;
  const workers = [new BrokerWorker("one"), new BrokerWorker("two")];
  try {
    for (const worker of workers) {
      await worker.ask({ type: "start", channel, topic: "news" });
    }
    await workers[0].ask({ type: "publish", topic: "news", count: 300 });
    const got = await workers[1].ask({ type: "wait", count: 300 }) as {
      texts: string[];
      stats: { received: number; missed: number };
    };
    assert.deepEqual(got.texts, [...Array(300).keys()].map(String));
    assert.equal(got.stats.received, 300);
    assert.equal(got.stats.missed, 0);
    const own = await workers[0].ask({ type: "wait", count: 300 }) as {
      texts: string[];
    };
    assert.equal(own.texts.length, 300, "its own messages, once");
  } finally {
    for (const worker of workers) await worker.stop();
  }
});

Deno.test("workerBroker: a Worker that falls behind the channel counts what it lost", async () => {
  const channel = `test-${crypto.randomUUID()}`;
  const workers = [new BrokerWorker("fast"), new BrokerWorker("stuck")];
  try {
    for (const worker of workers) {
      await worker.ask({ type: "start", channel, topic: "feed" });
    }
    // A first message, so that the second Worker knows where the first
    // one's numbers stand (gaps are counted from a message seen).
    await workers[0].ask({ type: "publish", topic: "feed", count: 1 });
    await workers[1].ask({ type: "wait", count: 1 });
    // The second Worker blocks its event loop while the first publishes
    // 1,000 messages, one per turn: far more than the 256 a
    // BroadcastChannel keeps for a receiver that does not read.
    const blocked = workers[1].ask({ type: "block", ms: 500 });
    await delay(50);
    await workers[0].ask({
      type: "publish",
      topic: "feed",
      count: 1000,
      from: 1,
      spread: true,
    });
    await blocked;
    await workers[0].ask({
      type: "publish",
      topic: "feed",
      count: 1,
      from: 1001,
    });
    const got = await workers[1].ask({ type: "wait-for", last: "1001" }) as {
      texts: string[];
      stats: { received: number; missed: number };
    };
    assert.ok(got.stats.missed > 0, "some were lost");
    assert.equal(got.stats.received + got.stats.missed, 1002);
    assert.equal(got.texts.length, got.stats.received);
    const numbers = got.texts.map(Number);
    for (let i = 1; i < numbers.length; i++) {
      assert.ok(numbers[i] > numbers[i - 1], "in order, no duplicates");
    }
  } finally {
    for (const worker of workers) await worker.stop();
  }
});

/**
 * `redisBroker` against a real `redis-server` (each test starts its own on
 * a free loopback port, nothing saved, and kills it at the end): servers in
 * this process and in processes of their own, Redis killed and restarted,
 * a slow node cut off by Redis, malformed messages on a channel.
 */

import assert from "node:assert/strict";
import { connect, type Socket, Topics } from "../mod.ts";
import { redisBroker } from "../redis.ts";
import type { BrokerStats } from "../src/broker.ts";
import { encodeEnvelope, randomNodeId } from "../src/envelope.ts";
import { encodeFrame, OPCODE_TEXT } from "../src/frame.ts";
import { topicRegistry } from "../src/topics.ts";
import { BrokerNode, RedisServer } from "./_redis_server.ts";
import { serve, sleep as delay, urlOf, waitFor, within } from "./_helpers.ts";

const encoder = new TextEncoder();

// Each test starts its own redis-server; without one installed they fail
// (.ci/run installs it) rather than pass by skipping.
function redisTest(name: string, fn: () => Promise<void>): void {
  Deno.test(name, fn);
}

/** Subscribes each socket of a server to the `topic` query parameter. */
async function subscriber(sock: Socket): Promise<void> {
  const topic = new URL(sock.request.url).searchParams.get("topic");
  if (topic) sock.subscribe(topic);
  await sock.write("ready", "text");
  for await (const _ of sock) { /* drop */ }
}

/** Connects and waits for the server's `ready`. */
async function open(url: string): Promise<Socket> {
  const sock = await within(connect(url), `a connection to ${url}`);
  assert.deepEqual(await within(sock.read()), { type: "text", data: "ready" });
  return sock;
}

/** Collects the text messages of `sock` until it closes. */
function collect(sock: Socket): { texts: string[]; done: Promise<void> } {
  const texts: string[] = [];
  const done = (async () => {
    for await (const msg of sock) if (msg.type === "text") texts.push(msg.data);
  })();
  return { texts, done };
}

/** How many subscribers Redis has on a channel. */
async function numsub(redis: RedisServer, channel: string): Promise<number> {
  const reply = await redis.command("PUBSUB", "NUMSUB", channel) as unknown[];
  return Number(reply[1]);
}

async function waitForNumsub(
  redis: RedisServer,
  channel: string,
  count: number,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (await numsub(redis, channel) !== count) {
    if (Date.now() > deadline) {
      throw new Error(
        `Timed out waiting for ${count} subscribers of ${channel}`,
      );
    }
    await delay(10);
  }
}

/** Asks a node for its brokerStats over a socket of its own. */
async function statsOf(node: BrokerNode): Promise<BrokerStats> {
  const sock = await open(node.url(""));
  await sock.write("stats", "text");
  const msg = await within(sock.read());
  await within(sock.close());
  assert.equal(msg?.type, "text");
  return JSON.parse((msg as { data: string }).data);
}

/** The numbers at the front of `i:data` messages. */
function numbers(texts: string[]): number[] {
  return texts.map((text) => Number(text.slice(0, text.indexOf(":"))));
}

function assertIncreasing(values: number[], what: string): void {
  for (let i = 1; i < values.length; i++) {
    assert.ok(
      values[i] > values[i - 1],
      `${what}: ${values[i]} after ${
        values[i - 1]
      } (a duplicate or out of order)`,
    );
  }
}

// -- Servers in one process --

redisTest(
  "two servers on one Redis: a publish on one reaches the other's subscribers once each, in order",
  async () => {
    await using redis = await RedisServer.start();
    await using one = serve(subscriber, {
      broker: redisBroker({ url: redis.url }),
    });
    await using two = serve(subscriber, {
      broker: redisBroker({ url: redis.url }),
    });
    const near = await open(urlOf(one, "/?topic=room"));
    const far = [
      await open(urlOf(two, "/?topic=room")),
      await open(urlOf(two, "/?topic=room")),
    ];
    await waitForNumsub(redis, "ws:room", 2);
    await waitFor(
      () => one.brokerStats()!.connected,
      "the publisher to connect",
    );
    const readers = [near, ...far].map(collect);
    // A burst in one turn (one envelope) and then one message per turn.
    for (let i = 0; i < 100; i++) one.publish("room", `${i}:burst`, "text");
    for (let i = 100; i < 150; i++) {
      assert.equal(one.publish("room", `${i}:turn`, "text"), 1);
      await delay(0);
    }
    await waitFor(
      () => readers.every((r) => r.texts.length >= 150),
      "every subscriber to get 150 messages",
    );
    await delay(50);
    for (const reader of readers) {
      assert.deepEqual(numbers(reader.texts), [...Array(150).keys()]);
    }
    const sent = one.brokerStats()!;
    const got = two.brokerStats()!;
    assert.equal(sent.published, 150);
    assert.equal(sent.received, 0, "its own messages are not delivered again");
    assert.equal(got.received, 150);
    assert.equal(sent.dropped + got.dropped, 0);
    for (const sock of [near, ...far]) await within(sock.close());
    await Promise.all(readers.map((r) => r.done));
  },
);

redisTest(
  "a binary message bigger than the fragment size crosses the broker byte for byte",
  async () => {
    await using redis = await RedisServer.start();
    await using one = serve(subscriber, {
      broker: redisBroker({ url: redis.url }),
    });
    await using two = serve(subscriber, {
      broker: redisBroker({ url: redis.url }),
    });
    const far = await open(urlOf(two, "/?topic=blob"));
    await waitForNumsub(redis, "ws:blob", 1);
    await waitFor(() => one.brokerStats()!.connected, "the publisher");
    const blobs = [0, 1, 2].map((n) => {
      const blob = new Uint8Array(300 * 1024 + n);
      for (let i = 0; i < blob.length; i++) blob[i] = (i * 7 + n) & 0xff;
      return blob;
    });
    for (const blob of blobs) one.publish("blob", blob);
    for (const blob of blobs) {
      assert.deepEqual(await within(far.read()), {
        type: "binary",
        data: blob,
      });
    }
    await within(far.close());
  },
);

redisTest(
  "a server leaves a topic's channel a while after its last subscriber leaves",
  async () => {
    await using redis = await RedisServer.start();
    await using server = serve(subscriber, {
      broker: redisBroker({ url: redis.url }),
    });
    const sock = await open(urlOf(server, "/?topic=brief"));
    await waitForNumsub(redis, "ws:brief", 1);
    await within(sock.close());
    await waitFor(() => server.subscriberCount("brief") === 0, "the socket");
    // Still subscribed just after (default unsubscribeDelay: 1 s)...
    assert.equal(await numsub(redis, "ws:brief"), 1);
    // ...and not any more after the delay.
    await waitForNumsub(redis, "ws:brief", 0);
  },
);

redisTest(
  "a malformed message on a channel is dropped and counted, never delivered",
  async () => {
    await using redis = await RedisServer.start();
    await using server = serve(subscriber, {
      broker: redisBroker({ url: redis.url }),
    });
    const sock = await open(urlOf(server, "/?topic=t"));
    await waitForNumsub(redis, "ws:t", 1);
    const valid = encodeEnvelope(
      randomNodeId(),
      1,
      encoder.encode("t"),
      [encodeFrame(OPCODE_TEXT, encoder.encode("valid"))],
    );
    const bad = [
      encoder.encode("not an envelope"),
      valid.subarray(0, valid.length - 1), // cut short
      // A frame that would break the subscriber's connection: masked.
      encodeEnvelope(randomNodeId(), 1, encoder.encode("t"), [
        encodeFrame(OPCODE_TEXT, encoder.encode("x"), {
          maskingKey: new Uint8Array(4),
        }),
      ]),
      // Text that is not UTF-8.
      encodeEnvelope(randomNodeId(), 1, encoder.encode("t"), [
        encodeFrame(OPCODE_TEXT, new Uint8Array([0xff])),
      ]),
    ];
    for (const message of bad) await redis.command("PUBLISH", "ws:t", message);
    await redis.command("PUBLISH", "ws:t", valid);
    assert.deepEqual(await within(sock.read()), {
      type: "text",
      data: "valid",
    });
    const stats = server.brokerStats()!;
    assert.equal(stats.malformed, bad.length);
    assert.equal(stats.dropped, bad.length);
    assert.equal(stats.received, 1);
    await within(sock.close());
  },
);

redisTest(
  "a broker that cannot reach Redis counts publishes as unsent and keeps local delivery",
  async () => {
    await using redis = await RedisServer.start();
    const url = redis.url;
    await redis.kill();
    await using server = serve(subscriber, {
      broker: redisBroker({ url, maxReconnectDelay: 100 }),
    });
    const sock = await open(urlOf(server, "/?topic=t"));
    assert.equal(server.publish("t", "local", "text"), 1);
    assert.deepEqual(await within(sock.read()), {
      type: "text",
      data: "local",
    });
    let stats = server.brokerStats()!;
    assert.equal(stats.connected, false);
    assert.equal(stats.unsent, 1);
    // Redis comes up: the broker connects on its own.
    await redis.restart();
    await waitFor(
      () => server.brokerStats()!.connected,
      "the broker to connect",
    );
    await waitForNumsub(redis, "ws:t", 1);
    server.publish("t", "both", "text");
    await delay(50);
    stats = server.brokerStats()!;
    assert.equal(stats.published, 1);
    assert.equal(stats.reconnects, 0, "a first connection is no reconnect");
    await within(sock.close());
  },
);

// -- Servers in processes of their own --

redisTest(
  "two server processes: each subscriber gets each message once and in order",
  async () => {
    await using redis = await RedisServer.start();
    await using one = await BrokerNode.start(redis.url);
    await using two = await BrokerNode.start(redis.url);
    const subscribers = [
      await open(one.url("room")),
      await open(one.url("room")),
      await open(two.url("room")),
      await open(two.url("room")),
    ];
    await waitForNumsub(redis, "ws:room", 2);
    const readers = subscribers.map(collect);
    const publisher = await open(one.url(""));
    await publisher.write("publish room 300 hello", "text");
    assert.deepEqual(await within(publisher.read()), {
      type: "text",
      data: "published",
    });
    await waitFor(
      () => readers.every((r) => r.texts.length >= 300),
      "every subscriber to get 300 messages",
    );
    await delay(50);
    for (const reader of readers) {
      assert.deepEqual(numbers(reader.texts), [...Array(300).keys()]);
    }
    const [sent, got] = [await statsOf(one), await statsOf(two)];
    assert.equal(sent.published, 300);
    assert.equal(got.received, 300);
    assert.equal(sent.dropped + got.dropped, 0);
    for (const sock of [...subscribers, publisher]) await within(sock.close());
    await Promise.all(readers.map((r) => r.done));
    await one.stop();
    await two.stop();
  },
);

redisTest(
  "Redis killed with kill -9 mid-stream: local delivery goes on, both servers reconnect, the loss is counted, no duplicates",
  async () => {
    await using redis = await RedisServer.start();
    await using one = await BrokerNode.start(redis.url);
    await using two = await BrokerNode.start(redis.url);
    const near = collect(await open(one.url("feed")));
    const farSock = await open(two.url("feed"));
    const far = collect(farSock);
    await waitForNumsub(redis, "ws:feed", 2);
    const publisher = await open(one.url(""));
    const total = 1500;
    await publisher.write(`publish feed ${total} tick`, "text");
    await waitFor(() => far.texts.length >= 100, "the stream to start");
    await redis.kill();
    const nearAtKill = near.texts.length;
    const farAtKill = far.texts.length;
    await delay(300);
    assert.ok(
      near.texts.length > nearAtKill + 20,
      `local delivery went on (${nearAtKill} -> ${near.texts.length})`,
    );
    assert.ok(
      far.texts.length <= farAtKill + 5,
      "nothing crosses without Redis",
    );
    await redis.restart();
    assert.deepEqual(
      await within(publisher.read(), "the stream to end", 30_000),
      { type: "text", data: "published" },
    );
    await waitFor(
      () => near.texts.length === total,
      "the local subscriber to get everything",
    );
    const farReceived = numbers(far.texts);
    assertIncreasing(farReceived, "the remote subscriber");
    assert.ok(
      farReceived.some((n) => n > farAtKill + 200),
      "delivery across servers resumed after Redis came back",
    );
    assert.deepEqual(numbers(near.texts), [...Array(total).keys()]);
    const [sent, got] = [await statsOf(one), await statsOf(two)];
    assert.ok(sent.reconnects >= 1 && got.reconnects >= 1, "both reconnected");
    assert.ok(sent.unsent > 0, "the publisher counted what it could not send");
    // Each message the far side did not get is counted there, once the
    // stream resumed past the gap (the last message arrived).
    assert.equal(farReceived.at(-1), total - 1);
    assert.equal(got.received, farReceived.length);
    assert.equal(got.missed, total - farReceived.length);
    await within(farSock.close());
    await within(publisher.close());
    await one.stop();
    await two.stop();
  },
);

redisTest(
  "one server killed: the other goes on publishing and receiving",
  async () => {
    await using redis = await RedisServer.start();
    await using one = await BrokerNode.start(redis.url);
    await using two = await BrokerNode.start(redis.url);
    const near = collect(await open(one.url("t")));
    const far = collect(await open(two.url("t")));
    await waitForNumsub(redis, "ws:t", 2);
    await two.stop("SIGKILL");
    await far.done;
    await waitForNumsub(redis, "ws:t", 1);
    await using three = await BrokerNode.start(redis.url);
    const late = collect(await open(three.url("t")));
    await waitForNumsub(redis, "ws:t", 2);
    const publisher = await open(three.url(""));
    await publisher.write("publish t 20 after", "text");
    await within(publisher.read());
    await waitFor(
      () => near.texts.length === 20 && late.texts.length === 20,
      "both live servers' subscribers",
    );
    assert.equal((await statsOf(one)).dropped, 0);
    await within(publisher.close());
    await one.stop();
    await three.stop();
    await Promise.all([near.done, late.done]);
  },
);

redisTest(
  "a slow node cut off by Redis's pubsub output-buffer limit reconnects and counts what it missed",
  async () => {
    await using redis = await RedisServer.start();
    await redis.command(
      "CONFIG",
      "SET",
      "client-output-buffer-limit",
      "pubsub 64kb 32kb 1",
    );
    await using slow = await BrokerNode.start(redis.url);
    const farSock = await open(slow.url("firehose"));
    const far = collect(farSock);
    await waitForNumsub(redis, "ws:firehose", 1);
    await using publisher = serve(() => {}, {
      broker: redisBroker({ url: redis.url }),
    });
    await waitFor(() => publisher.brokerStats()!.connected, "the publisher");
    // Two 8 KiB messages a turn: each envelope (16 KiB) is well under the
    // limit, so only a node that stops reading goes past it.
    const chunk = "x".repeat(8 * 1024);
    let sent = 0;
    const publishSome = async (count: number) => {
      for (let i = 0; i < count; i++) {
        publisher.publish("firehose", `${sent++}:${chunk}`, "text");
        if (i % 2 === 1) await delay(1);
      }
    };
    // The slow node stops reading: the kernel's buffers fill, then Redis's
    // output buffer for it goes past 64 KiB and Redis drops it.
    slow.process.kill("SIGSTOP");
    try {
      await publishSome(2400); // 19 MiB, more than the kernel buffers
      await waitForNumsub(redis, "ws:firehose", 0);
    } finally {
      slow.process.kill("SIGCONT");
    }
    // It reconnects and subscribes again on its own.
    await waitForNumsub(redis, "ws:firehose", 1);
    await publishSome(10);
    await waitFor(
      () => numbers(far.texts).at(-1) === sent - 1,
      "the last message to reach the slow node's subscriber",
    );
    const received = numbers(far.texts);
    assertIncreasing(received, "the slow node's subscriber");
    assert.ok(received.length < sent, "some messages were lost");
    const stats = await statsOf(slow);
    assert.ok(stats.reconnects >= 1, "it reconnected");
    // Every message is either received or counted missing. (Received ones
    // may still skip this subscriber: the burst after the pause can go
    // past its maxPublishBacklog.)
    assert.equal(stats.received + stats.missed, sent);
    assert.ok(stats.missed > 0);
    assert.equal(publisher.brokerStats()!.unsent, 0);
    await within(farSock.close());
    await slow.stop();
  },
);

redisTest(
  "thousands of topics joined in one turn are all subscribed on Redis",
  async () => {
    await using redis = await RedisServer.start();
    await using topics = new Topics({
      broker: redisBroker({ url: redis.url }),
    });
    const registry = topicRegistry(topics);
    const subscriber = { bufferedAmount: 0, push: () => true };
    for (let i = 0; i < 2500; i++) registry.subscribe(subscriber, `t${i}`);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const channels = await redis.command("PUBSUB", "CHANNELS", "ws:t*");
      if ((channels as string[]).length === 2500) break;
      if (Date.now() > deadline) throw new Error("Not every topic subscribed");
      await delay(20);
    }
  },
);

redisTest(
  "server.close() while Redis is away resolves at once and leaves nothing behind",
  async () => {
    await using redis = await RedisServer.start();
    const server = serve(subscriber, {
      broker: redisBroker({ url: redis.url, maxReconnectDelay: 50 }),
    });
    await waitFor(() => server.brokerStats()!.connected, "the broker");
    await redis.kill();
    await waitFor(() => !server.brokerStats()!.connected, "the broker to go");
    await delay(120); // a reconnection attempt or two
    await within(server.close(), "the server to close", 2000);
  },
);

redisTest(
  "server.close() before the broker ever connected resolves",
  async () => {
    await using redis = await RedisServer.start();
    const url = redis.url;
    await redis.kill();
    const server = serve(subscriber, { broker: redisBroker({ url }) });
    await within(server.close(), "the server to close", 2000);
  },
);

/**
 * Topics: `sock.subscribe`, `server.publish` and `Topics` with `accept`,
 * over real loopback sockets.
 */

import assert from "node:assert/strict";
import {
  accept,
  connect,
  listen,
  type Socket,
  Topics,
  WebSocketError,
} from "../mod.ts";
import {
  RawClient,
  readAll,
  serve,
  sleep,
  upgradeRequest,
  urlOf,
  waitFor,
  within,
} from "./_helpers.ts";

/** Subscribes to the topics in the `topics` query parameter, then drains. */
async function subscriber(sock: Socket): Promise<void> {
  const topics = new URL(sock.request.url).searchParams.get("topics") ?? "";
  for (const topic of topics.split(",").filter(Boolean)) {
    sock.subscribe(topic);
  }
  for await (const msg of sock) {
    if (msg.type === "text" && msg.data.startsWith("unsubscribe ")) {
      sock.unsubscribe(msg.data.slice("unsubscribe ".length));
      await sock.write("done", "text");
    }
  }
}

/** Connects `count` clients subscribed to `topics`, waiting until they are. */
async function subscribe(
  server: ReturnType<typeof serve>,
  topics: string[],
  count: number,
): Promise<Socket[]> {
  const before = topics.map((t) => server.subscriberCount(t));
  const clients: Socket[] = [];
  for (let i = 0; i < count; i++) {
    clients.push(
      await within(connect(urlOf(server, `/?topics=${topics.join(",")}`))),
    );
  }
  await waitFor(
    () =>
      topics.every((t, i) => server.subscriberCount(t) === before[i] + count),
    "the subscriptions",
  );
  return clients;
}

/** A raw client upgraded on `/?topics=...`; the 101 head is consumed. */
async function rawSubscriber(
  port: number,
  topics: string,
): Promise<RawClient> {
  const raw = await within(RawClient.connect(port));
  await raw.send(
    upgradeRequest(port).replace("GET / ", `GET /?topics=${topics} `),
  );
  assert.match(await within(raw.readHead()), /^HTTP\/1\.1 101 /);
  return raw;
}

async function closeAll(clients: Socket[]): Promise<void> {
  await within(Promise.all(clients.map((c) => c.close())));
}

// -- publish --

Deno.test("server.publish() reaches every subscriber of a topic and returns their count", async () => {
  await using server = serve(subscriber);
  const news = await subscribe(server, ["news"], 3);
  const sport = await subscribe(server, ["sport"], 1);
  assert.equal(server.publish("news", "extra!", "text"), 3);
  assert.equal(server.publish("news", new Uint8Array([1, 2, 3])), 3);
  assert.equal(server.publish("sport", "goal", "text"), 1);
  assert.equal(server.publish("nobody", "hello?", "text"), 0);
  for (const client of news) {
    assert.deepEqual(await within(client.read()), {
      type: "text",
      data: "extra!",
    });
    assert.deepEqual(await within(client.read()), {
      type: "binary",
      data: new Uint8Array([1, 2, 3]),
    });
  }
  assert.deepEqual(await within(sport[0].read()), {
    type: "text",
    data: "goal",
  });
  await closeAll([...news, ...sport]);
});

Deno.test("a socket subscribed to several topics hears each, and a string sent as binary is UTF-8", async () => {
  await using server = serve(subscriber);
  const [client] = await subscribe(server, ["a", "b"], 1);
  server.publish("a", "from a", "text");
  server.publish("b", "from b");
  assert.deepEqual(await within(client.read()), {
    type: "text",
    data: "from a",
  });
  assert.deepEqual(await within(client.read()), {
    type: "binary",
    data: new TextEncoder().encode("from b"),
  });
  await closeAll([client]);
});

Deno.test("a message larger than fragmentSize is published as fragments and arrives whole", async () => {
  await using server = serve(subscriber, { fragmentSize: 1000 });
  const [client] = await subscribe(server, ["big"], 1);
  const payload = new Uint8Array(5500).map((_, i) => i % 251);
  assert.equal(server.publish("big", payload), 1);
  assert.deepEqual(await within(client.read()), {
    type: "binary",
    data: payload,
  });
  await closeAll([client]);
});

Deno.test("every subscriber gets the same bytes: one unmasked frame, checked on the wire", async () => {
  await using server = serve(subscriber);
  const raws = [
    await rawSubscriber(server.addr.port, "t"),
    await rawSubscriber(server.addr.port, "t"),
  ];
  await waitFor(() => server.subscriberCount("t") === 2, "subscriptions");
  assert.equal(server.publish("t", "x".repeat(300), "text"), 2);
  for (const raw of raws) {
    assert.deepEqual(await within(raw.readFrame()), {
      fin: true,
      opcode: 0x1,
      payload: new TextEncoder().encode("x".repeat(300)),
    });
    raw.close();
  }
  await waitFor(() => server.connections === 0, "the sockets to go");
});

// -- unsubscribe and cleanup --

Deno.test("unsubscribe() stops a socket hearing a topic; others keep hearing it", async () => {
  await using server = serve(subscriber);
  const [leaver, stayer] = await subscribe(server, ["room"], 2);
  await leaver.write("unsubscribe room", "text");
  assert.deepEqual(await within(leaver.read()), { type: "text", data: "done" });
  assert.equal(server.subscriberCount("room"), 1);
  assert.equal(server.publish("room", "still here?", "text"), 1);
  assert.deepEqual(await within(stayer.read()), {
    type: "text",
    data: "still here?",
  });
  // Nothing more for the leaver: its next message is the close.
  await within(leaver.close());
  assert.deepEqual(await within(readAll(leaver)), [
    { type: "close", code: 1000, reason: "" },
  ]);
  await closeAll([stayer]);
});

Deno.test("subscribers leaving from the middle, the front and twice: each of the rest hears a publish once", async () => {
  await using server = serve(subscriber);
  const clients = await subscribe(server, ["room"], 5);
  for (const i of [2, 0, 2]) {
    await clients[i].write("unsubscribe room", "text");
    assert.deepEqual(await within(clients[i].read()), {
      type: "text",
      data: "done",
    });
  }
  // Never subscribed to it: nothing happens.
  await clients[1].write("unsubscribe elsewhere", "text");
  assert.deepEqual(await within(clients[1].read()), {
    type: "text",
    data: "done",
  });
  assert.equal(server.subscriberCount("room"), 3);
  assert.equal(server.publish("room", "hello", "text"), 3);
  assert.equal(server.publish("room", "again", "text"), 3);
  for (const i of [1, 3, 4]) {
    assert.deepEqual(await within(clients[i].read()), {
      type: "text",
      data: "hello",
    });
    assert.deepEqual(await within(clients[i].read()), {
      type: "text",
      data: "again",
    });
  }
  await closeAll(clients);
  assert.deepEqual(await within(readAll(clients[0])), [
    { type: "close", code: 1000, reason: "" },
  ]);
});

Deno.test("subscribing twice to a topic counts once; unsubscribing and subscribing again works", async () => {
  await using server = serve(async (sock) => {
    sock.subscribe("dup");
    sock.subscribe("dup");
    for await (const msg of sock) {
      if (msg.type !== "text") continue;
      if (msg.data === "leave") sock.unsubscribe("dup");
      if (msg.data === "join") sock.subscribe("dup");
      await sock.write("done", "text");
    }
  });
  const client = await within(connect(urlOf(server)));
  await waitFor(() => server.subscriberCount("dup") === 1, "the subscription");
  assert.equal(server.publish("dup", "once", "text"), 1);
  assert.deepEqual(await within(client.read()), { type: "text", data: "once" });
  await client.write("leave", "text");
  assert.deepEqual(await within(client.read()), { type: "text", data: "done" });
  assert.equal(server.subscriberCount("dup"), 0);
  assert.equal(server.publish("dup", "nobody", "text"), 0);
  await client.write("join", "text");
  assert.deepEqual(await within(client.read()), { type: "text", data: "done" });
  assert.equal(server.publish("dup", "back", "text"), 1);
  assert.deepEqual(await within(client.read()), { type: "text", data: "back" });
  await within(client.close());
  await waitFor(() => server.subscriberCount("dup") === 0, "the socket to go");
});

Deno.test("a socket leaves its topics when its connection ends, cleanly or not", async () => {
  await using server = serve(subscriber);
  const [clean] = await subscribe(server, ["x", "y"], 1);
  const raw = await within(RawClient.upgrade(server.addr.port));
  await waitFor(() => server.connections === 2, "both sockets");
  await within(clean.close());
  await waitFor(
    () =>
      server.subscriberCount("x") === 0 && server.subscriberCount("y") === 0,
    "the topics to empty",
  );
  assert.equal(server.publish("x", "anyone?", "text"), 0);
  raw.close();
  await waitFor(() => server.connections === 0, "the dropped socket to go");
});

Deno.test("subscribe() after the socket closed does nothing", async () => {
  const late = Promise.withResolvers<number>();
  await using server = serve(async (sock) => {
    await readAll(sock);
    await sock.closed;
    sock.subscribe("late");
    late.resolve(server.subscriberCount("late"));
  });
  const client = await within(connect(urlOf(server)));
  await within(client.close());
  assert.equal(await within(late.promise), 0);
});

Deno.test("publish() skips a socket that is closing", async () => {
  const closing = Promise.withResolvers<void>();
  await using server = serve(async (sock) => {
    sock.subscribe("t");
    // Start the close handshake, but the client will not answer yet.
    sock.close().catch(() => {});
    closing.resolve();
    await sock.closed;
  }, { closeTimeout: 200 });
  await using raw = await within(RawClient.upgrade(server.addr.port));
  await within(closing.promise);
  assert.equal(server.subscriberCount("t"), 1);
  assert.equal(server.publish("t", "too late", "text"), 0);
  assert.deepEqual(await within(raw.readClose()), { code: 1000, reason: "" });
});

// -- Slow subscribers --

Deno.test("publish() skips a subscriber whose send buffer is over maxPublishBacklog", async () => {
  await using server = serve(subscriber, { maxPublishBacklog: 100 });
  const [client] = await subscribe(server, ["t"], 1);
  // In one turn nothing is flushed yet: the first message fills the
  // buffer past 100 bytes, so the second is skipped for this subscriber.
  assert.equal(server.publish("t", "a".repeat(200), "text"), 1);
  assert.equal(server.publish("t", "b".repeat(10), "text"), 0);
  await sleep(10);
  // Once flushed, it gets messages again.
  assert.equal(server.publish("t", "c".repeat(10), "text"), 1);
  assert.deepEqual(await within(client.read()), {
    type: "text",
    data: "a".repeat(200),
  });
  assert.deepEqual(await within(client.read()), {
    type: "text",
    data: "c".repeat(10),
  });
  await closeAll([client]);
});

Deno.test("a subscriber that stops reading is skipped once its backlog is full, while the others get everything", async () => {
  await using server = serve(subscriber, { maxPublishBacklog: 64 * 1024 });
  // A raw client that never reads: the kernel buffers fill, then ours.
  await using _stuck = await rawSubscriber(server.addr.port, "feed");
  const [reader] = await subscribe(server, ["feed"], 1);
  await waitFor(() => server.subscriberCount("feed") === 2, "both");
  const chunk = new Uint8Array(32 * 1024);
  let skipped = 0;
  let received = 0;
  const reading = (async () => {
    for await (const msg of reader) {
      if (msg.type === "binary") received++;
      else break;
    }
  })();
  const sent = 400; // 12.5 MiB: more than the kernel buffers of the stuck one
  for (let i = 0; i < sent; i++) {
    const queued = server.publish("feed", chunk);
    assert.ok(queued >= 1, "the reading subscriber is never skipped");
    if (queued === 1) skipped++;
    // Give the reader time to keep up, as a real feed would.
    await sleep(0);
    await waitFor(() => received >= i - 8, "the reader to keep up");
  }
  await waitFor(() => received === sent, "the reader to get everything");
  assert.ok(skipped > 0, "the stuck subscriber was skipped at some point");
  await within(reader.close());
  await within(reading);
});

// -- Errors --

Deno.test("publish() throws a TypeError for a bad type or data", async () => {
  await using server = serve(subscriber);
  assert.throws(
    () => server.publish("t", "x", "ping" as "text"),
    (e: unknown) => e instanceof TypeError && /type/.test(e.message),
  );
  assert.throws(
    () => server.publish("t", 42 as unknown as string),
    (e: unknown) => e instanceof TypeError && /data/.test(e.message),
  );
});

Deno.test("subscribe() and unsubscribe() on a client socket throw a TypeError", async () => {
  await using server = serve(subscriber);
  const client = await within(connect(urlOf(server)));
  assert.throws(() => client.subscribe("t"), TypeError);
  assert.throws(() => client.unsubscribe("t"), TypeError);
  await within(client.close());
});

Deno.test("listen() and new Topics() throw a TypeError naming maxPublishBacklog when it is not positive", () => {
  for (const value of [0, -1, NaN, "1"]) {
    assert.throws(
      () =>
        listen({
          addr: "127.0.0.1:0",
          handler() {},
          maxPublishBacklog: value as number,
        }),
      (e: unknown) =>
        e instanceof TypeError && /maxPublishBacklog/.test(e.message),
    );
    assert.throws(
      () => new Topics({ maxPublishBacklog: value as number }),
      (e: unknown) =>
        e instanceof TypeError && /maxPublishBacklog/.test(e.message),
    );
  }
});

// -- Topics with accept() --

Deno.test("a Topics given to accept() publishes to sockets of your own listener", async () => {
  const topics = new Topics();
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served: Promise<void>[] = [];
  const acceptLoop = (async () => {
    for (let i = 0; i < 2; i++) {
      const conn = await listener.accept();
      served.push((async () => {
        const sock = await accept(conn, { topics });
        assert.ok(sock !== null);
        sock.subscribe("all");
        await readAll(sock);
      })());
    }
  })();
  const url = `ws://127.0.0.1:${listener.addr.port}`;
  const clients = [
    await within(connect(url)),
    await within(connect(url)),
  ];
  await within(acceptLoop);
  await waitFor(() => topics.subscriberCount("all") === 2, "subscriptions");
  assert.equal(topics.publish("all", "both of you", "text"), 2);
  for (const client of clients) {
    assert.deepEqual(await within(client.read()), {
      type: "text",
      data: "both of you",
    });
  }
  await closeAll(clients);
  await within(Promise.all(served));
  assert.equal(topics.subscriberCount("all"), 0);
});

Deno.test("a socket from accept() without topics cannot subscribe", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const sock = await accept(await listener.accept());
    assert.throws(
      () => sock!.subscribe("t"),
      (e: unknown) => e instanceof TypeError,
    );
    await readAll(sock!);
  })();
  const client = await within(connect(`ws://127.0.0.1:${listener.addr.port}`));
  await within(client.close());
  await within(served);
});

Deno.test("writing to a published-to socket after it closed still rejects with SOCKET_CLOSED", async () => {
  const done = Promise.withResolvers<unknown>();
  await using server = serve(async (sock) => {
    sock.subscribe("t");
    await readAll(sock);
    done.resolve(await sock.write("late", "text").catch((e) => e));
  });
  const client = await within(connect(urlOf(server)));
  await waitFor(() => server.subscriberCount("t") === 1, "subscription");
  server.publish("t", "hi", "text");
  assert.deepEqual(await within(client.read()), { type: "text", data: "hi" });
  await within(client.close());
  const error = await within(done.promise);
  assert.ok(error instanceof WebSocketError);
  assert.equal(error.code, "SOCKET_CLOSED");
});

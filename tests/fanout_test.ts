/**
 * Fan-out: a publish to many subscribers. Frames published in one turn
 * leave each subscriber in one write call, and frames of a topic with 8 or
 * more subscribers are written from the topic's shared log (src/
 * write_batch.ts SharedLog) while keeping their order with the socket's
 * own writes. Over real loopback sockets.
 */

import assert from "node:assert/strict";
import { accept, connect, type Socket, Topics } from "../mod.ts";
import { serve, sleep, urlOf, waitFor, within } from "./_helpers.ts";

/** A real connection whose write calls are counted, with their lengths. */
function countingConn(conn: Deno.Conn, writes: number[]): Deno.Conn {
  return new Proxy(conn, {
    get(target, key) {
      if (key === "write") {
        return (bytes: Uint8Array) => {
          writes.push(bytes.length);
          return target.write(bytes);
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/**
 * `count` clients of a listener of ours whose connections count their
 * writes; each server socket subscribes to `topic` and drains.
 */
async function countedSubscribers(
  topics: Topics,
  topic: string,
  count: number,
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const writes: number[][] = [];
  const served: Promise<void>[] = [];
  const clients: Socket[] = [];
  for (let i = 0; i < count; i++) {
    const connecting = connect(`ws://127.0.0.1:${listener.addr.port}`);
    const counted: number[] = [];
    writes.push(counted);
    const sock = await within(
      accept(countingConn(await listener.accept(), counted), { topics }),
    );
    assert.ok(sock !== null);
    sock.subscribe(topic);
    served.push((async () => {
      for await (const _ of sock) { /* drain */ }
    })());
    clients.push(await within(connecting));
  }
  await waitFor(() => topics.subscriberCount(topic) === count, "subscribers");
  return {
    writes,
    clients,
    async [Symbol.asyncDispose]() {
      await within(Promise.all(clients.map((c) => c.close())));
      await within(Promise.all(served));
      listener.close();
    },
  };
}

for (const count of [1, 10]) {
  Deno.test(`three publishes in one turn reach each of ${count} subscribers in one write call`, async () => {
    const topics = new Topics();
    await using subs = await countedSubscribers(topics, "t", count);
    // Let the 101s and anything else settle, then count from here.
    await sleep(20);
    for (const counted of subs.writes) counted.length = 0;
    for (const text of ["one", "two", "three"]) {
      assert.equal(topics.publish("t", text, "text"), count);
    }
    for (const client of subs.clients) {
      for (const text of ["one", "two", "three"]) {
        assert.deepEqual(await within(client.read()), {
          type: "text",
          data: text,
        });
      }
    }
    // Each frame: 2 bytes of header and the text.
    const frames = 3 * 2 + "onetwothree".length;
    for (const counted of subs.writes) assert.deepEqual(counted, [frames]);
  });
}

/** Subscribes to `t`; on "go", writes its own frames between publishes. */
function interleaving(server: { publish: Topics["publish"] }) {
  return async (sock: Socket) => {
    sock.subscribe("t");
    for await (const msg of sock) {
      if (msg.type !== "text" || msg.data !== "go") continue;
      // Own frame first: the batch is not published frames only.
      sock.write("own 1", "text");
      server.publish("t", "p1", "text");
      sock.write("own 2", "text");
      server.publish("t", "p2", "text");
      await sleep(5);
      // Published first: the log range, then an own frame after it.
      server.publish("t", "p3", "text");
      sock.write("own 3", "text");
      server.publish("t", "p4", "text");
    }
  };
}

Deno.test("with 10 subscribers, a socket's own writes between publishes keep their order", async () => {
  const box: { publish: Topics["publish"] } = { publish: () => 0 };
  await using server = serve(interleaving(box));
  box.publish = server.publish.bind(server);
  const clients: Socket[] = [];
  for (let i = 0; i < 10; i++) {
    clients.push(await within(connect(urlOf(server))));
  }
  await waitFor(() => server.subscriberCount("t") === 10, "subscribers");
  await clients[0].send("go");
  const texts = async (client: Socket, n: number) => {
    const out: string[] = [];
    while (out.length < n) {
      const msg = await within(client.read());
      assert.equal(msg?.type, "text");
      out.push(msg.type === "text" ? msg.data : "");
    }
    return out;
  };
  assert.deepEqual(await texts(clients[0], 7), [
    "own 1",
    "p1",
    "own 2",
    "p2",
    "p3",
    "own 3",
    "p4",
  ]);
  for (const client of clients.slice(1)) {
    assert.deepEqual(await texts(client, 4), ["p1", "p2", "p3", "p4"]);
  }
  await within(Promise.all(clients.map((c) => c.close())));
});

Deno.test("with 10 subscribers, more than a log's worth in one turn and over many turns arrives whole and in order", async () => {
  await using server = serve(async (sock) => {
    sock.subscribe("t");
    for await (const _ of sock) { /* drain */ }
  });
  const clients: Socket[] = [];
  for (let i = 0; i < 10; i++) {
    clients.push(await within(connect(urlOf(server))));
  }
  await waitFor(() => server.subscriberCount("t") === 10, "subscribers");
  const payload = (i: number) => new Uint8Array(1000 + i).fill(i);
  // 40 KB in one turn: the 16 KiB log fills and is replaced twice.
  for (let i = 0; i < 40; i++) {
    assert.equal(server.publish("t", payload(i)), 10);
  }
  // Then turns that publish while the previous writes are under way.
  for (let i = 40; i < 100; i++) {
    server.publish("t", payload(i));
    if (i % 3 === 0) await sleep(0);
  }
  for (const client of clients) {
    for (let i = 0; i < 100; i++) {
      assert.deepEqual(await within(client.read()), {
        type: "binary",
        data: payload(i),
      });
    }
  }
  await within(Promise.all(clients.map((c) => c.close())));
});

Deno.test("with 10 subscribers, a socket that left and came back within a turn misses what was published meanwhile", async () => {
  const box: { publish: Topics["publish"] } = { publish: () => 0 };
  await using server = serve(async (sock) => {
    sock.subscribe("t");
    for await (const msg of sock) {
      if (msg.type !== "text" || msg.data !== "gap") continue;
      box.publish("t", "p1", "text");
      sock.unsubscribe("t");
      box.publish("t", "p2", "text");
      sock.subscribe("t");
      box.publish("t", "p3", "text");
    }
  });
  box.publish = server.publish.bind(server);
  const clients: Socket[] = [];
  for (let i = 0; i < 10; i++) {
    clients.push(await within(connect(urlOf(server))));
  }
  await waitFor(() => server.subscriberCount("t") === 10, "subscribers");
  await clients[0].send("gap");
  for (const [i, client] of clients.entries()) {
    const expected = i === 0 ? ["p1", "p3"] : ["p1", "p2", "p3"];
    for (const data of expected) {
      assert.deepEqual(await within(client.read()), { type: "text", data });
    }
  }
  // Nothing else came: the next message is the one sent after.
  server.publish("t", "end", "text");
  assert.deepEqual(await within(clients[0].read()), {
    type: "text",
    data: "end",
  });
  await within(Promise.all(clients.map((c) => c.close())));
});

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

Deno.test("with 10 subscribers, a publish after a quiet moment is written at the end of its turn", async () => {
  const topics = new Topics();
  await using subs = await countedSubscribers(topics, "t", 10);
  await sleep(20);
  for (const counted of subs.writes) counted.length = 0;
  topics.publish("t", "now", "text");
  await nextTurn();
  for (const counted of subs.writes) assert.deepEqual(counted, [5]);
  for (const client of subs.clients) {
    assert.deepEqual(await within(client.read()), {
      type: "text",
      data: "now",
    });
  }
});

Deno.test("with 10 subscribers, publishes of back-to-back turns are gathered into fewer write calls", async () => {
  const topics = new Topics();
  await using subs = await countedSubscribers(topics, "t", 10);
  await sleep(20);
  for (const counted of subs.writes) counted.length = 0;
  for (let i = 0; i < 20; i++) {
    topics.publish("t", `m${i}`, "text");
    await nextTurn();
  }
  for (const client of subs.clients) {
    for (let i = 0; i < 20; i++) {
      assert.deepEqual(await within(client.read()), {
        type: "text",
        data: `m${i}`,
      });
    }
  }
  // 20 turns take well under SHARED_PASS_INTERVAL (4 ms) each: the first
  // publish goes at once, the rest wait for the next pass.
  for (const counted of subs.writes) {
    assert.ok(counted.length <= 10, `${counted.length} write calls`);
  }
});

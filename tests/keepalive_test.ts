/**
 * Keepalive (SPEC, issue 12): on by default (30 s, 30 s), a ping only after
 * silence from the peer, a drop when the peer then stays silent, and one
 * timer for all the sockets of a setting.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { Keepalive } from "../src/keepalive.ts";
import { socketLimits } from "../src/options.ts";
import { FakeTime } from "./_fake_time.ts";
import {
  clientFrame,
  RawClient,
  RawPeer,
  serve,
  sleep,
  urlOf,
  waitFor,
  within,
} from "./_helpers.ts";

Deno.test("keepalive is on by default: a ping after 30 s of silence, a drop 30 s later", () => {
  const limits = socketLimits({});
  assert.equal(limits.pingInterval, 30_000);
  assert.equal(limits.pongTimeout, 30_000);
  assert.equal(socketLimits({ pingInterval: 0 }).pingInterval, 0);
});

Deno.test("a peer that keeps sending is never pinged; a silent one is, and answering keeps it", async () => {
  using time = new FakeTime();
  let received = 0;
  await using server = serve(async (sock) => {
    for await (const msg of sock) if (msg.type === "binary") received++;
  }, { pingInterval: 100, pongTimeout: 100 });
  await using chatty = await within(RawClient.upgrade(server.addr.port));
  await using quiet = await within(RawClient.upgrade(server.addr.port));
  // The quiet one sends nothing but pongs to the pings it gets.
  let pings = 0;
  const answering = (async () => {
    for (;;) {
      const frame = await quiet.readFrame();
      if (frame === null) return;
      assert.equal(frame.opcode, 0x9);
      pings++;
      await quiet.send(clientFrame(0xa, frame.payload));
    }
  })();
  // The chatty client sends a message every 20 ms for 400 ms, each read by
  // the server before the clock moves on.
  for (let i = 0; i < 20; i++) {
    await chatty.send(clientFrame(0x2, new Uint8Array([i])));
    await waitFor(() => received > i, `message ${i} at the server`);
    await time.tickAsync(20);
  }
  // About one ping per pingInterval of silence, and answering kept it.
  assert.ok(pings >= 2, `${pings} pings`);
  assert.equal(server.connections, 2);
  quiet.close();
  await answering.catch(() => {});
  // The chatty one got no ping at all: close it and read what it got.
  await chatty.send(clientFrame(0x8, new Uint8Array([0x03, 0xe8])));
  const frames = [];
  for (;;) {
    const frame = await within(chatty.readFrame());
    if (frame === null) break;
    frames.push(frame.opcode);
  }
  assert.deepEqual(frames, [0x8]);
});

Deno.test("our client pings a silent server after pingInterval and drops it after pongTimeout", async () => {
  using time = new FakeTime();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept().then((conn) => new RawPeer(conn));
  const connecting = connect(`ws://127.0.0.1:${listener.addr.port}/`, {
    pingInterval: 60,
    pongTimeout: 120,
  });
  const peer = await within(accepted);
  await within(peer.acceptUpgrade());
  const sock = await within(connecting);
  const started = performance.now();
  const reading = peer.readFrame();
  await time.tickAsync(60);
  const ping = await within(reading, "a ping");
  assert.equal(ping?.opcode, 0x9);
  // Never answered: dropped within pongTimeout (and a tick) of the ping.
  await time.tickAsync(120 + 15);
  const closed = await within(sock.closed);
  const elapsed = performance.now() - started;
  assert.equal(closed.code, 1006);
  assert.match(closed.reason, /Keepalive timeout/);
  assert.ok(elapsed < 1000, `dropped after ${elapsed} ms`);
  peer.close();
  listener.close();
});

Deno.test("one Keepalive of 1,000 sockets pings the silent ones, spares those heard from, drops the silent ones after pongTimeout", () => {
  using time = new FakeTime();
  const pinged = new Set<number>();
  const expired = new Set<number>();
  const keepalive = new Keepalive<number>(40, 40, {
    ping: (n) => pinged.add(n),
    expire: (n) => {
      expired.add(n);
      keepalive.remove(watches[n]); // leaving inside the callback is fine
    },
    readPaused: (n) => n === 999, // this one's answer may be unread
  });
  const watches = Array.from({ length: 1000 }, (_, i) => keepalive.add(i));
  // Even sockets hear from their peer every 10 ms.
  const until = performance.now() + 300;
  while (performance.now() < until) {
    for (let i = 0; i < 1000; i += 2) {
      watches[i].heard = keepalive.ticks;
      watches[i].pinged = -1;
    }
    time.tick(10);
  }
  for (let i = 0; i < 1000; i++) {
    const silent = i % 2 === 1;
    assert.equal(pinged.has(i), silent, `socket ${i} pinged`);
    assert.equal(expired.has(i), silent && i !== 999, `socket ${i} expired`);
  }
  // Even ones and the paused one are still watched.
  assert.equal(keepalive.size, 501);
  for (let i = 0; i < 1000; i += 2) keepalive.remove(watches[i]);
  keepalive.remove(watches[999]);
  assert.equal(keepalive.size, 0);
  time.tick(30); // The timer stops at its next sweep.
  assert.equal(time.pending, 0);
});

Deno.test("keepalive keeps no process alive and stops its timer once no socket is left", async () => {
  // The test sanitizers fail this test if a timer is left running.
  await using server = serve(async (sock) => {
    for await (const _ of sock) { /* read */ }
  }, { pingInterval: 40, pongTimeout: 40 });
  const sock = await connect(urlOf(server), { pingInterval: 40 });
  await sleep(100);
  await sock.close();
  await sleep(60);
});

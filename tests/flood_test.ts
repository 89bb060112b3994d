/**
 * What the peer makes us send counts against the write bounds (issue 12):
 * a peer that floods pings and never reads the pongs makes the socket stop
 * reading instead of queuing pongs without bound, on both sides.
 */

import assert from "node:assert/strict";
import type { Socket } from "../mod.ts";
import {
  clientFrame,
  connectToRaw,
  RawClient,
  RawServer,
  readAll,
  serve,
  serverFrame,
  sleep,
  within,
} from "./_helpers.ts";

const MiB = 1024 * 1024;
// The attack size. The kernel's socket buffers on loopback grow to
// several MiB each way and can take 100,000 pings and their pongs (13 MB)
// without the socket ever stopping (seen under load): only a flood that
// no buffer holds shows that reading stopped.
const PINGS = 1_000_000;

/**
 * Sends `count` 125-byte pings in batches for at most `ms`; returns how
 * many went out (the rest were held back by TCP: the other side stopped
 * reading).
 */
async function flood(
  conn: Deno.Conn,
  ping: Uint8Array,
  count: number,
  ms: number,
): Promise<number> {
  const batch = 500;
  const bytes = new Uint8Array(ping.length * batch);
  for (let i = 0; i < batch; i++) bytes.set(ping, i * ping.length);
  // One write in flight at a time: a write still pending when time is up
  // is left to finish on its own, and nothing is written after it (two
  // writes at once would interleave their bytes).
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeUp = new Promise<"time">((resolve) => {
    timer = setTimeout(() => resolve("time"), ms);
  });
  let sent = 0;
  try {
    while (sent < count) {
      let offset = 0;
      while (offset < bytes.length) {
        const n = await Promise.race([
          conn.write(bytes.subarray(offset)),
          timeUp,
        ]);
        if (n === "time") return sent + Math.floor(offset / ping.length);
        offset += n;
      }
      sent += batch;
    }
    return sent;
  } finally {
    clearTimeout(timer);
  }
}

/** Samples `sock.bufferedAmount` every few ms until stopped; the peak. */
function peakBuffered(sock: Promise<Socket>) {
  let peak = 0;
  let running = true;
  const done = (async () => {
    const s = await sock;
    while (running) {
      peak = Math.max(peak, s.bufferedAmount);
      await sleep(5);
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return peak;
    },
  };
}

Deno.test("server: 1,000,000 pings whose pongs are never read stop the socket reading, with at most about maxQueuedBytes unsent", async () => {
  const accepted = Promise.withResolvers<Socket>();
  await using server = serve(async (sock) => {
    accepted.resolve(sock);
    for await (const _ of sock) { /* pings are answered on their own */ }
  });
  await using client = await within(RawClient.upgrade(server.addr.port));
  const sampler = peakBuffered(accepted.promise);
  const ping = clientFrame(0x9, new Uint8Array(125));
  const sent = await flood(client.conn, ping, PINGS, 3000);
  const peak = await sampler.stop();
  // Held back: the server stopped reading long before 1,000,000 pings.
  assert.ok(sent < PINGS, `all ${sent} pings were taken`);
  // 1 MiB of pongs, plus what one read of pings (256 KiB at most)
  // answered; unbounded, 1,000,000 pongs would be 127 MB.
  assert.ok(peak <= 1.5 * MiB, `peak bufferedAmount ${peak}`);
  // The flooder reads at last: every ping it got out has its pong.
  let pongs = 0;
  while (pongs < sent) {
    const frame = await within(client.readFrame(), "the pongs");
    assert.equal(frame?.opcode, 0xa);
    pongs++;
  }
  client.close();
});

Deno.test("client: 1,000,000 pings from a server that never reads the pongs stop our client reading", async () => {
  await using raw = new RawServer();
  const connected = connectToRaw(raw);
  const sampler = peakBuffered(connected.then(({ sock }) => sock));
  const { sock, peer } = await connected;
  const reading = readAll(sock); // Pings are delivered too: read them.
  const ping = serverFrame(0x9, new Uint8Array(125));
  const sent = await flood(peer.conn, ping, PINGS, 3000);
  const peak = await sampler.stop();
  assert.ok(sent < PINGS, `all ${sent} pings were taken`);
  assert.ok(peak <= 1.5 * MiB, `peak bufferedAmount ${peak}`);
  let pongs = 0;
  while (pongs < sent) {
    const frame = await within(peer.readFrame(), "the pongs");
    assert.equal(frame?.opcode, 0xa);
    assert.equal(frame?.payload.length, 125);
    pongs++;
  }
  peer.close();
  await within(sock.closed);
  const messages = await within(reading);
  // The pings (at least those counted: a write cut off by the deadline may
  // still have gone out), then the close.
  assert.ok(messages.length >= sent + 1, `${messages.length} messages`);
  assert.ok(messages.slice(0, -1).every((m) => m.type === "ping"));
  assert.deepEqual(messages.at(-1), { type: "close", code: 1006, reason: "" });
});

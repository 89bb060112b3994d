/**
 * The write path's fast cases: short strings encoded straight into the
 * write buffer (header size chosen after encoding), and many writes of one
 * event-loop turn coalesced into one system call.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { serve, sleep, urlOf } from "./_helpers.ts";
import { pooledWriteBytes } from "../src/buffers.ts";
import { WriteQueue } from "../src/write_queue.ts";

const echo = async (sock: Parameters<Parameters<typeof serve>[0]>[0]) => {
  for await (const msg of sock) {
    if (msg.type === "text" || msg.type === "binary") {
      sock.write(msg.data, msg.type);
    }
  }
};

Deno.test("strings of every length around the 126-byte header boundary round-trip as text", async () => {
  await using server = serve(echo);
  const sock = await connect(urlOf(server));
  // ASCII, 2-byte, 3-byte and 4-byte characters, so the UTF-8 length lands
  // below, on and above 125/126 for string lengths around 42..130.
  const alphabets = ["a", "é", "世", "😀", "a世é"];
  const sent: string[] = [];
  for (const unit of alphabets) {
    for (let n = 0; n <= 140; n++) { // n characters, not UTF-16 units
      const chars = [...unit];
      const text = Array.from({ length: n }, (_, i) => chars[i % chars.length])
        .join("");
      sent.push(text);
      sock.write(text, "text");
    }
  }
  for (const text of sent) {
    assert.deepEqual(await sock.read(), { type: "text", data: text });
  }
  await sock.close();
});

Deno.test("a string written as binary arrives as its UTF-8 bytes", async () => {
  await using server = serve(echo);
  const sock = await connect(urlOf(server));
  await sock.write("Hello, 世界!", "binary");
  assert.deepEqual(await sock.read(), {
    type: "binary",
    data: new TextEncoder().encode("Hello, 世界!"),
  });
  await sock.close();
});

Deno.test("binary messages delivered from one read stay intact after later reads", async () => {
  await using server = serve(echo);
  const sock = await connect(urlOf(server));
  const sent: Uint8Array[] = [];
  for (let i = 0; i < 5000; i++) {
    const bytes = new Uint8Array(1 + (i % 300)).map((_, j) =>
      (i * 7 + j) & 255
    );
    sent.push(bytes);
    sock.write(bytes);
  }
  const received: Uint8Array[] = [];
  for (let i = 0; i < sent.length; i++) {
    const msg = await sock.read();
    assert.equal(msg?.type, "binary");
    received.push((msg as { data: Uint8Array }).data);
  }
  // Checked only after all arrived: no later read may overwrite an earlier message.
  assert.deepEqual(received, sent);
  await sock.close();
});

Deno.test("large fragmented messages from several sockets at once stay intact (write buffers are pooled across sockets)", async () => {
  // Messages over fragmentSize are copied into the write buffer; buffers
  // over 256 KiB go back to a pool shared by every socket once written. A
  // buffer handed out again while still being written would corrupt one.
  await using server = serve(echo);
  const socks = await Promise.all(
    [0, 1, 2].map(() => connect(urlOf(server))),
  );
  const sizes = [300_000, 1 << 20, 700_001, 2_500_000, 1 << 20];
  const payload = (sock: number, i: number) =>
    new Uint8Array(sizes[i]).map((_, j) => (sock * 31 + i * 7 + j) & 255);
  // Every socket writes all its messages without waiting, in the same turns.
  for (let i = 0; i < sizes.length; i++) {
    socks.forEach((sock, s) => sock.write(payload(s, i)));
  }
  await Promise.all(socks.map(async (sock, s) => {
    for (let i = 0; i < sizes.length; i++) {
      const msg = await sock.read();
      assert.equal(msg?.type, "binary");
      assert.deepEqual(msg.data, payload(s, i), `socket ${s}, message ${i}`);
    }
  }));
  // What the pool keeps once the burst is over is bounded.
  assert.ok(pooledWriteBytes() > 0);
  assert.ok(pooledWriteBytes() <= 8 * 1024 * 1024, `${pooledWriteBytes()}`);
  await Promise.all(socks.map((sock) => sock.close()));
});

/**
 * A writer that takes its bytes only when released, as a socket whose peer
 * is slow to read: a buffer being written must stay untouched until then.
 */
class HeldWriter {
  wire: number[] = [];
  #pending: (() => void)[] = [];
  write(p: Uint8Array): Promise<number> {
    return new Promise((resolve) =>
      this.#pending.push(() => {
        for (const byte of p) this.wire.push(byte);
        resolve(p.length);
      })
    );
  }
  release(): void {
    for (const done of this.#pending.splice(0)) done();
  }
}

Deno.test("a pooled write buffer is not handed to another queue while its write is still in progress", async () => {
  const frame = (fill: number) => new Uint8Array(60_000).fill(fill);
  const onError = { writeFailed: (e: unknown) => e };
  // Round 1 leaves a written buffer of over 256 KiB in the pool.
  const warm = new HeldWriter();
  const first = new WriteQueue(warm, false, onError);
  for (let i = 0; i < 6; i++) first.push(true, false, 2, frame(1));
  await sleep(0);
  warm.release();
  await first.idle();
  // Queue A takes that buffer and starts writing it; the write hangs.
  const slow = new HeldWriter();
  const a = new WriteQueue(slow, false, onError);
  for (let i = 0; i < 6; i++) a.push(true, false, 2, frame(0xaa));
  await sleep(0);
  // Meanwhile queue B needs a big buffer too.
  const fast = new HeldWriter();
  const b = new WriteQueue(fast, false, onError);
  for (let i = 0; i < 6; i++) b.push(true, false, 2, frame(0xbb));
  await sleep(0);
  fast.release();
  slow.release();
  await Promise.all([a.idle(), b.idle()]);
  // Drop the 4-byte headers: every payload byte must be the queue's own.
  const bytes = (w: HeldWriter) =>
    new Set(w.wire.filter((_, i) => i % 60_004 >= 4));
  assert.deepEqual(bytes(slow), new Set([0xaa]));
  assert.deepEqual(bytes(fast), new Set([0xbb]));
});

// Queues take a buffer from a pool when they have frames and give it back
// once written: small ones (4 KiB) and grown ones (8 to 256 KiB, by power
// of two). A buffer given away while its write is in progress would carry
// another queue's frames.
for (
  const [label, size, header] of [
    ["small write buffers", 100, 2],
    ["medium write buffers (8 to 256 KiB)", 20_000, 4],
  ] as const
) {
  Deno.test(`${label} passed between queues are never one still being written`, async () => {
    const onError = { writeFailed: (e: unknown) => e };
    const writers = [0, 1, 2, 3].map(() => new HeldWriter());
    const queues = writers.map((w) => new WriteQueue(w, false, onError));
    const turn = () => sleep(0);
    for (let round = 0; round < 20; round++) {
      // Every queue gets frames while its previous write is held, then the
      // writes of half the queues complete.
      queues.forEach((q, i) =>
        q.push(true, false, 2, new Uint8Array(size).fill(0x10 + i))
      );
      await turn();
      writers.forEach((w, i) => (i + round) % 2 === 0 && w.release());
      await turn();
    }
    for (let i = 0; i < 10; i++) {
      writers.forEach((w) => w.release());
      await turn();
    }
    await Promise.all(queues.map((q) => q.idle()));
    const frame = header + size;
    writers.forEach((w, i) => {
      // 20 frames of a header and `size` payload bytes, all its own.
      assert.equal(w.wire.length, 20 * frame, `queue ${i}`);
      const payload = w.wire.filter((_, j) => j % frame >= header);
      assert.deepEqual(new Set(payload), new Set([0x10 + i]), `queue ${i}`);
    });
  });
}

Deno.test("64 KiB queued starts its write after the caller's job, not at the end of the turn; less waits and coalesces", async () => {
  const calls: number[] = [];
  const writer = {
    write(p: Uint8Array): Promise<number> {
      calls.push(p.length);
      return Promise.resolve(p.length);
    },
  };
  const queue = new WriteQueue(writer, false, { writeFailed: (e) => e });
  const microtasks = async () => {
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };
  // Small frames wait for the end of the event-loop turn.
  queue.push(true, false, 2, new Uint8Array(100));
  queue.push(true, false, 2, new Uint8Array(100));
  await microtasks();
  assert.deepEqual(calls, []);
  await sleep(0);
  assert.deepEqual(calls, [2 * 102]);
  // A message sent as 16 fragments, pushed in one job: one write, started
  // before any other task runs.
  calls.length = 0;
  for (let i = 0; i < 16; i++) {
    queue.push(i === 15, false, i === 0 ? 2 : 0, new Uint8Array(60_000));
  }
  await microtasks();
  assert.deepEqual(calls, [16 * (60_000 + 4)]);
  // Small frames queued first join the big one when it comes.
  calls.length = 0;
  queue.push(true, false, 2, new Uint8Array(100));
  // (70,000 bytes: a 10-byte header)
  queue.push(true, false, 2, new Uint8Array(70_000));
  await microtasks();
  assert.deepEqual(calls, [102 + 70_010]);
  await sleep(0);
  assert.deepEqual(calls, [102 + 70_010]); // the turn's flush finds nothing
  await queue.idle();
});

Deno.test("a batch's buffer starts at the last batch's size, and a big frame's at its own", async () => {
  // The size of the buffer each write was a view of.
  const buffers: number[] = [];
  const writer = {
    write(p: Uint8Array): Promise<number> {
      buffers.push(p.buffer.byteLength);
      return Promise.resolve(p.length);
    },
  };
  const queue = new WriteQueue(writer, false, { writeFailed: (e) => e });
  // 40 frames of 300 B (12,080 bytes), grown to from a 4 KiB start.
  for (let i = 0; i < 40; i++) queue.push(true, false, 2, new Uint8Array(300));
  await queue.idle();
  assert.deepEqual(buffers, [16 * 1024]);
  // The next batch starts at that size: its first frame takes 16 KiB.
  queue.push(true, false, 2, new Uint8Array(300));
  await queue.idle();
  assert.deepEqual(buffers, [16 * 1024, 16 * 1024]);
  // After a batch of 60,000 bytes, a frame of 220,000 (copied: under 256
  // KiB) sizes its buffer on its own: the 256 KiB pool class, not 280,010
  // bytes made for it and the last batch's size together.
  queue.push(true, false, 2, new Uint8Array(60_000 - 4));
  await queue.idle();
  queue.push(true, false, 2, new Uint8Array(220_000));
  await queue.idle();
  assert.equal(buffers.at(-1), 256 * 1024);
});

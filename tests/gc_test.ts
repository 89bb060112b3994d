import assert from "node:assert/strict";
import { runFixture } from "./_helpers.ts";

// Under connection churn, a server's own bookkeeping must not keep ended
// connections alive until a full collection. It did when open connections
// were kept in `Set`s (see src/members.ts): every connection's objects were
// promoted to the old generation, about 3 KB each here. Counted from V8's
// own trace of each young-generation collection (scavenge) after a warm-up
// and a full collection.
// With permessage-deflate too: the inflate and deflate callbacks used to be
// function literals assigned straight to properties, which V8 allocates in
// the old generation, and which kept their connection's objects alive
// through every young collection until a full one: 2,110 B promoted per
// connection, 9 B since.
const CHURN_MODES = {
  "": "",
  subscribe: " with a topic each",
  deflate: " with permessage-deflate",
};
for (const [mode, label] of Object.entries(CHURN_MODES)) {
  Deno.test(`churn${label}: ended connections die young (few bytes promoted per connection)`, async () => {
    const { code, stdout: out, stderr: err } = await runFixture(
      "churn_gc.ts",
      "--trace-gc-nvp,--expose-gc",
      ["1000", "5000", mode],
    );
    assert.equal(code, 0, err);
    const mark = Number(/^MARK ([\d.]+)$/m.exec(err)?.[1]);
    const conns = Number(/^CONNS (\d+)$/m.exec(err)?.[1]);
    assert.equal(conns, 5000);
    let scavenges = 0;
    let promoted = 0;
    for (const line of out.split("\n")) {
      // [pid:isolate:0]     1346 ms: GC: {"pause":0.3,...,"gc":"s",...}
      const match = /\s(\d+) ms: GC: (\{.*\})\s*$/.exec(line);
      if (match === null || Number(match[1]) < mark) continue;
      let gc;
      try {
        gc = JSON.parse(match[2]);
      } catch {
        continue; // Another trace line ran into this one.
      }
      if (gc.gc !== "s") continue;
      scavenges++;
      promoted += gc.promoted;
    }
    // Enough young collections that a connection kept across two of them
    // would have been promoted.
    assert.ok(scavenges >= 5, `only ${scavenges} scavenges after the warm-up`);
    const perConn = promoted / conns;
    assert.ok(
      perConn < 1024,
      `${
        perConn.toFixed(0)
      } B promoted per connection (${scavenges} scavenges)`,
    );
  });
}

// Each pause of reading for backpressure used to race the data it waited
// for against one promise of the close, which kept a reaction (a promise
// and a closure, about 300 B) per pause for as long as the connection
// lived: a long stream, or a steady echo under `maxQueuedBytes`, grew the
// heap without bound (+40 MiB in 12 s of a streamed 1 MiB echo).
Deno.test("read backpressure: 20,000 pauses on one connection leave the heap where it was", async () => {
  const { code, stdout, stderr } = await runFixture(
    "pause_gc.ts",
    "--expose-gc",
    ["20000"],
  );
  assert.equal(code, 0, stderr);
  const heaps = [...stdout.matchAll(/^HEAP (\d+)$/gm)].map((m) => Number(m[1]));
  assert.equal(heaps.length, 2, stdout);
  const growth = heaps[1] - heaps[0];
  assert.ok(
    growth < 1024 * 1024,
    `heap grew by ${(growth / 1024).toFixed(0)} KiB over 20,000 pauses`,
  );
});

// A connection that ended in the middle of a frame left that frame's
// buffer (allocated at the declared size, up to 1 MiB) to the next
// collection: 1,000 peers that each sent half of a 64 KiB frame and reset
// left 64 MiB of external memory behind for as long as the server was
// quiet. The read loop's end frees it.
Deno.test("connections that end mid-frame free the frame's buffer at once", async () => {
  const count = 16;
  const { code, stdout, stderr } = await runFixture(
    "half_frame_gc.ts",
    "--expose-gc",
    [String(count)],
  );
  assert.equal(code, 0, stderr);
  const [before, after] = [...stdout.matchAll(/^EXTERNAL (\d+)$/gm)].map((
    m,
  ) => Number(m[1]));
  assert.ok(after !== undefined, stdout);
  // Without the release: count × 1 MiB.
  assert.ok(
    after - before < count * 1024 * 1024 / 4,
    `${after - before} B of external memory left by ${count} connections`,
  );
});

import assert from "node:assert/strict";
import { runFixture } from "./_helpers.ts";

// An idle connection holds a small read buffer of its own (512 B) and no write
// buffer: a pending read holds its buffer for as long as the peer is
// silent, so a connection that had read its head into a pooled 8 KiB
// buffer, or echoed a burst into a 64 KiB one, kept that much per idle
// connection (issue 12). Counted as ArrayBuffer memory (`external`) per
// connection, in a subprocess, after a full collection.
for (const size of [16, 48 * 1024]) {
  Deno.test(`an idle connection that echoed ${size} B holds about 512 B of buffers`, async () => {
    const { code, stdout: out, stderr } = await runFixture(
      "idle_memory.ts",
      "--expose-gc",
      ["500", String(size)],
    );
    assert.equal(code, 0, stderr);
    const perConn = Number(/^EXTERNAL_PER_CONN (-?[\d.]+)$/m.exec(out)?.[1]);
    assert.ok(Number.isFinite(perConn), out);
    assert.ok(
      perConn < 1024,
      `${perConn.toFixed(0)} B of buffers per idle connection`,
    );
  });
}

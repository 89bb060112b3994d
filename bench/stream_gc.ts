/**
 * Why a streamed echo's heap is bigger than a whole-message echo's, with
 * none of this library's code: Deno's own `ReadableStream` objects outlive
 * V8's young-generation collections (until the next full collection), and
 * V8 answers objects that survive by doubling its young generation, step by
 * step, whatever else the process does: a byte stream per turn of the
 * event loop takes it from 6.5 to 51.5 MiB within 3 s.
 *
 * Each contestant runs in its own process for 3 s: a loop that allocates
 * about 10 KB of short-lived objects per turn of the event loop, as an
 * echo does per message, and makes one more object per turn: nothing, a
 * plain object graph with promises (like a stream's), or a
 * `ReadableStream`. It prints V8's young generation ("new space") at the
 * end, peak RSS, and the share of what the young collections kept.
 *
 * Run: deno run -A bench/stream_gc.ts
 */

import v8 from "node:v8";

const KINDS = ["nothing", "promises", "ReadableStream", "byte ReadableStream"];

function noop(): void {}

/** A plain object graph shaped like a stream's: a deferred, a controller. */
function plainGraph(): unknown {
  const deferred = Promise.withResolvers<void>();
  const controller = { queue: [] as unknown[], started: false };
  Promise.resolve().then(() => controller.started = true).then(noop, noop);
  return { deferred, controller };
}

async function child(kind: string): Promise<void> {
  let sink = 0;
  const end = performance.now() + 3000;
  while (performance.now() < end) {
    const garbage: unknown[] = [];
    for (let i = 0; i < 200; i++) garbage.push({ i, list: [i] });
    sink += garbage.length;
    if (kind === "promises") plainGraph();
    else if (kind === "ReadableStream") new ReadableStream();
    else if (kind === "byte ReadableStream") {
      new ReadableStream({ type: "bytes" });
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  const newSpace = v8.getHeapSpaceStatistics()
    .find((space) => space.space_name === "new_space")!.space_size;
  const status = Deno.readTextFileSync("/proc/self/status");
  const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024;
  console.log(JSON.stringify({ kind, newSpace, hwm, sink }));
}

async function main(): Promise<void> {
  console.log(
    "| one more per turn | V8 new space at the end (MiB) | peak RSS (MiB) |",
  );
  console.log("|---|---:|---:|");
  for (const kind of KINDS) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", import.meta.filename!, "--child", kind],
      stderr: "inherit",
    }).output();
    const result = JSON.parse(new TextDecoder().decode(out.stdout));
    console.log(
      `| ${kind} | ${(result.newSpace / 2 ** 20).toFixed(1)} | ${
        result.hwm.toFixed(1)
      } |`,
    );
  }
}

if (Deno.args[0] === "--child") await child(Deno.args[1]);
else await main();

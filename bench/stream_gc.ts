/**
 * Why a streamed echo's heap is bigger than a whole-message echo's, with
 * none of this library's code.
 *
 * V8 allocates a function literal assigned straight to a property
 * (`obj.f = () => …`) in the old generation, on the guess that it is a
 * method that lives long. Such a function is freed only by a full
 * collection, and until then whatever it captures survives every young
 * collection. Deno's stream constructors do this once per stream
 * (`stream[_controllerErrorFunction] = (error) => …` in `ext/web/
 * 06_streams.js`, capturing the controller), so every stream's objects
 * outlive the young generation; V8 answers objects that survive by
 * doubling its young generation, step by step, up to 32 MiB semi-spaces.
 * The same function assigned through a constant is an ordinary young
 * object.
 *
 * Each row runs a loop that allocates about 10 KB of short-lived objects
 * per turn of the event loop, as an echo does per message, and makes one
 * more thing per turn, in two processes: one prints what two young
 * collections kept (bytes per turn, after a warm-up and a full
 * collection), the other V8's young generation and the peak RSS after 3 s.
 *
 * Run: deno run -A bench/stream_gc.ts
 */

import v8 from "node:v8";

/** Something for a function to capture, as a stream controller is. */
function graph(): unknown {
  return {
    queue: [] as unknown[],
    parts: Array.from({ length: 24 }, () => ({})),
  };
}

function fail(_controller: unknown, _error: unknown): void {}

const KINDS: Record<string, () => unknown> = {
  "nothing": () => null,
  "`o.f = () => …` capturing a few objects": () => {
    const controller = graph();
    const o: { f?: (error: unknown) => void } = {};
    o.f = (error) => fail(controller, error);
    return o;
  },
  "the same through a constant": () => {
    const controller = graph();
    const o: { f?: (error: unknown) => void } = {};
    const f = (error: unknown) => fail(controller, error);
    o.f = f;
    return o;
  },
  "`new ReadableStream()`": () => new ReadableStream(),
  '`new ReadableStream({ type: "bytes" })`': () =>
    new ReadableStream({ type: "bytes" }),
};

type Gc = (options?: { type: "minor" | "major" }) => void;

function heapUsed(): number {
  let used = 0;
  for (const space of v8.getHeapSpaceStatistics()) {
    if (space.space_name === "new_space" || space.space_name === "old_space") {
      used += space.space_used_size;
    }
  }
  return used;
}

async function turn(make: () => unknown): Promise<void> {
  const garbage: unknown[] = [];
  for (let i = 0; i < 200; i++) garbage.push({ i, list: [i] });
  make();
  await new Promise((resolve) => setImmediate(resolve));
}

/** Bytes per turn that two young collections kept (run with --expose-gc). */
async function kept(make: () => unknown): Promise<number> {
  const gc = (globalThis as { gc?: Gc }).gc!;
  for (let i = 0; i < 500; i++) await turn(make);
  gc();
  const before = heapUsed();
  const turns = 3000;
  for (let i = 0; i < turns; i++) await turn(make);
  gc({ type: "minor" });
  gc({ type: "minor" });
  return (heapUsed() - before) / turns;
}

/** V8's young generation and the peak RSS after 3 s of turns. */
async function growth(make: () => unknown): Promise<number[]> {
  const end = performance.now() + 3000;
  while (performance.now() < end) await turn(make);
  const young = v8.getHeapSpaceStatistics()
    .find((space) => space.space_name === "new_space")!.space_size;
  const status = Deno.readTextFileSync("/proc/self/status");
  return [young / 2 ** 20, Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024];
}

async function child(what: string, kind: string): Promise<void> {
  const make = KINDS[kind];
  const result = what === "kept" ? await kept(make) : await growth(make);
  console.log(JSON.stringify(result));
}

async function run(what: string, kind: string): Promise<unknown> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...(what === "kept" ? ["--v8-flags=--expose-gc"] : []),
      import.meta.filename!,
      "--child",
      what,
      kind,
    ],
    stderr: "inherit",
  }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

async function main(): Promise<void> {
  console.log(
    "| one more per turn | kept by young GCs (B per turn) | V8 young generation after 3 s (MiB) | peak RSS (MiB) |",
  );
  console.log("|---|---:|---:|---:|");
  for (const kind of Object.keys(KINDS)) {
    const keptBytes = await run("kept", kind) as number;
    const [young, hwm] = await run("growth", kind) as number[];
    console.log(
      `| ${kind} | ${Math.max(0, Math.round(keptBytes))} | ${
        young.toFixed(1)
      } | ${hwm.toFixed(1)} |`,
    );
  }
}

if (Deno.args[0] === "--child") await child(Deno.args[1], Deno.args[2]);
else await main();

import assert from "node:assert/strict";
import { Deadlines } from "../src/deadlines.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("Deadlines fire in order, each no earlier than its duration after it was set", async () => {
  const deadlines = new Deadlines(40);
  const fired: [number, number][] = [];
  const set: number[] = [];
  for (let i = 0; i < 5; i++) {
    set.push(performance.now());
    deadlines.add(() => fired.push([i, performance.now()]));
    await sleep(5);
  }
  await sleep(120);
  assert.deepEqual(fired.map(([i]) => i), [0, 1, 2, 3, 4]);
  for (const [i, at] of fired) {
    assert.ok(at - set[i] >= 39, `deadline ${i} fired after ${at - set[i]} ms`);
  }
});

Deno.test("Deadlines cancelled do not fire, and no timer is left once all are cancelled", async () => {
  // The test sanitizer fails this test if a timer is left pending.
  const deadlines = new Deadlines(30);
  const fired: number[] = [];
  const handles = Array.from(
    { length: 3000 },
    (_, i) => deadlines.add(() => fired.push(i)),
  );
  // Cancel all but a few, out of order (the head last).
  for (let i = handles.length - 1; i >= 0; i--) {
    if (i % 1000 !== 500) handles[i].cancel();
  }
  await sleep(80);
  assert.deepEqual(fired, [500, 1500, 2500]);
  assert.equal(deadlines.armed, false);
  const late = deadlines.add(() => fired.push(-1));
  assert.equal(deadlines.armed, true);
  late.cancel();
  late.cancel();
  // Nothing left to wait for: no timer keeps the process alive.
  assert.equal(deadlines.armed, false);
});

Deno.test("Deadlines set from inside a callback still fire", async () => {
  const deadlines = new Deadlines(10);
  const done = Promise.withResolvers<number>();
  deadlines.add(() => deadlines.add(() => done.resolve(performance.now())));
  const start = performance.now();
  assert.ok((await done.promise) - start >= 19);
});

Deno.test("a process whose deadlines were all cancelled exits at once", async () => {
  const url = new URL("../src/deadlines.ts", import.meta.url).href;
  const start = performance.now();
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { Deadlines } from "${url}";
       const d = new Deadlines(5000);
       const a = d.add(() => Deno.exit(3)), b = d.add(() => Deno.exit(4));
       b.cancel(); a.cancel();`,
    ],
    stdout: "null",
    stderr: "inherit",
  }).output();
  assert.equal(code, 0);
  // A timer left behind would hold the process for 5 s.
  assert.ok(performance.now() - start < 4000);
});

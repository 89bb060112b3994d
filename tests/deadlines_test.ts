import assert from "node:assert/strict";
import { Deadlines } from "../src/deadlines.ts";
import { FakeTime } from "./_fake_time.ts";

Deno.test("Deadlines fire in order, each no earlier than its duration after it was set", () => {
  using time = new FakeTime();
  const deadlines = new Deadlines(40);
  const fired: [number, number][] = [];
  const set: number[] = [];
  for (let i = 0; i < 5; i++) {
    set.push(performance.now());
    deadlines.add(() => fired.push([i, performance.now()]));
    time.tick(5);
  }
  time.tick(120);
  assert.deepEqual(fired.map(([i]) => i), [0, 1, 2, 3, 4]);
  for (const [i, at] of fired) {
    assert.ok(at - set[i] >= 39, `deadline ${i} fired after ${at - set[i]} ms`);
  }
});

Deno.test("Deadlines cancelled do not fire", () => {
  using time = new FakeTime();
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
  time.tick(80);
  assert.deepEqual(fired, [500, 1500, 2500]);
  const late = deadlines.add(() => fired.push(-1));
  late.cancel();
  late.cancel();
  time.tick(50);
  assert.deepEqual(fired, [500, 1500, 2500]);
});

Deno.test("Deadlines set from inside a callback still fire", async () => {
  using time = new FakeTime();
  const deadlines = new Deadlines(10);
  const done = Promise.withResolvers<number>();
  deadlines.add(() => deadlines.add(() => done.resolve(performance.now())));
  const start = performance.now();
  time.tick(20);
  assert.ok((await done.promise) - start >= 19);
});

Deno.test("pending or cancelled deadlines do not keep a process alive", async () => {
  const url = new URL("../src/deadlines.ts", import.meta.url).href;
  const start = performance.now();
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { Deadlines } from "${url}";
       const d = new Deadlines(5000);
       const a = d.add(() => Deno.exit(3)), b = d.add(() => Deno.exit(4));
       b.cancel(); d.add(() => Deno.exit(5));`,
    ],
    stdout: "null",
    stderr: "inherit",
  }).output();
  assert.equal(code, 0);
  // The timer is unref'd: it would otherwise hold the process for 5 s.
  assert.ok(performance.now() - start < 4000);
});

Deno.test("a deadline set after the one its timer was set for was cancelled still fires on time, not early", () => {
  using time = new FakeTime();
  const deadlines = new Deadlines(60);
  const first = deadlines.add(() => assert.fail("cancelled"));
  first.cancel();
  time.tick(30);
  // The timer set for `first` fires in 30 ms, 30 ms before this is due.
  const set = performance.now();
  let at = NaN;
  deadlines.add(() => at = performance.now());
  time.tick(60);
  assert.ok(at - set >= 59, `fired after ${at - set} ms`);
});

/**
 * The virtual clock of tests/_fake_time.ts, on its own.
 */

import assert from "node:assert/strict";
import { FakeTime } from "./_fake_time.ts";
import { sleep, within } from "./_helpers.ts";

Deno.test("FakeTime replaces the timer globals and the clocks, and disposal restores them", () => {
  const before = [
    globalThis.setTimeout,
    globalThis.clearTimeout,
    globalThis.setInterval,
    globalThis.clearInterval,
    Date.now,
    performance.now,
  ];
  const realStart = performance.now();
  {
    using time = new FakeTime();
    assert.notEqual(globalThis.setTimeout, before[0]);
    assert.notEqual(Date.now, before[4]);
    assert.ok(time.now >= realStart);
    const date = Date.now();
    const start = performance.now();
    time.tick(1234);
    assert.equal(performance.now() - start, 1234);
    assert.equal(Date.now() - date, 1234);
    assert.throws(() => new FakeTime(), /already installed/);
  }
  assert.deepEqual(
    [
      globalThis.setTimeout,
      globalThis.clearTimeout,
      globalThis.setInterval,
      globalThis.clearInterval,
      Date.now,
      performance.now,
    ],
    before,
  );
});

Deno.test("tick runs due timeouts in order of time, then of setting, with the clock at their time", () => {
  using time = new FakeTime();
  const start = time.now;
  const ran: [string, number][] = [];
  const at = (name: string) => () => ran.push([name, time.now - start]);
  setTimeout(at("c"), 30);
  setTimeout(at("a"), 10);
  setTimeout(at("b"), 10);
  const cleared = setTimeout(at("never"), 20);
  setTimeout(at("later"), 100);
  setTimeout((x: string, y: number) => ran.push([x, y]), 5, "args", 7);
  clearTimeout(cleared);
  assert.equal(time.pending, 5);
  assert.equal(time.nextIn, 5);
  time.tick(9);
  assert.deepEqual(ran, [["args", 7]]);
  time.tick(21);
  assert.deepEqual(ran, [["args", 7], ["a", 10], ["b", 10], ["c", 30]]);
  assert.equal(time.now - start, 30);
  assert.equal(time.pending, 1);
  time.tick(70);
  assert.deepEqual(ran.at(-1), ["later", 100]);
  assert.equal(time.pending, 0);
  assert.equal(time.nextIn, null);
});

Deno.test("intervals repeat until cleared, and timers set by a timer run in the same tick when due", () => {
  using time = new FakeTime();
  const start = time.now;
  const ticks: number[] = [];
  const id = setInterval(() => {
    ticks.push(time.now - start);
    if (ticks.length === 3) {
      clearInterval(id);
      setTimeout(() => ticks.push(-(time.now - start)), 5);
    }
  }, 10);
  time.tick(100);
  assert.deepEqual(ticks, [10, 20, 30, -35]);
  assert.equal(time.pending, 0);
});

Deno.test("tickAsync lets promise jobs and real macrotasks run between timers; tick does not", async () => {
  using time = new FakeTime();
  const start = time.now;
  const order: string[] = [];
  const chain = (label: string) =>
    setTimeout(async () => {
      order.push(`${label}1`);
      await Promise.resolve();
      // Set after an await: a later timer of the same tick must see it.
      setTimeout(() => order.push(`${label}3`), 1);
      await sleep(0); // a real macrotask
      order.push(`${label}2`);
    }, 10);
  let slept = -1;
  time.sleep(15).then(() => slept = time.now - start);
  chain("sync:");
  time.tick(20);
  assert.deepEqual(order, ["sync:1"]);
  await within(sleep(20), "the real macrotask");
  assert.deepEqual(order, ["sync:1", "sync:2"]);
  assert.equal(slept, 20, "a virtual sleep resolves as a promise job");
  time.tick(1); // sync:3 was set on the virtual clock
  order.length = 0;
  chain("async:");
  await time.tickAsync(20);
  assert.deepEqual(order, ["async:1", "async:2", "async:3"]);
});

Deno.test("within and sleep from _helpers run on the real clock while a FakeTime is installed", async () => {
  using time = new FakeTime();
  const start = time.now;
  await within(sleep(5), "a real sleep");
  await assert.rejects(
    within(new Promise(() => {}), "nothing", 20),
    /Timed out after 20 ms waiting for nothing/,
  );
  assert.equal(time.now, start);
});

Deno.test("a real timer set before the FakeTime can be cleared through it", () => {
  // The sanitizers fail this test if the real timer is left pending.
  const realTimer = setTimeout(() => assert.fail("cleared"), 50);
  using _time = new FakeTime();
  clearTimeout(realTimer);
});

Deno.test("disposal runs what is pending and fails on a timer that never stops, restoring the globals anyway", () => {
  const realSetTimeout = globalThis.setTimeout;
  let ran = 0;
  {
    using _time = new FakeTime();
    setTimeout(() => ran++, 60_000);
    let sweeps = 0;
    const id = setInterval(() => {
      if (++sweeps === 3) clearInterval(id);
    }, 1000);
  }
  assert.equal(ran, 1);
  assert.throws(
    () => {
      using _time = new FakeTime();
      setInterval(function sweep() {}, 10);
    },
    /timers that never stop: sweep/,
  );
  assert.equal(globalThis.setTimeout, realSetTimeout);
});

Deno.test("tickUntil moves the clock in steps until a promise settles, and gives up at its limit", async () => {
  using time = new FakeTime();
  const start = time.now;
  // A timer armed only after a real macrotask, as real I/O would.
  const armed = sleep(1).then(() =>
    new Promise<number>((resolve) =>
      setTimeout(() => resolve(time.now - start), 100)
    )
  );
  const at = await time.tickUntil(armed, 10);
  assert.ok(at >= 100 && at % 10 === 0, `resolved at ${at}`);
  assert.equal(time.now - start, at);
  await assert.rejects(
    time.tickUntil(new Promise(() => {}), 50, 200),
    /Nothing settled within 200 virtual ms/,
  );
  const failed = Promise.reject(new Error("no"));
  await assert.rejects(time.tickUntil(failed), /no/);
});

/**
 * `ReadQueue`: waiting `read()` and `next()` calls are served in the order
 * they came, each in its own shape.
 */

import assert from "node:assert/strict";
import { ReadQueue } from "../src/read_queue.ts";

Deno.test("ReadQueue serves waiting read() and next() calls in order, each in its shape, then the end", async () => {
  const queue = new ReadQueue<string>();
  const waiting = [
    queue.next(),
    queue.read(),
    queue.read(),
    queue.next(),
    queue.next(),
    queue.read(),
  ];
  queue.push("a", 1);
  queue.push("b", 1);
  queue.push("c", 1);
  queue.push("d", 1);
  queue.end();
  assert.deepEqual(await Promise.all(waiting), [
    { done: false, value: "a" },
    "b",
    "c",
    { done: false, value: "d" },
    { done: true, value: undefined },
    null,
  ]);
  assert.equal(queue.bytes, 0);
  assert.deepEqual(await queue.next(), { done: true, value: undefined });
  assert.equal(await queue.read(), null);
});

Deno.test("ReadQueue queues what no one waits for, and counts its bytes", async () => {
  const queue = new ReadQueue<string>();
  queue.push("x", 10);
  queue.push("y", 5);
  assert.equal(queue.bytes, 15);
  assert.deepEqual(await queue.next(), { done: false, value: "x" });
  assert.equal(await queue.read(), "y");
  assert.equal(queue.bytes, 0);
});

import assert from "node:assert/strict";
import { Members } from "../src/members.ts";

Deno.test("Members: add, remove from anywhere, remove twice", () => {
  const members = new Members<string>();
  const handles = ["a", "b", "c", "d"].map((v) => members.add(v));
  assert.equal(members.size, 4);
  members.remove(handles[1]); // from the middle: the last takes its slot
  assert.deepEqual(members.values().sort(), ["a", "c", "d"]);
  members.remove(handles[1]);
  assert.equal(members.size, 3);
  members.remove(handles[3]); // the last one
  members.remove(handles[0]);
  assert.deepEqual(members.values(), ["c"]);
  members.remove(handles[2]);
  assert.equal(members.size, 0);
  assert.deepEqual(members.values(), []);
});

Deno.test("Members: a handle of another set removes nothing", () => {
  const one = new Members<number>();
  const other = new Members<number>();
  one.add(1);
  const foreign = other.add(2);
  one.remove(foreign);
  assert.deepEqual(one.values(), [1]);
  assert.deepEqual(other.values(), [2]);
});

Deno.test("Members: matches a Set under random churn", () => {
  const members = new Members<number>();
  const handles = new Map<number, ReturnType<Members<number>["add"]>>();
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 5000; i++) {
    if (handles.size > 0 && random() < 0.5) {
      const keys = [...handles.keys()];
      const key = keys[Math.floor(random() * keys.length)];
      members.remove(handles.get(key)!);
      handles.delete(key);
    } else {
      handles.set(i, members.add(i));
    }
    assert.equal(members.size, handles.size);
  }
  assert.deepEqual(
    members.values().sort((a, b) => a - b),
    [...handles.keys()].sort((a, b) => a - b),
  );
});

Deno.test("Members: values() is a copy, safe to remove from while walking it", () => {
  const members = new Members<number>();
  const handles = [1, 2, 3].map((v) => members.add(v));
  const seen: number[] = [];
  for (const value of members.values()) {
    seen.push(value);
    for (const handle of handles) members.remove(handle);
  }
  assert.deepEqual(seen.sort(), [1, 2, 3]);
  assert.equal(members.size, 0);
});

Deno.test("Members.insert keeps the caller's handle (with its own fields); forEachMember walks the handles", () => {
  const members = new Members<
    string,
    { value: string; index: number; n: number }
  >();
  const a = members.insert({ value: "a", index: -5, n: 1 });
  const b = members.insert({ value: "b", index: -5, n: 2 });
  const c = members.insert({ value: "c", index: -5, n: 3 });
  assert.deepEqual([a.index, b.index, c.index], [0, 1, 2]);
  members.remove(a);
  assert.equal(a.index, -1);
  const seen: [string, number][] = [];
  members.forEachMember((m) => seen.push([m.value, m.n]));
  assert.deepEqual(seen.sort(), [["b", 2], ["c", 3]]);
  members.remove(a); // twice: nothing
  assert.equal(members.size, 2);
});

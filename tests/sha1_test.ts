import assert from "node:assert/strict";
import { sha1 } from "../src/sha1.ts";

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("sha1() matches the FIPS 180-2 test vectors", () => {
  const hex = (bytes: Uint8Array) =>
    Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const text = new TextEncoder();
  assert.equal(
    hex(sha1(text.encode("abc"))),
    "a9993e364706816aba3e25717850c26c9cd0d89d",
  );
  assert.equal(
    hex(sha1(new Uint8Array(0))),
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
  );
  assert.equal(
    hex(
      sha1(
        text.encode("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
      ),
    ),
    "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
  );
});

Deno.test("sha1() matches Web Crypto for every length from 0 to 300 bytes", async () => {
  const random = mulberry32(6455);
  for (let length = 0; length <= 300; length++) {
    const message = Uint8Array.from(
      { length },
      () => Math.floor(random() * 256),
    );
    const expected = new Uint8Array(
      await crypto.subtle.digest("SHA-1", message),
    );
    assert.deepEqual(sha1(message), expected, `length ${length}`);
  }
});

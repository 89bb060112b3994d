import assert from "node:assert/strict";
import { mask, maskInto, nextMaskingKey } from "../src/mask.ts";

// -- Helpers --

const KEY = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);

/** RFC 6455 5.3, byte by byte: octet i is XORed with key octet (offset + i) mod 4. */
function naiveMask(data: Uint8Array, key: Uint8Array, offset = 0): Uint8Array {
  const out = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) {
    out[i] = data[i] ^ key[(offset + i) % 4];
  }
  return out;
}

function pattern(length: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 131 + seed * 17 + 5) & 0xff;
  return bytes;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// -- 5.3 Client-to-server masking --

Deno.test("mask() follows RFC 6455 5.3 on a short example", () => {
  const data = new Uint8Array([0x00, 0xff, 0x0f, 0xf0, 0x12, 0x34]);
  mask(data, KEY);
  assert.deepEqual(
    [...data],
    [0x37, 0x05, 0x2e, 0xcd, 0x25, 0xce],
  );
});

Deno.test("mask() applied twice restores the data", () => {
  for (const length of [0, 1, 3, 4, 5, 17, 1000, 4099]) {
    const original = pattern(length);
    const data = original.slice();
    mask(data, KEY);
    if (length > 0) {
      assert.ok(!bytesEqual(data, original), `length ${length} changed`);
    }
    mask(data, KEY);
    assert.ok(bytesEqual(data, original), `length ${length} restored`);
  }
});

/**
 * Masks `length` bytes at `byteOffset` of a patterned buffer with key offset
 * `offset`, and checks them against the reference and that nothing outside
 * the view changed.
 */
function checkMask(
  length: number,
  byteOffset: number,
  offset: number,
  key: Uint8Array,
): void {
  const label = `length ${length}, byteOffset ${byteOffset}, offset ${offset}`;
  const buffer = pattern(length + 16, length + byteOffset);
  const before = buffer.slice();
  const data = buffer.subarray(byteOffset, byteOffset + length);
  assert.equal(data.byteOffset, byteOffset);
  const expected = naiveMask(data, key, offset);
  mask(data, key, offset);
  assert.ok(bytesEqual(data, expected), label);
  const end = byteOffset + length;
  assert.ok(
    bytesEqual(buffer.subarray(0, byteOffset), before.subarray(0, byteOffset)),
    `${label}: bytes before the view`,
  );
  assert.ok(
    bytesEqual(buffer.subarray(end), before.subarray(end)),
    `${label}: bytes after the view`,
  );
}

Deno.test("mask() matches a byte-wise reference for lengths 0-70 at every byte offset 0-7 and key offset 0-3", () => {
  const keys = [
    KEY,
    new Uint8Array([0, 0, 0, 0]),
    new Uint8Array([0xff, 0x80, 0x01, 0x7f]),
  ];
  for (const key of keys) {
    for (let length = 0; length <= 70; length++) {
      for (let byteOffset = 0; byteOffset <= 7; byteOffset++) {
        for (let offset = 0; offset <= 3; offset++) {
          checkMask(length, byteOffset, offset, key);
        }
      }
    }
  }
});

Deno.test("mask() matches the reference around the 64-bit word path's threshold at every alignment", () => {
  // 512 bytes and up take 64-bit words; check both sides of it, with every
  // head (byteOffset 0-7), key offset and tail length.
  for (const length of [505, 511, 512, 513, 519, 520, 1031]) {
    for (let byteOffset = 0; byteOffset <= 7; byteOffset++) {
      for (let offset = 0; offset <= 3; offset++) {
        checkMask(length, byteOffset, offset, KEY);
      }
    }
  }
});

Deno.test("mask() with an offset unmasks a payload in pieces", () => {
  const original = pattern(103);
  const masked = naiveMask(original, KEY);
  for (const cuts of [[0, 1, 2, 3], [5, 9, 50], [7, 8, 100], [4, 64]]) {
    const data = masked.slice();
    const bounds = [0, ...cuts, data.length];
    for (let i = 0; i + 1 < bounds.length; i++) {
      mask(data.subarray(bounds[i], bounds[i + 1]), KEY, bounds[i]);
    }
    assert.ok(bytesEqual(data, original), `cuts ${cuts}`);
  }
});

Deno.test("mask() matches the byte-wise reference on 1 MiB, aligned and unaligned", () => {
  const size = 1 << 20;
  for (const byteOffset of [0, 3]) {
    for (const offset of [0, 1]) {
      const buffer = pattern(size + 8, byteOffset);
      const data = buffer.subarray(byteOffset, byteOffset + size);
      const expected = naiveMask(data, KEY, offset);
      mask(data, KEY, offset);
      assert.ok(
        bytesEqual(data, expected),
        `byteOffset ${byteOffset}, offset ${offset}`,
      );
    }
  }
});

Deno.test("mask() does not modify the masking key", () => {
  const key = KEY.slice();
  mask(pattern(100), key, 1);
  assert.deepEqual([...key], [...KEY]);
});

// -- maskInto --

Deno.test("maskInto() copies the masked bytes into the target and leaves the source untouched", () => {
  for (const length of [0, 1, 5, 64, 1001]) {
    for (const targetOffset of [0, 1, 2, 3, 6]) {
      const label = `length ${length}, targetOffset ${targetOffset}`;
      const source = pattern(length + 1, 3).subarray(1);
      const sourceCopy = source.slice();
      const target = new Uint8Array(length + 10).fill(0xaa);
      maskInto(source, KEY, target, targetOffset);
      assert.ok(bytesEqual(source, sourceCopy), `${label}: source untouched`);
      assert.ok(
        bytesEqual(
          target.subarray(targetOffset, targetOffset + length),
          naiveMask(source, KEY),
        ),
        `${label}: masked bytes`,
      );
      assert.ok(
        target.subarray(0, targetOffset).every((b) => b === 0xaa),
        `${label}: bytes before`,
      );
      assert.ok(
        target.subarray(targetOffset + length).every((b) => b === 0xaa),
        `${label}: bytes after`,
      );
    }
  }
});

Deno.test("maskInto() matches the reference on the one-pass path: every source and target alignment, around 512 B and at 64 KiB", () => {
  for (const length of [511, 512, 513, 520, 1027, 65_536]) {
    for (let sourceShift = 0; sourceShift < 8; sourceShift++) {
      for (let targetShift = 0; targetShift < 16; targetShift++) {
        const label =
          `length ${length}, source at ${sourceShift}, target at ${targetShift}`;
        const source = pattern(length + sourceShift, length).subarray(
          sourceShift,
        );
        const sourceCopy = source.slice();
        // The target itself is a view at an offset, as a pooled buffer may be.
        const backing = new Uint8Array(length + 32).fill(0x5c);
        const target = backing.subarray(3);
        maskInto(source, KEY, target, targetShift);
        assert.ok(bytesEqual(source, sourceCopy), `${label}: source untouched`);
        assert.ok(
          bytesEqual(
            target.subarray(targetShift, targetShift + length),
            naiveMask(source, KEY),
          ),
          `${label}: masked bytes`,
        );
        assert.ok(
          backing.subarray(0, 3 + targetShift).every((b) => b === 0x5c) &&
            backing.subarray(3 + targetShift + length).every((b) => b === 0x5c),
          `${label}: nothing written outside`,
        );
      }
    }
  }
});

Deno.test("maskInto() matches the reference on the short-payload loop: every length below 64 and at the switch, at several offsets", () => {
  for (let length = 0; length <= 66; length++) {
    for (const targetShift of [0, 1, 5, 8]) {
      const source = pattern(length, length + 1);
      const backing = new Uint8Array(length + 16).fill(0x5c);
      maskInto(source, KEY, backing, targetShift);
      const label = `length ${length}, target at ${targetShift}`;
      assert.ok(
        bytesEqual(
          backing.subarray(targetShift, targetShift + length),
          naiveMask(source, KEY),
        ),
        `${label}: masked bytes`,
      );
      assert.ok(
        backing.subarray(0, targetShift).every((b) => b === 0x5c) &&
          backing.subarray(targetShift + length).every((b) => b === 0x5c),
        `${label}: nothing written outside`,
      );
    }
  }
  // Short payloads are checked against the target's end too.
  assert.throws(
    () => maskInto(pattern(10), KEY, new Uint8Array(12), 4),
    RangeError,
  );
});

Deno.test("maskInto() throws a RangeError, writing nothing, when the source does not fit", () => {
  const target = new Uint8Array(1024);
  assert.throws(() => maskInto(pattern(1024), KEY, target, 8), RangeError);
  assert.ok(target.every((b) => b === 0));
});

Deno.test("nextMaskingKey() gives fresh random bytes on every call, across pool refills", () => {
  const seen = new Set<number>();
  // 3,000 keys: past two refills of the 4 KiB pool.
  for (let i = 0; i < 3000; i++) {
    const key = nextMaskingKey();
    assert.equal(key.length, 4);
    seen.add(new DataView(key.buffer, key.byteOffset, 4).getUint32(0));
  }
  // 32 random bits: a handful of repeats at most in 3,000 draws.
  assert.ok(seen.size > 2990, `${seen.size} distinct keys of 3000`);
});

/**
 * Masking (RFC 6455 5.3): XOR with a 4-byte key, word-wise, and the keys
 * themselves, drawn from the platform's CSPRNG.
 *
 * Pure: no I/O, no timers, no promises.
 *
 * @module
 */

const WORD_MASK_MIN = 48;
/** From this length on, 64-bit words: see {@linkcode maskWide}. */
const WIDE_MASK_MIN = 512;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * XORs `data` in place with `maskingKey`, as if `data` started `offset` bytes
 * into the masked payload (so a payload can be unmasked in pieces).
 *
 * RFC 6455 5.3: octet i of the transformed data is octet i of the original
 * data XOR octet i MOD 4 of the masking key. Masking twice restores the data.
 */
export function mask(
  data: Uint8Array,
  maskingKey: Uint8Array,
  offset = 0,
): void {
  const length = data.length;
  let i = 0;
  // Below this, making the Int32Array view costs more than it saves.
  if (length < WORD_MASK_MIN) {
    for (; i < length; i++) data[i] ^= maskingKey[(offset + i) & 3];
    return;
  }
  if (length >= WIDE_MASK_MIN) return maskWide(data, maskingKey, offset);
  // Bytes up to the first 4-byte-aligned address of the underlying buffer.
  const head = Math.min(length, (4 - (data.byteOffset & 3)) & 3);
  for (; i < head; i++) data[i] ^= maskingKey[(offset + i) & 3];
  const words = (length - i) >>> 2;
  if (words > 0) {
    // The key rotated so that its byte 0 lines up with data[i].
    const k = (offset + i) & 3;
    const b0 = maskingKey[k];
    const b1 = maskingKey[(k + 1) & 3];
    const b2 = maskingKey[(k + 2) & 3];
    const b3 = maskingKey[(k + 3) & 3];
    const word = LITTLE_ENDIAN
      ? (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))
      : ((b0 << 24) | (b1 << 16) | (b2 << 8) | b3);
    const view = new Int32Array(data.buffer, data.byteOffset + i, words);
    for (let w = 0; w < words; w++) view[w] ^= word;
    i += words << 2;
  }
  for (; i < length; i++) data[i] ^= maskingKey[(offset + i) & 3];
}

/**
 * {@linkcode mask} over 64-bit words: V8 compiles XOR on a BigUint64Array
 * to plain 64-bit operations, twice the bytes per step of an Int32Array
 * (2x at 64 KiB), though its BigInt key and view cost more than they save
 * on short data.
 */
function maskWide(
  data: Uint8Array,
  maskingKey: Uint8Array,
  offset: number,
): void {
  const length = data.length;
  let i = 0;
  // Bytes up to the first 8-byte-aligned address of the underlying buffer.
  const head = (8 - (data.byteOffset & 7)) & 7;
  for (; i < head; i++) data[i] ^= maskingKey[(offset + i) & 3];
  const words = (length - i) >>> 3;
  const word = wideKey(maskingKey, (offset + i) & 3);
  const view = new BigUint64Array(data.buffer, data.byteOffset + i, words);
  for (let w = 0; w < words; w++) view[w] ^= word;
  i += words << 3;
  for (; i < length; i++) data[i] ^= maskingKey[(offset + i) & 3];
}

/** The key rotated so that its byte `k` comes first, twice over 64 bits. */
function wideKey(maskingKey: Uint8Array, k: number): bigint {
  const b0 = maskingKey[k];
  const b1 = maskingKey[(k + 1) & 3];
  const b2 = maskingKey[(k + 2) & 3];
  const b3 = maskingKey[(k + 3) & 3];
  const half = BigInt(
    (LITTLE_ENDIAN
      ? (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))
      : ((b0 << 24) | (b1 << 16) | (b2 << 8) | b3)) >>> 0,
  );
  return half | (half << 32n);
}

/** Below this, {@linkcode maskInto} copies and masks in one byte loop. */
const COPY_LOOP_MAX = 64;

/**
 * Copies `source` into `target` at `targetOffset`, masking as it copies.
 * The write queue masks client frames with it, so the caller's payload is
 * never modified.
 *
 * When both sides sit at the same address modulo 8, in one pass over
 * 64-bit words (a quarter faster at 64 KiB than copying, then masking);
 * otherwise it copies, then masks.
 */
export function maskInto(
  source: Uint8Array,
  maskingKey: Uint8Array,
  target: Uint8Array,
  targetOffset: number,
): void {
  const length = source.length;
  if (targetOffset + length > target.length) {
    throw new RangeError("maskInto: source does not fit in target");
  }
  if (length < COPY_LOOP_MAX) {
    // A short payload: one loop costs less than a view, a copy and a mask.
    for (let i = 0; i < length; i++) {
      target[targetOffset + i] = source[i] ^ maskingKey[i & 3];
    }
    return;
  }
  const start = target.byteOffset + targetOffset;
  if (length < WIDE_MASK_MIN || ((source.byteOffset - start) & 7) !== 0) {
    target.set(source, targetOffset);
    mask(target.subarray(targetOffset, targetOffset + length), maskingKey);
    return;
  }
  let i = 0;
  const head = (8 - (start & 7)) & 7;
  for (; i < head; i++) {
    target[targetOffset + i] = source[i] ^ maskingKey[i & 3];
  }
  const words = (length - i) >>> 3;
  const word = wideKey(maskingKey, i & 3);
  const from = new BigUint64Array(source.buffer, source.byteOffset + i, words);
  const to = new BigUint64Array(target.buffer, start + i, words);
  for (let w = 0; w < words; w++) to[w] = from[w] ^ word;
  i += words << 3;
  for (; i < length; i++) {
    target[targetOffset + i] = source[i] ^ maskingKey[i & 3];
  }
}

const KEY_BYTES = new Uint8Array(4);

/**
 * A masking key read as a little-endian number, as bytes: in one array
 * that the next call overwrites (use it before asking for another).
 */
export function keyBytes(key: number): Uint8Array {
  KEY_BYTES[0] = key;
  KEY_BYTES[1] = key >>> 8;
  KEY_BYTES[2] = key >>> 16;
  KEY_BYTES[3] = key >>> 24;
  return KEY_BYTES;
}

// RFC 6455 5.3: the masking key is "derived from a strong source of
// entropy" and unpredictable per frame. Keys come from a pool of CSPRNG
// bytes refilled 4 KiB at a time, not from one getRandomValues call per
// frame.
const keyPool = new Uint8Array(4096);
let keyPoolOffset = keyPool.length;
// What nextMaskingKey() returns, refilled by each call: no view per frame.
const currentKey = new Uint8Array(4);

/**
 * A fresh masking key for a client frame, in a 4-byte array that the next
 * call overwrites: use it before asking for another.
 *
 * @returns 4 bytes from `crypto.getRandomValues`
 */
export function nextMaskingKey(): Uint8Array {
  if (keyPoolOffset === keyPool.length) {
    crypto.getRandomValues(keyPool);
    keyPoolOffset = 0;
  }
  const at = keyPoolOffset;
  currentKey[0] = keyPool[at];
  currentKey[1] = keyPool[at + 1];
  currentKey[2] = keyPool[at + 2];
  currentKey[3] = keyPool[at + 3];
  keyPoolOffset = at + 4;
  return currentKey;
}

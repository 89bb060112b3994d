/**
 * SHA-1 (FIPS 180-4), for `Sec-WebSocket-Accept` only: RFC 6455 fixes the
 * hash, and the input is public, so SHA-1's weaknesses do not apply here.
 *
 * Pure and synchronous. Web Crypto's `digest` is asynchronous and costs
 * about 16 µs per call in Deno (a third of a connection's server CPU under
 * churn); this costs about 1 µs for a handshake key.
 *
 * @module
 */

const W = new Int32Array(80);
// Messages of up to 119 bytes (a handshake key and the GUID are 60) are
// padded in this buffer rather than a new one.
const SMALL = new Uint8Array(128);

/** The 20-byte SHA-1 digest of `message`. */
export function sha1(message: Uint8Array): Uint8Array {
  const length = message.length;
  // Message, the 0x80 byte, zero padding, then the 64-bit bit length.
  const blocks = ((length + 8) >>> 6) + 1;
  const size = blocks * 64;
  const padded = size <= SMALL.length
    ? SMALL.subarray(0, size).fill(0)
    : new Uint8Array(size);
  padded.set(message);
  padded[length] = 0x80;
  const bits = length * 8;
  const high = Math.floor(bits / 0x1_0000_0000);
  const low = bits >>> 0;
  padded[size - 8] = high >>> 24;
  padded[size - 7] = (high >>> 16) & 0xff;
  padded[size - 6] = (high >>> 8) & 0xff;
  padded[size - 5] = high & 0xff;
  padded[size - 4] = low >>> 24;
  padded[size - 3] = (low >>> 16) & 0xff;
  padded[size - 2] = (low >>> 8) & 0xff;
  padded[size - 1] = low & 0xff;

  let h0 = 0x67452301,
    h1 = 0xefcdab89 | 0,
    h2 = 0x98badcfe | 0,
    h3 = 0x10325476,
    h4 = 0xc3d2e1f0 | 0;
  for (let block = 0; block < size; block += 64) {
    for (let t = 0; t < 16; t++) {
      const i = block + t * 4;
      W[t] = (padded[i] << 24) | (padded[i + 1] << 16) | (padded[i + 2] << 8) |
        padded[i + 3];
    }
    for (let t = 16; t < 80; t++) {
      const x = W[t - 3] ^ W[t - 8] ^ W[t - 14] ^ W[t - 16];
      W[t] = (x << 1) | (x >>> 31);
    }
    let a = h0, b = h1, c = h2, d = h3, e = h4;
    for (let t = 0; t < 80; t++) {
      let f: number, k: number;
      if (t < 20) {
        f = (b & c) | (~b & d);
        k = 0x5a827999;
      } else if (t < 40) {
        f = b ^ c ^ d;
        k = 0x6ed9eba1;
      } else if (t < 60) {
        f = (b & c) | (b & d) | (c & d);
        k = 0x8f1bbcdc | 0;
      } else {
        f = b ^ c ^ d;
        k = 0xca62c1d6 | 0;
      }
      const temp = (((a << 5) | (a >>> 27)) + f + e + k + W[t]) | 0;
      e = d;
      d = c;
      c = (b << 30) | (b >>> 2);
      b = a;
      a = temp;
    }
    h0 = (h0 + a) | 0;
    h1 = (h1 + b) | 0;
    h2 = (h2 + c) | 0;
    h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0;
  }
  const digest = new Uint8Array(20);
  const h = [h0, h1, h2, h3, h4];
  for (let i = 0; i < 5; i++) {
    digest[i * 4] = h[i] >>> 24;
    digest[i * 4 + 1] = (h[i] >>> 16) & 0xff;
    digest[i * 4 + 2] = (h[i] >>> 8) & 0xff;
    digest[i * 4 + 3] = h[i] & 0xff;
  }
  return digest;
}

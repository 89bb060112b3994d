/**
 * Micro-benchmarks of the codec: frame header encode/decode, masking at
 * 16 B, 1 KiB, 64 KiB and 1 MiB (MB/s = bytes / ns-per-iter × 1000), and
 * UTF-8 validation.
 *
 * Run: deno bench bench/codec_bench.ts
 */
import { writeFrameHeader } from "../src/frame.ts";
import { FrameDecoder } from "../src/frame_decoder.ts";
import { mask } from "../src/mask.ts";
import { decodeUtf8, Utf8StreamDecoder } from "../src/utf8.ts";
import { binaryPayload, utf8Text } from "./_common.ts";

const KEY = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);

// ------------------------------------------------------------ header encode

const headerTarget = new Uint8Array(16);

Deno.bench("header encode: 32 B payload, unmasked (server)", {
  group: "header encode",
  baseline: true,
}, () => {
  writeFrameHeader(headerTarget, 0, true, false, 0x2, 32);
});

Deno.bench("header encode: 32 B payload, masked (client)", {
  group: "header encode",
}, () => {
  writeFrameHeader(headerTarget, 0, true, false, 0x2, 32, KEY);
});

Deno.bench("header encode: 64 KiB payload (16-bit length), masked", {
  group: "header encode",
}, () => {
  writeFrameHeader(headerTarget, 0, true, false, 0x2, 65535, KEY);
});

Deno.bench("header encode: 1 MiB payload (64-bit length), masked", {
  group: "header encode",
}, () => {
  writeFrameHeader(headerTarget, 0, true, false, 0x2, 1 << 20, KEY);
});

// ------------------------------------------------------------ header decode

function maskedFrame(payloadLength: number): Uint8Array {
  const ext = payloadLength < 126 ? 0 : payloadLength < 0x10000 ? 2 : 8;
  const frame = new Uint8Array(2 + ext + 4 + payloadLength);
  const end = writeFrameHeader(
    frame,
    0,
    true,
    false,
    0x2,
    payloadLength,
    KEY,
  );
  frame.set(binaryPayload(payloadLength), end);
  return frame;
}

function decoder(): FrameDecoder {
  return new FrameDecoder({
    requireMask: true,
    maxFrameSize: 16 << 20,
    maxMessageSize: 16 << 20,
  });
}

const emptyFrame = maskedFrame(0);
const smallFrame = maskedFrame(32);
const mediumFrame = maskedFrame(200);
// 32 frames of 32 B back to back: one read in S1.
const burst = new Uint8Array(smallFrame.length * 32);
for (let i = 0; i < 32; i++) burst.set(smallFrame, i * smallFrame.length);
const dEmpty = decoder(), dSmall = decoder(), dMedium = decoder();
const dBurst = decoder();

Deno.bench("header decode: masked, empty payload", {
  group: "header decode",
  baseline: true,
}, () => {
  dEmpty.feed(emptyFrame);
  if (!dEmpty.next()) throw new Error("no frame");
});

Deno.bench("frame decode: masked, 32 B payload (unmask in place)", {
  group: "header decode",
}, () => {
  dSmall.feed(smallFrame);
  if (!dSmall.next()) throw new Error("no frame");
});

Deno.bench("frame decode: masked, 200 B payload (16-bit length)", {
  group: "header decode",
}, () => {
  dMedium.feed(mediumFrame);
  if (!dMedium.next()) throw new Error("no frame");
});

Deno.bench("frame decode: 32 frames × 32 B in one chunk (per chunk)", {
  group: "header decode",
}, () => {
  dBurst.feed(burst);
  let n = 0;
  while (dBurst.next()) n++;
  if (n !== 32) throw new Error("short");
});

// ------------------------------------------------------------ masking

/** The reference: RFC 6455 5.3 one byte at a time. */
function maskBytewise(data: Uint8Array, key: Uint8Array): void {
  for (let i = 0; i < data.length; i++) data[i] ^= key[i & 3];
}

for (
  const [label, size] of [
    ["16 B", 16],
    ["1 KiB", 1024],
    ["64 KiB", 64 * 1024],
    ["1 MiB", 1024 * 1024],
  ] as const
) {
  const data = binaryPayload(size);
  Deno.bench(
    `mask ${label}`,
    { group: `mask ${label}`, baseline: true },
    () => {
      mask(data, KEY);
    },
  );
  Deno.bench(`mask ${label}, unaligned (byteOffset 1)`, {
    group: `mask ${label}`,
  }, () => {
    mask(data.subarray(1), KEY, 1);
  });
  Deno.bench(`mask ${label}, bytewise reference`, {
    group: `mask ${label}`,
  }, () => {
    maskBytewise(data, KEY);
  });
}

// ------------------------------------------------------------ UTF-8

const encoder = new TextEncoder();
const text256 = encoder.encode(utf8Text(256));
const ascii256 = encoder.encode("x".repeat(256));
const ascii32 = encoder.encode("x".repeat(32));
const text32 = encoder.encode(utf8Text(32));
const text64k = encoder.encode(utf8Text(64 * 1024));
const invalid256 = text256.slice();
invalid256[200] = 0xff;

Deno.bench("decodeUtf8: 256 B mixed text", {
  group: "utf8",
  baseline: true,
}, () => {
  if (decodeUtf8(text256) === undefined) throw new Error("invalid");
});

Deno.bench("decodeUtf8: 32 B ASCII", { group: "utf8" }, () => {
  if (decodeUtf8(ascii32) === undefined) throw new Error("invalid");
});

Deno.bench("decodeUtf8: 32 B mixed text", { group: "utf8" }, () => {
  if (decodeUtf8(text32) === undefined) throw new Error("invalid");
});

Deno.bench("decodeUtf8: 256 B ASCII", { group: "utf8" }, () => {
  if (decodeUtf8(ascii256) === undefined) throw new Error("invalid");
});

Deno.bench("decodeUtf8: 256 B invalid at byte 200", { group: "utf8" }, () => {
  if (decodeUtf8(invalid256) !== undefined) throw new Error("valid?");
});

Deno.bench("decodeUtf8: 64 KiB mixed text", { group: "utf8" }, () => {
  if (decodeUtf8(text64k) === undefined) throw new Error("invalid");
});

Deno.bench("Utf8StreamDecoder: 64 KiB text in 16 fragments", {
  group: "utf8",
}, () => {
  const d = new Utf8StreamDecoder();
  for (let o = 0; o < text64k.length; o += 4096) {
    if (!d.push(text64k.subarray(o, o + 4096))) throw new Error("invalid");
  }
  if (d.end() === undefined) throw new Error("invalid");
});

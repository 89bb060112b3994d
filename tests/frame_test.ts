import assert from "node:assert/strict";
import {
  FrameDecoder,
  type FrameDecoderOptions,
} from "../src/frame_decoder.ts";
import {
  encodeFrame,
  FrameError,
  frameHeaderSize,
  OPCODE_BINARY,
  OPCODE_CLOSE,
  OPCODE_CONTINUATION,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
  writeFrameHeader,
} from "../src/frame.ts";

// -- Helpers --

const KEY = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);
const GIB_4_PLUS_5 = 2 ** 32 + 5;

/** A decoder on the server side: every frame must be masked. */
function serverDecoder(options: Partial<FrameDecoderOptions> = {}) {
  return new FrameDecoder({
    requireMask: true,
    maxFrameSize: Infinity,
    maxMessageSize: Infinity,
    ...options,
  });
}

/** A decoder on the client side: no frame may be masked. */
function clientDecoder(options: Partial<FrameDecoderOptions> = {}) {
  return new FrameDecoder({
    requireMask: false,
    maxFrameSize: Infinity,
    maxMessageSize: Infinity,
    ...options,
  });
}

/** Deterministic payload bytes that differ from one position to the next. */
function pattern(length: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed * 7 + 1) & 0xff;
  return bytes;
}

/** RFC 6455 5.3, byte by byte, into a copy. */
function naiveMask(payload: Uint8Array, key: Uint8Array): Uint8Array {
  const out = new Uint8Array(payload.length);
  for (let i = 0; i < payload.length; i++) out[i] = payload[i] ^ key[i % 4];
  return out;
}

function concat(...parts: ArrayLike<number>[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let i = 0;
  if ((a.byteOffset & 3) === 0 && (b.byteOffset & 3) === 0) {
    const words = a.length >>> 2;
    const wa = new Uint32Array(a.buffer, a.byteOffset, words);
    const wb = new Uint32Array(b.buffer, b.byteOffset, words);
    for (let w = 0; w < words; w++) if (wa[w] !== wb[w]) return false;
    i = words << 2;
  }
  for (; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

interface Decoded {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  payload: Uint8Array;
}

/**
 * Pushes each chunk and collects the frames, copying each payload since
 * it may be a view of a chunk.
 */
function decodeChunks(decoder: FrameDecoder, chunks: Uint8Array[]): Decoded[] {
  const out: Decoded[] = [];
  for (const chunk of chunks) {
    for (const frame of decoder.push(chunk)) {
      out.push({
        fin: frame.fin,
        rsv1: frame.rsv1,
        opcode: frame.opcode,
        payload: frame.payload.slice(),
      });
    }
  }
  return out;
}

function assertSameFrames(
  actual: Decoded[],
  expected: Decoded[],
  label: string,
): void {
  assert.equal(actual.length, expected.length, `${label}: frame count`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    assert.equal(a.fin, e.fin, `${label}: frame ${i} fin`);
    assert.equal(a.rsv1, e.rsv1, `${label}: frame ${i} rsv1`);
    assert.equal(a.opcode, e.opcode, `${label}: frame ${i} opcode`);
    assert.ok(
      bytesEqual(a.payload, e.payload),
      `${label}: frame ${i} payload differs`,
    );
  }
}

function assertFrameError(
  decoder: FrameDecoder,
  bytes: ArrayLike<number>,
  closeCode: number,
): void {
  assert.throws(
    () => decoder.push(Uint8Array.from(bytes)),
    (error: unknown) => {
      assert.ok(error instanceof FrameError, `not a FrameError: ${error}`);
      assert.equal(error.closeCode, closeCode);
      return true;
    },
  );
}

// -- 5.2 Base framing: header bytes --

/**
 * Hand-written unmasked headers of a FIN binary frame, one per payload
 * length class (7-bit, 16-bit and 64-bit lengths and their edges).
 */
const HEADERS: { length: number; header: number[] }[] = [
  { length: 0, header: [0x82, 0x00] },
  { length: 1, header: [0x82, 0x01] },
  { length: 125, header: [0x82, 0x7d] },
  { length: 126, header: [0x82, 0x7e, 0x00, 0x7e] },
  { length: 65535, header: [0x82, 0x7e, 0xff, 0xff] },
  { length: 65536, header: [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0] },
];

Deno.test("writeFrameHeader() writes the exact unmasked header bytes for each length class", () => {
  for (
    const { length, header } of [
      ...HEADERS,
      { length: GIB_4_PLUS_5, header: [0x82, 0x7f, 0, 0, 0, 1, 0, 0, 0, 5] },
    ]
  ) {
    const target = new Uint8Array(16).fill(0xee);
    const end = writeFrameHeader(target, 0, true, false, OPCODE_BINARY, length);
    assert.equal(end, header.length, `end offset for ${length}`);
    assert.deepEqual(
      [...target.subarray(0, end)],
      header,
      `bytes for ${length}`,
    );
    assert.equal(
      target[end],
      0xee,
      `nothing written past the header for ${length}`,
    );
    assert.equal(frameHeaderSize(length, false), header.length);
  }
});

Deno.test("writeFrameHeader() sets the mask bit and appends the masking key", () => {
  for (const { length, header } of HEADERS) {
    const target = new Uint8Array(20);
    const end = writeFrameHeader(
      target,
      3,
      true,
      false,
      OPCODE_BINARY,
      length,
      KEY,
    );
    const expected = [...header];
    expected[1] |= 0x80;
    expected.push(...KEY);
    assert.equal(end, 3 + expected.length);
    assert.deepEqual(
      [...target.subarray(3, end)],
      expected,
      `bytes for ${length}`,
    );
    assert.equal(frameHeaderSize(length, true), expected.length);
  }
});

Deno.test("writeFrameHeader() encodes FIN, RSV1 and the opcode in the first byte", () => {
  const target = new Uint8Array(2);
  writeFrameHeader(target, 0, false, true, OPCODE_TEXT, 5);
  assert.deepEqual([...target], [0x41, 0x05]);
  writeFrameHeader(target, 0, false, false, OPCODE_CONTINUATION, 0);
  assert.deepEqual([...target], [0x00, 0x00]);
  writeFrameHeader(target, 0, true, false, OPCODE_PONG, 125);
  assert.deepEqual([...target], [0x8a, 0x7d]);
});

Deno.test("frameHeaderSize() switches length encodings at 126 and 65536", () => {
  assert.equal(frameHeaderSize(125, false), 2);
  assert.equal(frameHeaderSize(126, false), 4);
  assert.equal(frameHeaderSize(65535, false), 4);
  assert.equal(frameHeaderSize(65536, false), 10);
  assert.equal(frameHeaderSize(125, true), 6);
  assert.equal(frameHeaderSize(126, true), 8);
  assert.equal(frameHeaderSize(65536, true), 14);
});

// -- 5.2 Base framing: encode and decode --

Deno.test("encodeFrame() produces the hand-written unmasked bytes for each length class", () => {
  for (const { length, header } of HEADERS) {
    const payload = pattern(length, length);
    const frame = encodeFrame(OPCODE_BINARY, payload);
    assert.ok(bytesEqual(frame, concat(header, payload)), `length ${length}`);
  }
});

Deno.test("encodeFrame() produces the hand-written masked bytes for each length class", () => {
  for (const { length, header } of HEADERS) {
    const payload = pattern(length, length);
    const maskedHeader = [...header];
    maskedHeader[1] |= 0x80;
    const expected = concat(maskedHeader, KEY, naiveMask(payload, KEY));
    const frame = encodeFrame(OPCODE_BINARY, payload, { maskingKey: KEY });
    assert.ok(bytesEqual(frame, expected), `length ${length}`);
  }
});

Deno.test("FrameDecoder decodes hand-written unmasked frames of each length class", () => {
  for (const { length, header } of HEADERS) {
    const payload = pattern(length, length);
    const frames = decodeChunks(clientDecoder(), [concat(header, payload)]);
    assertSameFrames(
      frames,
      [{ fin: true, rsv1: false, opcode: OPCODE_BINARY, payload }],
      `length ${length}`,
    );
  }
});

Deno.test("FrameDecoder decodes hand-written masked frames of each length class", () => {
  for (const { length, header } of HEADERS) {
    const payload = pattern(length, length);
    const maskedHeader = [...header];
    maskedHeader[1] |= 0x80;
    const bytes = concat(maskedHeader, KEY, naiveMask(payload, KEY));
    const frames = decodeChunks(serverDecoder(), [bytes]);
    assertSameFrames(
      frames,
      [{ fin: true, rsv1: false, opcode: OPCODE_BINARY, payload }],
      `length ${length}`,
    );
  }
});

Deno.test("encodeFrame() and FrameDecoder round-trip every length class, masked and unmasked", () => {
  for (const { length } of HEADERS) {
    for (const opcode of [OPCODE_TEXT, OPCODE_BINARY]) {
      for (const fin of [true, false]) {
        const payload = pattern(length, opcode);
        const expected = [{ fin, rsv1: false, opcode, payload }];
        assertSameFrames(
          decodeChunks(clientDecoder(), [
            encodeFrame(opcode, payload, { fin }),
          ]),
          expected,
          `unmasked ${length}`,
        );
        assertSameFrames(
          decodeChunks(serverDecoder(), [
            encodeFrame(opcode, payload, { fin, maskingKey: KEY }),
          ]),
          expected,
          `masked ${length}`,
        );
      }
    }
  }
});

Deno.test("encodeFrame() and FrameDecoder round-trip RSV1 when the decoder allows it", () => {
  const payload = pattern(10);
  const bytes = encodeFrame(OPCODE_TEXT, payload, { rsv1: true });
  assert.equal(bytes[0], 0xc1);
  assertSameFrames(
    decodeChunks(clientDecoder({ allowRsv1: true }), [bytes]),
    [{ fin: true, rsv1: true, opcode: OPCODE_TEXT, payload }],
    "rsv1",
  );
});

Deno.test("encodeFrame() does not modify the input payload when masking", () => {
  const payload = pattern(1000);
  const copy = payload.slice();
  encodeFrame(OPCODE_BINARY, payload, { maskingKey: KEY });
  assert.ok(bytesEqual(payload, copy));
  // Also for a view at an unaligned offset of a larger buffer.
  const view = pattern(1003).subarray(3);
  const viewCopy = view.slice();
  encodeFrame(OPCODE_BINARY, view, { maskingKey: KEY });
  assert.ok(bytesEqual(view, viewCopy));
});

Deno.test("FrameDecoder reads a header declaring more than 4 GiB without allocating it (unmasked)", () => {
  const decoder = clientDecoder();
  decoder.feed(new Uint8Array([0x82, 0x7f, 0, 0, 0, 1, 0, 0, 0, 5]));
  assert.equal(decoder.next(), false);
  assert.equal(decoder.payloadLength, GIB_4_PLUS_5);
  assert.equal(decoder.opcode, OPCODE_BINARY);
  // A few payload bytes later, whatever buffer exists is small.
  decoder.feed(new Uint8Array(100));
  assert.equal(decoder.next(), false);
  const target = decoder.directTarget(1);
  assert.ok(target === null || target.buffer.byteLength <= 1 << 20);
});

Deno.test("FrameDecoder reads a header declaring more than 4 GiB without allocating it (masked)", () => {
  const decoder = serverDecoder();
  decoder.feed(
    new Uint8Array([0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 5, ...KEY]),
  );
  assert.equal(decoder.next(), false);
  assert.equal(decoder.payloadLength, GIB_4_PLUS_5);
  const target = decoder.directTarget(1);
  assert.ok(target === null || target.buffer.byteLength <= 1 << 20);
});

Deno.test("FrameDecoder returns a payload that lies whole in the chunk as a view of it", () => {
  const decoder = clientDecoder();
  const bytes = encodeFrame(OPCODE_BINARY, pattern(50));
  decoder.feed(bytes);
  assert.equal(decoder.next(), true);
  assert.equal(decoder.payloadOwned, false);
  assert.equal(decoder.payload.buffer, bytes.buffer);
  assert.equal(decoder.pending, 0);
  assert.equal(decoder.next(), false);
});

Deno.test("FrameDecoder with copySmall unmasks small binary and control payloads into memory of their own", () => {
  const decoder = serverDecoder({ copySmall: true });
  for (
    const [opcode, size] of [[OPCODE_BINARY, 50], [OPCODE_BINARY, 4096], [
      OPCODE_PING,
      125,
    ]]
  ) {
    const payload = pattern(size);
    const bytes = encodeFrame(opcode, payload, { maskingKey: KEY });
    const sent = bytes.slice();
    decoder.feed(bytes);
    assert.equal(decoder.next(), true);
    assert.equal(decoder.payloadOwned, true);
    assert.notEqual(decoder.payload.buffer, bytes.buffer);
    assert.ok(bytesEqual(decoder.payload, payload));
    assert.ok(bytesEqual(bytes, sent), "the chunk is left as it came");
  }
  // Text (decoded where it lies) and bigger payloads stay views of the chunk.
  for (const [opcode, size] of [[OPCODE_TEXT, 50], [OPCODE_BINARY, 4097]]) {
    const bytes = encodeFrame(opcode, pattern(size), { maskingKey: KEY });
    decoder.feed(bytes);
    assert.equal(decoder.next(), true);
    assert.equal(decoder.payloadOwned, false);
    assert.equal(decoder.payload.buffer, bytes.buffer);
    assert.ok(bytesEqual(decoder.payload, pattern(size)));
  }
});

Deno.test("FrameDecoder gathers a payload that spans chunks into a buffer of its own", () => {
  const decoder = clientDecoder();
  const payload = pattern(300);
  const bytes = encodeFrame(OPCODE_BINARY, payload);
  decoder.feed(bytes.slice(0, 100));
  assert.equal(decoder.next(), false);
  decoder.feed(bytes.slice(100));
  assert.equal(decoder.next(), true);
  assert.equal(decoder.payloadOwned, true);
  assert.ok(bytesEqual(decoder.payload, payload));
});

// -- 5.4 Fragmentation and 5.5 control frames --

Deno.test("FrameDecoder decodes a control frame between the fragments of a message", () => {
  const bytes = concat(
    encodeFrame(OPCODE_TEXT, new TextEncoder().encode("Hel"), { fin: false }),
    encodeFrame(OPCODE_PING, new Uint8Array([1, 2])),
    encodeFrame(OPCODE_CONTINUATION, new TextEncoder().encode("lo"), {
      fin: false,
    }),
    encodeFrame(OPCODE_PONG, new Uint8Array(0)),
    encodeFrame(OPCODE_CONTINUATION, new TextEncoder().encode("!")),
    encodeFrame(OPCODE_CLOSE, new Uint8Array([0x03, 0xe8])),
  );
  const frames = decodeChunks(clientDecoder(), [bytes]);
  assert.deepEqual(
    frames.map((f) => [f.fin, f.opcode, [...f.payload]]),
    [
      [false, OPCODE_TEXT, [72, 101, 108]],
      [true, OPCODE_PING, [1, 2]],
      [false, OPCODE_CONTINUATION, [108, 111]],
      [true, OPCODE_PONG, []],
      [true, OPCODE_CONTINUATION, [33]],
      [true, OPCODE_CLOSE, [0x03, 0xe8]],
    ],
  );
});

Deno.test("FrameDecoder accepts a new message after a fragmented one ended", () => {
  const bytes = concat(
    encodeFrame(OPCODE_BINARY, pattern(3), { fin: false }),
    encodeFrame(OPCODE_CONTINUATION, pattern(3)),
    encodeFrame(OPCODE_TEXT, pattern(3)),
  );
  assert.equal(decodeChunks(clientDecoder(), [bytes]).length, 3);
});

Deno.test("FrameDecoder accepts a control frame of exactly 125 bytes", () => {
  const payload = pattern(125);
  const frames = decodeChunks(clientDecoder(), [
    encodeFrame(OPCODE_PING, payload),
  ]);
  assertSameFrames(frames, [{
    fin: true,
    rsv1: false,
    opcode: OPCODE_PING,
    payload,
  }], "ping");
});

// -- Chunking: every byte split --

/** Several frames of every kind, concatenated, and their decoded form. */
function frameSequence(
  masked: boolean,
): { bytes: Uint8Array; frames: Decoded[] } {
  const text = new TextEncoder();
  const frames: Decoded[] = [
    {
      fin: true,
      rsv1: false,
      opcode: OPCODE_TEXT,
      payload: text.encode("héllo wörld"),
    },
    { fin: true, rsv1: false, opcode: OPCODE_BINARY, payload: pattern(200, 1) },
    { fin: true, rsv1: false, opcode: OPCODE_PING, payload: pattern(4, 2) },
    {
      fin: false,
      rsv1: false,
      opcode: OPCODE_TEXT,
      payload: text.encode("frag"),
    },
    { fin: true, rsv1: false, opcode: OPCODE_PONG, payload: new Uint8Array(0) },
    {
      fin: false,
      rsv1: false,
      opcode: OPCODE_CONTINUATION,
      payload: new Uint8Array(0),
    },
    {
      fin: true,
      rsv1: false,
      opcode: OPCODE_CONTINUATION,
      payload: text.encode("ment"),
    },
    {
      fin: true,
      rsv1: false,
      opcode: OPCODE_BINARY,
      payload: pattern(70000, 3),
    },
    {
      fin: true,
      rsv1: false,
      opcode: OPCODE_BINARY,
      payload: new Uint8Array(0),
    },
    {
      fin: true,
      rsv1: false,
      opcode: OPCODE_CLOSE,
      payload: new Uint8Array([0x03, 0xe8, 0x6f, 0x6b]),
    },
  ];
  const keys = [
    KEY,
    new Uint8Array([0, 0, 0, 0]),
    new Uint8Array([0xff, 1, 0x80, 0x7f]),
  ];
  const bytes = concat(
    ...frames.map((f, i) =>
      encodeFrame(f.opcode, f.payload, {
        fin: f.fin,
        maskingKey: masked ? keys[i % keys.length] : undefined,
      })
    ),
  );
  return { bytes, frames };
}

for (const masked of [false, true]) {
  const side = masked ? "masked" : "unmasked";
  const newDecoder = masked ? serverDecoder : clientDecoder;

  Deno.test(`FrameDecoder decodes a ${side} frame sequence whole`, () => {
    const { bytes, frames } = frameSequence(masked);
    assertSameFrames(
      decodeChunks(newDecoder(), [bytes.slice()]),
      frames,
      "whole",
    );
  });

  Deno.test(`FrameDecoder decodes a ${side} frame sequence split at every byte position`, () => {
    const { bytes, frames } = frameSequence(masked);
    // The decoder unmasks payload views in place, so every split starts
    // from a fresh copy; reusing one buffer keeps this fast.
    const work = new Uint8Array(bytes.length);
    for (let i = 0; i <= bytes.length; i++) {
      work.set(bytes);
      const decoder = newDecoder();
      let f = 0;
      for (const chunk of [work.subarray(0, i), work.subarray(i)]) {
        for (const frame of decoder.push(chunk)) {
          const e = frames[f++];
          if (
            e === undefined || frame.fin !== e.fin || frame.rsv1 !== e.rsv1 ||
            frame.opcode !== e.opcode || !bytesEqual(frame.payload, e.payload)
          ) {
            // Redo this split the slow way for a precise message.
            assertSameFrames(
              decodeChunks(newDecoder(), [bytes.slice(0, i), bytes.slice(i)]),
              frames,
              `split at ${i}`,
            );
            assert.fail(`split at ${i}: frame ${f - 1} differs`);
          }
        }
      }
      assert.equal(f, frames.length, `split at ${i}: frame count`);
    }
  });

  Deno.test(`FrameDecoder decodes a ${side} frame sequence fed one byte at a time`, () => {
    const { bytes, frames } = frameSequence(masked);
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i++) chunks.push(bytes.slice(i, i + 1));
    assertSameFrames(decodeChunks(newDecoder(), chunks), frames, "bytewise");
  });

  Deno.test(`FrameDecoder decodes a ${side} frame sequence fed in chunks of every size up to 20`, () => {
    const { bytes, frames } = frameSequence(masked);
    for (let size = 2; size <= 20; size++) {
      const chunks: Uint8Array[] = [];
      for (let i = 0; i < bytes.length; i += size) {
        chunks.push(bytes.slice(i, i + size));
      }
      assertSameFrames(
        decodeChunks(newDecoder(), chunks),
        frames,
        `size ${size}`,
      );
    }
  });

  Deno.test(`FrameDecoder fills a large ${side} payload through directTarget() and advance()`, () => {
    const payload = pattern(1 << 20, 9);
    const bytes = concat(
      encodeFrame(OPCODE_BINARY, payload, {
        maskingKey: masked ? KEY : undefined,
      }),
      encodeFrame(OPCODE_TEXT, pattern(5), {
        maskingKey: masked ? KEY : undefined,
      }),
    );
    const decoder = newDecoder();
    // The header and a few payload bytes arrive as an ordinary chunk.
    let pos = frameHeaderSize(payload.length, masked) + 7;
    decoder.feed(bytes.slice(0, pos));
    assert.equal(decoder.next(), false);
    const sizes = [1000, 4096, 65536, 3, 200000];
    let reads = 0;
    let done = false;
    while (!done) {
      const target = decoder.directTarget(1);
      assert.ok(
        target !== null,
        "a payload in progress offers a direct target",
      );
      const remaining = payload.length -
        (pos - frameHeaderSize(payload.length, masked));
      assert.ok(
        target.length <= remaining,
        "the target never runs past the payload",
      );
      // A read of any size up to the target's length, as from a socket.
      const n = Math.min(
        target.length,
        sizes[reads++ % sizes.length],
        remaining,
      );
      target.set(bytes.subarray(pos, pos + n));
      pos += n;
      decoder.advance(n);
      done = decoder.next();
    }
    assert.equal(decoder.opcode, OPCODE_BINARY);
    assert.ok(bytesEqual(decoder.payload, payload));
    assert.equal(decoder.directTarget(1), null);
    // The next frame decodes normally from the rest of the bytes.
    decoder.feed(bytes.slice(pos));
    assert.equal(decoder.next(), true);
    assert.equal(decoder.opcode, OPCODE_TEXT);
    assert.ok(bytesEqual(decoder.payload, pattern(5)));
  });
}

Deno.test("FrameDecoder offers no direct target outside a payload or below the minimum", () => {
  const decoder = clientDecoder();
  assert.equal(decoder.directTarget(1), null);
  decoder.feed(new Uint8Array([0x82, 0x7e, 0x01, 0x00, 1, 2]));
  assert.equal(decoder.next(), false);
  // 256 - 2 = 254 bytes remain.
  assert.equal(decoder.directTarget(255), null);
  const target = decoder.directTarget(254);
  assert.ok(target !== null);
  assert.equal(target.length, 254);
});

// -- partialPayload: a frame still arriving --

Deno.test("partialPayload() gives the unmasked bytes of a data frame still arriving, and the whole payload stays right", () => {
  const key = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
  const payload = new Uint8Array(300).map((_, i) => (i * 7) & 0xff);
  for (const [maskingKey, header] of [[key, 8], [undefined, 4]] as const) {
    const frame = encodeFrame(OPCODE_TEXT, payload, { maskingKey });
    const decoder = new FrameDecoder({
      requireMask: maskingKey !== undefined,
      maxFrameSize: 1 << 20,
      maxMessageSize: 1 << 20,
    });
    // Uneven reads: every key offset comes up.
    const cuts = [
      header + 1,
      header + 6,
      header + 7,
      header + 150,
      frame.length,
    ];
    let from = 0;
    for (const cut of cuts) {
      decoder.feed(frame.subarray(from, cut));
      from = cut;
      if (cut < frame.length) {
        assert.equal(decoder.next(), false);
        assert.deepEqual(
          decoder.partialPayload(),
          payload.subarray(0, cut - header),
        );
        // Asking twice unmasks nothing twice.
        assert.deepEqual(
          decoder.partialPayload(),
          payload.subarray(0, cut - header),
        );
      } else {
        assert.equal(decoder.next(), true);
      }
    }
    assert.deepEqual(decoder.payload, payload);
    assert.equal(decoder.partialPayload(), null);
  }
});

Deno.test("partialPayload() is null between frames, for control frames and for gathered binary fragments", () => {
  const decoder = new FrameDecoder({
    requireMask: false,
    maxFrameSize: 1 << 20,
    maxMessageSize: 1 << 20,
    assembleBinary: true,
  });
  assert.equal(decoder.partialPayload(), null);
  const ping = encodeFrame(OPCODE_PING, new Uint8Array(100));
  decoder.feed(ping.subarray(0, 50));
  assert.equal(decoder.next(), false);
  assert.equal(decoder.partialPayload(), null);
  decoder.feed(ping.subarray(50));
  assert.equal(decoder.next(), true);
  const fragment = encodeFrame(OPCODE_BINARY, new Uint8Array(100), {
    fin: false,
  });
  decoder.feed(fragment.subarray(0, 50));
  assert.equal(decoder.next(), false);
  assert.equal(decoder.partialPayload(), null);
});

// -- assembleBinary: fragments gathered into one message buffer --

/** A fragmented binary message with a ping between its fragments. */
function fragmentedStream(sizes: number[], masked: boolean) {
  const key = masked ? KEY : undefined;
  const parts = sizes.map((size, i) => pattern(size, i + 1));
  const frames: Uint8Array[] = [];
  parts.forEach((part, i) => {
    frames.push(
      encodeFrame(i === 0 ? OPCODE_BINARY : OPCODE_CONTINUATION, part, {
        fin: i === parts.length - 1,
        maskingKey: key,
      }),
    );
    if (i === 0) {
      frames.push(encodeFrame(OPCODE_PING, pattern(3, 9), { maskingKey: key }));
    }
  });
  frames.push(encodeFrame(OPCODE_BINARY, pattern(10, 42), { maskingKey: key }));
  return { bytes: concat(...frames), message: concat(...parts) };
}

for (const masked of [false, true]) {
  Deno.test(`FrameDecoder with assembleBinary gathers a fragmented binary message split at every byte (${masked ? "masked" : "unmasked"})`, () => {
    const { bytes, message } = fragmentedStream([5, 0, 130, 7], masked);
    for (let cut = 0; cut <= bytes.length; cut++) {
      for (const step of [1, 3, bytes.length]) {
        const decoder = masked
          ? serverDecoder({ assembleBinary: true })
          : clientDecoder({ assembleBinary: true });
        const whole: Uint8Array[] = [];
        const fragments: number[] = [];
        let pings = 0, after = 0;
        const chunks = [bytes.slice(0, cut)];
        for (let i = cut; i < bytes.length; i += step) {
          chunks.push(bytes.slice(i, i + step));
        }
        for (const chunk of chunks) {
          decoder.feed(chunk);
          while (decoder.next()) {
            if (decoder.opcode === OPCODE_PING) pings++;
            else if (decoder.assembled) {
              fragments.push(decoder.payload.length);
              if (decoder.message !== null) whole.push(decoder.message);
            } else {
              assert.equal(decoder.message, null);
              assert.ok(bytesEqual(decoder.payload, pattern(10, 42)));
              after++;
            }
          }
        }
        const label = `cut ${cut}, step ${step}`;
        assert.deepEqual(fragments, [5, 0, 130, 7], label);
        assert.equal(pings, 1, label);
        assert.equal(after, 1, label);
        assert.equal(whole.length, 1, label);
        assert.ok(bytesEqual(whole[0], message), label);
        // Exactly sized: the growth room is given back.
        assert.equal(whole[0].buffer.byteLength, message.length, label);
      }
    }
  });
}

Deno.test("FrameDecoder with assembleBinary hands over a message that later frames never overwrite", () => {
  const decoder = clientDecoder({ assembleBinary: true });
  const first = fragmentedStream([300, 300], false);
  const second = fragmentedStream([200, 400], false);
  const messages: Uint8Array[] = [];
  for (const bytes of [first.bytes, second.bytes]) {
    decoder.feed(bytes);
    while (decoder.next()) if (decoder.message) messages.push(decoder.message);
  }
  assert.equal(messages.length, 2);
  assert.ok(bytesEqual(messages[0], first.message));
  assert.ok(bytesEqual(messages[1], second.message));
});

Deno.test("FrameDecoder with assembleBinary leaves text, compressed and single-frame messages alone", () => {
  const decoder = clientDecoder({ assembleBinary: true, allowRsv1: true });
  const bytes = concat(
    encodeFrame(OPCODE_TEXT, pattern(4), { fin: false }),
    encodeFrame(OPCODE_CONTINUATION, pattern(4)),
    encodeFrame(OPCODE_BINARY, pattern(4), { fin: false, rsv1: true }),
    encodeFrame(OPCODE_CONTINUATION, pattern(4)),
    encodeFrame(OPCODE_BINARY, pattern(4)),
  );
  decoder.feed(bytes);
  let frames = 0;
  while (decoder.next()) {
    frames++;
    assert.equal(decoder.assembled, false);
    assert.equal(decoder.message, null);
  }
  assert.equal(frames, 5);
});

Deno.test("FrameDecoder with assembleBinary commits at most max(1 MiB, 4 x received) to a message", () => {
  const decoder = clientDecoder({ assembleBinary: true });
  // Fragments of 100 KiB: the buffer grows fourfold, never beyond 4 times
  // what came, and one declared 1 GiB fragment allocates nothing until its
  // bytes arrive.
  const fragment = pattern(100 * 1024);
  decoder.feed(encodeFrame(OPCODE_BINARY, fragment, { fin: false }));
  assert.ok(decoder.next());
  let received = fragment.length;
  for (let i = 0; i < 30; i++) {
    decoder.feed(encodeFrame(OPCODE_CONTINUATION, fragment, { fin: false }));
    assert.ok(decoder.next());
    received += fragment.length;
    const committed = decoder.payload.buffer.byteLength;
    assert.ok(
      committed <= Math.max(1 << 20, 4 * received),
      `${committed} bytes committed for ${received} received`,
    );
  }
  const header = new Uint8Array(10);
  writeFrameHeader(header, 0, true, false, OPCODE_CONTINUATION, 2 ** 30);
  decoder.feed(header);
  assert.equal(decoder.next(), false);
  const before = decoder.payload.buffer.byteLength;
  // The direct target reaches into the existing buffer, grown at most fourfold.
  const target = decoder.directTarget(16 * 1024);
  assert.ok(target !== null);
  assert.ok(target.buffer.byteLength <= 4 * before);
});

Deno.test("FrameDecoder with assembleBinary reads spanning fragments directly into the message buffer", () => {
  const decoder = serverDecoder({ assembleBinary: true });
  const { bytes, message } = fragmentedStream([70_000, 200_000, 3], true);
  // The first frame's header and a few bytes arrive as a chunk; the rest
  // is read through directTarget whenever one is offered.
  let pos = 20;
  decoder.feed(bytes.slice(0, pos));
  assert.equal(decoder.next(), false);
  let whole: Uint8Array | null = null;
  let directBytes = 0;
  while (pos < bytes.length || whole === null) {
    const target = decoder.directTarget(1024);
    if (target !== null) {
      const n = Math.min(target.length, 50_000);
      target.set(bytes.subarray(pos, pos + n));
      pos += n;
      directBytes += n;
      decoder.advance(n);
    } else {
      decoder.feed(bytes.slice(pos, pos + 1000));
      pos = Math.min(bytes.length, pos + 1000);
    }
    while (decoder.next()) if (decoder.message) whole = decoder.message;
    if (pos >= bytes.length && whole === null) break;
  }
  assert.ok(whole !== null);
  assert.ok(bytesEqual(whole, message));
  assert.ok(directBytes > 250_000, `${directBytes} bytes read directly`);
});

// -- 5.2 Base framing: protocol errors --

Deno.test("FrameDecoder rejects RSV1 without a negotiated extension with 1002", () => {
  assertFrameError(clientDecoder(), [0xc1, 0x00], 1002);
  assertFrameError(clientDecoder(), [0xc2, 0x00], 1002);
});

Deno.test("FrameDecoder rejects RSV2 and RSV3 with 1002, also when RSV1 is allowed", () => {
  for (const b0 of [0xa2, 0x92, 0xb2, 0xf2]) {
    assertFrameError(clientDecoder(), [b0, 0x00], 1002);
    assertFrameError(clientDecoder({ allowRsv1: true }), [b0, 0x00], 1002);
  }
});

Deno.test("FrameDecoder rejects the reserved opcodes 3-7 and 0xB-0xF with 1002", () => {
  for (const opcode of [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
    assertFrameError(clientDecoder(), [0x80 | opcode, 0x00], 1002);
    assertFrameError(serverDecoder(), [0x80 | opcode, 0x80, ...KEY], 1002);
  }
});

Deno.test("FrameDecoder rejects a fragmented control frame with 1002", () => {
  for (const opcode of [OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG]) {
    assertFrameError(clientDecoder(), [opcode, 0x00], 1002);
  }
});

Deno.test("FrameDecoder rejects a control frame with a 16-bit or 64-bit length with 1002", () => {
  for (const opcode of [OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG]) {
    // Declared length 126, before the length bytes or payload arrive.
    assertFrameError(clientDecoder(), [0x80 | opcode, 0x7e], 1002);
    assertFrameError(clientDecoder(), [0x80 | opcode, 0x7f], 1002);
  }
});

Deno.test("FrameDecoder rejects RSV1 on a control frame with 1002, even when RSV1 is allowed", () => {
  for (const opcode of [OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG]) {
    assertFrameError(
      clientDecoder({ allowRsv1: true }),
      [0xc0 | opcode, 0x00],
      1002,
    );
  }
});

Deno.test("FrameDecoder rejects RSV1 on a continuation frame with 1002", () => {
  const decoder = clientDecoder({ allowRsv1: true });
  decoder.push(new Uint8Array([0x41, 0x00]));
  assertFrameError(decoder, [0xc0, 0x00], 1002);
});

Deno.test("FrameDecoder rejects a continuation frame with no message to continue with 1002", () => {
  assertFrameError(clientDecoder(), [0x80, 0x00], 1002);
  assertFrameError(clientDecoder(), [0x00, 0x00], 1002);
  // Also after a complete message.
  const decoder = clientDecoder();
  decoder.push(new Uint8Array([0x01, 0x00, 0x80, 0x00]));
  assertFrameError(decoder, [0x80, 0x00], 1002);
});

Deno.test("FrameDecoder rejects a new data frame while a fragmented message is in progress with 1002", () => {
  for (const b0 of [0x81, 0x82, 0x01, 0x02]) {
    const decoder = clientDecoder();
    decoder.push(new Uint8Array([0x01, 0x01, 0x41]));
    assertFrameError(decoder, [b0, 0x00], 1002);
  }
});

Deno.test("FrameDecoder rejects an unmasked frame when masking is required with 1002", () => {
  assertFrameError(serverDecoder(), [0x82, 0x00], 1002);
  assertFrameError(serverDecoder(), [0x89, 0x00], 1002);
});

Deno.test("FrameDecoder rejects a masked frame when masking is forbidden with 1002", () => {
  assertFrameError(clientDecoder(), [0x82, 0x80, ...KEY], 1002);
  assertFrameError(clientDecoder(), [0x8a, 0x80, ...KEY], 1002);
});

Deno.test("FrameDecoder rejects a 64-bit length with its most significant bit set with 1002", () => {
  assertFrameError(
    clientDecoder(),
    [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0],
    1002,
  );
  assertFrameError(
    clientDecoder(),
    [0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    1002,
  );
});

Deno.test("FrameDecoder rejects a frame over maxFrameSize with 1009 at its header", () => {
  // 16-bit length 1001 > 1000; no payload byte has arrived.
  assertFrameError(
    clientDecoder({ maxFrameSize: 1000 }),
    [0x82, 0x7e, 0x03, 0xe9],
    1009,
  );
  // 64-bit length; masked.
  assertFrameError(
    serverDecoder({ maxFrameSize: 1000 }),
    [0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 5],
    1009,
  );
  // 7-bit length 101 > 100.
  assertFrameError(clientDecoder({ maxFrameSize: 100 }), [0x81, 0x65], 1009);
});

Deno.test("FrameDecoder accepts a frame of exactly maxFrameSize", () => {
  const payload = pattern(1000);
  const frames = decodeChunks(
    clientDecoder({ maxFrameSize: 1000, maxMessageSize: 1000 }),
    [encodeFrame(OPCODE_BINARY, payload)],
  );
  assert.equal(frames.length, 1);
});

Deno.test("FrameDecoder rejects a fragmented message over maxMessageSize with 1009 at the offending header", () => {
  const decoder = clientDecoder({ maxFrameSize: 100, maxMessageSize: 150 });
  const first = decodeChunks(decoder, [
    encodeFrame(OPCODE_TEXT, pattern(60), { fin: false }),
    encodeFrame(OPCODE_PING, pattern(100)),
    encodeFrame(OPCODE_CONTINUATION, pattern(60), { fin: false }),
  ]);
  assert.equal(first.length, 3);
  // 60 + 60 + 31 = 151 > 150: the header alone must fail.
  assertFrameError(decoder, [0x80, 31], 1009);
});

Deno.test("FrameDecoder rejects a masked fragment over maxMessageSize with 1009 before its masking key", () => {
  const decoder = serverDecoder({ maxFrameSize: 300, maxMessageSize: 300 });
  decodeChunks(decoder, [
    encodeFrame(OPCODE_BINARY, pattern(200), { fin: false, maskingKey: KEY }),
  ]);
  // Continuation declaring 200 bytes (16-bit length): 400 > 300.
  assertFrameError(decoder, [0x80, 0xfe, 0x00, 0xc8], 1009);
});

Deno.test("FrameDecoder rejects a single-frame message over maxMessageSize with 1009", () => {
  assertFrameError(
    clientDecoder({ maxMessageSize: 100 }),
    [0x82, 0x65],
    1009,
  );
});

Deno.test("FrameDecoder counts message size afresh for each message", () => {
  const decoder = clientDecoder({ maxFrameSize: 100, maxMessageSize: 150 });
  const frames = decodeChunks(decoder, [
    encodeFrame(OPCODE_TEXT, pattern(100), { fin: false }),
    encodeFrame(OPCODE_CONTINUATION, pattern(50)),
    encodeFrame(OPCODE_BINARY, pattern(100), { fin: false }),
    encodeFrame(OPCODE_CONTINUATION, pattern(50)),
  ]);
  assert.equal(frames.length, 4);
});

Deno.test("FrameDecoder does not count control frames against maxFrameSize", () => {
  const frames = decodeChunks(
    clientDecoder({ maxFrameSize: 10, maxMessageSize: 10 }),
    [encodeFrame(OPCODE_PING, pattern(125))],
  );
  assert.equal(frames.length, 1);
});

// -- Robustness: seeded random input --

/** mulberry32: a tiny seeded PRNG, so failures reproduce. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Feeds `bytes` in random chunks; returns how many frames came out, or
 * rethrows anything that is not a FrameError with 1002 or 1009.
 */
function feedRandomly(
  decoder: FrameDecoder,
  bytes: Uint8Array,
  random: () => number,
  label: string,
): number {
  let count = 0;
  try {
    let i = 0;
    while (i < bytes.length) {
      const n = 1 + Math.floor(random() * 40);
      count += decoder.push(bytes.slice(i, i + n)).length;
      i += n;
    }
  } catch (error) {
    assert.ok(error instanceof FrameError, `${label}: threw ${error}`);
    assert.ok(
      error.closeCode === 1002 || error.closeCode === 1009,
      `${label}: close code ${error.closeCode}`,
    );
  }
  return count;
}

Deno.test("FrameDecoder turns random bytes into frames or a FrameError with 1002 or 1009", () => {
  const random = mulberry32(0x5eed);
  const started = performance.now();
  let frames = 0;
  for (
    let round = 0;
    round < 3000 && performance.now() - started < 400;
    round++
  ) {
    const bytes = new Uint8Array(1 + Math.floor(random() * 64));
    for (let i = 0; i < bytes.length; i++) {
      bytes[i] = Math.floor(random() * 256);
    }
    // Bias the first byte towards valid headers so frames come out too.
    if (random() < 0.5) bytes[0] &= 0x8f;
    const requireMask = random() < 0.5;
    const decoder = new FrameDecoder({
      requireMask,
      maxFrameSize: random() < 0.5 ? 32 : Infinity,
      maxMessageSize: random() < 0.5 ? 48 : Infinity,
      allowRsv1: random() < 0.5,
    });
    frames += feedRandomly(decoder, bytes, random, `round ${round}`);
  }
  assert.ok(frames > 0, "some random inputs decode to frames");
});

Deno.test("FrameDecoder turns mutated valid frame streams into frames or a FrameError with 1002 or 1009", () => {
  const random = mulberry32(20240611);
  const started = performance.now();
  const opcodes = [
    OPCODE_TEXT,
    OPCODE_BINARY,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_CLOSE,
  ];
  let frames = 0, shortfalls = 0;
  for (
    let round = 0;
    round < 2000 && performance.now() - started < 400;
    round++
  ) {
    const masked = random() < 0.5;
    const parts: Uint8Array[] = [];
    const count = 1 + Math.floor(random() * 6);
    for (let i = 0; i < count; i++) {
      const opcode = opcodes[Math.floor(random() * opcodes.length)];
      const length = opcode >= 8
        ? Math.floor(random() * 126)
        : Math.floor(random() * 300);
      parts.push(
        encodeFrame(opcode, pattern(length, i), {
          fin: opcode >= 8 || random() < 0.8,
          maskingKey: masked ? KEY : undefined,
        }),
      );
    }
    const bytes = concat(...parts);
    const flips = Math.floor(random() * 3);
    for (let i = 0; i < flips; i++) {
      bytes[Math.floor(random() * bytes.length)] ^= 1 <<
        Math.floor(random() * 8);
    }
    const decoder = new FrameDecoder({
      requireMask: masked,
      maxFrameSize: 250,
      maxMessageSize: 600,
    });
    const before = frames;
    frames += feedRandomly(decoder, bytes, random, `round ${round}`);
    if (frames - before < count) shortfalls++;
  }
  assert.ok(frames > 0 && shortfalls > 0, "both outcomes are exercised");
});

Deno.test("FrameDecoder.dispose() frees a partial frame's buffer and a partial assembled message at once", () => {
  const decoder = serverDecoder({ assembleBinary: true });
  const header = new Uint8Array(14);
  writeFrameHeader(header, 0, true, false, OPCODE_BINARY, 64 * 1024, KEY);
  decoder.feed(header);
  assert.equal(decoder.next(), false);
  decoder.feed(new Uint8Array(100));
  assert.equal(decoder.next(), false);
  const frameBuffer = decoder.directTarget(16 * 1024)!.buffer as ArrayBuffer;
  decoder.dispose();
  assert.equal(frameBuffer.detached, true);

  const fragments = serverDecoder({ assembleBinary: true });
  const first = encodeFrame(OPCODE_BINARY, new Uint8Array(100), {
    fin: false,
    maskingKey: KEY,
  });
  fragments.feed(first);
  assert.equal(fragments.next(), true);
  writeFrameHeader(header, 0, true, false, OPCODE_CONTINUATION, 64 * 1024, KEY);
  fragments.feed(header);
  assert.equal(fragments.next(), false);
  const messageBuffer = fragments.directTarget(16 * 1024)!
    .buffer as ArrayBuffer;
  fragments.dispose();
  assert.equal(messageBuffer.detached, true);
});

import assert from "node:assert/strict";
import {
  decodeUtf8,
  encodeUtf8,
  isValidUtf8,
  Utf8StreamDecoder,
} from "../src/utf8.ts";

// -- Helpers --

const encoder = new TextEncoder();

function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values);
}

/**
 * Invalid sequences, with the index of the first byte that proves them
 * invalid (WHATWG Encoding, UTF-8 decoder).
 */
const INVALID: { name: string; bytes: number[]; failsAt: number }[] = [
  { name: "an overlong NUL (C0 80)", bytes: [0xc0, 0x80], failsAt: 0 },
  { name: "an overlong slash (C1 BF)", bytes: [0xc1, 0xbf], failsAt: 0 },
  {
    name: "an overlong 3-byte form (E0 80 80)",
    bytes: [0xe0, 0x80, 0x80],
    failsAt: 1,
  },
  {
    name: "an overlong 4-byte form (F0 80 80 80)",
    bytes: [0xf0, 0x80, 0x80, 0x80],
    failsAt: 1,
  },
  {
    name: "a high surrogate (ED A0 80)",
    bytes: [0xed, 0xa0, 0x80],
    failsAt: 1,
  },
  { name: "a low surrogate (ED BF BF)", bytes: [0xed, 0xbf, 0xbf], failsAt: 1 },
  {
    name: "a code point above U+10FFFF (F4 90 80 80)",
    bytes: [0xf4, 0x90, 0x80, 0x80],
    failsAt: 1,
  },
  { name: "a lead byte F5", bytes: [0xf5, 0x80, 0x80, 0x80], failsAt: 0 },
  { name: "a byte FF", bytes: [0xff], failsAt: 0 },
  { name: "a lone continuation byte", bytes: [0x80], failsAt: 0 },
  { name: "a continuation byte after ASCII", bytes: [0x41, 0xbf], failsAt: 1 },
  { name: "a lead byte followed by ASCII", bytes: [0xc3, 0x41], failsAt: 1 },
  {
    name: "a 3-byte lead interrupted by a new lead",
    bytes: [0xe2, 0x82, 0xe2],
    failsAt: 2,
  },
];

/** Sequences cut short inside a multi-byte character. */
const TRUNCATED: { name: string; bytes: number[] }[] = [
  { name: "a 2-byte character missing its last byte", bytes: [0x41, 0xc3] },
  { name: "a 3-byte character missing its last byte", bytes: [0xe2, 0x82] },
  {
    name: "a 4-byte character missing its last byte",
    bytes: [0xf0, 0x9f, 0x98],
  },
  { name: "a 4-byte character with only its lead byte", bytes: [0xf0] },
];

// -- decodeUtf8 and isValidUtf8: valid input --

Deno.test("decodeUtf8() decodes ASCII and 2-, 3- and 4-byte characters", () => {
  const cases: [number[], string][] = [
    [[], ""],
    [[0x48, 0x69], "Hi"],
    [[0x00, 0x7f], "\u0000\u007f"],
    [[0xc3, 0xa9], "é"],
    [[0xc2, 0x80], "\u0080"],
    [[0xdf, 0xbf], "\u07ff"],
    [[0xe2, 0x82, 0xac], "€"],
    [[0xe0, 0xa0, 0x80], "\u0800"],
    [[0xef, 0xbf, 0xbf], "\uffff"],
    [[0xee, 0x80, 0x80], "\ue000"],
    [[0xf0, 0x9f, 0x98, 0x80], "😀"],
    [[0xf0, 0x90, 0x80, 0x80], "\u{10000}"],
    [[0xf4, 0x8f, 0xbf, 0xbf], "\u{10ffff}"],
  ];
  for (const [input, text] of cases) {
    assert.equal(decodeUtf8(bytes(...input)), text, JSON.stringify(text));
    assert.equal(isValidUtf8(bytes(...input)), true, JSON.stringify(text));
  }
});

Deno.test("decodeUtf8() keeps a leading byte order mark as content", () => {
  assert.equal(decodeUtf8(bytes(0xef, 0xbb, 0xbf, 0x41)), "\uFEFFA");
  assert.equal(decodeUtf8(bytes(0xef, 0xbb, 0xbf)), "\uFEFF");
});

Deno.test("decodeUtf8() round-trips text encoded by TextEncoder", () => {
  const text = "plain, ünïcödé, 中文, emoji 😀🎉, edge \u{10ffff}";
  assert.equal(decodeUtf8(encoder.encode(text)), text);
});

// -- decodeUtf8 and isValidUtf8: invalid input --

for (const { name, bytes: input } of [...INVALID, ...TRUNCATED]) {
  Deno.test(`decodeUtf8() rejects ${name}`, () => {
    assert.equal(decodeUtf8(bytes(...input)), undefined);
    assert.equal(isValidUtf8(bytes(...input)), false);
  });
}

for (const { name, bytes: input } of [...INVALID, ...TRUNCATED]) {
  Deno.test(`decodeUtf8() rejects ${name} inside 200 bytes of valid text`, () => {
    const text = encoder.encode("Grüße, wörld ✓ ".repeat(6));
    for (const at of [0, 1, 100, text.length]) {
      const whole = new Uint8Array([
        ...text.subarray(0, at),
        ...input,
        ...(TRUNCATED.some((t) => t.name === name) ? [] : text.subarray(at)),
      ]);
      assert.equal(decodeUtf8(whole), undefined, `at ${at}`);
    }
  });
}

Deno.test("decodeUtf8() accepts U+FFFD sent as it is, short and long, and still rejects invalid bytes next to it", () => {
  for (
    const text of [
      "\uFFFD",
      "a\uFFFDb",
      "x".repeat(100) + "\uFFFD",
      "\uFFFD✓".repeat(50),
    ]
  ) {
    assert.equal(decodeUtf8(encoder.encode(text)), text);
  }
  const valid = encoder.encode("\uFFFD".repeat(30));
  assert.equal(decodeUtf8(new Uint8Array([...valid, 0xff])), undefined);
  assert.equal(decodeUtf8(new Uint8Array([0xc0, 0x80, ...valid])), undefined);
});

Deno.test("decodeUtf8() still works after rejecting invalid input", () => {
  assert.equal(decodeUtf8(bytes(0xe2, 0x82)), undefined);
  assert.equal(decodeUtf8(bytes(0xac)), undefined);
  assert.equal(decodeUtf8(bytes(0x41)), "A");
});

// -- Utf8StreamDecoder --

Deno.test("Utf8StreamDecoder joins text split at every byte position", () => {
  const text = "aé€😀z";
  const encoded = encoder.encode(text);
  for (let i = 0; i <= encoded.length; i++) {
    const decoder = new Utf8StreamDecoder();
    assert.equal(
      decoder.push(encoded.slice(0, i)),
      true,
      `first piece at ${i}`,
    );
    assert.equal(decoder.push(encoded.slice(i)), true, `second piece at ${i}`);
    assert.equal(decoder.end(), text, `split at ${i}`);
  }
});

Deno.test("Utf8StreamDecoder joins text split at every pair of byte positions", () => {
  const text = "😀€é";
  const encoded = encoder.encode(text);
  for (let i = 0; i <= encoded.length; i++) {
    for (let j = i; j <= encoded.length; j++) {
      const decoder = new Utf8StreamDecoder();
      assert.equal(decoder.push(encoded.slice(0, i)), true);
      assert.equal(decoder.push(encoded.slice(i, j)), true);
      assert.equal(decoder.push(encoded.slice(j)), true);
      assert.equal(decoder.end(), text, `split at ${i} and ${j}`);
    }
  }
});

Deno.test("Utf8StreamDecoder joins text fed one byte at a time", () => {
  const text = "BOM \uFEFF, ünï, 中文, 😀\u{10ffff}";
  const decoder = new Utf8StreamDecoder();
  for (const byte of encoder.encode(text)) {
    assert.equal(decoder.push(bytes(byte)), true);
  }
  assert.equal(decoder.end(), text);
});

Deno.test("Utf8StreamDecoder keeps a leading byte order mark", () => {
  const decoder = new Utf8StreamDecoder();
  assert.equal(decoder.push(bytes(0xef, 0xbb)), true);
  assert.equal(decoder.push(bytes(0xbf, 0x41)), true);
  assert.equal(decoder.end(), "\uFEFFA");
});

Deno.test("Utf8StreamDecoder returns an empty string for no input", () => {
  const decoder = new Utf8StreamDecoder();
  assert.equal(decoder.end(), "");
  const empty = new Utf8StreamDecoder();
  assert.equal(empty.push(new Uint8Array(0)), true);
  assert.equal(empty.end(), "");
});

Deno.test("Utf8StreamDecoder fails fast on a code point above U+10FFFF", () => {
  const decoder = new Utf8StreamDecoder();
  // F4 90 can only start a code point above U+10FFFF: known before the
  // message ends.
  assert.equal(decoder.push(bytes(0xf4, 0x90)), false);
});

Deno.test("Utf8StreamDecoder fails fast when the invalid byte arrives in a later piece", () => {
  const decoder = new Utf8StreamDecoder();
  assert.equal(decoder.push(bytes(0x41, 0xf4)), true);
  assert.equal(decoder.push(bytes(0x90)), false);
});

for (const { name, bytes: input, failsAt } of INVALID) {
  Deno.test(`Utf8StreamDecoder fails fast on ${name}, at the first byte that proves it`, () => {
    const decoder = new Utf8StreamDecoder();
    let failedAt = -1;
    for (let i = 0; i < input.length; i++) {
      if (!decoder.push(bytes(input[i]))) {
        failedAt = i;
        break;
      }
    }
    assert.equal(failedAt, failsAt);
  });

  Deno.test(`Utf8StreamDecoder fails on ${name} pushed whole`, () => {
    const decoder = new Utf8StreamDecoder();
    assert.equal(decoder.push(bytes(...input)), false);
  });
}

for (const { name, bytes: input } of TRUNCATED) {
  Deno.test(`Utf8StreamDecoder end() returns undefined on ${name}`, () => {
    const decoder = new Utf8StreamDecoder();
    assert.equal(
      decoder.push(bytes(...input)),
      true,
      "a prefix is not yet invalid",
    );
    assert.equal(decoder.end(), undefined);
  });
}

Deno.test("Utf8StreamDecoder does not leak state between instances", () => {
  const broken = new Utf8StreamDecoder();
  broken.push(bytes(0xe2, 0x82));
  const fresh = new Utf8StreamDecoder();
  assert.equal(fresh.push(bytes(0x41)), true);
  assert.equal(fresh.end(), "A");
});

Deno.test("decodeUtf8() agrees with a fatal TextDecoder on 20,000 random near-UTF-8 inputs", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const pieces = [
    ...[..."aZ ~é✓😀\uFFFD\uFEFF"].map((c) => [...encoder.encode(c)]),
    [0x80],
    [0xbf],
    [0xc0],
    [0xc2],
    [0xe0],
    [0xed, 0xa0],
    [0xef, 0xbf],
    [0xf0, 0x90],
    [0xf4, 0x90],
    [0xf5],
    [0xff],
  ];
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  let invalid = 0;
  for (let n = 0; n < 20_000; n++) {
    const input: number[] = [];
    const count = Math.floor(random() * 120);
    for (let i = 0; i < count; i++) {
      // Mostly valid characters, now and then a stray byte.
      const piece = random() < 0.97
        ? pieces[Math.floor(random() * 9)]
        : pieces[Math.floor(random() * pieces.length)];
      input.push(...piece);
    }
    const bytes = new Uint8Array(input);
    let expected: string | undefined;
    try {
      expected = fatal.decode(bytes);
    } catch {
      expected = undefined;
      invalid++;
    }
    assert.equal(decodeUtf8(bytes), expected, `input ${input}`);
  }
  // Both outcomes were exercised.
  assert.ok(invalid > 1000 && invalid < 19_000, `${invalid} invalid`);
});

Deno.test("Utf8StreamDecoder fails at the same piece as a fatal streaming TextDecoder, on 5,000 random inputs cut at random", () => {
  // Hardening II: the pieces are now the reads of a frame still arriving,
  // so the decoder must fail at the piece that proves the text invalid,
  // as the WHATWG decoder does, and never earlier.
  const pieces = [
    ...[..."aZ é✓😀\uFFFD\uFEFF"].map((c) => [...encoder.encode(c)]),
    [0x80],
    [0xc1],
    [0xe0, 0x80],
    [0xed, 0xa0],
    [0xf0, 0x80],
    [0xf4, 0x90],
    [0xf5],
    [0xff],
  ];
  let seed = 777;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  let invalid = 0;
  for (let n = 0; n < 5000; n++) {
    const input: number[] = [];
    const count = Math.floor(random() * 60);
    for (let i = 0; i < count; i++) {
      const piece = random() < 0.97
        ? pieces[Math.floor(random() * 8)]
        : pieces[Math.floor(random() * pieces.length)];
      input.push(...piece);
    }
    const bytes = new Uint8Array(input);
    const cuts = [0];
    while (cuts.at(-1)! < bytes.length) {
      cuts.push(
        Math.min(bytes.length, cuts.at(-1)! + 1 + Math.floor(random() * 6)),
      );
    }
    const reference = new TextDecoder("utf-8", {
      fatal: true,
      ignoreBOM: true,
    });
    const decoder = new Utf8StreamDecoder();
    let expected = "";
    let failedAt = -1;
    for (let i = 1; i < cuts.length; i++) {
      const piece = bytes.subarray(cuts[i - 1], cuts[i]);
      let referenceFailed = false;
      try {
        expected += reference.decode(piece, { stream: true });
      } catch {
        referenceFailed = true;
      }
      assert.equal(
        decoder.push(piece),
        !referenceFailed,
        `input ${input}, cuts ${cuts}, piece ${i}`,
      );
      if (referenceFailed) {
        failedAt = i;
        break;
      }
    }
    if (failedAt !== -1) {
      invalid++;
      continue;
    }
    let end: string | undefined;
    try {
      end = expected + reference.decode();
    } catch {
      end = undefined;
      invalid++;
    }
    assert.equal(decoder.end(), end, `input ${input}`);
  }
  assert.ok(invalid > 500 && invalid < 4500, `${invalid} invalid`);
});

Deno.test("encodeUtf8() gives TextEncoder's bytes: ASCII and not, around the 256-character shortcut, lone surrogates", () => {
  const encoder = new TextEncoder();
  const texts = [
    "",
    "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
    "x".repeat(127),
    "x".repeat(128),
    "x".repeat(129),
    "x".repeat(255),
    "x".repeat(256),
    "x".repeat(257),
    "x".repeat(127) + "é",
    "é" + "x".repeat(127),
    "x".repeat(255) + "é",
    "\x7f\x80",
    "€😀",
    "a\ud800b",
    "\udc00",
    "x".repeat(200) + "😀",
  ];
  for (const text of texts) {
    assert.deepEqual(
      encodeUtf8(text),
      encoder.encode(text),
      JSON.stringify(text),
    );
  }
});

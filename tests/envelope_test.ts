/**
 * The broker envelope (src/envelope.ts): fields to bytes and back, and
 * every kind of malformed input turned away without a throw.
 */

import assert from "node:assert/strict";
import {
  decodeEnvelope,
  encodeEnvelope,
  ENVELOPE_HEADER_SIZE,
  isWholeMessage,
  type NodeId,
} from "../src/envelope.ts";
import {
  encodeFrame,
  OPCODE_BINARY,
  OPCODE_CONTINUATION,
  OPCODE_PING,
  OPCODE_TEXT,
} from "../src/frame.ts";

const encoder = new TextEncoder();
const NODE: NodeId = { high: 0x01020304, low: 0xa0b0c0d0 };

function text(data: string): Uint8Array {
  return encodeFrame(OPCODE_TEXT, encoder.encode(data));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// -- Both ways --

Deno.test("encodeEnvelope() writes the documented header, then each message with its length", () => {
  const message = text("hi");
  const bytes = encodeEnvelope(NODE, 7, encoder.encode("t"), [message]);
  assert.deepEqual(
    bytes,
    new Uint8Array([
      1,
      0, // version, flags
      0x01,
      0x02,
      0x03,
      0x04,
      0xa0,
      0xb0,
      0xc0,
      0xd0, // node id
      0,
      0,
      0,
      7, // first sequence number
      0,
      1, // count
      0,
      1,
      0x74, // topic "t"
      0,
      0,
      0,
      4,
      0x81,
      0x02,
      0x68,
      0x69, // one text frame "hi"
    ]),
  );
});

Deno.test("decodeEnvelope() gives back the node, sequence, topic and each message's bytes", () => {
  const messages = [
    text("caf\u00e9"),
    encodeFrame(OPCODE_BINARY, new Uint8Array(70_000)),
    concat(
      encodeFrame(OPCODE_TEXT, encoder.encode("frag"), { fin: false }),
      encodeFrame(OPCODE_CONTINUATION, encoder.encode("ment")),
    ),
  ];
  const envelope = decodeEnvelope(
    encodeEnvelope(NODE, 0xffff_fff0, encoder.encode("r\u00f6om"), messages),
  );
  assert.ok(envelope !== null);
  assert.deepEqual(envelope.node, NODE);
  assert.equal(envelope.sequence, 0xffff_fff0);
  assert.equal(envelope.topic, "r\u00f6om");
  assert.deepEqual(envelope.messages, messages);
});

// -- Malformed input --

Deno.test("decodeEnvelope() rejects every prefix of a valid envelope and any byte after it", () => {
  const bytes = encodeEnvelope(NODE, 1, encoder.encode("topic"), [
    text("one"),
    text("two"),
  ]);
  for (let length = 0; length < bytes.length; length++) {
    assert.equal(decodeEnvelope(bytes.subarray(0, length)), null, `${length}`);
  }
  assert.equal(decodeEnvelope(concat(bytes, new Uint8Array(1))), null);
  assert.notEqual(decodeEnvelope(bytes), null);
});

Deno.test("decodeEnvelope() rejects another version, set flags, no messages and a topic that is not UTF-8", () => {
  const valid = encodeEnvelope(NODE, 1, encoder.encode("t"), [text("x")]);
  const version = valid.slice();
  version[0] = 2;
  const flags = valid.slice();
  flags[1] = 1;
  const badTopic = encodeEnvelope(NODE, 1, new Uint8Array([0xc3]), [
    text("x"),
  ]);
  const empty = encodeEnvelope(NODE, 1, encoder.encode("t"), []);
  for (const bytes of [version, flags, badTopic, empty]) {
    assert.equal(decodeEnvelope(bytes), null);
  }
  assert.equal(decodeEnvelope("text" as unknown as Uint8Array), null);
  assert.equal(decodeEnvelope(null as unknown as Uint8Array), null);
});

Deno.test("isWholeMessage() accepts only complete, unmasked, uncompressed text or binary messages", () => {
  const accepted = [
    text(""),
    text("x".repeat(126)),
    encodeFrame(OPCODE_BINARY, new Uint8Array(0x10000)),
    concat(
      encodeFrame(OPCODE_TEXT, new Uint8Array([0xc3]), { fin: false }),
      encodeFrame(OPCODE_CONTINUATION, new Uint8Array([0xa9])),
    ),
  ];
  for (const bytes of accepted) assert.ok(isWholeMessage(bytes));
  const rejected: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["a ping", encodeFrame(OPCODE_PING, new Uint8Array(1))],
    ["RSV1", encodeFrame(OPCODE_TEXT, encoder.encode("x"), { rsv1: true })],
    [
      "masked",
      encodeFrame(OPCODE_BINARY, new Uint8Array(3), {
        maskingKey: new Uint8Array([1, 2, 3, 4]),
      }),
    ],
    [
      "a continuation first",
      encodeFrame(OPCODE_CONTINUATION, new Uint8Array(1)),
    ],
    [
      "no final frame",
      encodeFrame(OPCODE_BINARY, new Uint8Array(1), { fin: false }),
    ],
    ["two messages", concat(text("a"), text("b"))],
    [
      "a 16-bit length under 126",
      new Uint8Array([0x82, 126, 0, 5, 1, 2, 3, 4, 5]),
    ],
    [
      "a 64-bit length under 65536",
      concat(
        new Uint8Array([0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1]),
        new Uint8Array(1),
      ),
    ],
    ["a length past the end", new Uint8Array([0x82, 5, 1, 2])],
    [
      "text that is not UTF-8",
      encodeFrame(OPCODE_TEXT, new Uint8Array([0xff])),
    ],
    [
      "text cut inside a character",
      concat(
        encodeFrame(OPCODE_TEXT, new Uint8Array([0x61, 0xc3]), { fin: false }),
        encodeFrame(OPCODE_CONTINUATION, new Uint8Array(0)),
      ),
    ],
  ];
  for (const [what, bytes] of rejected) {
    assert.equal(isWholeMessage(bytes), false, what);
  }
});

Deno.test("decodeEnvelope() returns null, never throws, for seeded random bytes and random corruptions", () => {
  let seed = 15;
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  const valid = encodeEnvelope(NODE, 3, encoder.encode("t"), [
    text("hello"),
    encodeFrame(OPCODE_BINARY, new Uint8Array(300)),
  ]);
  for (let round = 0; round < 5000; round++) {
    let bytes: Uint8Array;
    if (round % 2 === 0) {
      bytes = new Uint8Array(Math.floor(random() * 64));
      for (let i = 0; i < bytes.length; i++) bytes[i] = random() * 256;
      if (bytes.length > 1) [bytes[0], bytes[1]] = [1, 0];
    } else {
      bytes = valid.slice();
      const at = ENVELOPE_HEADER_SIZE + Math.floor(random() * 30);
      bytes[at] = random() * 256;
    }
    const envelope = decodeEnvelope(bytes);
    if (envelope !== null) {
      for (const message of envelope.messages) {
        assert.ok(isWholeMessage(message));
      }
    }
  }
});

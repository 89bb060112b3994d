import assert from "node:assert/strict";
import {
  ABNORMAL_CLOSURE,
  decodeClosePayload,
  encodeClosePayload,
  GOING_AWAY,
  INTERNAL_ERROR,
  INVALID_FRAME_PAYLOAD_DATA,
  isValidCloseCode,
  MANDATORY_EXTENSION,
  MESSAGE_TOO_BIG,
  NO_STATUS_RECEIVED,
  NORMAL_CLOSURE,
  POLICY_VIOLATION,
  PROTOCOL_ERROR,
  TLS_HANDSHAKE,
  UNSUPPORTED_DATA,
} from "../src/close.ts";

// -- 7.4.1 Defined status codes --

Deno.test("close code constants carry their RFC 6455 values", () => {
  assert.equal(NORMAL_CLOSURE, 1000);
  assert.equal(GOING_AWAY, 1001);
  assert.equal(PROTOCOL_ERROR, 1002);
  assert.equal(UNSUPPORTED_DATA, 1003);
  assert.equal(NO_STATUS_RECEIVED, 1005);
  assert.equal(ABNORMAL_CLOSURE, 1006);
  assert.equal(INVALID_FRAME_PAYLOAD_DATA, 1007);
  assert.equal(POLICY_VIOLATION, 1008);
  assert.equal(MESSAGE_TOO_BIG, 1009);
  assert.equal(MANDATORY_EXTENSION, 1010);
  assert.equal(INTERNAL_ERROR, 1011);
  assert.equal(TLS_HANDSHAKE, 1015);
});

Deno.test("isValidCloseCode() accepts the codes that may appear on the wire", () => {
  for (
    const code of [
      1000,
      1001,
      1002,
      1003,
      1007,
      1008,
      1009,
      1010,
      1011,
      1012,
      1013,
      1014,
      3000,
      3999,
      4000,
      4999,
    ]
  ) {
    assert.equal(isValidCloseCode(code), true, String(code));
  }
});

Deno.test("isValidCloseCode() rejects reserved, unassigned and out-of-range codes", () => {
  for (
    const code of [
      0,
      999,
      1004,
      1005,
      1006,
      1015,
      1016,
      1100,
      2000,
      2999,
      5000,
      65535,
    ]
  ) {
    assert.equal(isValidCloseCode(code), false, String(code));
  }
});

// -- 5.5.1 Close: payload --

Deno.test("encodeClosePayload() writes the code in network byte order then the UTF-8 reason", () => {
  assert.deepEqual([...encodeClosePayload(1000, "")], [0x03, 0xe8]);
  assert.deepEqual(
    [...encodeClosePayload(4001, "é!")],
    [0x0f, 0xa1, 0xc3, 0xa9, 0x21],
  );
});

Deno.test("encodeClosePayload() gives an empty payload for 1005", () => {
  assert.equal(encodeClosePayload(NO_STATUS_RECEIVED, "").length, 0);
});

Deno.test("encodeClosePayload() and decodeClosePayload() round-trip codes and reasons", () => {
  const reasons = [
    "",
    "bye",
    "Going away: server restart",
    "ünïcödé 中文 😀",
    "\uFEFF",
  ];
  for (
    const code of [
      1000,
      1001,
      1002,
      1003,
      1007,
      1008,
      1009,
      1010,
      1011,
      1014,
      3000,
      4999,
    ]
  ) {
    for (const reason of reasons) {
      assert.deepEqual(
        decodeClosePayload(encodeClosePayload(code, reason)),
        { ok: true, code, reason },
        `${code} ${JSON.stringify(reason)}`,
      );
    }
  }
});

Deno.test("decodeClosePayload() reads an empty payload as 1005 with no reason", () => {
  assert.deepEqual(decodeClosePayload(new Uint8Array(0)), {
    ok: true,
    code: 1005,
    reason: "",
  });
});

Deno.test("decodeClosePayload() decodes a hand-written payload", () => {
  assert.deepEqual(
    decodeClosePayload(new Uint8Array([0x03, 0xe9, 0x62, 0x79, 0x65])),
    { ok: true, code: 1001, reason: "bye" },
  );
});

Deno.test("decodeClosePayload() rejects a 1-byte payload with 1002", () => {
  const result = decodeClosePayload(new Uint8Array([0x03]));
  assert.equal(result.ok, false);
  assert.equal(!result.ok && result.closeCode, 1002);
});

Deno.test("decodeClosePayload() rejects a code that may not appear on the wire with 1002", () => {
  for (
    const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]
  ) {
    const result = decodeClosePayload(
      new Uint8Array([code >>> 8, code & 0xff, 0x41]),
    );
    assert.equal(result.ok, false, String(code));
    assert.equal(!result.ok && result.closeCode, 1002, String(code));
  }
});

Deno.test("decodeClosePayload() rejects a reason that is not valid UTF-8 with 1007", () => {
  const reasons = [
    [0xc0, 0x80],
    [0xed, 0xa0, 0x80],
    [0xf4, 0x90, 0x80, 0x80],
    [0x41, 0x80],
    [0xe2, 0x82], // truncated
  ];
  for (const reason of reasons) {
    const result = decodeClosePayload(new Uint8Array([0x03, 0xe8, ...reason]));
    assert.equal(result.ok, false, String(reason));
    assert.equal(!result.ok && result.closeCode, 1007, String(reason));
  }
});

Deno.test("decodeClosePayload() keeps a leading byte order mark in the reason", () => {
  assert.deepEqual(
    decodeClosePayload(new Uint8Array([0x03, 0xe8, 0xef, 0xbb, 0xbf, 0x41])),
    { ok: true, code: 1000, reason: "\uFEFFA" },
  );
});

Deno.test("decodeClosePayload() accepts a 125-byte payload", () => {
  const payload = encodeClosePayload(1000, "x".repeat(123));
  assert.equal(payload.length, 125);
  assert.deepEqual(decodeClosePayload(payload), {
    ok: true,
    code: 1000,
    reason: "x".repeat(123),
  });
});

Deno.test("decodeClosePayload() recovers after a reason with invalid UTF-8", () => {
  decodeClosePayload(new Uint8Array([0x03, 0xe8, 0xe2, 0x82]));
  // A stateful decoder left mid-character would see E2 82 AC = "€" here.
  const result = decodeClosePayload(new Uint8Array([0x03, 0xe8, 0xac]));
  assert.equal(result.ok, false);
  assert.equal(!result.ok && result.closeCode, 1007);
});

Deno.test("close payloads: a code alone both ways, U+FFFD sent as it is, and invalid bytes after ASCII", () => {
  assert.deepEqual(encodeClosePayload(1000, ""), new Uint8Array([0x03, 0xe8]));
  assert.deepEqual(decodeClosePayload(new Uint8Array([0x0f, 0xa0])), {
    ok: true,
    code: 4000,
    reason: "",
  });
  assert.deepEqual(decodeClosePayload(encodeClosePayload(1001, "a\uFFFDb")), {
    ok: true,
    code: 1001,
    reason: "a\uFFFDb",
  });
  for (
    const tail of [[0x61, 0xff], [0x61, 0x62, 0xc3], [0x61, 0xed, 0xa0, 0x80]]
  ) {
    const result = decodeClosePayload(new Uint8Array([0x03, 0xe8, ...tail]));
    assert.equal(!result.ok && result.closeCode, 1007, JSON.stringify(tail));
  }
});

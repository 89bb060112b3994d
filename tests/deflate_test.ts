/**
 * permessage-deflate (RFC 7692): the negotiation in src/deflate.ts (pure),
 * its codec against node:zlib's one-shot functions, and the extension over
 * real loopback sockets: our client and server together, and raw peers
 * that send what a well-behaved one would not.
 */

import assert from "node:assert/strict";
import zlib from "node:zlib";
import {
  acceptDeflate,
  type CompressionConfig,
  deflateOffer,
  deflateParams,
  formatDeflate,
  negotiateDeflate,
} from "../src/deflate.ts";
import { compressionConfig, PerMessageDeflate } from "../src/deflate_codec.ts";
import { parseExtensions } from "../src/extensions.ts";
import { runFixture } from "./_helpers.ts";
import { FrameError } from "../src/frame.ts";
import {
  accept,
  connect,
  type ConnectOptions,
  type ListenOptions,
  type Socket,
  WebSocketError,
} from "../mod.ts";
import {
  clientFrame,
  closePayload,
  concat,
  connectToRaw,
  jsonText,
  noise,
  RawPeer,
  RawServer,
  recordingServer,
  serve,
  serverFrame,
  sleep,
  upgradeRequest,
  urlOf,
  utf8,
  within,
} from "./_helpers.ts";

const decoder = new TextDecoder();
const TAIL = new Uint8Array([0x00, 0x00, 0xff, 0xff]);

/** Settings as `compression: true` gives them, with `overrides`. */
function config(overrides: Partial<CompressionConfig> = {}): CompressionConfig {
  return { ...compressionConfig(true)!, ...overrides };
}

/** Raw deflate of `data` ending in a sync flush, tail removed: one message without context. */
function deflateMessage(data: Uint8Array | string, level = 6): Uint8Array {
  const bytes = typeof data === "string" ? utf8(data) : data;
  const out = zlib.deflateRawSync(bytes, {
    level,
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  });
  assert.deepEqual([...out.subarray(-4)], [...TAIL]);
  return new Uint8Array(out.subarray(0, out.length - 4));
}

/** Inflates one message made without context, as a peer with a fresh inflater would. */
function inflateMessage(payload: Uint8Array): Uint8Array {
  return new Uint8Array(
    zlib.inflateRawSync(concat(payload, TAIL), {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    }),
  );
}

/** A pair of codecs that agreed on `response` (server compresses, client inflates, and back). */
function codecs(
  response: string,
  options: { server?: CompressionConfig; maxMessageSize?: number } = {},
): { server: PerMessageDeflate; client: PerMessageDeflate } & Disposable {
  const params = acceptDeflate(response, config());
  assert.ok(typeof params !== "string", String(params));
  const maxMessageSize = options.maxMessageSize ?? 16 * 1024 * 1024;
  const server = new PerMessageDeflate({
    client: false,
    params,
    config: options.server ?? config(),
    maxMessageSize,
  });
  const client = new PerMessageDeflate({
    client: true,
    params,
    config: config(),
    maxMessageSize,
  });
  return {
    server,
    client,
    [Symbol.dispose]() {
      server.close();
      client.close();
    },
  };
}

/** Inflates `frames` (payloads of one message) with `codec`; returns the bytes. */
function inflateAll(
  codec: PerMessageDeflate,
  frames: Uint8Array[],
): Uint8Array {
  const parts: Uint8Array[] = [];
  frames.forEach((frame, i) =>
    codec.inflate(frame, i === frames.length - 1, (chunk) => {
      parts.push(chunk.slice());
      return true;
    })
  );
  return concat(...parts);
}

function assertFrameError(fn: () => void, closeCode: number): void {
  assert.throws(fn, (error) => {
    assert.ok(error instanceof FrameError, String(error));
    assert.equal(error.closeCode, closeCode, error.message);
    return true;
  });
}

// -- Sec-WebSocket-Extensions (RFC 6455 9.1) --

Deno.test("parseExtensions() reads extensions, parameters, values and quoted values", () => {
  assert.deepEqual(
    parseExtensions(
      'permessage-deflate; client_max_window_bits, Permessage-Deflate ;server_max_window_bits = "10" ; Client_No_Context_Takeover,,x-foo',
    ),
    [
      {
        name: "permessage-deflate",
        params: [["client_max_window_bits", null]],
      },
      {
        name: "permessage-deflate",
        params: [
          ["server_max_window_bits", "10"],
          ["client_no_context_takeover", null],
        ],
      },
      { name: "x-foo", params: [] },
    ],
  );
  assert.deepEqual(parseExtensions(""), []);
  assert.deepEqual(parseExtensions(' a; b="\\1\\0"'), [
    { name: "a", params: [["b", "10"]] },
  ]);
});

Deno.test("parseExtensions() returns null for a malformed header", () => {
  for (
    const value of [
      "permessage-deflate;",
      "; a",
      "a b",
      "a; b=",
      "a;=1",
      'a; b="unterminated',
      'a; b="not a token"',
      'a; b=""',
      "a; b=1 c",
      "a/b",
    ]
  ) {
    assert.equal(parseExtensions(value), null, value);
  }
});

Deno.test("formatDeflate() writes the parameters in a fixed order", () => {
  assert.equal(
    formatDeflate({
      serverNoContextTakeover: true,
      clientNoContextTakeover: true,
      serverMaxWindowBits: 10,
      clientMaxWindowBits: true,
    }),
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits",
  );
  assert.equal(
    formatDeflate({
      serverNoContextTakeover: false,
      clientNoContextTakeover: false,
      serverMaxWindowBits: undefined,
      clientMaxWindowBits: 9,
    }),
    "permessage-deflate; client_max_window_bits=9",
  );
});

// -- 7.1 Parameters --

Deno.test("deflateParams() reads every parameter; client_max_window_bits has no value in offers only", () => {
  const params = parseExtensions(
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8; client_max_window_bits",
  )![0].params;
  assert.deepEqual(deflateParams(params, true), {
    serverNoContextTakeover: true,
    clientNoContextTakeover: true,
    serverMaxWindowBits: 8,
    clientMaxWindowBits: true,
  });
  assert.match(
    deflateParams(params, false) as string,
    /client_max_window_bits must be 8 to 15/,
  );
});

Deno.test("deflateParams() rejects duplicate and unknown parameters and bad values", () => {
  const cases: [string, RegExp][] = [
    ["server_no_context_takeover; server_no_context_takeover", /duplicate/],
    ["client_max_window_bits=10; client_max_window_bits=10", /duplicate/],
    ["server_max_window_bits=10; server_max_window_bits=11", /duplicate/],
    ["mystery", /unknown parameter mystery/],
    ["server_no_context_takeover=1", /must have no value/],
    ["client_no_context_takeover=true", /must have no value/],
    ["server_max_window_bits", /8 to 15/],
    ["server_max_window_bits=7", /8 to 15/],
    ["server_max_window_bits=16", /8 to 15/],
    ["server_max_window_bits=08", /8 to 15/],
    ["client_max_window_bits=1a", /8 to 15/],
    ["client_max_window_bits=-9", /8 to 15/],
  ];
  for (const [text, message] of cases) {
    const params = parseExtensions(`permessage-deflate; ${text}`)![0].params;
    const result = deflateParams(params, true);
    assert.equal(typeof result, "string", text);
    assert.match(result as string, message, text);
  }
});

// -- 7.1 Server negotiation --

Deno.test("negotiateDeflate() accepts a browser's offer with no parameters in the response", () => {
  assert.deepEqual(
    negotiateDeflate("permessage-deflate; client_max_window_bits", config()),
    {
      response: "permessage-deflate",
      params: {
        serverNoContextTakeover: false,
        clientNoContextTakeover: false,
        serverMaxWindowBits: undefined,
        clientMaxWindowBits: undefined,
      },
    },
  );
});

Deno.test("negotiateDeflate() agrees to what the client asks and adds what the server wants", () => {
  const cases: [string, Partial<CompressionConfig>, string][] = [
    [
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
      {},
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ],
    [
      "permessage-deflate",
      { serverNoContextTakeover: true, clientNoContextTakeover: true },
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ],
    // 7.1.2.1: the same or a smaller server window.
    [
      "permessage-deflate; server_max_window_bits=10",
      {},
      "permessage-deflate; server_max_window_bits=10",
    ],
    [
      "permessage-deflate; server_max_window_bits=10",
      { serverMaxWindowBits: 9 },
      "permessage-deflate; server_max_window_bits=9",
    ],
    [
      "permessage-deflate; server_max_window_bits=10",
      { serverMaxWindowBits: 12 },
      "permessage-deflate; server_max_window_bits=10",
    ],
    [
      "permessage-deflate; server_max_window_bits=8",
      {},
      "permessage-deflate; server_max_window_bits=8",
    ],
    // Not asked for: the server's smaller window needs no announcement.
    ["permessage-deflate", { serverMaxWindowBits: 10 }, "permessage-deflate"],
    // 7.1.2.2: the client's window, as it limited it or smaller.
    [
      "permessage-deflate; client_max_window_bits=10",
      {},
      "permessage-deflate; client_max_window_bits=10",
    ],
    [
      "permessage-deflate; client_max_window_bits=10",
      { clientMaxWindowBits: 9 },
      "permessage-deflate; client_max_window_bits=9",
    ],
    [
      "permessage-deflate; client_max_window_bits",
      { clientMaxWindowBits: 11 },
      "permessage-deflate; client_max_window_bits=11",
    ],
  ];
  for (const [offer, overrides, response] of cases) {
    assert.equal(
      negotiateDeflate(offer, config(overrides))?.response,
      response,
      `${offer} with ${JSON.stringify(overrides)}`,
    );
  }
});

Deno.test("negotiateDeflate() declines invalid offers and takes the first valid one", () => {
  const valid = "permessage-deflate; client_max_window_bits";
  for (
    const invalid of [
      "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
      "permessage-deflate; mystery",
      "permessage-deflate; server_max_window_bits=16",
      "permessage-deflate; server_max_window_bits",
      "permessage-deflate; client_max_window_bits=7",
      "x-webkit-deflate-frame",
    ]
  ) {
    assert.equal(negotiateDeflate(invalid, config()), null, invalid);
    assert.equal(
      negotiateDeflate(`${invalid}, ${valid}`, config())?.response,
      "permessage-deflate",
      invalid,
    );
  }
  assert.equal(negotiateDeflate(null, config()), null);
  assert.equal(negotiateDeflate("", config()), null);
  // A malformed header declines everything in it.
  assert.equal(negotiateDeflate(`${valid}, a b`, config()), null);
  // A server that limits the client's window declines a client that
  // cannot be limited (no client_max_window_bits in its offer).
  assert.equal(
    negotiateDeflate("permessage-deflate", config({ clientMaxWindowBits: 10 })),
    null,
  );
});

// -- 7.1 Client negotiation --

Deno.test("deflateOffer() offers client_max_window_bits and what the client asks of the server", () => {
  assert.equal(
    deflateOffer(config()),
    "permessage-deflate; client_max_window_bits",
  );
  assert.equal(
    deflateOffer(config({
      serverNoContextTakeover: true,
      clientNoContextTakeover: true,
      serverMaxWindowBits: 10,
      clientMaxWindowBits: 12,
    })),
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12",
  );
});

Deno.test("acceptDeflate() accepts what RFC 7692 lets a server answer", () => {
  const cases: [string, Partial<CompressionConfig>][] = [
    ["permessage-deflate", {}],
    ["Permessage-Deflate", {}],
    // 7.1.1.1 and 7.1.1.2: either side's no_context_takeover, unasked.
    ["permessage-deflate; server_no_context_takeover", {}],
    ["permessage-deflate; client_no_context_takeover", {}],
    // The server may announce its own smaller window unasked.
    ["permessage-deflate; server_max_window_bits=9", {}],
    ["permessage-deflate; server_max_window_bits=9", {
      serverMaxWindowBits: 10,
    }],
    ["permessage-deflate; client_max_window_bits=8", {}],
    ["permessage-deflate; client_max_window_bits=10", {
      clientMaxWindowBits: 10,
    }],
  ];
  for (const [response, overrides] of cases) {
    const result = acceptDeflate(response, config(overrides));
    assert.equal(typeof result, "object", `${response}: ${result}`);
  }
});

Deno.test("acceptDeflate() rejects a response outside the offer", () => {
  const cases: [string, Partial<CompressionConfig>, RegExp][] = [
    ["x-foo", {}, /not offered/],
    ["permessage-deflate, permessage-deflate", {}, /not offered/],
    ["permessage-deflate, x-foo", {}, /not offered/],
    ["permessage-deflate; mystery", {}, /unknown parameter/],
    [
      "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
      {},
      /duplicate/,
    ],
    ["permessage-deflate; client_max_window_bits", {}, /8 to 15/],
    ["permessage-deflate; server_max_window_bits=20", {}, /8 to 15/],
    ["permessage-deflate; a b", {}, /malformed/],
    ["permessage-deflate", { serverNoContextTakeover: true }, /did not accept/],
    ["permessage-deflate", { serverMaxWindowBits: 10 }, /did not accept/],
    [
      "permessage-deflate; server_max_window_bits=11",
      { serverMaxWindowBits: 10 },
      /over the 10 offered/,
    ],
    [
      "permessage-deflate; client_max_window_bits=11",
      { clientMaxWindowBits: 10 },
      /over the 10 offered/,
    ],
  ];
  for (const [response, overrides, message] of cases) {
    const result = acceptDeflate(response, config(overrides));
    assert.equal(typeof result, "string", response);
    assert.match(result as string, message, response);
  }
});

// -- Options --

Deno.test("compressionConfig() applies defaults and names a bad field", () => {
  assert.equal(compressionConfig(undefined), null);
  assert.equal(compressionConfig(false), null);
  assert.deepEqual(compressionConfig(true), {
    threshold: 1024,
    level: 1,
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: undefined,
    clientMaxWindowBits: undefined,
  });
  assert.equal(compressionConfig({ threshold: 0, level: 9 })?.level, 9);
  const cases: [unknown, RegExp][] = [
    ["yes", /compression: expected a boolean or an object/],
    [null, /compression: expected a boolean or an object/],
    [{ threshold: -1 }, /compression\.threshold/],
    [{ level: 10 }, /compression\.level/],
    [{ level: 1.5 }, /compression\.level/],
    [{ serverNoContextTakeover: 1 }, /compression\.serverNoContextTakeover/],
    [{ serverMaxWindowBits: 7 }, /compression\.serverMaxWindowBits/],
    [{ clientMaxWindowBits: 16 }, /compression\.clientMaxWindowBits/],
  ];
  for (const [value, message] of cases) {
    assert.throws(() => compressionConfig(value), TypeError);
    assert.throws(() => compressionConfig(value), message);
  }
});

// -- 7.2 The codec --

Deno.test("PerMessageDeflate removes the flush tail and keeps context between messages", () => {
  using pair = codecs("permessage-deflate");
  const text = utf8(jsonText(200));
  const first = pair.server.compress(text)!;
  assert.notDeepEqual([...first.subarray(-4)], [...TAIL]);
  // The first message needs no context: any fresh inflater reads it.
  assert.deepEqual(inflateMessage(first), text);
  const second = pair.server.compress(text)!;
  // The same message again refers to the first: far smaller.
  assert.ok(
    second.length * 5 < first.length,
    `${second.length} vs ${first.length}`,
  );
  assert.deepEqual(inflateAll(pair.client, [first]), text);
  assert.deepEqual(inflateAll(pair.client, [second]), text);
  // And the other way.
  const back = pair.client.compress(text)!;
  assert.deepEqual(inflateAll(pair.server, [back]), text);
});

Deno.test("PerMessageDeflate without context takeover compresses each message on its own", () => {
  using pair = codecs(
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
  );
  const text = utf8(jsonText(100));
  const first = pair.server.compress(text)!;
  const second = pair.server.compress(text)!;
  assert.deepEqual(second, first);
  assert.deepEqual(inflateMessage(second), text);
  // Sent uncompressed when compressing does not help.
  assert.equal(pair.server.compress(noise(2000)), null);
  // The inflater forgets between messages: two context-free messages.
  const peer = deflateMessage(text);
  assert.deepEqual(inflateAll(pair.server, [peer]), text);
  assert.deepEqual(inflateAll(pair.server, [peer]), text);
});

Deno.test("PerMessageDeflate with context takeover still compresses data that does not shrink", () => {
  using pair = codecs("permessage-deflate");
  const bytes = noise(5000);
  const compressed = pair.server.compress(bytes)!;
  assert.ok(compressed.length >= bytes.length);
  assert.deepEqual(inflateAll(pair.client, [compressed]), bytes);
});

Deno.test("PerMessageDeflate sends an empty message as 0x00 and reads it with or without that byte", () => {
  using pair = codecs("permessage-deflate");
  const empty = pair.server.compress(new Uint8Array(0))!;
  assert.deepEqual([...empty], [0x00]);
  assert.deepEqual(inflateAll(pair.client, [empty]), new Uint8Array(0));
  assert.deepEqual(
    inflateAll(pair.client, [new Uint8Array(0)]),
    new Uint8Array(0),
  );
  assert.deepEqual(
    inflateAll(pair.client, [new Uint8Array(0), new Uint8Array(0)]),
    new Uint8Array(0),
  );
  // The context is intact afterwards.
  const text = utf8("after the empty ones ".repeat(60));
  assert.deepEqual(
    inflateAll(pair.client, [pair.server.compress(text)!]),
    text,
  );
});

Deno.test("PerMessageDeflate inflates a message split into frames at every byte position", () => {
  const text = utf8(jsonText(20));
  const compressed = deflateMessage(text);
  for (let cut = 0; cut <= compressed.length; cut++) {
    using pair = codecs("permessage-deflate");
    assert.deepEqual(
      inflateAll(pair.client, [
        compressed.subarray(0, cut),
        compressed.subarray(cut),
      ]),
      text,
      `cut at ${cut}`,
    );
  }
  using pair = codecs("permessage-deflate");
  const bytes = [...compressed].map((b) => new Uint8Array([b]));
  assert.deepEqual(inflateAll(pair.client, bytes), text);
});

Deno.test("PerMessageDeflate stops inflating one byte past maxMessageSize with 1009", () => {
  // ~1 KiB that inflates to ~1 MiB of zeros.
  const bomb = deflateMessage(new Uint8Array(1024 * 1024), 9);
  assert.ok(bomb.length < 1100, `${bomb.length}`);
  using pair = codecs("permessage-deflate", { maxMessageSize: 64 * 1024 });
  let inflated = 0;
  assertFrameError(
    () =>
      pair.client.inflate(bomb, true, (chunk) => {
        inflated += chunk.length;
        return true;
      }),
    1009,
  );
  // What reached the application: at most the limit.
  assert.ok(inflated <= 64 * 1024, `${inflated}`);
});

Deno.test("PerMessageDeflate fails corrupt data with 1007", () => {
  using pair = codecs("permessage-deflate");
  assertFrameError(
    () =>
      pair.client.inflate(new Uint8Array([0xff, 0xff, 0xff]), true, () => true),
    1007,
  );
});

Deno.test("PerMessageDeflate reads messages that end the deflate stream with a final block", () => {
  // RFC 7692 7.2.3.4: a sender may use BFINAL; the next message starts a
  // new stream.
  using pair = codecs("permessage-deflate");
  for (const text of ["first final block", "second final block", ""]) {
    const final = new Uint8Array(zlib.deflateRawSync(utf8(text)));
    assert.equal(decoder.decode(inflateAll(pair.client, [final])), text);
  }
  const tail = pair.server.compress(utf8("and a normal one"))!;
  assert.equal(
    decoder.decode(inflateAll(pair.client, [tail])),
    "and a normal one",
  );
  // A new stream may follow the final block inside a message (the RFC's
  // example does, with an empty stored block), but only one: a second
  // final block in one message is refused.
  const final = new Uint8Array(zlib.deflateRawSync(utf8("x")));
  assert.equal(
    decoder.decode(
      inflateAll(pair.client, [concat(final, deflateMessage("y"))]),
    ),
    "xy",
  );
  assertFrameError(
    () =>
      pair.client.inflate(
        concat(final, new Uint8Array(zlib.deflateRawSync(utf8("y")))),
        true,
        () => true,
      ),
    1007,
  );
});

// Hardening II: the payload of RFC 7692 7.2.3.4, "Hello" in a block with
// BFINAL set, then a 0x00 that opens an empty stored block which the
// receiver's 0x00 0x00 0xff 0xff completes. It was refused with 1007
// ("data after the final block").
const RFC_FINAL_HELLO = new Uint8Array([
  0xf3,
  0x48,
  0xcd,
  0xc9,
  0xc9,
  0x07,
  0x00,
  0x00,
]);
// RFC 7692 7.2.3.2: "Hello" again, as a back-reference into the window
// (distance 5, length 5): only right with the first message's window.
const RFC_HELLO_AGAIN = new Uint8Array([0xf2, 0x00, 0x11, 0x00, 0x00]);
// RFC 7692 7.2.3.1: "Hello" on its own.
const RFC_HELLO = new Uint8Array([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);

Deno.test("PerMessageDeflate reads RFC 7692 7.2.3.4's final-block message, and keeps its window for the next message", () => {
  using pair = codecs("permessage-deflate");
  for (let i = 0; i < 3; i++) {
    assert.equal(
      decoder.decode(inflateAll(pair.client, [RFC_FINAL_HELLO])),
      "Hello",
    );
    assert.equal(
      decoder.decode(inflateAll(pair.client, [RFC_HELLO_AGAIN])),
      "Hello",
    );
  }
  // Split at every byte, as frames or reads of a frame.
  for (let cut = 1; cut < RFC_FINAL_HELLO.length; cut++) {
    const frames = [
      RFC_FINAL_HELLO.subarray(0, cut),
      RFC_FINAL_HELLO.subarray(cut),
    ];
    assert.equal(decoder.decode(inflateAll(pair.client, frames)), "Hello");
    assert.equal(
      decoder.decode(inflateAll(pair.client, [RFC_HELLO_AGAIN])),
      "Hello",
    );
  }
});

Deno.test("PerMessageDeflate keeps a window longer than one message across final blocks", () => {
  // Our compressor with context takeover refers back into earlier
  // messages; each message is then ended with BFINAL: the empty stored
  // block completed (0x00 0x00 0xff 0xff) and an empty final fixed block
  // (0x03 0x00). With a 1 KiB window, the kept window wraps many times.
  using pair = codecs(
    "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10",
  );
  const ending = new Uint8Array([0x00, 0x00, 0xff, 0xff, 0x03, 0x00]);
  for (let i = 0; i < 60; i++) {
    const text = `message ${i % 9}: ${"abcdefghij".repeat(i % 7)} ${
      jsonText(i % 5)
    }`;
    const payload = concat(pair.server.compress(utf8(text))!, ending);
    assert.equal(decoder.decode(inflateAll(pair.client, [payload])), text);
  }
});

Deno.test("PerMessageDeflate without context takeover reads final-block messages", () => {
  using pair = codecs("permessage-deflate; server_no_context_takeover");
  for (let i = 0; i < 3; i++) {
    assert.equal(
      decoder.decode(inflateAll(pair.client, [RFC_FINAL_HELLO])),
      "Hello",
    );
    assert.equal(decoder.decode(inflateAll(pair.client, [RFC_HELLO])), "Hello");
  }
});

Deno.test("PerMessageDeflate compresses with a 9-bit window when 8 bits were agreed", () => {
  using pair = codecs(
    "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
  );
  const text = utf8(jsonText(50));
  const compressed = pair.server.compress(text)!;
  assert.ok(compressed.length < text.length / 2);
  assert.deepEqual(inflateAll(pair.client, [compressed]), text);
  assert.deepEqual(
    inflateAll(pair.server, [pair.client.compress(text)!]),
    text,
  );
});

// -- Over sockets: our client and our server --

/** An echo server with compression, closed by `await using`. */
function echoServer(options: Partial<ListenOptions> = {}) {
  return serve(async (sock) => {
    for await (const msg of sock) {
      if (msg.type === "text" || msg.type === "binary") {
        await sock.write(msg.data, msg.type);
      }
    }
  }, { compression: true, ...options });
}

async function roundTrip(
  sock: Socket,
  data: string | Uint8Array,
): Promise<void> {
  const type = typeof data === "string" ? "text" : "binary";
  await within(sock.write(data, type), "write()");
  const reply = await within(sock.read(), "the echo");
  assert.equal(reply?.type, type);
  assert.deepEqual((reply as { data: unknown }).data, data);
}

const VARIANTS: [
  string,
  Partial<ListenOptions>["compression"],
  ConnectOptions["compression"],
  string,
][] = [
  ["defaults", true, true, "permessage-deflate"],
  [
    "server without context takeover",
    { serverNoContextTakeover: true, threshold: 0 },
    { threshold: 0 },
    "permessage-deflate; server_no_context_takeover",
  ],
  [
    "client without context takeover, asked by the client",
    { threshold: 0 },
    { clientNoContextTakeover: true, threshold: 0 },
    "permessage-deflate; client_no_context_takeover",
  ],
  [
    "windows limited by the client",
    { threshold: 10 },
    { serverMaxWindowBits: 9, clientMaxWindowBits: 10, threshold: 10 },
    "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
  ],
  [
    "windows limited by the server, 8 bits",
    { serverMaxWindowBits: 12, clientMaxWindowBits: 8, level: 9 },
    { serverMaxWindowBits: 8 },
    "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
  ],
];

for (const [name, serverOptions, clientOptions, extensions] of VARIANTS) {
  Deno.test(`compressed messages of every kind round-trip between our client and server: ${name}`, async () => {
    let serverExtensions = "";
    await using server = serve(async (sock) => {
      serverExtensions = sock.extensions;
      for await (const msg of sock) {
        if (msg.type === "text" || msg.type === "binary") {
          await sock.write(msg.data, msg.type);
        }
      }
    }, { compression: serverOptions, fragmentSize: 4000 });
    const sock = await within(
      connect(urlOf(server), {
        compression: clientOptions,
        fragmentSize: 3000,
      }),
    );
    assert.equal(sock.extensions, extensions);
    assert.equal(serverExtensions, extensions);
    const messages: (string | Uint8Array)[] = [
      "short",
      "",
      new Uint8Array(0),
      jsonText(100, 1),
      jsonText(100, 1), // again: context takeover refers back
      utf8(jsonText(100, 2)),
      noise(10_000, 3), // does not compress; several fragments
      jsonText(3000, 4), // ~200 KB: many fragments compressed and not
      "ab世界🦕".repeat(2000),
      noise(70_000, 5),
    ];
    for (const data of messages) await roundTrip(sock, data);
    await within(sock.close());
  });
}

Deno.test("a server without compression ignores the offer; a client without it is answered without", async () => {
  await using plain = serve(() => {}, {});
  const offered = await within(connect(urlOf(plain), { compression: true }));
  assert.equal(offered.extensions, "");
  assert.equal(offered.response?.headers.get("sec-websocket-extensions"), null);
  await within(offered.close());

  await using compressing = echoServer();
  const sock = await within(connect(urlOf(compressing)));
  assert.equal(sock.extensions, "");
  await roundTrip(sock, jsonText(100));
  await within(sock.close());
});

Deno.test("Deno's built-in WebSocket, which cannot compress, talks to a compressing server", async () => {
  await using server = echoServer({ compression: { threshold: 0 } });
  const ws = new WebSocket(urlOf(server));
  const opened = Promise.withResolvers<void>();
  const reply = Promise.withResolvers<string>();
  const closed = Promise.withResolvers<void>();
  ws.onopen = () => opened.resolve();
  ws.onerror = () => opened.reject(new Error("built-in WebSocket failed"));
  ws.onmessage = (event) => reply.resolve(event.data);
  ws.onclose = () => closed.resolve();
  await within(opened.promise, "the built-in WebSocket to open");
  assert.equal(ws.extensions, "");
  const text = jsonText(100);
  ws.send(text);
  assert.equal(await within(reply.promise, "the echo"), text);
  ws.close();
  await within(closed.promise, "the built-in WebSocket to close");
});

// -- Over sockets: a raw client against our server --

/** A raw client that completed an upgrade offering `offer`; returns it and the 101 head. */
async function rawClient(
  port: number,
  offer = "permessage-deflate; client_max_window_bits",
): Promise<{ peer: RawPeer; head: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const peer = new RawPeer(conn);
  await peer.send(
    upgradeRequest(port, `Sec-WebSocket-Extensions: ${offer}\r\n`),
  );
  const head = await within(peer.readHead(), "the 101");
  assert.match(head, /^HTTP\/1\.1 101 /);
  return { peer, head };
}

Deno.test("our server inflates fragmented compressed messages with pings between the fragments, in order", async () => {
  await using server = recordingServer({ compression: true });
  const { received, done } = server;
  const { peer } = await rawClient(server.addr.port);
  await using __ = peer;
  const text = jsonText(50);
  const compressed = deflateMessage(text);
  const third = Math.floor(compressed.length / 3);
  await peer.send(concat(
    clientFrame(0x1, compressed.subarray(0, third), { fin: false, rsv1: true }),
    clientFrame(0x9, "ping 1"),
    clientFrame(0x0, compressed.subarray(third, 2 * third), { fin: false }),
    clientFrame(0x9, "ping 2"),
    clientFrame(0x0, compressed.subarray(2 * third), { fin: true }),
    // An uncompressed message and an empty compressed one after it.
    clientFrame(0x2, new Uint8Array([1, 2, 3])),
    clientFrame(0x2, new Uint8Array([0x00]), { rsv1: true }),
    clientFrame(0x1, new Uint8Array(0), { rsv1: true }),
    clientFrame(0x8, closePayload(1000)),
  ));
  await within(done, "the handler to read everything");
  assert.deepEqual(received, [
    { type: "ping", data: utf8("ping 1") },
    { type: "ping", data: utf8("ping 2") },
    { type: "text", data: text },
    { type: "binary", data: new Uint8Array([1, 2, 3]) },
    { type: "binary", data: new Uint8Array(0) },
    { type: "text", data: "" },
    { type: "close", code: 1000, reason: "" },
  ]);
});

Deno.test("our server sets RSV1 on the first frame of a compressed message only, and not under the threshold", async () => {
  const big = utf8(jsonText(3000));
  await using server = serve(async (sock) => {
    await sock.write(big, "binary");
    await sock.write("tiny", "text");
    await sock.write("x".repeat(2000), "text");
    await sock.read();
  }, { compression: true, fragmentSize: 1000 });
  const { peer, head } = await rawClient(server.addr.port);
  await using _ = peer;
  assert.match(head, /\r\nSec-WebSocket-Extensions: permessage-deflate\r\n/i);
  const frames = [];
  for (;;) {
    const frame = await within(peer.readFrame(), "a frame");
    assert.ok(frame !== null);
    frames.push(frame);
    if (frame.opcode === 0x1 && frame.fin && frame.rsv === 4) break;
  }
  const first = frames[0];
  assert.equal(first.opcode, 0x2);
  assert.equal(first.rsv, 4);
  const bigFrames = frames.slice(0, frames.findIndex((f) => f.fin) + 1);
  assert.ok(bigFrames.length > 1, "the compressed message is fragmented");
  for (const frame of bigFrames.slice(1)) {
    assert.equal(frame.opcode, 0x0);
    assert.equal(frame.rsv, 0);
  }
  assert.deepEqual(
    inflateMessage(concat(...bigFrames.map((f) => f.payload))),
    big,
  );
  const tiny = frames[bigFrames.length];
  assert.deepEqual([tiny.rsv, decoder.decode(tiny.payload)], [0, "tiny"]);
  await peer.send(clientFrame(0x8, closePayload(1000)));
});

Deno.test("our server fails RSV1 on a control or continuation frame, and without negotiation, with 1002", async () => {
  const cases: [string, Uint8Array, boolean][] = [
    ["RSV1 on a ping", clientFrame(0x9, "x", { rsv1: true }), true],
    [
      "RSV1 on a continuation",
      concat(
        clientFrame(0x1, deflateMessage("a"), { fin: false, rsv1: true }),
        clientFrame(0x0, new Uint8Array([0x00]), { rsv1: true }),
      ),
      true,
    ],
    [
      "RSV1 without negotiation",
      clientFrame(0x1, deflateMessage("hello"), { rsv1: true }),
      false,
    ],
  ];
  for (const [what, bytes, negotiated] of cases) {
    await using server = serve(async (sock) => {
      for await (const _ of sock) { /* drain */ }
    }, { compression: negotiated });
    const { peer } = await rawClient(
      server.addr.port,
      negotiated ? "permessage-deflate" : "x-nothing",
    );
    await using _ = peer;
    await peer.send(bytes);
    const close = await within(peer.readClose(), what);
    assert.equal(close?.code, 1002, `${what}: ${close?.reason}`);
  }
});

Deno.test("our server fails a message that inflates past maxMessageSize with 1009, early", async () => {
  // 1 GiB of zeros in about 1 MiB: the first MiB deflated, then the same
  // sync-flushed block for each further MiB (it refers only to zeros).
  const megabyte = new Uint8Array(1024 * 1024);
  const deflate = zlib.createDeflateRaw({ level: 9 });
  const flushOnce = () =>
    new Promise<Uint8Array>((resolve) => {
      const chunks: Uint8Array[] = [];
      const onData = (c: Uint8Array) => chunks.push(c);
      deflate.on("data", onData);
      deflate.write(megabyte);
      deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        deflate.off("data", onData);
        resolve(concat(...chunks));
      });
    });
  const first = await flushOnce();
  const next = await flushOnce();
  deflate.close();
  const parts = [first];
  for (let i = 1; i < 1024; i++) parts.push(next);
  const bomb = concat(...parts);
  assert.ok(bomb.length < 1.1 * 1024 * 1024, `${bomb.length}`);

  await using server = recordingServer({ compression: true });
  const { received, done } = server;
  const { peer } = await rawClient(server.addr.port);
  await using __ = peer;
  const started = performance.now();
  const sending = peer.send(clientFrame(0x2, bomb, { rsv1: true })).catch(
    () => {},
  );
  const close = await within(peer.readClose(), "the 1009");
  const elapsed = performance.now() - started;
  assert.equal(close?.code, 1009, close?.reason);
  await within(done, "the handler to end");
  assert.equal(received.at(-1)?.type, "close");
  assert.equal((received.at(-1) as { code: number }).code, 1009);
  // 16 MiB inflated at most, not 1 GiB.
  assert.ok(elapsed < 3000, `took ${elapsed} ms`);
  peer.close();
  await sending;
});

Deno.test("our server fails corrupt compressed data with 1007, and invalid UTF-8 inside it too", async () => {
  const cases: [string, Uint8Array][] = [
    [
      "corrupt",
      clientFrame(0x2, new Uint8Array([0xff, 0xff, 0xff]), { rsv1: true }),
    ],
    [
      "invalid UTF-8",
      clientFrame(0x1, deflateMessage(new Uint8Array([0x61, 0xff])), {
        rsv1: true,
      }),
    ],
  ];
  for (const [what, bytes] of cases) {
    await using server = serve(async (sock) => {
      for await (const _ of sock) { /* drain */ }
    }, { compression: true });
    const { peer } = await rawClient(server.addr.port);
    await using _ = peer;
    await peer.send(bytes);
    const close = await within(peer.readClose(), what);
    assert.equal(close?.code, 1007, `${what}: ${close?.reason}`);
  }
});

Deno.test("our server declines an invalid offer and accepts the next one", async () => {
  await using server = echoServer();
  for (
    const [offer, expected] of [
      ["permessage-deflate; server_max_window_bits=16", null],
      [
        "permessage-deflate; client_max_window_bits; client_max_window_bits",
        null,
      ],
      [
        "permessage-deflate; mystery, permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover",
      ],
    ] as const
  ) {
    const { peer, head } = await rawClient(server.addr.port, offer);
    await using _ = peer;
    const value = /\r\nSec-WebSocket-Extensions: ([^\r]*)\r\n/i.exec(head)?.[1];
    assert.equal(value ?? null, expected, offer);
    await peer.send(clientFrame(0x8, closePayload(1000)));
    await within(peer.readClose(), "the close");
  }
});

Deno.test("our server reads RFC 7692 7.2.3.4's final-block message and the message after it, with and without client context takeover", async () => {
  // Hardening II: this was refused with 1007 ("data after the final block").
  for (const takeover of [true, false]) {
    await using server = recordingServer({ compression: true });
    const { received, done } = server;
    const { peer, head } = await rawClient(
      server.addr.port,
      takeover
        ? "permessage-deflate"
        : "permessage-deflate; client_no_context_takeover",
    );
    await using __ = peer;
    assert.equal(/client_no_context_takeover/.test(head), !takeover);
    const next = takeover ? RFC_HELLO_AGAIN : RFC_HELLO;
    await peer.send(concat(
      clientFrame(0x1, RFC_FINAL_HELLO, { rsv1: true }),
      clientFrame(0x1, next, { rsv1: true }),
      clientFrame(0x1, RFC_FINAL_HELLO, { rsv1: true }),
      clientFrame(0x1, next, { rsv1: true }),
      clientFrame(0x8, closePayload(1000)),
    ));
    await within(done, "the handler");
    assert.deepEqual(received, [
      { type: "text", data: "Hello" },
      { type: "text", data: "Hello" },
      { type: "text", data: "Hello" },
      { type: "text", data: "Hello" },
      { type: "close", code: 1000, reason: "" },
    ]);
  }
});

// -- Over sockets: our client against a raw server --

Deno.test("our client offers permessage-deflate and inflates what the server compressed", async () => {
  await using raw = new RawServer();
  const { sock, peer, request } = await connectToRaw(
    raw,
    { compression: true },
    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
  );
  assert.match(
    request,
    /\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n/i,
  );
  assert.equal(
    sock.extensions,
    "permessage-deflate; server_no_context_takeover",
  );
  const text = jsonText(30);
  await peer.send(concat(
    serverFrame(0x1, deflateMessage(text), { rsv1: true }),
    serverFrame(0x2, deflateMessage(new Uint8Array([9, 9, 9])), { rsv1: true }),
  ));
  assert.deepEqual(await within(sock.read()), { type: "text", data: text });
  assert.deepEqual(await within(sock.read()), {
    type: "binary",
    data: new Uint8Array([9, 9, 9]),
  });
  // What our client compresses, a fresh inflater reads (the first message).
  const sent = sock.write(jsonText(40), "text");
  const frame = await within(peer.readFrame(), "the client's frame");
  await sent;
  assert.equal(frame?.rsv, 4);
  assert.equal(decoder.decode(inflateMessage(frame!.payload)), jsonText(40));
  await peer.send(serverFrame(0x8, closePayload(1000)));
  assert.deepEqual(await within(sock.closed), {
    code: 1000,
    reason: "",
    wasClean: true,
  });
});

Deno.test("our client reads RFC 7692 7.2.3.4's final-block message and the message after it, with and without server context takeover", async () => {
  // Hardening II: this was refused with 1007 ("data after the final block").
  for (const takeover of [true, false]) {
    await using raw = new RawServer();
    const { sock, peer } = await connectToRaw(
      raw,
      { compression: true },
      `Sec-WebSocket-Extensions: permessage-deflate${
        takeover ? "" : "; server_no_context_takeover"
      }\r\n`,
    );
    const next = takeover ? RFC_HELLO_AGAIN : RFC_HELLO;
    await peer.send(concat(
      serverFrame(0x1, RFC_FINAL_HELLO, { rsv1: true }),
      serverFrame(0x1, next, { rsv1: true }),
      serverFrame(0x2, RFC_FINAL_HELLO, { rsv1: true }),
      serverFrame(0x1, next, { rsv1: true }),
    ));
    for (const type of ["text", "text", "binary", "text"] as const) {
      const message = await within(sock.read());
      assert.equal(message?.type, type);
      const data = (message as { data: string | Uint8Array }).data;
      assert.equal(
        typeof data === "string" ? data : decoder.decode(data),
        "Hello",
      );
    }
    await peer.send(serverFrame(0x8, closePayload(1000)));
    assert.equal((await within(sock.closed)).code, 1000);
  }
});

Deno.test("our client fails the handshake with BAD_HANDSHAKE on a response outside its offer", async () => {
  const cases: [ConnectOptions["compression"], string][] = [
    [true, "x-foo"],
    [true, "permessage-deflate, permessage-deflate"],
    [true, "permessage-deflate; mystery"],
    [true, "permessage-deflate; client_max_window_bits"],
    [
      true,
      "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    ],
    [{ serverNoContextTakeover: true }, "permessage-deflate"],
    [
      { serverMaxWindowBits: 10 },
      "permessage-deflate; server_max_window_bits=12",
    ],
    [
      { clientMaxWindowBits: 10 },
      "permessage-deflate; client_max_window_bits=11",
    ],
    [false, "permessage-deflate"],
  ];
  for (const [compression, response] of cases) {
    await using raw: RawServer = new RawServer();
    const accepted = raw.accept();
    const connecting = connect(raw.url(), { compression }).catch((e) => e);
    const peer = await within(accepted, "the raw server to accept");
    await peer.acceptUpgrade(`Sec-WebSocket-Extensions: ${response}\r\n`);
    const error = await within(connecting, "connect() to fail");
    assert.ok(error instanceof WebSocketError, `${response}: ${error}`);
    assert.equal(error.code, "BAD_HANDSHAKE", response);
  }
});

Deno.test("connect() and listen() reject an invalid compression option with a TypeError", async () => {
  await assert.rejects(
    connect("ws://127.0.0.1:1", { compression: { level: 12 } }),
    TypeError,
  );
  assert.throws(
    () => serve(() => {}, { compression: { threshold: -5 } }),
    /compression\.threshold/,
  );
});

// -- accept() and publish --

Deno.test("accept() negotiates compression on a connection you accepted", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const sock = await accept(await listener.accept(), { compression: true });
    assert.equal(sock?.extensions, "permessage-deflate");
    const msg = await sock?.read();
    if (msg?.type === "text") await sock?.write(msg.data, "text");
    await sock?.close();
  })();
  const sock = await within(
    connect(`ws://127.0.0.1:${listener.addr.port}`, { compression: true }),
  );
  assert.equal(sock.extensions, "permessage-deflate");
  await roundTrip(sock, jsonText(100));
  await within(sock.closed);
  await within(served, "the accepted socket to finish");
  listener.close();
});

Deno.test("published messages go uncompressed between compressed writes, and the context survives them", async () => {
  await using server = serve(async (sock) => {
    sock.subscribe("news");
    for await (const msg of sock) {
      if (msg.type !== "text") continue;
      if (msg.data.startsWith("publish:")) {
        server.publish("news", msg.data.slice(8), "text");
      } else await sock.write(msg.data, "text");
    }
  }, { compression: { threshold: 0 } });
  const sock = await within(
    connect(urlOf(server), { compression: { threshold: 0 } }),
  );
  while (server.subscriberCount("news") === 0) {
    await within(sleep(5));
  }
  for (let i = 0; i < 5; i++) {
    await roundTrip(sock, jsonText(50, i));
    const news = jsonText(40, i + 10);
    await within(sock.write(`publish:${news}`, "text"));
    assert.deepEqual(await within(sock.read()), { type: "text", data: news });
  }
  await within(sock.close());
});

// node:zlib costs a process about 5.7 MiB of RSS when it is loaded; it was
// imported with the library, though compression is off unless asked for.
Deno.test("node:zlib is loaded only once a connection compresses", async () => {
  const { code, stdout, stderr } = await runFixture(
    "zlib_lazy.ts",
    "--expose-gc",
    [],
  );
  assert.equal(code, 0, stderr);
  const phases = [...stdout.matchAll(/^BUILTINS (.*)$/gm)].map((m) =>
    JSON.parse(m[1]) as string[]
  );
  assert.equal(phases.length, 2, stdout);
  assert.ok(!phases[0].includes("node:zlib"), JSON.stringify(phases[0]));
  assert.ok(phases[1].includes("node:zlib"), JSON.stringify(phases[1]));
});

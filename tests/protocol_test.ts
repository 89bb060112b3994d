/**
 * The protocol state machine with no sockets: bytes in, messages and
 * frames out. Every behaviour is checked on both sides: a server receives
 * masked frames, a client unmasked ones, and each answers the same way.
 */

import assert from "node:assert/strict";
import {
  type Message,
  Protocol,
  type ProtocolOptions,
  State,
} from "../src/protocol.ts";
import {
  encodeFrame,
  OPCODE_BINARY,
  OPCODE_CLOSE,
  OPCODE_CONTINUATION,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
} from "../src/frame.ts";
import { acceptDeflate } from "../src/deflate.ts";
import { compressionConfig, PerMessageDeflate } from "../src/deflate_codec.ts";
import { closePayload, concat, TEST_KEY, utf8 } from "./_helpers.ts";

type Side = "server" | "client";
const SIDES: Side[] = ["server", "client"];

/** A frame as the peer of `side` sends it: masked when the peer is a client. */
function fromPeer(
  side: Side,
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(0),
  options: { fin?: boolean; rsv1?: boolean } = {},
): Uint8Array {
  const bytes = typeof payload === "string" ? utf8(payload) : payload;
  return encodeFrame(opcode, bytes, {
    ...options,
    maskingKey: side === "server" ? TEST_KEY : undefined,
  });
}

/** A frame with the wrong masking for `side`. */
function misMasked(side: Side, opcode: number, payload: string): Uint8Array {
  return encodeFrame(opcode, utf8(payload), {
    maskingKey: side === "server" ? undefined : TEST_KEY,
  });
}

interface Sent {
  opcode: number;
  payload: Uint8Array;
}

/** A protocol with everything it decides recorded. */
class Endpoint {
  readonly protocol: Protocol;
  readonly delivered: Message[] = [];
  readonly sizes: number[] = [];
  readonly sent: Sent[] = [];
  /** `closeTransport` calls: `true` failed, `false` clean. */
  readonly transport: boolean[] = [];

  constructor(side: Side, options: Partial<ProtocolOptions> = {}) {
    this.protocol = new Protocol({
      deliver: (message, size) => {
        this.delivered.push(message);
        this.sizes.push(size);
      },
      // The payload may be a view the protocol reuses: keep a copy.
      sendControl: (opcode, payload) =>
        this.sent.push({ opcode, payload: payload.slice() }),
      closeTransport: (failed) => this.transport.push(failed),
    }, {
      client: side === "client",
      maxMessageSize: 1024 * 1024,
      maxFrameSize: 1024 * 1024,
      ...options,
    });
  }

  receive(...chunks: Uint8Array[]): this {
    for (const chunk of chunks) this.protocol.receive(chunk);
    return this;
  }

  /** The one close message and close frame of a failed connection. */
  assertFailed(code: number, message?: RegExp): void {
    const p = this.protocol;
    assert.equal(p.state, State.CLOSED);
    assert.equal(p.closeCode, code);
    assert.equal(p.wasClean, false);
    const close = this.delivered.at(-1);
    assert.equal(close?.type, "close");
    assert.equal(close.type === "close" && close.code, code);
    if (message !== undefined) assert.match(p.closeReason, message);
    const frames = this.sent.filter((s) => s.opcode === OPCODE_CLOSE);
    assert.equal(frames.length, 1, "one close frame sent");
    assert.equal((frames[0].payload[0] << 8) | frames[0].payload[1], code);
    assert.deepEqual(this.transport, [true]);
  }
}

function bothSides(
  name: string,
  fn: (side: Side) => void | Promise<void>,
): void {
  for (const side of SIDES) Deno.test(`${side}: ${name}`, () => fn(side));
}

// -- Lifecycle --

bothSides("starts OPEN, with 1006 until something ends it", (side) => {
  const { protocol } = new Endpoint(side);
  assert.equal(protocol.state, State.OPEN);
  assert.equal(protocol.open, true);
  assert.equal(protocol.closeSent, false);
  assert.equal(protocol.closeReceived, false);
  assert.equal(protocol.closeCode, 1006);
  assert.equal(protocol.wasClean, false);
});

// -- Data messages --

bothSides("a text frame is delivered as one text message", (side) => {
  const end = new Endpoint(side).receive(fromPeer(side, OPCODE_TEXT, "héllo"));
  assert.deepEqual(end.delivered, [{ type: "text", data: "héllo" }]);
  assert.deepEqual(end.sizes, [6]);
  assert.deepEqual(end.sent, []);
});

bothSides(
  "a binary message owns its bytes: reusing the read buffer changes nothing",
  (side) => {
    const chunk = fromPeer(side, OPCODE_BINARY, new Uint8Array([1, 2, 3]));
    const end = new Endpoint(side).receive(chunk);
    chunk.fill(0xee);
    assert.deepEqual(end.delivered, [{
      type: "binary",
      data: new Uint8Array([1, 2, 3]),
    }]);
  },
);

bothSides("frames arriving a byte at a time give the same messages", (side) => {
  const wire = concat(
    fromPeer(side, OPCODE_TEXT, "one"),
    fromPeer(side, OPCODE_BINARY, new Uint8Array(300).fill(7)),
    fromPeer(side, OPCODE_PING, "p"),
    fromPeer(side, OPCODE_TEXT, "two"),
  );
  const end = new Endpoint(side);
  for (let i = 0; i < wire.length; i++) end.receive(wire.subarray(i, i + 1));
  assert.deepEqual(end.delivered.map((m) => m.type), [
    "text",
    "binary",
    "ping",
    "text",
  ]);
  assert.deepEqual(end.delivered[1], {
    type: "binary",
    data: new Uint8Array(300).fill(7),
  });
  assert.deepEqual(end.delivered[3], { type: "text", data: "two" });
});

bothSides(
  "a fragmented text message arrives whole, a character split across frames decoded once",
  (side) => {
    const bytes = utf8("a€b"); // "€" is e2 82 ac
    const end = new Endpoint(side).receive(
      fromPeer(side, OPCODE_TEXT, bytes.subarray(0, 2), { fin: false }),
      fromPeer(side, OPCODE_CONTINUATION, bytes.subarray(2, 3), { fin: false }),
      fromPeer(side, OPCODE_CONTINUATION, bytes.subarray(3)),
    );
    assert.deepEqual(end.delivered, [{ type: "text", data: "a€b" }]);
    assert.deepEqual(end.sizes, [5]);
  },
);

bothSides("a fragmented binary message arrives whole", (side) => {
  const end = new Endpoint(side).receive(
    fromPeer(side, OPCODE_BINARY, new Uint8Array([1, 2]), { fin: false }),
    fromPeer(side, OPCODE_CONTINUATION, new Uint8Array([]), { fin: false }),
    fromPeer(side, OPCODE_CONTINUATION, new Uint8Array([3])),
  );
  assert.deepEqual(end.delivered, [{
    type: "binary",
    data: new Uint8Array([1, 2, 3]),
  }]);
});

bothSides(
  "a ping between fragments is answered and delivered before the message",
  (side) => {
    const end = new Endpoint(side).receive(
      fromPeer(side, OPCODE_TEXT, "ab", { fin: false }),
      fromPeer(side, OPCODE_PING, "mid"),
      fromPeer(side, OPCODE_CONTINUATION, "cd"),
    );
    assert.deepEqual(end.delivered, [
      { type: "ping", data: utf8("mid") },
      { type: "text", data: "abcd" },
    ]);
    assert.deepEqual(end.sent, [{ opcode: OPCODE_PONG, payload: utf8("mid") }]);
  },
);

bothSides(
  "a large frame read into directTarget() is the same message",
  (side) => {
    const payload = new Uint8Array(100_000).map((_, i) => i & 0xff);
    const wire = fromPeer(side, OPCODE_BINARY, payload);
    const end = new Endpoint(side).receive(wire.subarray(0, 1000));
    let at = 1000;
    let direct = 0;
    while (at < wire.length) {
      // Where the payload's buffer has room; else read and fed, as a
      // socket does.
      const target = end.protocol.directTarget(1);
      const n = Math.min(target?.length ?? 4096, wire.length - at, 4096);
      if (target === null) end.receive(wire.subarray(at, at + n));
      else {
        target.set(wire.subarray(at, at + n));
        end.protocol.advance(n);
        direct += n;
      }
      at += n;
    }
    assert.ok(direct > payload.length / 2, `${direct} bytes read directly`);
    assert.deepEqual(end.delivered, [{ type: "binary", data: payload }]);
  },
);

// -- Control frames --

bothSides("a ping is answered with a pong carrying the same data", (side) => {
  const end = new Endpoint(side).receive(fromPeer(side, OPCODE_PING, "abc"));
  assert.deepEqual(end.sent, [{ opcode: OPCODE_PONG, payload: utf8("abc") }]);
  assert.deepEqual(end.delivered, [{ type: "ping", data: utf8("abc") }]);
});

bothSides("a pong is delivered and answered with nothing", (side) => {
  const end = new Endpoint(side).receive(fromPeer(side, OPCODE_PONG, "x"));
  assert.deepEqual(end.delivered, [{ type: "pong", data: utf8("x") }]);
  assert.deepEqual(end.sent, []);
});

bothSides(
  "a ping after our close frame gets no pong (RFC 6455 5.5.2)",
  (side) => {
    const end = new Endpoint(side);
    end.protocol.close(1000, "");
    end.receive(fromPeer(side, OPCODE_PING, "late"));
    assert.deepEqual(end.sent.map((s) => s.opcode), [OPCODE_CLOSE]);
    assert.deepEqual(end.delivered, [{ type: "ping", data: utf8("late") }]);
  },
);

// -- The close handshake --

bothSides(
  "the peer's close is echoed, delivered, and ends the transport cleanly",
  (side) => {
    const end = new Endpoint(side).receive(
      fromPeer(side, OPCODE_CLOSE, closePayload(4001, "bye")),
    );
    const p = end.protocol;
    assert.equal(p.state, State.CLOSED);
    assert.equal(p.closeReceived, true);
    assert.deepEqual([p.closeCode, p.closeReason, p.wasClean], [
      4001,
      "bye",
      true,
    ]);
    assert.deepEqual(end.sent, [{
      opcode: OPCODE_CLOSE,
      payload: closePayload(4001),
    }]);
    assert.deepEqual(end.delivered, [{
      type: "close",
      code: 4001,
      reason: "bye",
    }]);
    assert.deepEqual(end.transport, [false]);
  },
);

bothSides(
  "an empty close frame means 1005 and is answered with an empty one",
  (side) => {
    const end = new Endpoint(side).receive(fromPeer(side, OPCODE_CLOSE));
    assert.equal(end.protocol.closeCode, 1005);
    assert.deepEqual(end.sent, [{
      opcode: OPCODE_CLOSE,
      payload: new Uint8Array(0),
    }]);
    assert.deepEqual(end.delivered, [{
      type: "close",
      code: 1005,
      reason: "",
    }]);
  },
);

bothSides(
  "close() sends one close frame, goes CLOSING, and the reply ends it cleanly",
  (side) => {
    const end = new Endpoint(side);
    const p = end.protocol;
    p.close(1000, "done");
    p.close(1001, "again");
    assert.equal(p.state, State.CLOSING);
    assert.equal(p.open, false);
    assert.equal(p.closeSent, true);
    assert.equal(p.closeReceived, false);
    assert.deepEqual(end.sent, [{
      opcode: OPCODE_CLOSE,
      payload: closePayload(1000, "done"),
    }]);
    assert.deepEqual(end.transport, []);
    end.receive(fromPeer(side, OPCODE_CLOSE, closePayload(1000)));
    assert.equal(p.state, State.CLOSED);
    assert.equal(p.wasClean, true);
    assert.equal(end.sent.length, 1, "the reply is not answered");
    assert.deepEqual(end.transport, [false]);
  },
);

bothSides("data still arriving while CLOSING is delivered", (side) => {
  const end = new Endpoint(side);
  end.protocol.close(1000, "");
  end.receive(fromPeer(side, OPCODE_TEXT, "in flight"));
  assert.deepEqual(end.delivered, [{ type: "text", data: "in flight" }]);
});

bothSides(
  "bytes after the close frame are ignored, in the same chunk or later",
  (side) => {
    const end = new Endpoint(side).receive(concat(
      fromPeer(side, OPCODE_CLOSE, closePayload(1000)),
      fromPeer(side, OPCODE_TEXT, "after"),
    ));
    end.receive(fromPeer(side, OPCODE_TEXT, "later"));
    end.receive(new Uint8Array([0xff, 0xff, 0xff]));
    assert.deepEqual(end.delivered.map((m) => m.type), ["close"]);
    assert.equal(end.sent.length, 1);
  },
);

bothSides(
  "the end of the transport before a close frame delivers 1006 once",
  (side) => {
    const end = new Endpoint(side);
    end.protocol.receiveEnd("reset by peer");
    end.protocol.receiveEnd("again");
    assert.equal(end.protocol.state, State.CLOSED);
    assert.deepEqual(end.delivered, [{
      type: "close",
      code: 1006,
      reason: "reset by peer",
    }]);
    assert.deepEqual(end.sent, [], "no close frame on a dead transport");
  },
);

bothSides("failing while CLOSING sends no second close frame", (side) => {
  const end = new Endpoint(side);
  end.protocol.close(1000, "");
  end.receive(fromPeer(side, OPCODE_TEXT, new Uint8Array([0xff])));
  assert.equal(end.protocol.closeCode, 1007);
  assert.deepEqual(end.sent.map((s) => s.opcode), [OPCODE_CLOSE]);
  assert.deepEqual(end.transport, [true]);
});

bothSides(
  "a failure's reason is cut to fit the close frame; the full one is delivered",
  (side) => {
    const end = new Endpoint(side);
    const reason = "é".repeat(100);
    end.protocol.failConnection(1008, reason);
    end.assertFailed(1008);
    assert.equal(end.protocol.closeReason, reason);
    assert.ok(end.sent[0].payload.length <= 125);
  },
);

// -- What the peer gets wrong, and the close code it earns --

bothSides("invalid UTF-8 in a text message fails with 1007", (side) => {
  const end = new Endpoint(side).receive(
    fromPeer(side, OPCODE_TEXT, new Uint8Array([0x61, 0xc3, 0x28])),
  );
  end.assertFailed(1007, /UTF-8/);
});

bothSides(
  "invalid UTF-8 fails at the bad byte, before the frame is whole",
  (side) => {
    const payload = new Uint8Array(64 * 1024).fill(0x61);
    payload[1000] = 0xff;
    const wire = fromPeer(side, OPCODE_TEXT, payload);
    const end = new Endpoint(side).receive(wire.subarray(0, 2000));
    end.assertFailed(1007);
  },
);

bothSides("a frame masked the wrong way fails with 1002", (side) => {
  const end = new Endpoint(side).receive(misMasked(side, OPCODE_TEXT, "x"));
  end.assertFailed(1002, /mask/i);
  assert.deepEqual(end.delivered.map((m) => m.type), ["close"]);
});

bothSides(
  "reserved bits, unknown opcodes and bad control frames fail with 1002",
  (side) => {
    const cases: [string, Uint8Array][] = [
      [
        "RSV1 without an extension",
        fromPeer(side, OPCODE_TEXT, "x", { rsv1: true }),
      ],
      ["opcode 3", fromPeer(side, 0x3, "x")],
      ["opcode 0xb", fromPeer(side, 0xb, "x")],
      ["a ping of 126 bytes", fromPeer(side, OPCODE_PING, new Uint8Array(126))],
      ["a fragmented ping", fromPeer(side, OPCODE_PING, "x", { fin: false })],
      [
        "a continuation with no message",
        fromPeer(side, OPCODE_CONTINUATION, "x"),
      ],
      [
        "a new message inside a fragmented one",
        concat(
          fromPeer(side, OPCODE_TEXT, "a", { fin: false }),
          fromPeer(side, OPCODE_BINARY, "b"),
        ),
      ],
    ];
    for (const [what, wire] of cases) {
      const end = new Endpoint(side).receive(wire);
      assert.equal(end.protocol.closeCode, 1002, what);
      end.assertFailed(1002);
    }
  },
);

bothSides("bad close frames fail with 1002 or 1007", (side) => {
  const cases: [string, Uint8Array, number][] = [
    ["1 byte", new Uint8Array([3]), 1002],
    ["code 999", closePayload(999), 1002],
    ["code 1005 on the wire", closePayload(1005), 1002],
    ["code 1006 on the wire", closePayload(1006), 1002],
    ["code 5000", closePayload(5000), 1002],
    [
      "a reason that is not UTF-8",
      concat(closePayload(1000), new Uint8Array([0xff])),
      1007,
    ],
  ];
  for (const [what, payload, code] of cases) {
    const end = new Endpoint(side).receive(
      fromPeer(side, OPCODE_CLOSE, payload),
    );
    assert.equal(end.protocol.closeCode, code, what);
    end.assertFailed(code);
  }
});

bothSides(
  "a frame over maxFrameSize fails with 1009 from its header alone",
  (side) => {
    const wire = fromPeer(side, OPCODE_BINARY, new Uint8Array(2000));
    const end = new Endpoint(side, { maxFrameSize: 1000 }).receive(
      wire.subarray(0, 14),
    );
    end.assertFailed(1009);
  },
);

bothSides(
  "a message over maxMessageSize across fragments fails with 1009",
  (side) => {
    const end = new Endpoint(side, { maxMessageSize: 1000 }).receive(
      fromPeer(side, OPCODE_TEXT, "a".repeat(600), { fin: false }),
      fromPeer(side, OPCODE_CONTINUATION, "a".repeat(600)),
    );
    end.assertFailed(1009);
    assert.deepEqual(end.delivered.map((m) => m.type), ["close"]);
  },
);

bothSides("nothing is taken in after a failure", (side) => {
  const end = new Endpoint(side).receive(fromPeer(side, 0x3, "x"));
  end.receive(fromPeer(side, OPCODE_TEXT, "after"));
  end.receive(fromPeer(side, OPCODE_PING, "after"));
  assert.deepEqual(end.delivered.map((m) => m.type), ["close"]);
  assert.equal(end.sent.length, 1);
});

// -- permessage-deflate (RFC 7692) --

function withDeflate(side: Side): Endpoint & Disposable {
  const config = compressionConfig(true)!;
  const params = acceptDeflate("permessage-deflate", config);
  assert.ok(typeof params !== "string");
  const deflate = new PerMessageDeflate({
    client: side === "client",
    params,
    config,
    maxMessageSize: 1024 * 1024,
  });
  const end = new Endpoint(side, { deflate });
  return Object.assign(end, { [Symbol.dispose]: () => deflate.close() });
}

bothSides(
  "a message deflated with BFINAL set, then a normal one, are both delivered (RFC 7692 7.2.3.4)",
  (side) => {
    using end = withDeflate(side);
    // "Hello" as one final block, then "Hello" as a sync-flushed stream.
    const final = new Uint8Array([
      0xf3,
      0x48,
      0xcd,
      0xc9,
      0xc9,
      0x07,
      0x00,
      0x00,
    ]);
    const flushed = new Uint8Array([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    end.receive(
      fromPeer(side, OPCODE_TEXT, final, { rsv1: true }),
      fromPeer(side, OPCODE_TEXT, flushed, { rsv1: true }),
    );
    assert.deepEqual(end.delivered, [
      { type: "text", data: "Hello" },
      { type: "text", data: "Hello" },
    ]);
  },
);

bothSides(
  "a compressed message split over fragments inflates whole",
  (side) => {
    using end = withDeflate(side);
    const flushed = new Uint8Array([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    end.receive(
      fromPeer(side, OPCODE_BINARY, flushed.subarray(0, 3), {
        rsv1: true,
        fin: false,
      }),
      fromPeer(side, OPCODE_CONTINUATION, flushed.subarray(3)),
    );
    assert.deepEqual(end.delivered, [{ type: "binary", data: utf8("Hello") }]);
  },
);

bothSides(
  "RSV1 on a continuation or a control frame fails with 1002 even with compression",
  (side) => {
    for (
      const wire of [
        concat(
          fromPeer(side, OPCODE_TEXT, "a", { fin: false }),
          fromPeer(side, OPCODE_CONTINUATION, "b", { rsv1: true }),
        ),
        fromPeer(side, OPCODE_PING, "p", { rsv1: true }),
      ]
    ) {
      using end = withDeflate(side);
      end.receive(wire);
      end.assertFailed(1002);
    }
  },
);

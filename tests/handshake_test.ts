import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { compressionConfig } from "../src/deflate_codec.ts";
import { WebSocketError } from "../src/errors.ts";
import {
  type AcceptChoice,
  acceptKey,
  acceptUpgrade,
  base64,
  checkProtocol,
  clientRequest,
  encodeRequest,
  generateKey,
  isValidKey,
  processResponse,
  selectProtocol,
  type UpgradeRejection,
  type UpgradeRequest,
  validateUpgrade,
  WEBSOCKET_GUID,
} from "../src/handshake.ts";
import {
  encodeResponse,
  findHeadEnd,
  hasToken,
  headerList,
  type HeadError,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
  RequestLineChecker,
  type ResponseHead,
} from "../src/http.ts";

// -- Helpers --

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** RFC 6455 1.3: the sample nonce. */
const SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ==";

function head(...lines: string[]): Uint8Array {
  return encoder.encode(lines.map((line) => line + "\r\n").join("") + "\r\n");
}

/** Request lines of the RFC 6455 1.2 example, minus the optional ones. */
function upgradeLines(overrides: Record<string, string | null> = {}): string[] {
  const fields: Record<string, string | null> = {
    "Host": "server.example.com",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": SAMPLE_KEY,
    "Sec-WebSocket-Version": "13",
    ...overrides,
  };
  const lines: string[] = [];
  for (const [name, value] of Object.entries(fields)) {
    if (value !== null) lines.push(`${name}: ${value}`);
  }
  return lines;
}

function parsedRequest(requestLine: string, lines: string[]): RequestHead {
  const result = parseRequestHead(head(requestLine, ...lines));
  assert.ok(!("status" in result), `parse failed: ${JSON.stringify(result)}`);
  return result;
}

function upgrade(
  overrides: Record<string, string | null> = {},
  requestLine = "GET /chat HTTP/1.1",
): UpgradeRequest | UpgradeRejection {
  return validateUpgrade(parsedRequest(requestLine, upgradeLines(overrides)));
}

function assertAccepted(
  result: UpgradeRequest | UpgradeRejection,
): UpgradeRequest {
  assert.ok(!("status" in result), `rejected: ${JSON.stringify(result)}`);
  return result;
}

function assertRejected(
  result: UpgradeRequest | UpgradeRejection,
  status: number,
): UpgradeRejection {
  assert.ok("status" in result, `accepted: ${JSON.stringify(result)}`);
  assert.equal(result.status, status);
  return result;
}

function assertHeadError(
  result: RequestHead | HeadError,
  status: number,
): void {
  assert.ok(
    "status" in result && !("method" in result),
    `parsed: ${JSON.stringify(result)}`,
  );
  assert.equal(result.status, status);
  assert.equal(typeof result.message, "string");
}

// -- 4.2.2 Sec-WebSocket-Accept --

Deno.test("acceptKey() computes the RFC 6455 example", async () => {
  assert.equal(WEBSOCKET_GUID, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
  assert.equal(await acceptKey(SAMPLE_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

// acceptKey() hashes a 24-character ASCII key (every valid one) from a
// reused buffer: any other key must still hash as its UTF-8 bytes.
Deno.test("acceptKey() matches node:crypto's SHA-1 for keys of any length and characters", () => {
  const guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  const keys = [
    SAMPLE_KEY,
    "é".repeat(24),
    "aé".repeat(12),
    "abcdefghijklmnopqrstuvw\u0100",
    "short",
    "x".repeat(30),
    "",
  ];
  for (const key of keys) {
    const expected = createHash("sha1").update(key + guid).digest("base64");
    assert.equal(acceptKey(key), expected, JSON.stringify(key));
  }
});

Deno.test("generateKey() returns a fresh base64 key of 16 bytes", () => {
  const a = generateKey(), b = generateKey();
  assert.ok(isValidKey(a), a);
  assert.ok(isValidKey(b), b);
  assert.notEqual(a, b);
  assert.equal(atob(a).length, 16);
});

Deno.test("isValidKey() accepts base64 of 16 bytes only", () => {
  assert.equal(isValidKey(SAMPLE_KEY), true);
  assert.equal(isValidKey(btoa("x".repeat(15))), false);
  assert.equal(isValidKey(btoa("x".repeat(17))), false);
  assert.equal(isValidKey("dGhlIHNhbXBsZSBub25jZQ"), false);
  assert.equal(isValidKey("dGhlIHNhbXBsZSBub25j!Q=="), false);
  assert.equal(isValidKey(""), false);
});

// -- HTTP/1.1 head --

Deno.test("findHeadEnd() returns the index just past the blank line", () => {
  const bytes = encoder.encode("GET / HTTP/1.1\r\nHost: a\r\n\r\nFRAME");
  assert.equal(findHeadEnd(bytes), bytes.length - 5);
});

Deno.test("findHeadEnd() returns -1 while the head is incomplete", () => {
  for (
    const text of [
      "",
      "GET / HTTP/1.1\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\n\r",
      "\n\r\n\r",
    ]
  ) {
    assert.equal(findHeadEnd(encoder.encode(text)), -1, JSON.stringify(text));
  }
});

Deno.test("findHeadEnd() resumes a scan from an earlier position", () => {
  const bytes = encoder.encode("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  // An earlier scan saw all but the last byte; it resumes 3 bytes back.
  const partial = bytes.subarray(0, bytes.length - 1);
  assert.equal(findHeadEnd(partial), -1);
  assert.equal(findHeadEnd(bytes, partial.length - 3), bytes.length);
  assert.equal(findHeadEnd(bytes, -10), bytes.length);
  assert.equal(findHeadEnd(bytes, bytes.length), -1);
});

Deno.test("parseRequestHead() parses a valid request", () => {
  const result = parseRequestHead(
    head(
      "GET /chat?room=1 HTTP/1.1",
      ...upgradeLines(),
      "X-Empty:",
      "X-Padded: \t value \t",
    ),
  );
  assert.ok(!("status" in result));
  assert.equal(result.method, "GET");
  assert.equal(result.target, "/chat?room=1");
  assert.equal(result.version, "HTTP/1.1");
  assert.equal(result.headers.get("host"), "server.example.com");
  assert.equal(result.headers.get("SEC-WEBSOCKET-KEY"), SAMPLE_KEY);
  assert.equal(result.headers.get("x-empty"), "");
  assert.equal(result.headers.get("x-padded"), "value");
});

Deno.test("parseRequestHead() combines repeated headers", () => {
  const result = parsedRequest("GET / HTTP/1.1", [
    "Sec-WebSocket-Protocol: a",
    "Sec-WebSocket-Protocol: b",
  ]);
  assert.equal(result.headers.get("sec-websocket-protocol"), "a, b");
});

for (
  const [name, requestLine] of [
    ["a request line with two parts", "GET /"],
    ["a request line with four parts", "GET / HTTP/1.1 extra"],
    ["a request line with a double space", "GET  / HTTP/1.1"],
    ["an empty request line", ""],
    ["a method that is not a token", "G(T / HTTP/1.1"],
    ["a malformed version", "GET / HTTX/1.1"],
    ["a version without a minor number", "GET / HTTP/1"],
  ]
) {
  Deno.test(`parseRequestHead() answers 400 to ${name}`, () => {
    assertHeadError(parseRequestHead(head(requestLine, "Host: a")), 400);
  });
}

for (
  const [name, line] of [
    ["a header line without a colon", "Host a"],
    ["a space before the colon", "Host : a"],
    ["a tab before the colon", "Host\t: a"],
    ["an empty header name", ": a"],
    ["an obs-fold line starting with a space", " continued"],
    ["an obs-fold line starting with a tab", "\tcontinued: x"],
    ["an obs-fold line that contains a colon", " X-Folded: x"],
    ["a control character in a value", "X-Bad: a\u0001b"],
  ]
) {
  Deno.test(`parseRequestHead() answers 400 to ${name}`, () => {
    assertHeadError(
      parseRequestHead(head("GET / HTTP/1.1", "Host: a", line)),
      400,
    );
  });
}

// -- 4.2.1 Reading the client's opening handshake --

Deno.test("validateUpgrade() accepts the RFC 6455 example request", () => {
  const result = assertAccepted(upgrade());
  assert.equal(result.key, SAMPLE_KEY);
  assert.deepEqual(result.protocols, []);
  assert.deepEqual(result.extensions, []);
});

Deno.test("validateUpgrade() accepts Upgrade among other Connection tokens", () => {
  assertAccepted(upgrade({ "Connection": "keep-alive, Upgrade" }));
  assertAccepted(upgrade({ "Connection": "Upgrade,keep-alive" }));
});

Deno.test("validateUpgrade() matches Upgrade and Connection tokens case-insensitively", () => {
  assertAccepted(upgrade({ "Upgrade": "WebSocket" }));
  assertAccepted(upgrade({ "Upgrade": "WEBSOCKET", "Connection": "upgrade" }));
});

Deno.test("validateUpgrade() parses subprotocols and extensions", () => {
  const result = assertAccepted(upgrade({
    "Sec-WebSocket-Protocol": "a, b",
    "Sec-WebSocket-Extensions":
      "permessage-deflate; client_max_window_bits, x-other",
  }));
  assert.deepEqual(result.protocols, ["a", "b"]);
  assert.deepEqual(result.extensions, [
    "permessage-deflate; client_max_window_bits",
    "x-other",
  ]);
});

Deno.test("validateUpgrade() answers 426 to a request without Upgrade: websocket", () => {
  assertRejected(upgrade({ "Upgrade": null }), 426);
  assertRejected(upgrade({ "Upgrade": "h2c" }), 426);
  // A plain HTTP request.
  assertRejected(
    validateUpgrade(parsedRequest("GET / HTTP/1.1", ["Host: a"])),
    426,
  );
});

Deno.test("validateUpgrade() answers 426 with Sec-WebSocket-Version: 13 to another version", () => {
  for (const version of ["8", "12", "14", "13, 8", null]) {
    const result = assertRejected(
      upgrade({ "Sec-WebSocket-Version": version }),
      426,
    );
    assert.equal(
      result.headers["Sec-WebSocket-Version"],
      "13",
      String(version),
    );
  }
});

Deno.test("validateUpgrade() answers 400 to a method other than GET", () => {
  assertRejected(upgrade({}, "POST /chat HTTP/1.1"), 400);
  assertRejected(upgrade({}, "get /chat HTTP/1.1"), 400);
});

Deno.test("validateUpgrade() answers 400 to HTTP/1.0", () => {
  assertRejected(upgrade({}, "GET /chat HTTP/1.0"), 400);
});

Deno.test("validateUpgrade() answers 400 to a request without Host", () => {
  assertRejected(upgrade({ "Host": null }), 400);
});

Deno.test("validateUpgrade() answers 400 when Connection lacks Upgrade", () => {
  assertRejected(upgrade({ "Connection": null }), 400);
  assertRejected(upgrade({ "Connection": "keep-alive" }), 400);
});

Deno.test("validateUpgrade() answers 400 to a key that is not base64 of 16 bytes", () => {
  for (
    const key of [
      null,
      "",
      btoa("x".repeat(15)),
      btoa("x".repeat(17)),
      "not a key at all",
      SAMPLE_KEY.slice(0, -2),
    ]
  ) {
    assertRejected(upgrade({ "Sec-WebSocket-Key": key }), 400);
  }
});

Deno.test("validateUpgrade() answers 400 to a malformed subprotocol list", () => {
  assertRejected(upgrade({ "Sec-WebSocket-Protocol": "a b" }), 400);
  assertRejected(upgrade({ "Sec-WebSocket-Protocol": "chat, {x}" }), 400);
});

// -- Header lists --

Deno.test("headerList() splits, trims and drops empty elements", () => {
  assert.deepEqual(headerList(null), []);
  assert.deepEqual(headerList(""), []);
  assert.deepEqual(headerList(" a ,b,, ,c"), ["a", "b", "c"]);
});

Deno.test("hasToken() finds a token ignoring case", () => {
  assert.equal(hasToken("keep-alive, Upgrade", "upgrade"), true);
  assert.equal(hasToken("keep-alive", "upgrade"), false);
  assert.equal(hasToken("upgrades", "upgrade"), false);
  assert.equal(hasToken(null, "upgrade"), false);
});

// hasToken() compares in place; it must agree with the elements that
// headerList() splits and trims, compared lower-cased.
Deno.test("hasToken() agrees with headerList() on random values", () => {
  const pieces = [
    "upgrade",
    "Upgrade",
    "UPGRADE",
    "upgrades",
    "upgrad",
    "keep-alive",
    "websocket",
    "WebSocket",
    "100-continue",
    ",",
    ",",
    " ",
    "\t",
    "\v",
    "\xa0",
    "\u3000",
    "\u2028",
    "\r",
    "x",
    "-",
    "\xc0",
  ];
  const tokens = ["upgrade", "websocket", "keep-alive", "100-continue"];
  let seed = 7;
  const next = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  let found = 0;
  for (let i = 0; i < 20_000; i++) {
    let value = "";
    for (let n = next(7); n >= 0; n--) value += pieces[next(pieces.length)];
    const token = tokens[next(tokens.length)];
    const expected = headerList(value).some((item) =>
      item.toLowerCase() === token
    );
    if (expected) found++;
    assert.equal(hasToken(value, token), expected, JSON.stringify(value));
  }
  assert.ok(found > 1000, `${found} values held their token`);
});

// -- 4.1 and 4.2.2 The response --

Deno.test("parseResponseHead() parses a 101 response", () => {
  const result = parseResponseHead(head(
    "HTTP/1.1 101 Switching Protocols",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
  ));
  assert.ok(typeof result !== "string", String(result));
  assert.equal(result.version, "HTTP/1.1");
  assert.equal(result.status, 101);
  assert.equal(result.statusText, "Switching Protocols");
  assert.equal(
    result.headers.get("sec-websocket-accept"),
    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
  );
});

Deno.test("parseResponseHead() accepts a status line without a reason phrase", () => {
  const result = parseResponseHead(
    head("HTTP/1.1 426", "Sec-WebSocket-Version: 13"),
  );
  assert.ok(typeof result !== "string", String(result));
  assert.equal(result.status, 426);
  assert.equal(result.statusText, "");
});

for (
  const [name, lines] of [
    ["a two-digit status", ["HTTP/1.1 10 Switching"]],
    ["a missing version", ["101 Switching Protocols"]],
    ["a wrong protocol name", ["HTTX/1.1 101 Switching Protocols"]],
    ["an empty status line", [""]],
    ["a header line without a colon", ["HTTP/1.1 101 OK", "Upgrade websocket"]],
    ["a space before the colon", ["HTTP/1.1 101 OK", "Upgrade : websocket"]],
  ]
) {
  Deno.test(`parseResponseHead() rejects ${name}`, () => {
    const result: ResponseHead | string = parseResponseHead(head(...lines));
    assert.equal(typeof result, "string");
  });
}

Deno.test("encodeResponse() writes a 101 response with no body", () => {
  const bytes = encodeResponse(101, {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
  });
  assert.equal(
    decoder.decode(bytes),
    "HTTP/1.1 101 Switching Protocols\r\n" +
      "Upgrade: websocket\r\n" +
      "Connection: Upgrade\r\n" +
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" +
      "\r\n",
  );
  assert.equal(findHeadEnd(bytes), bytes.length);
  const parsed = parseResponseHead(bytes);
  assert.ok(typeof parsed !== "string", String(parsed));
  assert.equal(parsed.status, 101);
});

Deno.test("encodeResponse() writes a 426 response with a text body and its length", () => {
  const body = "Upgrade required: ünïcödé";
  const bytes = encodeResponse(426, { "Sec-WebSocket-Version": "13" }, body);
  const end = findHeadEnd(bytes);
  assert.notEqual(end, -1);
  const text = decoder.decode(bytes.subarray(0, end));
  assert.ok(text.startsWith("HTTP/1.1 426 Upgrade Required\r\n"), text);
  assert.ok(text.includes("\r\nSec-WebSocket-Version: 13\r\n"), text);
  assert.ok(text.includes("\r\nConnection: close\r\n"), text);
  assert.equal(decoder.decode(bytes.subarray(end)), body);
  const parsed = parseResponseHead(bytes.subarray(0, end));
  assert.ok(typeof parsed !== "string", String(parsed));
  assert.equal(parsed.status, 426);
  assert.equal(parsed.headers.get("sec-websocket-version"), "13");
  assert.equal(
    Number(parsed.headers.get("content-length")),
    encoder.encode(body).length,
  );
});

// -- 4.1 The client's opening handshake --

Deno.test("encodeRequest() writes the request line and every required header", () => {
  const key = generateKey();
  const bytes = encodeRequest(
    new URL("ws://example.com:8080/chat?room=1"),
    key,
    ["a", "b"],
    new Headers(),
  );
  const text = decoder.decode(bytes);
  assert.ok(text.startsWith("GET /chat?room=1 HTTP/1.1\r\n"), text);
  for (
    const line of [
      "Host: example.com:8080",
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${key}`,
      "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Protocol: a, b",
    ]
  ) {
    assert.ok(text.includes(`\r\n${line}\r\n`), `missing ${line}`);
  }
  assert.ok(text.endsWith("\r\n\r\n"));
  assert.equal(findHeadEnd(bytes), bytes.length);
});

Deno.test("encodeRequest() uses / for a URL without a path and omits an empty protocol list", () => {
  const text = decoder.decode(
    encodeRequest(new URL("ws://example.com"), SAMPLE_KEY, [], new Headers()),
  );
  assert.ok(text.startsWith("GET / HTTP/1.1\r\n"), text);
  assert.ok(text.includes("\r\nHost: example.com\r\n"), text);
  assert.ok(!/sec-websocket-protocol/i.test(text), text);
});

Deno.test("encodeRequest() adds user headers but never lets them override handshake headers", () => {
  const headers = new Headers({
    "Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAA==",
    "sec-websocket-version": "8",
    "Upgrade": "h2c",
    "Connection": "close",
    "Host": "evil.example",
    "Origin": "https://app.example",
    "Authorization": "Bearer token",
  });
  const text = decoder.decode(
    encodeRequest(new URL("wss://example.com/"), SAMPLE_KEY, ["chat"], headers),
  );
  assert.ok(!text.includes("AAAAAAAAAAAAAAAAAAAAAA=="), text);
  assert.ok(!text.includes("evil.example"), text);
  assert.ok(!text.includes("h2c"), text);
  assert.ok(!/connection: close/i.test(text), text);
  assert.ok(!/sec-websocket-version: 8/i.test(text), text);
  assert.equal(text.match(/sec-websocket-key:/gi)?.length, 1, text);
  assert.ok(/\r\norigin: https:\/\/app\.example\r\n/i.test(text), text);
  assert.ok(/\r\nauthorization: Bearer token\r\n/i.test(text), text);
});

Deno.test("encodeRequest() output is accepted by parseRequestHead() and validateUpgrade()", async () => {
  const key = generateKey();
  const bytes = encodeRequest(
    new URL("ws://[::1]:9000/path"),
    key,
    ["chat", "superchat"],
    new Headers({ "X-Custom": "1" }),
  );
  const request = parseRequestHead(bytes);
  assert.ok(!("status" in request), JSON.stringify(request));
  assert.equal(request.target, "/path");
  assert.equal(request.headers.get("host"), "[::1]:9000");
  const result = assertAccepted(validateUpgrade(request));
  assert.equal(result.key, key);
  assert.deepEqual(result.protocols, ["chat", "superchat"]);
  assert.equal((await acceptKey(key)).length, 28);
});

Deno.test("base64() matches btoa for every length 0-40 and all byte values", () => {
  for (let length = 0; length <= 40; length++) {
    const bytes = new Uint8Array(length).map((_, i) => (i * 97 + length) & 255);
    assert.equal(base64(bytes), btoa(String.fromCharCode(...bytes)));
  }
  const all = new Uint8Array(256).map((_, i) => i);
  assert.equal(base64(all), btoa(String.fromCharCode(...all)));
});

// -- RequestLineChecker (RFC 9112 3) --

/** Feeds `text` whole and one byte at a time; both must agree. */
function checkLine(text: string, limit = 8192): string | null {
  const bytes = encoder.encode(text);
  const whole = new RequestLineChecker(limit).check(bytes);
  const split = new RequestLineChecker(limit);
  let error = null;
  for (let i = 0; i < bytes.length && error === null; i++) {
    error = split.check(bytes.subarray(0, i + 1), i);
  }
  assert.deepEqual(error, whole, JSON.stringify(text));
  return whole === null ? null : whole.message;
}

Deno.test("RequestLineChecker accepts valid request lines and their prefixes", () => {
  for (
    const line of [
      "GET /chat HTTP/1.1\r\nHost: x\r\n\r\n",
      "OPTIONS * HTTP/1.0\r\n",
      "GET http://example.com/a?b=%C3%A9 HTTP/1.1\r\n",
      "M-SEARCH /x HTTP/1.9\r\n",
      "GET / HTTP/1.",
      "G",
      "",
    ]
  ) {
    assert.equal(checkLine(line), null, line);
  }
  const checker = new RequestLineChecker(100);
  checker.check(encoder.encode("GET / HTTP/1.1\r\n\x00\x01"));
  assert.equal(checker.done, true);
});

Deno.test("RequestLineChecker refuses at the first byte that cannot be HTTP/1.x", () => {
  for (
    const [line, offset] of [
      ["\x16\x03\x01", 0],
      ["\r\nGET / HTTP/1.1\r\n", 0],
      [" GET", 0],
      ["GE\x00T", 2],
      ["G(T / HTTP/1.1", 1],
      ["GET  / HTTP/1.1", 4],
      ["GET /caf\u00e9", 8],
      ["GET /\x7f", 5],
      ["GET / HTTP/2.0", 11],
      ["GET / http/1.1", 6],
      ["GET / HTTP/1.x", 13],
      ["GET / HTTP/1.1 ", 14],
      ["GET / HTTP/1.1\n", 14],
      ["GET / HTTP/1.1\r\r", 15],
    ] as const
  ) {
    const message = checkLine(line);
    assert.ok(message !== null, JSON.stringify(line));
    assert.match(message, new RegExp(`at offset ${offset}$`), line);
  }
});

Deno.test("RequestLineChecker refuses a request line longer than its limit", () => {
  assert.equal(checkLine("GET /" + "a".repeat(90), 100), null);
  assert.match(
    checkLine("GET /" + "a".repeat(100), 100) ?? "",
    /no CRLF within the first 100 bytes/,
  );
});

// -- The handshake decided with no I/O: acceptUpgrade, processResponse --

/** Accepts the RFC 6455 example request with `choice`; returns the 101 parsed back. */
function accepted(
  overrides: Record<string, string | null>,
  choice: Partial<AcceptChoice> = {},
) {
  const request = parsedRequest("GET /chat HTTP/1.1", upgradeLines(overrides));
  const result = acceptUpgrade(
    request,
    assertAccepted(validateUpgrade(request)),
    { protocol: "", compression: null, ...choice },
  );
  const response = parseResponseHead(result.response);
  assert.ok(typeof response !== "string", String(response));
  return { result, response };
}

Deno.test("acceptUpgrade() builds the RFC 6455 1.3 101 response", () => {
  const { result, response } = accepted({});
  assert.equal(response.status, 101);
  assert.equal(response.headers.get("upgrade"), "websocket");
  assert.equal(response.headers.get("connection"), "Upgrade");
  assert.equal(
    response.headers.get("sec-websocket-accept"),
    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
  );
  assert.equal(response.headers.has("sec-websocket-protocol"), false);
  assert.deepEqual(
    { protocol: result.protocol, extensions: result.extensions },
    { protocol: "", extensions: "" },
  );
  assert.equal(result.deflate, null);
});

Deno.test("acceptUpgrade() answers the chosen subprotocol", () => {
  const { result, response } = accepted(
    { "Sec-WebSocket-Protocol": "chat, superchat" },
    { protocol: "superchat" },
  );
  assert.equal(response.headers.get("sec-websocket-protocol"), "superchat");
  assert.equal(result.protocol, "superchat");
});

Deno.test("acceptUpgrade() adds extra headers but never the handshake's own", () => {
  const { response } = accepted({}, {
    headers: [
      ["Set-Cookie", "a=1"],
      ["Sec-WebSocket-Accept", "forged"],
      ["upgrade", "h2c"],
      ["Content-Length", "5"],
    ],
  });
  assert.equal(response.headers.get("set-cookie"), "a=1");
  assert.equal(
    response.headers.get("sec-websocket-accept"),
    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
  );
  assert.equal(response.headers.get("upgrade"), "websocket");
  assert.equal(response.headers.has("content-length"), false);
});

Deno.test("acceptUpgrade() negotiates permessage-deflate only when configured", () => {
  const offer = {
    "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
  };
  const off = accepted(offer);
  assert.equal(off.response.headers.has("sec-websocket-extensions"), false);
  assert.equal(off.result.deflate, null);
  const on = accepted(offer, { compression: compressionConfig(true) });
  assert.equal(
    on.response.headers.get("sec-websocket-extensions"),
    on.result.extensions,
  );
  assert.match(on.result.extensions, /^permessage-deflate/);
  assert.notEqual(on.result.deflate, null);
});

Deno.test("selectProtocol() and checkProtocol() pick only what the client offered", () => {
  assert.equal(selectProtocol(["b", "a"], ["a", "b"]), "a");
  assert.equal(selectProtocol(["x"], ["a", "b"]), "");
  assert.equal(checkProtocol("b", ["a", "b"]), "b");
  assert.equal(checkProtocol("", ["a"]), "");
  assert.throws(() => checkProtocol("c", ["a", "b"]), TypeError);
  assert.throws(() => checkProtocol(1, ["a"]), TypeError);
});

/** A 101 for `key`, with header `overrides` (null removes one). */
function response101(
  key: string,
  overrides: Record<string, string | null> = {},
  statusLine = "HTTP/1.1 101 Switching Protocols",
): ResponseHead {
  const fields: Record<string, string | null> = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Accept": acceptKey(key),
    ...overrides,
  };
  const lines = Object.entries(fields).filter(([, v]) => v !== null).map((
    [name, value],
  ) => `${name}: ${value}`);
  const parsed = parseResponseHead(head(statusLine, ...lines));
  assert.ok(typeof parsed !== "string", String(parsed));
  return parsed;
}

function assertBadHandshake(result: unknown, pattern: RegExp): void {
  assert.ok(result instanceof WebSocketError, `accepted: ${result}`);
  assert.equal(result.code, "BAD_HANDSHAKE");
  assert.match(result.message, pattern);
}

Deno.test("processResponse() accepts a valid 101 and reports what it agreed", () => {
  const offer = { key: SAMPLE_KEY, protocols: ["chat"], compression: null };
  const result = processResponse(
    response101(SAMPLE_KEY, { "Sec-WebSocket-Protocol": "chat" }),
    offer,
  );
  assert.deepEqual(result, { protocol: "chat", extensions: "", deflate: null });
});

Deno.test("processResponse() refuses what the client did not ask for", () => {
  const offer = { key: SAMPLE_KEY, protocols: ["chat"], compression: null };
  assertBadHandshake(
    processResponse(
      response101(SAMPLE_KEY, {}, "HTTP/1.1 403 Forbidden"),
      offer,
    ),
    /expected 101, received HTTP\/1.1 403 Forbidden/,
  );
  assertBadHandshake(
    processResponse(response101(SAMPLE_KEY, { Upgrade: "h2c" }), offer),
    /Upgrade header must be websocket, received h2c/,
  );
  assertBadHandshake(
    processResponse(response101(SAMPLE_KEY, { Connection: null }), offer),
    /Connection header must contain Upgrade/,
  );
  assertBadHandshake(
    processResponse(response101(generateKey()), offer),
    /Sec-WebSocket-Accept must be/,
  );
  assertBadHandshake(
    processResponse(
      response101(SAMPLE_KEY, { "Sec-WebSocket-Protocol": "other" }),
      offer,
    ),
    /subprotocol other, which was not offered/,
  );
  assertBadHandshake(
    processResponse(
      response101(SAMPLE_KEY, {
        "Sec-WebSocket-Extensions": "permessage-deflate",
      }),
      offer,
    ),
    /extensions permessage-deflate, which were not offered/,
  );
});

Deno.test("processResponse() checks permessage-deflate against the offer", () => {
  const offer = {
    key: SAMPLE_KEY,
    protocols: [],
    compression: compressionConfig({ serverMaxWindowBits: 10 }),
  };
  const ok = processResponse(
    response101(SAMPLE_KEY, {
      "Sec-WebSocket-Extensions":
        "permessage-deflate; server_max_window_bits=9",
    }),
    offer,
  );
  assert.ok(!(ok instanceof WebSocketError), String(ok));
  assert.equal(ok.deflate?.serverMaxWindowBits, 9);
  assertBadHandshake(
    processResponse(
      response101(SAMPLE_KEY, {
        "Sec-WebSocket-Extensions":
          "permessage-deflate; server_max_window_bits=12",
      }),
      offer,
    ),
    /server_max_window_bits=12 is over the 10 offered/,
  );
});

Deno.test("clientRequest() output round-trips through validateUpgrade() and acceptUpgrade()", () => {
  const offer = {
    key: generateKey(),
    protocols: ["chat"],
    compression: compressionConfig(true),
  };
  const bytes = clientRequest(
    new URL("ws://example.com/room?x=1"),
    new Headers({ Authorization: "Bearer t" }),
    offer,
  );
  const request = parseRequestHead(bytes);
  assert.ok(!("status" in request));
  assert.equal(request.target, "/room?x=1");
  const upgrade = assertAccepted(validateUpgrade(request));
  const server = acceptUpgrade(request, upgrade, {
    protocol: selectProtocol(["chat"], upgrade.protocols),
    compression: compressionConfig(true),
  });
  const response = parseResponseHead(server.response);
  assert.ok(typeof response !== "string");
  const agreed = processResponse(response, offer);
  assert.ok(!(agreed instanceof WebSocketError), String(agreed));
  assert.equal(agreed.protocol, "chat");
  assert.equal(agreed.extensions, server.extensions);
  assert.deepEqual(agreed.deflate, server.deflate);
});

/**
 * A strict, fast WebSocket library for Deno: RFC 6455 server and client
 * built directly on `Deno.listen` and `Deno.connect`, with a hand-written
 * HTTP/1.1 upgrade, frame codec and per-socket read and write queues.
 *
 * @example Echo server and client
 * ```ts
 * import { connect, listen } from "@silly/websocket";
 * import assert from "node:assert/strict";
 *
 * const server = listen({
 *   addr: "127.0.0.1:0",
 *   async handler(sock) {
 *     for await (const msg of sock) {
 *       if (msg.type === "text") await sock.write(`Echo: ${msg.data}`, "text");
 *     }
 *   },
 * });
 *
 * const sock = await connect(`ws://127.0.0.1:${server.addr.port}`);
 * await sock.write("Hello, Server!", "text");
 * assert.deepEqual(await sock.read(), { type: "text", data: "Echo: Hello, Server!" });
 * await sock.close();
 * await server.close();
 * ```
 *
 * @module
 */

export {
  accept,
  type AcceptOptions,
  type ConnectionInfo,
  type HandshakeOptions,
  listen,
  type ListenOptions,
  Server,
  type ServerSocket,
  type UpgradeAccept,
  type UpgradeDecision,
  type UpgradeRequest,
} from "./src/server.ts";
export { Topics, type TopicsOptions } from "./src/topics.ts";
export {
  type Broker,
  type BrokerEvents,
  type BrokerStats,
  workerBroker,
} from "./src/broker.ts";
export { connect, type ConnectOptions } from "./src/client.ts";
export type { SocketOptions } from "./src/options.ts";
export type { CompressionOptions } from "./src/deflate.ts";
export { Socket } from "./src/socket.ts";
export type { MessageType } from "./src/outgoing.ts";
export type {
  UpgradeRequestInfo,
  UpgradeResponseInfo,
} from "./src/handshake.ts";
export type {
  BinaryMessage,
  CloseInfo,
  CloseMessage,
  ControlMessage,
  Message,
  TextMessage,
} from "./src/protocol.ts";
export type {
  BinaryStreamMessage,
  StreamedMessage,
  TextStreamMessage,
} from "./src/message_stream.ts";
export type { StreamSource } from "./src/stream_writer.ts";
export { WebSocketError, type WebSocketErrorCode } from "./src/errors.ts";

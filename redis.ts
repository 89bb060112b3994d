/**
 * Topics shared across processes and hosts through Redis pub/sub:
 * {@linkcode redisBroker} for `listen({ broker })`. The only module of the
 * library with a third-party dependency (`ioredis`, from npm); the main
 * entry point, `@silly/websocket`, has none.
 *
 * @example Chat rooms across servers
 * ```ts ignore
 * import { listen } from "@silly/websocket";
 * import { redisBroker } from "@silly/websocket/redis";
 *
 * const server = listen({
 *   addr: ":8080",
 *   broker: redisBroker({ url: "redis://127.0.0.1:6379" }),
 *   async handler(sock) {
 *     sock.subscribe("lobby");
 *     for await (const msg of sock) {
 *       if (msg.type === "text") server.publish("lobby", msg.data, "text");
 *     }
 *   },
 * });
 * console.log(server.brokerStats());
 * ```
 *
 * @module
 */

export { redisBroker, type RedisBrokerOptions } from "./src/redis.ts";

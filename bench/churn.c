/*
 * The connection-churn load generator in C (S5). load.ts's `churn` mode in
 * Deno spends a whole core on its side of every connection (connect, the
 * upgrade, a read and a write per frame, promises and timers), so it was
 * the ceiling for every contestant; this does the same work with epoll and
 * non-blocking sockets for a fraction of the CPU, so the servers separate.
 *
 * The same protocol as load.ts --mode churn: `--conns` workers each loop:
 * connect, write the (precomputed) upgrade request, read the head and
 * check that its status line is `HTTP/1.1 101`, write one masked `--size`
 * byte binary message (the same bytes as load.ts: binaryPayload, key
 * 37 fa 21 3d), read until one complete data message is parsed, write a
 * masked close frame (1000), read until the server's close frame is parsed,
 * then read until the server's FIN and close. A connection not finished in
 * 5 s is cut and counted. Prints `MARK start`, `MARK end` and
 * `RESULT <json>` like bench/_common.ts; with `--hold` it then stays idle
 * until the runner kills it (at most 60 s).
 *
 * bench/run.ts builds it on demand into bench/.build/ (when gcc or cc is
 * installed) and uses it for S5; otherwise S5 uses load.ts.
 *
 * Run: cc -O2 -o churn bench/churn.c && ./churn --port 8080 --conns 32 --size 16
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CONNECTING, HEAD, ECHO, CLOSING, FIN, IDLE };

typedef struct {
  int fd;
  int state;
  const uint8_t *out; /* bytes still to write */
  size_t outLen;
  uint8_t head[4096];
  size_t headLen;
  /* frame parser */
  uint8_t hdr[14];
  int hdrLen, need, inPayload, fin, opcode;
  uint64_t remaining;
  int messages, closes;
  double t0, t1, t2, t3; /* phase starts */
  double retryAt; /* IDLE: when to reconnect */
} Worker;

static int port, conns = 32, size = 16, hold;
static double warmup = 1, duration = 3;
static struct sockaddr_in addr;
static int ep;
static Worker *workers;
static uint8_t request[512];
static size_t requestLen;
static uint8_t *message;
static size_t messageLen;
static uint8_t closeFrame[8];
static long long completed, errors, timeouts;
static double phases[4];
static int stopped;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void masked(uint8_t *frame, int opcode, const uint8_t *payload, int len) {
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  frame[0] = 0x80 | opcode;
  frame[1] = 0x80 | len;
  memcpy(frame + 2, key, 4);
  for (int i = 0; i < len; i++) frame[6 + i] = payload[i] ^ key[i & 3];
}

static void startConn(Worker *w);

static void endConn(Worker *w, int failed) {
  if (w->fd >= 0) {
    close(w->fd); /* also takes it out of the epoll set */
    w->fd = -1;
  }
  if (failed) {
    if (!stopped) errors++;
    w->state = IDLE;
    w->retryAt = now() + 10;
    return;
  }
  startConn(w);
}

static void startConn(Worker *w) {
  if (stopped) {
    w->state = IDLE;
    w->retryAt = 1e300;
    return;
  }
  memset(w, 0, sizeof *w);
  w->t0 = now();
  w->need = 2;
  w->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (w->fd < 0) {
    w->fd = -1;
    endConn(w, 1);
    return;
  }
  /* No TCP_NODELAY (load.ts sets it): every write here goes out with
   * nothing unacknowledged (the server's reply to the previous one acks
   * it), so Nagle never holds one back, and it saves a syscall. */
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                           .data.ptr = w};
  epoll_ctl(ep, EPOLL_CTL_ADD, w->fd, &ev);
  w->state = CONNECTING;
  if (connect(w->fd, (struct sockaddr *)&addr, sizeof addr) < 0 &&
      errno != EINPROGRESS) {
    endConn(w, 1);
    return;
  }
  w->out = request;
  w->outLen = requestLen;
}

/* Writes what is pending; 0 when done or blocked, -1 on error. */
static int flush(Worker *w) {
  while (w->outLen > 0) {
    ssize_t n = send(w->fd, w->out, w->outLen, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno == EINTR) continue;
      return -1;
    }
    w->out += n;
    w->outLen -= n;
  }
  return 0;
}

/* Feeds server frames; counts data messages and close frames. */
static void feed(Worker *w, const uint8_t *b, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (w->inPayload) {
      uint64_t take = w->remaining < n - i ? w->remaining : n - i;
      w->remaining -= take;
      i += take;
      if (w->remaining == 0) {
        w->inPayload = 0;
        goto end;
      }
      continue;
    }
    while (w->hdrLen < w->need && i < n) {
      w->hdr[w->hdrLen++] = b[i++];
      if (w->hdrLen == 2) {
        int len7 = w->hdr[1] & 0x7f;
        w->need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) +
                  (w->hdr[1] & 0x80 ? 4 : 0);
      }
    }
    if (w->hdrLen < w->need) break;
    w->fin = (w->hdr[0] & 0x80) != 0;
    w->opcode = w->hdr[0] & 0x0f;
    {
      int len7 = w->hdr[1] & 0x7f;
      if (len7 == 126) {
        w->remaining = (w->hdr[2] << 8) | w->hdr[3];
      } else if (len7 == 127) {
        w->remaining = 0;
        for (int k = 2; k < 10; k++) w->remaining = (w->remaining << 8) | w->hdr[k];
      } else {
        w->remaining = len7;
      }
    }
    w->hdrLen = 0;
    w->need = 2;
    if (w->remaining > 0) {
      w->inPayload = 1;
      continue;
    }
  end:
    if (w->opcode >= 8) {
      if (w->opcode == 8) w->closes++;
    } else if (w->fin) {
      w->messages++;
    }
  }
}

static void onEvent(Worker *w, uint32_t events) {
  uint8_t buf[4096];
  if (w->state == IDLE || w->fd < 0) return;
  if (w->state == CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      endConn(w, 1);
      return;
    }
    w->state = HEAD;
  }
  if (flush(w) < 0) {
    endConn(w, 1);
    return;
  }
  for (;;) {
    ssize_t n;
    if (w->state == HEAD) {
      n = recv(w->fd, w->head + w->headLen, sizeof w->head - w->headLen, 0);
    } else {
      n = recv(w->fd, buf, sizeof buf, 0);
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      endConn(w, 1);
      return;
    }
    /* A short read drained the socket: later data (or FIN) raises a new
     * edge, so skip the recv that would only say EAGAIN, unless the FIN is
     * already in (EPOLLRDHUP) and still to be read. */
    int drained = !(events & EPOLLRDHUP) &&
                  (size_t)n < (w->state == HEAD ? sizeof w->head - w->headLen : sizeof buf);
    if (n == 0) {
      if (w->state != FIN) {
        endConn(w, 1); /* EOF before the close handshake finished */
        return;
      }
      double t4 = now();
      completed++;
      phases[0] += w->t1 - w->t0;
      phases[1] += w->t2 - w->t1;
      phases[2] += w->t3 - w->t2;
      phases[3] += t4 - w->t3;
      endConn(w, 0);
      return;
    }
    const uint8_t *data = buf;
    size_t len = n;
    if (w->state == HEAD) {
      size_t start = w->headLen >= 3 ? w->headLen - 3 : 0;
      w->headLen += n;
      uint8_t *end = memmem(w->head + start, w->headLen - start, "\r\n\r\n", 4);
      if (end == NULL) {
        if (w->headLen == sizeof w->head) {
          endConn(w, 1);
          return;
        }
        if (drained) return;
        continue;
      }
      if (w->headLen < 12 || memcmp(w->head, "HTTP/1.1 101", 12) != 0) {
        endConn(w, 1);
        return;
      }
      size_t headEnd = end + 4 - w->head;
      data = w->head + headEnd;
      len = w->headLen - headEnd;
      w->t1 = now();
      w->state = ECHO;
      w->out = message;
      w->outLen = messageLen;
      if (flush(w) < 0) {
        endConn(w, 1);
        return;
      }
    }
    feed(w, data, len);
    if (w->state == ECHO && w->messages >= 1) {
      w->t2 = now();
      w->state = CLOSING;
      w->out = closeFrame;
      w->outLen = sizeof closeFrame;
      if (flush(w) < 0) {
        endConn(w, 1);
        return;
      }
    }
    if (w->state == CLOSING && w->closes >= 1) {
      w->t3 = now();
      w->state = FIN;
    }
    if (drained) return;
  }
}

/* Every tick: cut connections older than 5 s, restart idle workers. */
static void tick(double t) {
  for (int i = 0; i < conns; i++) {
    Worker *w = &workers[i];
    if (w->state == IDLE) {
      if (!stopped && t >= w->retryAt) startConn(w);
    } else if (t - w->t0 > 5000) {
      timeouts++;
      endConn(w, 1);
    }
  }
}

/* Runs the loop until `until` (ms, monotonic), sampling progress every 20 ms. */
static void runUntil(double until, long long *last, double *lastProgress,
                     double *maxStall) {
  struct epoll_event events[256];
  double nextTick = now() + 20;
  for (;;) {
    double t = now();
    if (t >= until) return;
    double wake = nextTick < until ? nextTick : until;
    int timeout = (int)(wake - t) + 1;
    int n = epoll_wait(ep, events, 256, timeout);
    for (int i = 0; i < n; i++) onEvent(events[i].data.ptr, events[i].events);
    t = now();
    if (t >= nextTick) {
      nextTick = t + 20;
      tick(t);
      if (last != NULL) {
        if (completed != *last) {
          *last = completed;
          *lastProgress = t;
        } else if (t - *lastProgress > *maxStall) {
          *maxStall = t - *lastProgress;
        }
      }
    }
  }
}

static uint8_t *binaryPayload(int n) {
  uint8_t *out = malloc(n > 0 ? n : 1);
  uint32_t x = 0x9e3779b9u;
  for (int i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 ? argv[i + 1] : NULL;
    if (strcmp(a, "--hold") == 0) {
      hold = 1;
      continue;
    }
    if (v == NULL) {
      fprintf(stderr, "churn: %s needs a value\n", a);
      return 2;
    }
    i++;
    if (strcmp(a, "--port") == 0) port = atoi(v);
    else if (strcmp(a, "--conns") == 0) conns = atoi(v);
    else if (strcmp(a, "--size") == 0) size = atoi(v);
    else if (strcmp(a, "--warmup") == 0) warmup = atof(v);
    else if (strcmp(a, "--duration") == 0) duration = atof(v);
    else if (strcmp(a, "--mode") == 0) {
      if (strcmp(v, "churn") != 0) {
        fprintf(stderr, "churn: only --mode churn\n");
        return 2;
      }
    } else {
      fprintf(stderr, "churn: unknown flag %s\n", a);
      return 2;
    }
  }
  if (size < 0 || size > 125 || conns <= 0 || port <= 0) {
    fprintf(stderr, "churn: need --port, --conns > 0, 0 <= --size <= 125\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  requestLen = snprintf((char *)request, sizeof request,
                        "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n",
                        port);
  uint8_t *payload = binaryPayload(size);
  messageLen = 6 + size;
  message = malloc(messageLen);
  masked(message, 0x2, payload, size);
  const uint8_t code[2] = {0x03, 0xe8};
  masked(closeFrame, 0x8, code, 2);

  ep = epoll_create1(EPOLL_CLOEXEC);
  workers = calloc(conns, sizeof *workers);
  for (int i = 0; i < conns; i++) {
    workers[i].fd = -1;
    startConn(&workers[i]);
  }
  runUntil(now() + warmup * 1000, NULL, NULL, NULL);
  long long c0 = completed;
  double t0 = now();
  printf("MARK start\n");
  long long last = c0;
  double lastProgress = t0, maxStall = 0;
  runUntil(t0 + duration * 1000, &last, &lastProgress, &maxStall);
  long long c1 = completed;
  double t1 = now();
  if (c1 == last && t1 - lastProgress > maxStall) maxStall = t1 - lastProgress;
  printf("MARK end\n");
  stopped = 1;
  double seconds = (t1 - t0) / 1000;
  long long count = c1 - c0;
  double c = completed > 0 ? (double)completed : 1;
  char timeoutNote[64] = "";
  if (timeouts > 0) snprintf(timeoutNote, sizeof timeoutNote, "; %lld close timeouts", timeouts);
  printf("RESULT {\"count\":%lld,\"bytes\":%lld,\"seconds\":%.6f,\"rate\":%.3f,"
         "\"mbps\":%.6f,\"errors\":%lld,\"connections\":%d,\"maxStallMs\":%.0f,"
         "\"note\":\"C generator; mean ms per connection: upgrade %.2f, echo %.2f, "
         "close frames %.2f, FIN %.2f%s\"}\n",
         count, count * size, seconds, count / seconds, count * size / seconds / 1e6,
         errors, conns, maxStall, phases[0] / c, phases[1] / c, phases[2] / c,
         phases[3] / c, timeoutNote);
  for (int i = 0; i < conns; i++) {
    if (workers[i].fd >= 0) close(workers[i].fd);
  }
  if (hold) sleep(60);
  return 0;
}

/*
 * A minimal WebSocket echo on epoll, the floor for ricochet --ws (as epoll_echo.c is for TCP):
 * the opening handshake (the key's SHA-1, base64), masked frames in, each unmasked and sent back
 * as one unmasked frame with its opcode; close answered; no fragmentation, no UTF-8 check, no
 * limits but a frame held whole in memory. Just enough for the measured shapes; not a server.
 *
 * Build: cc -O2 -o ws_echo ws_echo.c      Run: ./ws_echo PORT (0: a free one, printed)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* SHA-1 (FIPS 180-4), for the one hash the handshake needs. */
static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }
static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *m = calloc(total, 1);
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
                   (uint32_t)m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(m);
    for (int i = 0; i < 20; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const uint8_t *in, size_t len, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t n = (uint32_t)in[i] << 16 | (i + 1 < len ? in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = t[n >> 18 & 63];
        out[o++] = t[n >> 12 & 63];
        out[o++] = i + 1 < len ? t[n >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? t[n & 63] : '=';
    }
    out[o] = 0;
}

struct conn {
    int fd, open;     /* open: the handshake is done */
    uint8_t *in;      /* bytes read and not yet handled */
    size_t in_len, in_cap;
    uint8_t *out;     /* bytes the socket refused */
    size_t out_len, out_at, out_cap;
};

static int ep;

static void grow(uint8_t **buf, size_t *cap, size_t need) {
    if (*cap >= need) return;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    *buf = realloc(*buf, c);
    *cap = c;
}

static void close_conn(struct conn *c) {
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Sends header + payload; keeps what the socket refuses. Returns -1 on a dead socket. */
static int send_frame(struct conn *c, const uint8_t *hdr, size_t hlen, const uint8_t *p, size_t plen) {
    if (c->out_len > c->out_at) { /* already blocked: queue behind */
        grow(&c->out, &c->out_cap, c->out_len + hlen + plen);
        memcpy(c->out + c->out_len, hdr, hlen);
        memcpy(c->out + c->out_len + hlen, p, plen);
        c->out_len += hlen + plen;
        return 0;
    }
    struct iovec iov[2] = {{(void *)hdr, hlen}, {(void *)p, plen}};
    ssize_t n = writev(c->fd, iov, 2);
    if (n < 0) {
        if (errno != EAGAIN) return -1;
        n = 0;
    }
    if ((size_t)n < hlen + plen) {
        size_t rest = hlen + plen - n;
        c->out_len = c->out_at = 0;
        grow(&c->out, &c->out_cap, rest);
        for (size_t i = n; i < hlen + plen; i++)
            c->out[c->out_len++] = i < hlen ? hdr[i] : p[i - hlen];
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev); /* stop reading until it drains */
    }
    return 0;
}

/* Handles whole frames in c->in; returns -1 to close. */
static int handle(struct conn *c) {
    size_t at = 0;
    if (!c->open) {
        uint8_t *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end) return c->in_len > 8192 ? -1 : 0;
        c->in[end - c->in] = 0;
        char *key = strcasestr((char *)c->in, "Sec-WebSocket-Key:");
        if (!key) return -1;
        key += 18;
        while (*key == ' ') key++;
        char buf[128];
        size_t k = strcspn(key, "\r\n ");
        if (k > 60) return -1;
        memcpy(buf, key, k);
        memcpy(buf + k, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
        uint8_t digest[20];
        sha1((uint8_t *)buf, k + 36, digest);
        char accept[32], answer[256];
        base64(digest, 20, accept);
        int n = snprintf(answer, sizeof answer,
                         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
        if (write(c->fd, answer, n) != n) return -1;
        c->open = 1;
        at = end - c->in + 4;
    }
    while (c->in_len - at >= 2) {
        uint8_t *f = c->in + at;
        size_t avail = c->in_len - at, hlen = 2;
        uint64_t len = f[1] & 0x7f;
        if (len == 126) {
            if (avail < 4) break;
            len = (uint64_t)f[2] << 8 | f[3];
            hlen = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | f[2 + i];
            hlen = 10;
        }
        if (!(f[1] & 0x80)) return -1; /* unmasked */
        if (avail < hlen + 4 + len) break;
        uint8_t *mask = f + hlen, *p = f + hlen + 4;
        uint64_t m8, w;
        uint8_t m[8];
        for (int i = 0; i < 8; i++) m[i] = mask[i & 3];
        memcpy(&m8, m, 8);
        uint64_t i = 0;
        for (; i + 8 <= len; i += 8) { /* a word at a time, as a real server would */
            memcpy(&w, p + i, 8);
            w ^= m8;
            memcpy(p + i, &w, 8);
        }
        for (; i < len; i++) p[i] ^= mask[i & 3];
        int op = f[0] & 0x0f;
        uint8_t hdr[10];
        size_t ho;
        hdr[0] = 0x80 | (op == 9 ? 10 : op); /* a ping's answer is a pong */
        if (len < 126) hdr[1] = len, ho = 2;
        else if (len < 65536) hdr[1] = 126, hdr[2] = len >> 8, hdr[3] = len, ho = 4;
        else {
            hdr[1] = 127, ho = 10;
            for (int i = 0; i < 8; i++) hdr[2 + i] = len >> (56 - 8 * i);
        }
        if (op != 10 && send_frame(c, hdr, ho, p, len) < 0) return -1;
        at += hlen + 4 + len;
        if (op == 8) return -1; /* close answered */
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    int port = argc > 1 ? atoi(argv[1]) : 0, one = 1;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1024)) return perror("listen"), 1;
    socklen_t al = sizeof a;
    getsockname(l, (void *)&a, &al);
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                ssize_t w = write(c->fd, c->out + c->out_at, c->out_len - c->out_at);
                if (w < 0 && errno != EAGAIN) { close_conn(c); continue; }
                if (w > 0) c->out_at += w;
                if (c->out_at == c->out_len) {
                    c->out_at = c->out_len = 0;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                    if (handle(c) < 0) close_conn(c); /* frames read before the stop */
                }
                continue;
            }
            grow(&c->in, &c->in_cap, c->in_len + 65536);
            ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close_conn(c);
                continue;
            }
            c->in_len += r;
            if (c->out_len > c->out_at) continue; /* blocked: handled once it drains */
            if (handle(c) < 0) close_conn(c);
        }
    }
}

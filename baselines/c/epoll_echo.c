/*
 * A minimal single-threaded, edge-triggered epoll echo server: the C baseline of
 * scripts/compare.sh. Two syscalls per batch: read(2) into one static 64 KiB buffer, write(2)
 * straight back. A short read counts as drained (epoll(7)); only bytes the socket refuses are
 * kept, in a per-connection heap block, and new input then waits behind them (no cap: this is
 * a baseline for speed, not for robustness).
 *
 *   epoll_echo PORT        listens on 127.0.0.1:PORT (0: a free port), prints "PORT\n", runs
 *                          until SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (64 * 1024)

struct conn {
    int fd;
    char *pending; /* bytes the socket refused */
    size_t len, cap;
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static void drop(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

static int keep(struct conn *c, const char *data, size_t n) {
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n) cap *= 2;
        char *p = realloc(c->pending, cap);
        if (!p) return -1;
        c->pending = p;
        c->cap = cap;
    }
    memcpy(c->pending + c->len, data, n);
    c->len += n;
    return 0;
}

/* Writes out pending bytes; returns -1 on error, 0 if some remain, 1 when all are out. */
static int flush(struct conn *c) {
    while (c->len) {
        ssize_t w = send(c->fd, c->pending, c->len, MSG_NOSIGNAL);
        if (w < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        memmove(c->pending, c->pending + w, c->len - w);
        c->len -= w;
    }
    return 1;
}

static int serve(struct conn *c, char *buf) {
    for (;;) {
        ssize_t n = read(c->fd, buf, BUF);
        if (n == 0) return -1;
        if (n < 0) return (errno == EAGAIN) ? 0 : (errno == EINTR ? 0 : -1);
        if (c->len) {
            if (keep(c, buf, n) < 0) return -1;
        } else {
            ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN) return -1;
            if (w < 0) w = 0;
            if (w < n && keep(c, buf + w, n - w) < 0) return -1;
        }
        if (n < BUF) return 0; /* short read: drained */
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* epoll_echo PORT reuseport: one of several processes sharing PORT (the C way to use N cores) */
    if (argc > 2 && strcmp(argv[2], "reuseport") == 0)
        setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static char buf[BUF];
    struct epoll_event events[1024];
    while (!stop) {
        int n = epoll_wait(ep, events, 1024, -1);
        if (n < 0) continue;
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int ok = 0;
            if (events[i].events & EPOLLOUT) ok = flush(c) < 0 ? -1 : 0;
            if (ok == 0 && (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                ok = serve(c, buf);
            if (ok < 0) drop(ep, c);
        }
    }
    return 0;
}

/*
 * A minimal single-threaded, edge-triggered epoll chat room: the C fan-out baseline of
 * scripts/compare.sh. Each complete line (ending in '\n') a member sends goes to every other
 * member; an unterminated tail waits for its newline. Delivery is the straightforward one: for
 * each other member, send(2) the lines at once if it owes nothing, else queue them behind what
 * it owes (flushed on EPOLLOUT). A member owing more than 1 MiB is disconnected (the slow-member
 * rule). No names or commands: this is a baseline for speed on the load-test line protocol.
 *
 *   epoll_chat PORT        listens on 127.0.0.1:PORT (0: a free port), prints "PORT\n", runs
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
#define MAX_LINE (64 * 1024)
#define MAX_OWED (1 << 20)
#define MAX_FDS 65536

struct member {
    int fd;
    int index;          /* position in members[] */
    char *partial;      /* an unterminated line */
    size_t plen;
    char *owed;         /* queued output */
    size_t olen, ocap;
};

static struct member *by_fd[MAX_FDS];
static struct member *members[MAX_FDS];
static int count;
static int ep;

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static void leave(struct member *m) {
    epoll_ctl(ep, EPOLL_CTL_DEL, m->fd, NULL);
    close(m->fd);
    members[m->index] = members[--count];
    members[m->index]->index = m->index;
    by_fd[m->fd] = NULL;
    free(m->partial);
    free(m->owed);
    free(m);
}

static int owe(struct member *m, const char *data, size_t n) {
    if (m->olen + n > MAX_OWED) return -1;
    if (m->olen + n > m->ocap) {
        size_t cap = m->ocap ? m->ocap : 4096;
        while (cap < m->olen + n) cap *= 2;
        char *p = realloc(m->owed, cap);
        if (!p) return -1;
        m->owed = p;
        m->ocap = cap;
    }
    memcpy(m->owed + m->olen, data, n);
    m->olen += n;
    return 0;
}

/* Sends what m owes; -1 on error. */
static int flush(struct member *m) {
    size_t done = 0;
    while (done < m->olen) {
        ssize_t w = send(m->fd, m->owed + done, m->olen - done, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return -1;
        }
        done += w;
    }
    memmove(m->owed, m->owed + done, m->olen - done);
    m->olen -= done;
    return 0;
}

/* Delivers data to one member: straight out if it owes nothing, else behind what it owes. */
static int deliver(struct member *m, const char *data, size_t n) {
    if (m->olen) return owe(m, data, n);
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(m->fd, data + done, n - done, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return -1;
        }
        done += w;
    }
    return done < n ? owe(m, data + done, n - done) : 0;
}

static void broadcast(struct member *from, const char *data, size_t n) {
    for (int i = 0; i < count; i++) {
        struct member *m = members[i];
        if (m == from) continue;
        if (deliver(m, data, n) < 0) {
            leave(m);
            i--; /* the last member moved into slot i */
        }
    }
}

/* Reads until drained; -1 when the member is gone. */
static int serve(struct member *m, char *buf) {
    for (;;) {
        ssize_t n = read(m->fd, buf, BUF);
        if (n == 0) return -1;
        if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        char *last = memrchr(buf, '\n', n);
        if (!last) {
            if (m->plen + n > MAX_LINE) return -1;
            m->partial = realloc(m->partial, m->plen + n);
            memcpy(m->partial + m->plen, buf, n);
            m->plen += n;
        } else {
            size_t whole = last - buf + 1;
            if (m->plen) {
                m->partial = realloc(m->partial, m->plen + whole);
                memcpy(m->partial + m->plen, buf, whole);
                broadcast(m, m->partial, m->plen + whole);
                m->plen = 0;
            } else {
                broadcast(m, buf, whole);
            }
            size_t rest = n - whole;
            if (rest) {
                m->partial = realloc(m->partial, rest);
                memcpy(m->partial, buf + whole, rest);
                m->plen = rest;
            }
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
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        perror("epoll_chat: bind/listen");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &len);
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static char buf[BUF];
    struct epoll_event events[1024];
    while (!stop) {
        int n = epoll_wait(ep, events, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    if (c >= MAX_FDS) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct member *m = calloc(1, sizeof *m);
                    m->fd = c;
                    m->index = count;
                    members[count++] = m;
                    by_fd[c] = m;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct member *m = by_fd[fd];
            if (!m) continue; /* left earlier in this batch */
            if ((events[i].events & EPOLLOUT) && m->olen && flush(m) < 0) {
                leave(m);
                continue;
            }
            if ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && serve(m, buf) < 0) {
                leave(m);
            }
        }
    }
    return 0;
}

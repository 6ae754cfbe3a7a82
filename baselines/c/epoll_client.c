/*
 * A minimal closed-loop echo load client in C, single-threaded edge-triggered epoll: the
 * yardstick for loadgen's own efficiency in scripts/compare.sh. Each connection keeps DEPTH
 * messages of SIZE bytes in flight; each completed message (SIZE bytes back) sends the next, all
 * sends of one connection in a turn go out in one write. No verification, no histogram: the
 * least work a client can do. At depth 1 it also times each round trip (one clock read per
 * message, as loadgen makes) and reports the median, so loadgen's own overhead at ping-pong shows.
 *
 *   epoll_client HOST PORT CONNS DEPTH SIZE SECONDS
 * prints {"messages":N,"msgs_per_sec":R,"seconds":S,"p50_us":P} (P null unless DEPTH is 1)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    long received;  /* bytes of the current message received */
    long owed;      /* bytes queued to send but not yet written */
    double sent_at; /* depth 1: when the message in flight was sent */
};

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: epoll_client HOST PORT CONNS DEPTH SIZE SECONDS\n");
        return 2;
    }
    int conns = atoi(argv[3]), depth = atoi(argv[4]);
    long size = atol(argv[5]);
    double seconds = atof(argv[6]);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    long bufsize = size * depth > 65536 ? size * depth : 65536;
    char *out = calloc(1, bufsize), *in = malloc(bufsize);
    int ep = epoll_create1(0);
    struct conn *cs = calloc(conns, sizeof *cs);
    int one = 1;
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int fl = 1;
        ioctl(fd, FIONBIO, &fl);
        cs[i].fd = fd;
        cs[i].owed = size * depth;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    long messages = 0;
    double start = now(), end = start + seconds;
    long rtt_n = 0, rtt_cap = 1 << 20;
    double *rtts = depth == 1 ? malloc(rtt_cap * sizeof *rtts) : NULL;
    for (int i = 0; i < conns; i++) cs[i].sent_at = start;
    struct epoll_event events[1024];
    while (now() < end) {
        int n = epoll_wait(ep, events, 1024, 100);
        for (int e = 0; e < n; e++) {
            struct conn *c = &cs[events[e].data.u32];
            if (events[e].events & EPOLLIN) {
                for (;;) {
                    ssize_t r = read(c->fd, in, bufsize);
                    if (r <= 0) break;
                    c->received += r;
                    long done = c->received / size;
                    c->received %= size;
                    messages += done;
                    c->owed += done * size;
                    if (rtts && done > 0) {
                        double t = now();
                        if (rtt_n == rtt_cap) rtts = realloc(rtts, (rtt_cap *= 2) * sizeof *rtts);
                        rtts[rtt_n++] = t - c->sent_at;
                        c->sent_at = t; /* the next message goes out now */
                    }
                    if (r < bufsize) break;
                }
            }
            while (c->owed > 0) {
                long chunk = c->owed < bufsize ? c->owed : bufsize;
                ssize_t w = send(c->fd, out, chunk, MSG_NOSIGNAL);
                if (w <= 0) break;
                c->owed -= w;
                if (w < chunk) break;
            }
        }
    }
    double took = now() - start;
    char p50[32] = "null";
    if (rtt_n > 0) {
        qsort(rtts, rtt_n, sizeof *rtts, by_value);
        snprintf(p50, sizeof p50, "%.3f", rtts[rtt_n / 2] * 1e6);
    }
    printf("{\"messages\":%ld,\"msgs_per_sec\":%.1f,\"seconds\":%.3f,\"p50_us\":%s}\n",
           messages, messages / took, took, p50);
    return 0;
}

/*
 * loadgen.c: a fixed-rate HTTP/1.1 load generator for bench/proxy.py.
 *
 * One thread, epoll, one timerfd. Requests are scheduled on a fixed grid: request k is
 * *intended* to be sent at start + k * (1e9 / rate) ns and is assigned to connection
 * k % conns, so with 4 connections at 1000 rps each connection sends every 4 ms and the
 * connections are staggered by 1 ms. Connections are keep-alive and carry one request at
 * a time (no pipelining). If a connection is still waiting for a response when its next
 * slot comes, the request waits in that connection's queue and is sent as soon as the
 * response arrives.
 *
 * Latency is measured from the intended send time to the last byte of the response, so
 * a stall delays every request scheduled behind it and is counted (no "coordinated
 * omission"). The time from the actual write to the last byte (service time) and the
 * lateness of the send (actual - intended) are recorded too.
 *
 * Built by bench/proxy.py with `gcc -O2` at bench time; it prints one JSON object on
 * stdout and writes the recorded samples to a raw file (three little-endian int64 per
 * request: latency_ns, service_ns, lateness_ns) for the caller to compute percentiles.
 *
 * usage: loadgen -a ADDR -p PORT -r RATE -c CONNS -d SECONDS [-w WARMUP_S] [-o RAWFILE]
 *                [-H HOSTHDR] [-P PATH] [-b EXPECTED_BODY_LEN] [-t DRAIN_TIMEOUT_S]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define QCAP 65536 /* per-connection backlog of scheduled-but-unsent requests */
#define BUFCAP (1 << 20)

typedef struct {
    int fd;
    int inflight; /* a request has been written and its response is not complete */
    int64_t sent_at;
    int64_t q[QCAP]; /* intended send times, head = the in-flight request (if any) */
    int qh, qn;
    char *buf;
    size_t len;
} conn_t;

static struct sockaddr_in g_addr;
static char g_req[4096];
static size_t g_reqlen;
static long g_expect_body = -1;
static int g_ep;
static int64_t g_record_from; /* intended times before this are warm-up, not recorded */

static int64_t *g_samples; /* 3 per recorded request */
static int64_t *g_wake; /* per recorded slot: when the loop saw it - its intended time */
static size_t g_nwake;
static size_t g_nrec, g_caprec;
static uint64_t g_sent, g_completed, g_errors, g_non2xx, g_badbody, g_dropped, g_reconnects;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s: %s\n", msg, strerror(errno));
    exit(2);
}

static int conn_open(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    c->fd = fd;
    c->len = 0;
    c->inflight = 0;
    return 0;
}

static void conn_close(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->inflight = 0;
    c->len = 0;
}

static void q_pop(conn_t *c) {
    c->qh = (c->qh + 1) % QCAP;
    c->qn--;
}

/* The in-flight request failed: count it, drop it, reconnect on the next send. */
static void fail_inflight(conn_t *c) {
    if (c->inflight) {
        g_errors++;
        q_pop(c);
    }
    conn_close(c);
}

static void try_send(conn_t *c) {
    while (!c->inflight && c->qn > 0) {
        if (c->fd < 0) {
            if (conn_open(c) < 0) {
                /* cannot connect: every queued request fails */
                g_errors += c->qn;
                c->qh = (c->qh + c->qn) % QCAP;
                c->qn = 0;
                return;
            }
            g_reconnects++;
        }
        int64_t t = now_ns();
        ssize_t n = write(c->fd, g_req, g_reqlen); /* small: fits the socket buffer */
        if (n != (ssize_t)g_reqlen) {
            g_errors++;
            q_pop(c);
            conn_close(c);
            continue;
        }
        c->inflight = 1;
        c->sent_at = t;
        g_sent++;
    }
}

/* Length of a complete chunked body starting at p (excluding headers), or -1. */
static long chunked_len(const char *p, size_t n) {
    size_t i = 0;
    for (;;) {
        size_t start = i;
        while (i + 1 < n && !(p[i] == '\r' && p[i + 1] == '\n')) i++;
        if (i + 1 >= n) return -1;
        long sz = strtol(p + start, NULL, 16);
        i += 2;
        if (sz == 0) {
            /* trailers end with an empty line */
            for (;;) {
                size_t s2 = i;
                while (i + 1 < n && !(p[i] == '\r' && p[i + 1] == '\n')) i++;
                if (i + 1 >= n) return -1;
                i += 2;
                if (i - 2 == s2) return (long)i;
            }
        }
        if (i + (size_t)sz + 2 > n) return -1;
        i += (size_t)sz + 2;
    }
}

static int body_bytes_chunked(const char *p, size_t n) {
    /* sum of chunk sizes, for the body-length check */
    size_t i = 0;
    long total = 0;
    for (;;) {
        long sz = strtol(p + i, NULL, 16);
        while (i + 1 < n && !(p[i] == '\r' && p[i + 1] == '\n')) i++;
        i += 2;
        if (sz == 0) return (int)total;
        total += sz;
        i += (size_t)sz + 2;
        if (i >= n) return (int)total;
    }
}

static const char *find_header(const char *h, size_t hlen, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = h; p && p < h + hlen;) {
        const char *eol = memmem(p, (size_t)(h + hlen - p), "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* Try to complete the in-flight response from the buffer. Returns 1 when one was consumed. */
static int parse_response(conn_t *c, int eof) {
    char *hend = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!hend) return 0;
    size_t hlen = (size_t)(hend - c->buf) + 4;
    if (c->len < 12 || strncmp(c->buf, "HTTP/1.", 7) != 0) {
        fail_inflight(c);
        return 0;
    }
    int status = atoi(c->buf + 9);
    if (status >= 100 && status < 200) { /* skip interim responses */
        memmove(c->buf, c->buf + hlen, c->len - hlen);
        c->len -= hlen;
        return 2;
    }
    const char *cl = find_header(c->buf, hlen, "content-length");
    const char *te = find_header(c->buf, hlen, "transfer-encoding");
    const char *cn = find_header(c->buf, hlen, "connection");
    int close_after = cn && strncasecmp(cn, "close", 5) == 0;
    if (strncmp(c->buf, "HTTP/1.0", 8) == 0 && !(cn && strncasecmp(cn, "keep-alive", 10) == 0))
        close_after = 1;
    size_t total;
    long body;
    if (te && strncasecmp(te, "chunked", 7) == 0) {
        long n = chunked_len(c->buf + hlen, c->len - hlen);
        if (n < 0) return 0;
        total = hlen + (size_t)n;
        body = body_bytes_chunked(c->buf + hlen, (size_t)n);
    } else if (cl) {
        body = atol(cl);
        total = hlen + (size_t)body;
        if (c->len < total) return 0;
    } else if (status == 204 || status == 304) {
        body = 0;
        total = hlen;
    } else { /* delimited by close */
        if (!eof) return 0;
        total = c->len;
        body = (long)(c->len - hlen);
        close_after = 1;
    }
    int64_t t = now_ns();
    int64_t intended = c->q[c->qh];
    g_completed++;
    if (status < 200 || status > 299) g_non2xx++;
    else if (g_expect_body >= 0 && body != g_expect_body) g_badbody++;
    if (intended >= g_record_from) {
        if (g_nrec == g_caprec) {
            g_caprec = g_caprec ? g_caprec * 2 : 65536;
            g_samples = realloc(g_samples, g_caprec * 3 * sizeof(int64_t));
            if (!g_samples) die("realloc");
        }
        g_samples[3 * g_nrec] = t - intended;
        g_samples[3 * g_nrec + 1] = t - c->sent_at;
        g_samples[3 * g_nrec + 2] = c->sent_at - intended;
        g_nrec++;
    }
    q_pop(c);
    c->inflight = 0;
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
    if (close_after) conn_close(c);
    return 1;
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->len == BUFCAP) {
            fail_inflight(c);
            return;
        }
        size_t space = BUFCAP - c->len;
        ssize_t n = read(c->fd, c->buf + c->len, space);
        if (n > 0) {
            c->len += (size_t)n;
            int r = 0;
            while (c->inflight && (r = parse_response(c, 0)) == 2) {
            }
            if (c->fd < 0) break;
            if (!c->inflight && c->len > 0) c->len = 0; /* bytes nobody asked for */
            if (r == 1) try_send(c); /* the next queued request goes out at once */
            if (c->fd < 0) break;
            /* epoll is level-triggered: whatever is left wakes us again, so only read on
               at once when the buffer was too small for what was there */
            if ((size_t)n < space) return;
            continue;
        }
        if (n == 0) { /* peer closed */
            if (c->inflight) {
                if (!parse_response(c, 1)) fail_inflight(c);
            }
            conn_close(c);
            break;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        fail_inflight(c);
        break;
    }
    try_send(c);
}

static void arm(int tfd, int64_t at) {
    struct itimerspec its = {0};
    its.it_value.tv_sec = at / 1000000000LL;
    its.it_value.tv_nsec = at % 1000000000LL;
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *addr = "127.0.0.1", *host = NULL, *path = "/", *rawfile = NULL;
    int port = 0, conns = 4, opt;
    double rate = 1000, duration = 10, warmup = 1, drain = 5;
    while ((opt = getopt(argc, argv, "a:p:r:c:d:w:o:H:P:b:t:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'o': rawfile = optarg; break;
        case 'H': host = optarg; break;
        case 'P': path = optarg; break;
        case 'b': g_expect_body = atol(optarg); break;
        case 't': drain = atof(optarg); break;
        default:
            fprintf(stderr, "usage: loadgen -a ADDR -p PORT -r RATE -c CONNS -d SECONDS "
                            "[-w WARMUP] [-o RAWFILE] [-H HOST] [-P PATH] [-b BODYLEN] [-t DRAIN]\n");
            return 2;
        }
    }
    if (port <= 0 || rate <= 0 || conns <= 0 || duration <= 0 || duration > 3600 ||
        warmup < 0 || warmup > 600 || drain < 0 || drain > 600) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }
    /* Wake-ups as close to the grid as the kernel allows (default slack is 50 us). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad address %s\n", addr);
        return 2;
    }
    char hostbuf[300];
    if (!host) {
        snprintf(hostbuf, sizeof hostbuf, "%s:%d", addr, port);
        host = hostbuf;
    }
    g_reqlen = (size_t)snprintf(g_req, sizeof g_req,
                                "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: pilotfish-bench-loadgen\r\n"
                                "Accept: */*\r\n\r\n", path, host);

    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0) die("epoll_create1");
    conn_t *cs = calloc((size_t)conns, sizeof(conn_t));
    if (!cs) die("calloc");
    for (int i = 0; i < conns; i++) {
        cs[i].fd = -1;
        cs[i].buf = malloc(BUFCAP);
        if (!cs[i].buf) die("malloc");
        if (conn_open(&cs[i]) < 0) die("connect");
    }
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) die("timerfd_create");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, tfd, &tev) < 0) die("epoll_ctl timer");

    const double period = 1e9 / rate;
    const int64_t start = now_ns() + 1000000; /* first slot 1 ms from now */
    const int64_t nwarm = (int64_t)(warmup * rate + 0.5);
    const int64_t ntotal = nwarm + (int64_t)(duration * rate + 0.5);
    g_record_from = start + (int64_t)(nwarm * period);
    const int64_t sched_end = start + (int64_t)(ntotal * period);
    const int64_t deadline = sched_end + (int64_t)(drain * 1e9);
    int64_t k = 0;
    g_wake = malloc((size_t)(ntotal + 1) * sizeof(int64_t));
    if (!g_wake) die("malloc");
    arm(tfd, start);
    int64_t armed = start;

    struct epoll_event evs[64];
    for (;;) {
        int64_t now = now_ns();
        while (k < ntotal) {
            int64_t at = start + (int64_t)(k * period);
            if (at > now) break;
            if (at >= g_record_from) g_wake[g_nwake++] = now - at;
            conn_t *c = &cs[k % conns];
            if (c->qn == QCAP) {
                g_dropped++;
            } else {
                c->q[(c->qh + c->qn) % QCAP] = at;
                c->qn++;
                try_send(c);
            }
            k++;
        }
        int pending = 0;
        for (int i = 0; i < conns; i++) pending += cs[i].qn;
        if (k >= ntotal && pending == 0) break;
        if (now >= deadline) break;
        int64_t want = k < ntotal ? start + (int64_t)(k * period) : deadline;
        if (want != armed) { /* one timerfd_settime per slot, not per event */
            arm(tfd, want);
            armed = want;
        }
        int n = epoll_wait(g_ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0 && errno != EAGAIN) die("read timerfd");
            } else {
                on_readable((conn_t *)evs[i].data.ptr);
            }
        }
    }
    int64_t end = now_ns();
    uint64_t incomplete = 0;
    for (int i = 0; i < conns; i++) incomplete += (uint64_t)cs[i].qn;

    if (rawfile) {
        FILE *f = fopen(rawfile, "wb");
        if (!f) die("open raw file");
        if (g_nrec && fwrite(g_samples, sizeof(int64_t) * 3, g_nrec, f) != g_nrec) die("write raw file");
        fclose(f);
    }
    /* the lateness of the sends, as a self-check of the scheduler */
    int64_t *late = malloc((g_nrec ? g_nrec : 1) * sizeof(int64_t));
    if (!late) die("malloc");
    for (size_t i = 0; i < g_nrec; i++) late[i] = g_samples[3 * i + 2];
    qsort(late, g_nrec, sizeof(int64_t), cmp64);
    double lp50 = g_nrec ? late[g_nrec / 2] / 1e3 : 0;
    double lp99 = g_nrec ? late[(size_t)(g_nrec * 0.99)] / 1e3 : 0;
    double lmax = g_nrec ? late[g_nrec - 1] / 1e3 : 0;
    qsort(g_wake, g_nwake, sizeof(int64_t), cmp64);
    double wp50 = g_nwake ? g_wake[g_nwake / 2] / 1e3 : 0;
    double wp99 = g_nwake ? g_wake[(size_t)(g_nwake * 0.99)] / 1e3 : 0;
    double wmax = g_nwake ? g_wake[g_nwake - 1] / 1e3 : 0;
    double measured_s = (double)(sched_end - g_record_from) / 1e9;
    printf("{\"scheduled\": %lld, \"sent\": %llu, \"completed\": %llu, \"recorded\": %zu, "
           "\"errors\": %llu, \"non2xx\": %llu, \"bad_body\": %llu, \"dropped\": %llu, "
           "\"incomplete\": %llu, \"reconnects\": %llu, \"measured_s\": %.3f, "
           "\"achieved_rps\": %.1f, \"send_lateness_p50_us\": %.1f, "
           "\"send_lateness_p99_us\": %.1f, \"send_lateness_max_us\": %.1f, "
           "\"wakeup_lateness_p50_us\": %.1f, \"wakeup_lateness_p99_us\": %.1f, "
           "\"wakeup_lateness_max_us\": %.1f, \"wall_s\": %.3f}\n",
           (long long)ntotal, (unsigned long long)g_sent, (unsigned long long)g_completed, g_nrec,
           (unsigned long long)g_errors, (unsigned long long)g_non2xx,
           (unsigned long long)g_badbody, (unsigned long long)g_dropped,
           (unsigned long long)incomplete, (unsigned long long)g_reconnects, measured_s,
           measured_s > 0 ? g_nrec / measured_s : 0.0, lp50, lp99, lmax, wp50, wp99, wmax,
           (end - start) / 1e9);
    return 0;
}

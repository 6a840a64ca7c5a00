/*
 * loadgen: HTTP/1.1 load over a unix socket for bench/ingest.py.
 *
 * One thread, epoll, non-blocking keep-alive connections, so that the load
 * generator costs little of the CPU it shares with the server. Requests are
 * read pre-built from a file (each "<length>\n<bytes>": request line, headers
 * and body) and cycled. Two modes:
 *
 *   closed  each connection sends its next request as soon as the response to
 *           the last one is complete; latency is from the first byte written
 *           to the last byte of the response read.
 *   open    request k is due at start + k / rate, whatever the server does;
 *           a due request goes out on any idle connection (it waits if none
 *           is idle), and its latency is measured from the time it was due,
 *           so queueing behind a slow server counts (no coordinated omission).
 *
 * The first --warmup seconds are not measured; after warmup + duration no new
 * request is sent and the ones in flight are awaited (up to --drain seconds),
 * so that every 2xx the server gave is counted. Statistics go to stdout as
 * JSON; "acked_records" counts the "seq": members of 2xx response bodies (one
 * per record acknowledged). Errors go to stderr.
 *
 *   gcc -O2 -o loadgen loadgen.c
 *   loadgen --socket S --requests F --conns N --duration SECS [--warmup SECS]
 *           [--rate PER_SEC] [--drain SECS] [--sample FILE]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_STATUS 600
#define TIMER_TAG UINT64_MAX

typedef struct {
    const char *data;
    size_t len;
} request_t;

typedef struct {
    int fd;
    int busy;           /* a request is in flight */
    int want_out;       /* EPOLLOUT is armed */
    const request_t *req;
    size_t sent;
    uint64_t start_ns;  /* when the request was sent (closed) or due (open) */
    char *buf;
    size_t cap, len;
    size_t head_end;    /* 0 until the header block is complete */
    size_t body_len;
} conn_t;

static const char *opt_socket, *opt_requests, *opt_sample;
static int opt_conns = 64;
static double opt_duration = 10, opt_warmup = 2, opt_rate = 0, opt_drain = 30;

static request_t *reqs;
static size_t n_reqs, next_req;
static conn_t *conns;
static int epfd;

static uint64_t t_begin, t_measure, t_end;
static uint64_t *lat;
static size_t n_lat, cap_lat;
static uint64_t *per_second;
static size_t n_seconds;
static uint64_t statuses[MAX_STATUS];
static uint64_t sent_total, responses_total, acked_records, window_records, window_done;
static uint64_t conn_errors, other_status;
static uint64_t open_issued, open_dispatched, max_backlog;
static int sample_saved, error_shown;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void load_requests(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(path);
    struct stat st;
    if (fstat(fd, &st) < 0) die("fstat");
    char *data = malloc((size_t)st.st_size + 1);
    if (!data) die("malloc");
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, data + got, (size_t)st.st_size - got);
        if (n <= 0) die("read requests");
        got += (size_t)n;
    }
    close(fd);
    size_t cap = 16;
    reqs = malloc(cap * sizeof *reqs);
    char *p = data, *end = data + got;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        size_t len = strtoull(p, NULL, 10);
        p = nl + 1;
        if (len == 0 || len > (size_t)(end - p)) {
            fprintf(stderr, "loadgen: bad framing in %s\n", path);
            exit(2);
        }
        if (n_reqs == cap) reqs = realloc(reqs, (cap *= 2) * sizeof *reqs);
        reqs[n_reqs].data = p;
        reqs[n_reqs].len = len;
        n_reqs++;
        p += len;
    }
    if (n_reqs == 0) {
        fprintf(stderr, "loadgen: no requests in %s\n", path);
        exit(2);
    }
}

static int connect_unix(void) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(opt_socket) >= sizeof addr.sun_path) {
        fprintf(stderr, "loadgen: socket path too long\n");
        exit(2);
    }
    strcpy(addr.sun_path, opt_socket);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
    return fd;
}

static void arm(conn_t *c, int idx, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u64 = (uint64_t)idx};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->want_out = out;
}

static void open_conn(int idx) {
    conn_t *c = &conns[idx];
    c->fd = connect_unix();
    c->busy = 0;
    c->want_out = 0;
    c->len = c->head_end = c->body_len = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)idx};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl add");
}

static int flush_out(conn_t *c, int idx) {
    while (c->sent < c->req->len) {
        ssize_t n = write(c->fd, c->req->data + c->sent, c->req->len - c->sent);
        if (n < 0) {
            if (errno == EAGAIN) {
                if (!c->want_out) arm(c, idx, 1);
                return 0;
            }
            if (errno == EINTR) continue;
            return -1;
        }
        c->sent += (size_t)n;
    }
    if (c->want_out) arm(c, idx, 0);
    return 0;
}

static void conn_failed(int idx);

static void send_request(int idx, uint64_t start) {
    conn_t *c = &conns[idx];
    c->req = &reqs[next_req];
    next_req = (next_req + 1) % n_reqs;
    c->sent = 0;
    c->busy = 1;
    c->start_ns = start;
    sent_total++;
    if (flush_out(c, idx) < 0) conn_failed(idx);
}

/* open loop: idle connections, and the due requests not yet sent */
static int *idle;
static int n_idle;
static double interval_ns;

static uint64_t due_at(uint64_t k) { return t_begin + (uint64_t)(k * interval_ns); }

static void dispatch_open(void) {
    while (n_idle > 0 && open_dispatched < open_issued) {
        int idx = idle[--n_idle];
        send_request(idx, due_at(open_dispatched++));
    }
    if (open_issued - open_dispatched > max_backlog) max_backlog = open_issued - open_dispatched;
}

static void next_or_idle(int idx, uint64_t now) {
    if (now >= t_end) return;
    if (opt_rate > 0) {
        idle[n_idle++] = idx;
        dispatch_open();
    } else {
        send_request(idx, now_ns());
    }
}

static void conn_failed(int idx) {
    conn_t *c = &conns[idx];
    if (c->busy) conn_errors++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    open_conn(idx);
    next_or_idle(idx, now_ns());
}

static size_t count_seq(const char *body, size_t len) {
    size_t n = 0;
    const char *p = body, *end = body + len;
    while ((p = memmem(p, (size_t)(end - p), "\"seq\":", 6)) != NULL) {
        n++;
        p += 6;
    }
    return n;
}

static const char *find_header(const char *head, size_t len, const char *name) {
    size_t nl = strlen(name);
    const char *p = head, *end = head + len;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            p += nl + 1;
            while (p < eol && (*p == ' ' || *p == '\t')) p++;
            return p;
        }
        p = eol + 2;
    }
    return NULL;
}

static void save_sample(const char *data, size_t len) {
    FILE *f = fopen(opt_sample, "wb");
    if (!f) die(opt_sample);
    fwrite(data, 1, len, f);
    fclose(f);
    sample_saved = 1;
}

static void response_done(int idx, uint64_t now) {
    conn_t *c = &conns[idx];
    size_t total = c->head_end + c->body_len;
    int status = atoi(c->buf + 9);
    if (status > 0 && status < MAX_STATUS)
        statuses[status]++;
    else
        other_status++;
    responses_total++;
    size_t records = 0;
    if (status >= 200 && status < 300) {
        records = count_seq(c->buf + c->head_end, c->body_len);
        acked_records += records;
        if (opt_sample && !sample_saved) save_sample(c->buf, total);
    } else if (!error_shown) {
        error_shown = 1;
        fprintf(stderr, "loadgen: first refusal: %.*s\n", (int)(total > 600 ? 600 : total), c->buf);
    }
    if (now >= t_measure && now < t_end) {
        if (n_lat == cap_lat) {
            cap_lat = cap_lat ? cap_lat * 2 : 65536;
            lat = realloc(lat, cap_lat * sizeof *lat);
            if (!lat) die("realloc");
        }
        lat[n_lat++] = now - c->start_ns;
        window_done++;
        window_records += records;
        size_t s = (size_t)((now - t_measure) / 1000000000u);
        if (s < n_seconds) per_second[s]++;
    }
    c->busy = 0;
    if (c->len > total) { /* not expected: no pipelining */
        memmove(c->buf, c->buf + total, c->len - total);
    }
    c->len -= total;
    c->head_end = c->body_len = 0;
    next_or_idle(idx, now);
}

static void on_readable(int idx) {
    conn_t *c = &conns[idx];
    if (c->cap - c->len < 16384) {
        c->cap *= 2;
        c->buf = realloc(c->buf, c->cap);
        if (!c->buf) die("realloc");
    }
    ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        conn_failed(idx);
        return;
    }
    c->len += (size_t)n;
    for (;;) {
        if (!c->head_end) {
            c->buf[c->len] = 0;
            char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!e) return;
            c->head_end = (size_t)(e - c->buf) + 4;
            if (c->len < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0) {
                fprintf(stderr, "loadgen: not an HTTP response: %.80s\n", c->buf);
                exit(2);
            }
            const char *cl = find_header(c->buf, c->head_end - 2, "content-length");
            if (!cl) {
                fprintf(stderr, "loadgen: response without content-length: %.*s\n",
                        (int)c->head_end, c->buf);
                exit(2);
            }
            c->body_len = strtoull(cl, NULL, 10);
        }
        if (c->len < c->head_end + c->body_len) return;
        if (!c->busy) {
            fprintf(stderr, "loadgen: response with no request in flight\n");
            exit(2);
        }
        response_done(idx, now_ns());
        if (c->len == 0 || c->busy) return;
    }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (n_lat == 0) return 0;
    size_t rank = (size_t)(p / 100.0 * (double)n_lat + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n_lat) rank = n_lat;
    return (double)lat[rank - 1] / 1e6;
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen --socket S --requests F [--conns N] [--duration S] "
                    "[--warmup S] [--rate R] [--drain S] [--sample FILE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--socket")) opt_socket = v;
        else if (!strcmp(a, "--requests")) opt_requests = v;
        else if (!strcmp(a, "--sample")) opt_sample = v;
        else if (!strcmp(a, "--conns")) opt_conns = atoi(v);
        else if (!strcmp(a, "--duration")) opt_duration = atof(v);
        else if (!strcmp(a, "--warmup")) opt_warmup = atof(v);
        else if (!strcmp(a, "--rate")) opt_rate = atof(v);
        else if (!strcmp(a, "--drain")) opt_drain = atof(v);
        else usage();
    }
    if (!opt_socket || !opt_requests || opt_conns < 1 || opt_duration <= 0 || opt_warmup < 0)
        usage();
    load_requests(opt_requests);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    conns = calloc((size_t)opt_conns, sizeof *conns);
    idle = calloc((size_t)opt_conns, sizeof *idle);
    for (int i = 0; i < opt_conns; i++) {
        conns[i].cap = 65536;
        conns[i].buf = malloc(conns[i].cap);
        open_conn(i);
    }
    n_seconds = (size_t)opt_duration + 1;
    per_second = calloc(n_seconds, sizeof *per_second);

    int tfd = -1;
    t_begin = now_ns();
    t_measure = t_begin + (uint64_t)(opt_warmup * 1e9);
    t_end = t_measure + (uint64_t)(opt_duration * 1e9);
    if (opt_rate > 0) {
        interval_ns = 1e9 / opt_rate;
        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (tfd < 0) die("timerfd_create");
        uint64_t tick = interval_ns < 20000 ? 20000 : (uint64_t)interval_ns;
        struct itimerspec its = {.it_interval = {0, (long)tick}, .it_value = {0, (long)tick}};
        if (timerfd_settime(tfd, 0, &its, NULL) < 0) die("timerfd_settime");
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TIMER_TAG};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev) < 0) die("epoll_ctl timer");
        for (int i = 0; i < opt_conns; i++) idle[n_idle++] = i;
        open_issued = 1;
        dispatch_open();
    } else {
        for (int i = 0; i < opt_conns; i++) send_request(i, now_ns());
    }

    double cpu_measure = -1, cpu_end = -1;
    uint64_t drain_until = t_end + (uint64_t)(opt_drain * 1e9);
    struct epoll_event events[256];
    for (;;) {
        uint64_t now = now_ns();
        if (cpu_measure < 0 && now >= t_measure) cpu_measure = cpu_seconds();
        if (now >= t_end) {
            if (cpu_end < 0) cpu_end = cpu_seconds();
            if (tfd >= 0) {
                close(tfd);
                tfd = -1;
            }
            int busy = 0;
            for (int i = 0; i < opt_conns; i++) busy += conns[i].busy;
            if (!busy || now >= drain_until) break;
        }
        int timeout = now >= t_end ? 100 : (int)((t_end - now) / 1000000u) + 1;
        int n = epoll_wait(epfd, events, 256, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 == TIMER_TAG) {
                uint64_t ticks;
                if (tfd >= 0 && read(tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
                    die("read timerfd");
                uint64_t t = now_ns();
                if (t > t_end) t = t_end;
                uint64_t due = (uint64_t)((double)(t - t_begin) / interval_ns) + 1;
                if (due > open_issued) open_issued = due;
                dispatch_open();
                continue;
            }
            int idx = (int)events[i].data.u64;
            conn_t *c = &conns[idx];
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(idx);
            if ((events[i].events & EPOLLOUT) && c->busy && c->sent < c->req->len) {
                if (flush_out(c, idx) < 0) conn_failed(idx);
            }
        }
    }
    uint64_t abandoned = 0;
    for (int i = 0; i < opt_conns; i++) abandoned += conns[i].busy;
    if (cpu_measure < 0) cpu_measure = cpu_seconds();
    if (cpu_end < 0) cpu_end = cpu_seconds();

    double window = opt_duration;
    qsort(lat, n_lat, sizeof *lat, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n_lat; i++) sum += (double)lat[i];
    printf("{\"mode\":\"%s\",\"conns\":%d,\"warmup_s\":%g,\"duration_s\":%g,\"offered_rps\":%g,",
           opt_rate > 0 ? "open" : "closed", opt_conns, opt_warmup, window, opt_rate);
    printf("\"completed\":%" PRIu64 ",\"rps\":%.1f,\"records_per_s\":%.1f,", window_done,
           (double)window_done / window, (double)window_records / window);
    printf("\"latency_ms\":{\"mean\":%.4f,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
           "\"p999\":%.4f,\"max\":%.4f},",
           n_lat ? sum / (double)n_lat / 1e6 : 0.0, pct(50), pct(90), pct(99), pct(99.9),
           n_lat ? (double)lat[n_lat - 1] / 1e6 : 0.0);
    printf("\"sent_total\":%" PRIu64 ",\"responses_total\":%" PRIu64 ",\"acked_records\":%" PRIu64
           ",\"conn_errors\":%" PRIu64 ",\"abandoned\":%" PRIu64 ",\"unparsed_status\":%" PRIu64
           ",\"max_backlog\":%" PRIu64 ",\"client_cpu_s\":%.3f,",
           sent_total, responses_total, acked_records, conn_errors, abandoned, other_status,
           max_backlog, cpu_end - cpu_measure);
    printf("\"statuses\":{");
    int first = 1;
    for (int s = 0; s < MAX_STATUS; s++) {
        if (!statuses[s]) continue;
        printf("%s\"%d\":%" PRIu64, first ? "" : ",", s, statuses[s]);
        first = 0;
    }
    printf("},\"per_second\":[");
    for (size_t s = 0; s < (size_t)opt_duration; s++)
        printf("%s%" PRIu64, s ? "," : "", per_second[s]);
    printf("]}\n");
    return 0;
}

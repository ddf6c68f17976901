/*
 * Unit tests for the redis store backend against a real redis-server that the tests start on a
 * free loopback port (and stop by PID): the same behaviours as the memory backend (claims,
 * fencing, sessions, expiry, queue quotas, retained messages), the async contract, a pipelined
 * burst, binary client ids, SELECT and AUTH, lost scripts, a server restarted, stalled or never
 * there (timeouts and reconnects), and destroy with requests in flight. Then what a cluster uses,
 * with several nodes on one server: the member registry and its TTLs, sessions by owner,
 * adoption with its fencing, the adoption election, parked messages taken by two nodes at once,
 * and those requests during an outage. Every wait is bounded, and every test ends with
 * uv_loop_close() == 0.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "node/err.h"
#include "node/log.h"
#include "store/store.h"

/* cmocka.h needs the headers above first, so it stays out of include sorting. */
/* clang-format off */
#include <cmocka.h>
/* clang-format on */

#include "tests/unit/store_result.h"

extern char **environ;

#define REDIS_BIN    "/usr/bin/redis-server"
#define WAIT_MS      5000
#define PASSWORD     "s3cret-pw"
#define N_BURST      10000
#define N_RETAINED   15000
#define N_CONCURRENT 60000

/* ---- redis-server processes ---------------------------------------------------------------- */

struct server {
    pid_t pid;
    int port;
    char dir[64];
    const char *pass;
};

static struct server main_sv;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    (void)nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    assert_true(fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    (void)close(fd);
    return port;
}

static int raw_connect(int port)
{
    struct sockaddr_in a;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        (void)close(fd);
        return -1;
    }
    return fd;
}

static bool raw_send(int fd, int argc, const char *const *argv)
{
    char out[8192];
    size_t n = 0;

    n += (size_t)snprintf(out + n, sizeof(out) - n, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t len = strlen(argv[i]);
        assert_true(len + 32 < sizeof(out) - n);
        n += (size_t)snprintf(out + n, sizeof(out) - n, "$%zu\r\n", len);
        memcpy(out + n, argv[i], len);
        n += len;
        memcpy(out + n, "\r\n", 2);
        n += 2;
    }
    return write(fd, out, n) == (ssize_t)n;
}

/* Reads one line of a reply (without CRLF). */
static bool raw_line(int fd, char *line, size_t cap)
{
    size_t n = 0;
    char ch;

    while (n + 1 < cap && read(fd, &ch, 1) == 1) {
        if (ch == '\n' && n > 0 && line[n - 1] == '\r') {
            line[n - 1] = '\0';
            return true;
        }
        line[n++] = ch;
    }
    return false;
}

/* Whether the server's INFO section has a line starting with prefix. */
static bool info_has(int port, const char *section, const char *prefix)
{
    const char *argv[] = {"INFO", section};
    char line[512];
    bool found = false;
    int fd = raw_connect(port);

    if (fd < 0)
        return false;
    if (raw_send(fd, 2, argv) && raw_line(fd, line, sizeof(line)) && line[0] == '$') {
        long left = strtol(line + 1, NULL, 10) + 2;
        while (left > 0 && raw_line(fd, line, sizeof(line))) {
            left -= (long)strlen(line) + 2;
            found = found || strncmp(line, prefix, strlen(prefix)) == 0;
        }
    }
    (void)close(fd);
    return found;
}

/*
 * Runs one command (a NULL-terminated list of strings) on a fresh connection, after AUTH and
 * SELECT when pass / db are given. Returns the reply's type byte ('+', '-', ':', '$', '*'), or
 * 0 on an I/O error; *num (if not NULL) gets the number that follows it.
 */
static char raw(int port, const char *pass, int db, long long *num, ...)
{
    const char *argv[8];
    char line[512];
    char dbs[16];
    int argc = 0;
    va_list ap;
    int fd = raw_connect(port);

    if (fd < 0)
        return 0;
    va_start(ap, num);
    while (argc < 8 && (argv[argc] = va_arg(ap, const char *)) != NULL)
        argc++;
    va_end(ap);
    if (pass) {
        const char *auth[] = {"AUTH", pass};
        if (!raw_send(fd, 2, auth) || !raw_line(fd, line, sizeof(line)) || line[0] != '+')
            goto out_fail;
    }
    if (db) {
        const char *sel[] = {"SELECT", dbs};
        (void)snprintf(dbs, sizeof(dbs), "%d", db);
        if (!raw_send(fd, 2, sel) || !raw_line(fd, line, sizeof(line)) || line[0] != '+')
            goto out_fail;
    }
    if (!raw_send(fd, argc, argv) || !raw_line(fd, line, sizeof(line)))
        goto out_fail;
    if (num)
        *num = strtoll(line + 1, NULL, 10);
    (void)close(fd);
    return line[0];

out_fail:
    (void)close(fd);
    return 0;
}

static long long raw_int(int port, int db, const char *cmd, const char *key)
{
    long long n = -100;
    assert_int_equal(raw(port, NULL, db, &n, cmd, key, NULL), ':');
    return n;
}

static void server_start(struct server *sv)
{
    char port[16], logfile[96];
    const char *argv[20];
    int argc = 0;
    uint64_t deadline = now_ms() + 10000;
    posix_spawn_file_actions_t fa;
    int rc;

    (void)snprintf(port, sizeof(port), "%d", sv->port);
    (void)snprintf(logfile, sizeof(logfile), "%s/redis.log", sv->dir);
    argv[argc++] = REDIS_BIN;
    argv[argc++] = "--port";
    argv[argc++] = port;
    argv[argc++] = "--bind";
    argv[argc++] = "127.0.0.1";
    argv[argc++] = "--save";
    argv[argc++] = "";
    argv[argc++] = "--appendonly";
    argv[argc++] = "yes";
    argv[argc++] = "--dir";
    argv[argc++] = sv->dir;
    argv[argc++] = "--daemonize";
    argv[argc++] = "no";
    argv[argc++] = "--logfile";
    argv[argc++] = logfile;
    if (sv->pass) {
        argv[argc++] = "--requirepass";
        argv[argc++] = sv->pass;
    }
    argv[argc] = NULL;
    /* Its output goes to its log file: inherited pipes would outlive a failed test. */
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0), 0);
    rc = posix_spawn(&sv->pid, REDIS_BIN, &fa, NULL, (char *const *)argv, environ);
    (void)posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(rc, 0);
    /* Ready when it answers PING (after loading its append-only file). */
    while (raw(sv->port, sv->pass, 0, NULL, "PING", NULL) != '+') {
        assert_true(now_ms() < deadline);
        sleep_ms(20);
    }
}

static void server_stop(struct server *sv)
{
    uint64_t deadline = now_ms() + 10000;
    int status;
    pid_t got;

    if (sv->pid <= 0)
        return;
    (void)kill(sv->pid, SIGTERM);
    (void)kill(sv->pid, SIGCONT); /* in case a test left it stopped */
    while ((got = waitpid(sv->pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(10);
    if (got == 0) {
        (void)kill(sv->pid, SIGKILL);
        (void)waitpid(sv->pid, &status, 0);
    }
    sv->pid = 0;
}

static void server_init(struct server *sv, const char *pass)
{
    memset(sv, 0, sizeof(*sv));
    (void)snprintf(sv->dir, sizeof(sv->dir), "/tmp/shoal-redis-XXXXXX");
    assert_non_null(mkdtemp(sv->dir));
    sv->port = free_port();
    sv->pass = pass;
    server_start(sv);
}

static void server_destroy(struct server *sv)
{
    const char *argv[] = {"/bin/rm", "-rf", sv->dir, NULL};
    pid_t pid;
    int status;

    server_stop(sv);
    if (posix_spawn(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) == 0)
        (void)waitpid(pid, &status, 0);
}

static void url_of(char *out, size_t cap, const struct server *sv, const char *cred, int db)
{
    (void)snprintf(out, cap, "redis://%s%s127.0.0.1:%d/%d", cred ? cred : "", cred ? "@" : "",
                   sv->port, db);
}

/* ---- the loop ------------------------------------------------------------------------------- */

struct fixture {
    uv_loop_t loop;
    uv_timer_t watchdog;
    struct store *s;
    struct store *peers[2]; /* other nodes' stores, destroyed by teardown even after a failure */
};

static void on_watchdog(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

typedef bool (*pred_fn)(const void *arg);

/* Runs the loop until pred holds or ms pass; returns whether it holds. */
static bool run_until(struct fixture *f, pred_fn pred, const void *arg, uint64_t ms)
{
    bool is_expired = false;

    f->watchdog.data = &is_expired;
    assert_int_equal(uv_timer_start(&f->watchdog, on_watchdog, ms, 0), 0);
    while (!pred(arg) && !is_expired)
        (void)uv_run(&f->loop, UV_RUN_ONCE);
    (void)uv_timer_stop(&f->watchdog);
    return pred(arg);
}

struct count_at_least {
    const int *p;
    int n;
};

static bool pred_count(const void *arg)
{
    const struct count_at_least *c = arg;
    return *c->p >= c->n;
}

static bool wait_count(struct fixture *f, const int *p, int n, uint64_t ms)
{
    struct count_at_least c = {p, n};
    return run_until(f, pred_count, &c, ms);
}

static bool pred_up(const void *arg)
{
    return store_is_up(arg);
}

static bool pred_down(const void *arg)
{
    return !store_is_up(arg);
}

static bool pred_never(const void *arg)
{
    (void)arg;
    return false;
}

static void run_for(struct fixture *f, uint64_t ms)
{
    (void)run_until(f, pred_never, NULL, ms);
}

static void loop_init(struct fixture *f)
{
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->watchdog), 0);
}

/* Runs the loop until everything but the watchdog has closed, then closes the loop. */
static void loop_finish(struct fixture *f)
{
    bool is_expired = false;

    f->watchdog.data = &is_expired;
    assert_int_equal(uv_timer_start(&f->watchdog, on_watchdog, WAIT_MS, 0), 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    while (uv_loop_alive(&f->loop) && !is_expired)
        (void)uv_run(&f->loop, UV_RUN_ONCE);
    assert_false(is_expired);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static struct store *open_store(struct fixture *f, const char *url, const char *node)
{
    struct store *s = NULL;
    char err[160];

    assert_int_equal(store_create(&f->loop, url, node, &s, err, sizeof(err)), 0);
    assert_non_null(s);
    assert_true(run_until(f, pred_up, s, WAIT_MS));
    return s;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char url[128];

    assert_non_null(f);
    (void)kill(main_sv.pid, SIGCONT); /* after a failed test_stalled_server */
    assert_int_equal(raw(main_sv.port, NULL, 0, NULL, "FLUSHALL", NULL), '+');
    loop_init(f);
    url_of(url, sizeof(url), &main_sv, NULL, 0);
    f->s = open_store(f, url, "node-a");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    store_destroy(&f->s);
    assert_null(f->s);
    for (int i = 0; i < 2; i++)
        store_destroy(&f->peers[i]);
    loop_finish(f);
    free(f);
    return 0;
}

/* Tests with a server of their own get it from setup, so that a failed assertion still stops it
 * in teardown. */
static int setup_server(void **state)
{
    struct server *sv = calloc(1, sizeof(*sv));

    assert_non_null(sv);
    server_init(sv, NULL);
    *state = sv;
    return 0;
}

static int setup_server_with_password(void **state)
{
    struct server *sv = calloc(1, sizeof(*sv));

    assert_non_null(sv);
    server_init(sv, PASSWORD);
    *state = sv;
    return 0;
}

static int teardown_server(void **state)
{
    struct server *sv = *state;

    server_destroy(sv);
    free(sv);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    server_init(&main_sv, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    server_destroy(&main_sv);
    return 0;
}

static void wait_one(struct fixture *f, const struct result *r)
{
    assert_true(wait_count(f, &r->calls, 1, WAIT_MS));
    assert_int_equal(r->calls, 1);
}

static struct result claim_on(struct fixture *f, struct store *s, const char *id)
{
    struct result r = {0};
    assert_int_equal(store_owner_claim(s, id, on_claim, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    return r;
}

static uint64_t claim(struct fixture *f, const char *id)
{
    struct result r = claim_on(f, f->s, id);
    assert_int_equal(r.rc, 0);
    assert_true(r.epoch > 0);
    return r.epoch;
}

static int release(struct fixture *f, const char *id, uint64_t epoch)
{
    struct result r = {0};
    assert_int_equal(store_owner_release(f->s, id, epoch, on_done, &r), 0);
    wait_one(f, &r);
    return r.rc;
}

static int save(struct fixture *f, const char *id, uint64_t epoch, const char *state,
                uint64_t expiry)
{
    struct result r = {0};
    assert_int_equal(store_session_save(f->s, id, epoch, blob(state), expiry, on_done, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    return r.rc;
}

static int push(struct fixture *f, const char *id, const char *m, uint32_t max_count,
                uint64_t max_bytes)
{
    struct result r = {0};
    assert_int_equal(store_queue_push(f->s, id, blob(m), max_count, max_bytes, on_done, &r), 0);
    wait_one(f, &r);
    return r.rc;
}

static struct result load(struct fixture *f, const char *id)
{
    struct result r = {0};
    assert_int_equal(store_session_load(f->s, id, on_load, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    return r;
}

static int trim(struct fixture *f, const char *id, uint64_t epoch, const char *names)
{
    struct result r = {0};
    struct id_list l;
    id_list_of(&l, names);
    assert_int_equal(store_queue_trim(f->s, id, epoch, l.ids, l.n, on_done, &r), 0);
    wait_one(f, &r);
    return r.rc;
}

static int del(struct fixture *f, const char *id, uint64_t epoch)
{
    struct result r = {0};
    assert_int_equal(store_session_delete(f->s, id, epoch, on_done, &r), 0);
    wait_one(f, &r);
    return r.rc;
}

static int retain_set(struct fixture *f, const char *topic, const char *m)
{
    struct result r = {0};
    assert_int_equal(store_retain_set(f->s, topic, blob(m), on_done, &r), 0);
    wait_one(f, &r);
    return r.rc;
}

static void assert_blob(const struct result *r, size_t i, const char *want)
{
    assert_int_equal(r->blob_len[i], strlen(want));
    assert_memory_equal(r->blobs[i], want, strlen(want));
}

/* ---- URLs and the store's state ---------------------------------------------------------- */

struct bad_url {
    const char *url;
    const char *err;
};

static void test_urls(void **state)
{
    static const struct bad_url bad[] = {
        {"redis://", "redis URL: missing host"},
        {"redis://:6379", "redis URL: missing host"},
        {"redis://h:abc", "redis URL: port must be a number from 1 to 65535"},
        {"redis://h:", "redis URL: port must be a number from 1 to 65535"},
        {"redis://h:0", "redis URL: port must be a number from 1 to 65535"},
        {"redis://h:65536", "redis URL: port must be a number from 1 to 65535"},
        {"redis://h:1/x", "redis URL: database must be a number"},
        {"redis://h:1/0?timeout=1", "redis URL: database must be a number"},
        {"redis://u@h:1", "redis URL: credentials must be USER:PASS or :PASS"},
        {"redis://u:@h", "redis URL: empty password"},
        {"redis://:hunter2%zz@h:1", "redis URL: bad %-escape in credentials"},
        {"redis://[::1", "redis URL: unterminated [ in host"},
        {"redis://[::1]x:1", "redis URL: unexpected characters after ]"},
        {"redis://:hunter2@bad host:1", "redis URL: invalid character in host"},
        {"rediss://h:1", "rediss:// (Redis over TLS) is not supported"},
    };
    static const char *const good[] = {
        "redis://127.0.0.1",           "redis://localhost:1/0",         "redis://[::1]:1/15",
        "redis://u:p%40ss@h-1.ex:1/2", "redis://:pw@with@at@host:6380", "redis://:a/b@h",
    };
    struct fixture f;
    struct store *s = (struct store *)&f; /* must be reset to NULL on failure */
    char err[160];

    (void)state;
    loop_init(&f);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(store_create(&f.loop, bad[i].url, "n", &s, err, sizeof(err)), ERR_INVALID);
        assert_null(s);
        assert_string_equal(err, bad[i].err);
        assert_null(strstr(err, "hunter2"));
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(store_create(&f.loop, good[i], "n", &s, err, sizeof(err)), 0);
        assert_non_null(s);
        assert_true(store_is_durable(s));
        assert_false(store_is_up(s)); /* it connects in the background */
        store_destroy(&s);
    }
    assert_int_equal(store_create(&f.loop, "memory", "n", &s, err, sizeof(err)), 0);
    assert_false(store_is_durable(s));
    assert_true(store_is_up(s));
    store_destroy(&s);
    assert_false(store_is_durable(NULL));
    assert_false(store_is_up(NULL));
    loop_finish(&f);
}

/* A server that is not there: requests wait for it, then time out within the bound. */
static void test_never_up_times_out(void **state)
{
    struct fixture f;
    struct store *s = NULL;
    struct result r[3];
    char url[64];
    uint64_t t0, took;

    (void)state;
    memset(r, 0, sizeof(r));
    loop_init(&f);
    (void)snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
    assert_int_equal(store_create(&f.loop, url, "n", &s, NULL, 0), 0);
    t0 = now_ms();
    assert_int_equal(store_owner_claim(s, "c", on_claim, &r[0]), 0);
    assert_int_equal(store_session_load(s, "c", on_load, &r[1]), 0);
    assert_int_equal(store_retain_load(s, on_retain, &r[2]), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].calls, 0);
    assert_true(wait_count(&f, &r[2].calls, 1, WAIT_MS));
    took = now_ms() - t0;
    assert_true(took >= 2500 && took <= 4500);
    assert_false(store_is_up(s));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].rc, ERR_TIMEOUT);
        if (i > 0)
            assert_true(r[i].order > r[i - 1].order);
    }
    store_destroy(&s);
    loop_finish(&f);
}

/* ---- async contract ------------------------------------------------------------------------ */

static void test_every_api_is_async(void **state)
{
    struct fixture *f = *state;
    const struct store_blob blob1 = blob("m");
    struct result r[9];
    const uint64_t e = UINT64_MAX; /* newer than any claim: never fenced off */

    memset(r, 0, sizeof(r));
    assert_int_equal(store_owner_claim(f->s, "c1", on_claim, &r[0]), 0);
    assert_int_equal(store_session_save(f->s, "c1", e, blob("st"), 0, on_done, &r[1]), 0);
    assert_int_equal(store_queue_push(f->s, "c1", blob("m"), 0, 0, on_done, &r[2]), 0);
    assert_int_equal(store_session_load(f->s, "c1", on_load, &r[3]), 0);
    assert_int_equal(store_queue_trim(f->s, "c1", e, &blob1, 1, on_done, &r[4]), 0);
    assert_int_equal(store_session_delete(f->s, "c1", e, on_done, &r[5]), 0);
    assert_int_equal(store_retain_set(f->s, "t", blob("x"), on_done, &r[6]), 0);
    assert_int_equal(store_retain_load(f->s, on_retain, &r[7]), 0);
    assert_int_equal(store_owner_release(f->s, "c1", e, on_done, &r[8]), 0);
    for (int i = 0; i < 9; i++)
        assert_int_equal(r[i].calls, 0);
    assert_true(wait_count(f, &r[8].calls, 1, WAIT_MS));
    for (int i = 0; i < 9; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].rc, 0);
        /* Callbacks run in the order the requests were made. */
        if (i > 0)
            assert_true(r[i].order > r[i - 1].order);
    }
    assert_true(r[0].epoch > 0);
    assert_false(r[0].has_prev_owner);
    assert_int_equal(r[3].state_len, 2);
    assert_int_equal(r[3].n, 1);
    assert_int_equal(r[7].n, 1);
}

struct chain {
    struct store *s;
    struct result inner;
    int outer_calls;
    int inner_seen_in_outer;
};

static void on_chain_outer(void *ctx, int rc)
{
    struct chain *c = ctx;

    assert_int_equal(rc, 0);
    c->outer_calls++;
    assert_int_equal(store_retain_set(c->s, "t", blob("y"), on_done, &c->inner), 0);
    c->inner_seen_in_outer = c->inner.calls;
}

static void test_request_from_callback_is_deferred(void **state)
{
    struct fixture *f = *state;
    struct chain c = {.s = f->s};

    assert_int_equal(store_retain_set(f->s, "t", blob("x"), on_chain_outer, &c), 0);
    assert_int_equal(c.outer_calls, 0);
    assert_true(wait_count(f, &c.inner.calls, 1, WAIT_MS));
    assert_int_equal(c.outer_calls, 1);
    assert_int_equal(c.inner_seen_in_outer, 0);
    assert_int_equal(c.inner.rc, 0);
}

/* ---- owner registry ------------------------------------------------------------------------ */

static void test_claim_epochs_and_prev_owner(void **state)
{
    struct fixture *f = *state;
    struct result r1, r2, r3, r4;
    struct store *b;
    char url[128];

    r1 = claim_on(f, f->s, "c");
    assert_int_equal(r1.rc, 0);
    assert_true(r1.epoch > 0);
    assert_false(r1.has_prev_owner);
    assert_int_equal(r1.prev_epoch, 0);

    r2 = claim_on(f, f->s, "c");
    assert_true(r2.epoch > r1.epoch);
    assert_true(r2.has_prev_owner);
    assert_string_equal(r2.prev_owner, "node-a");
    assert_int_equal(r2.prev_epoch, r1.epoch);

    /* Another node takes the client id over: it learns who held it. */
    url_of(url, sizeof(url), &main_sv, NULL, 0);
    b = open_store(f, url, "node-b");
    r3 = claim_on(f, b, "c");
    assert_int_equal(r3.rc, 0);
    assert_true(r3.epoch > r2.epoch);
    assert_string_equal(r3.prev_owner, "node-a");
    assert_int_equal(r3.prev_epoch, r2.epoch);
    /* ... and the old owner is fenced off. */
    assert_int_equal(save(f, "c", r2.epoch, "stale", 0), ERR_EXISTS);

    r4 = claim_on(f, f->s, "c");
    assert_true(r4.epoch > r3.epoch);
    assert_string_equal(r4.prev_owner, "node-b");
    assert_int_equal(r4.prev_epoch, r3.epoch);
    store_destroy(&b);
}

static void test_release(void **state)
{
    struct fixture *f = *state;
    uint64_t e1 = claim(f, "c");
    uint64_t e2 = claim(f, "c");
    struct result c;

    assert_int_equal(release(f, "c", e1), ERR_EXISTS);
    assert_int_equal(release(f, "c", e2), 0);
    c = claim_on(f, f->s, "c");
    assert_int_equal(c.rc, 0);
    assert_false(c.has_prev_owner);
    assert_int_equal(c.prev_epoch, 0);
    assert_true(c.epoch > e2);
    assert_int_equal(release(f, "nobody", 7), 0);
}

/* ---- sessions and fencing ------------------------------------------------------------------ */

static void test_session_roundtrip_and_delete(void **state)
{
    struct fixture *f = *state;
    uint64_t e = claim(f, "c");
    struct result l;

    l = load(f, "c");
    assert_int_equal(l.rc, ERR_NOT_FOUND);

    assert_int_equal(save(f, "c", e, "v1", 0), 0);
    assert_int_equal(save(f, "c", e, "version-2", 0), 0);
    assert_int_equal(push(f, "c", "q1", 0, 0), 0);
    assert_int_equal(push(f, "c", "", 0, 0), 0); /* an empty message is a message */
    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.state_len, 9);
    assert_memory_equal(l.state, "version-2", 9);
    assert_int_equal(l.n, 2);
    assert_blob(&l, 0, "q1");
    assert_blob(&l, 1, "");

    assert_int_equal(del(f, "c", e), 0);
    l = load(f, "c");
    assert_int_equal(l.rc, ERR_NOT_FOUND);
    assert_int_equal(push(f, "c", "orphan", 0, 0), ERR_NOT_FOUND);
    assert_int_equal(push(f, "never-seen", "orphan", 0, 0), ERR_NOT_FOUND);
    assert_int_equal(save(f, "c", e, "v3", 0), 0);
    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.n, 0);

    assert_int_equal(save(f, "empty", 0, "", 0), 0);
    l = load(f, "empty");
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.state_len, 0);
}

static void test_fencing_rejects_stale_epochs(void **state)
{
    struct fixture *f = *state;
    uint64_t e1 = claim(f, "c");
    uint64_t e2;
    struct result l;

    assert_int_equal(save(f, "c", e1, "old-owner", 0), 0);
    assert_int_equal(push(f, "c", "m1", 0, 0), 0);
    assert_int_equal(push(f, "c", "m2", 0, 0), 0);
    e2 = claim(f, "c");
    assert_true(e2 > e1);
    assert_int_equal(save(f, "c", e2, "new-owner", 0), 0);

    assert_int_equal(save(f, "c", e1, "stale", 0), ERR_EXISTS);
    assert_int_equal(del(f, "c", e1), ERR_EXISTS);
    assert_int_equal(trim(f, "c", e1, "m1"), ERR_EXISTS);
    assert_int_equal(save(f, "c", 0, "zero", 0), ERR_EXISTS);
    /* A newer epoch than any claim is not stale. */
    assert_int_equal(save(f, "c", UINT64_MAX, "new-owner", 0), 0);

    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    assert_memory_equal(l.state, "new-owner", 9);
    assert_int_equal(l.n, 2);

    assert_int_equal(del(f, "c", e2), 0);
    assert_int_equal(release(f, "c", e2), 0);
    assert_int_equal(save(f, "c", e1, "stale", 0), ERR_EXISTS);
    l = load(f, "c");
    assert_int_equal(l.rc, ERR_NOT_FOUND);
}

static void test_session_expiry(void **state)
{
    struct fixture *f = *state;
    uint64_t now = (uint64_t)time(NULL);
    uint64_t e = claim(f, "c");
    struct result l;

    assert_int_equal(save(f, "c", e, "soon", now + 3600), 0);
    assert_int_equal(push(f, "c", "m1", 0, 0), 0);
    /* The queue goes with the session: both carry its expiry. */
    assert_in_range(raw_int(main_sv.port, 0, "TTL", "shoal:v1:{c}:sess"), 3500, 3600);
    assert_in_range(raw_int(main_sv.port, 0, "TTL", "shoal:v1:{c}:q"), 3500, 3600);
    assert_in_range(raw_int(main_sv.port, 0, "TTL", "shoal:v1:{c}:qb"), 3500, 3600);
    /* The owner entry never expires: it fences stale owners for good. */
    assert_int_equal(raw_int(main_sv.port, 0, "TTL", "shoal:v1:{c}:owner"), -1);

    assert_int_equal(save(f, "c", e, "gone", now - 1), 0);
    assert_int_equal(push(f, "c", "m2", 0, 0), ERR_NOT_FOUND);
    l = load(f, "c");
    assert_int_equal(l.rc, ERR_NOT_FOUND);
    assert_int_equal(l.n, 0);

    assert_int_equal(save(f, "c", e, "alive", now + 3600), 0);
    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.n, 0);
    assert_memory_equal(l.state, "alive", 5);

    /* Saving without expiry makes the session and its queue persistent again. */
    assert_int_equal(push(f, "c", "m3", 0, 0), 0);
    assert_int_equal(save(f, "c", e, "forever", 0), 0);
    assert_int_equal(raw_int(main_sv.port, 0, "TTL", "shoal:v1:{c}:sess"), -1);
    assert_int_equal(raw_int(main_sv.port, 0, "TTL", "shoal:v1:{c}:q"), -1);
    assert_int_equal(raw_int(main_sv.port, 0, "TTL", "shoal:v1:{c}:qb"), -1);

    /* Expiry is real time: a session two seconds from its end is gone three seconds later. */
    assert_int_equal(save(f, "short", 0, "s", (uint64_t)time(NULL) + 2), 0);
    assert_int_equal(push(f, "short", "m", 0, 0), 0);
    run_for(f, 3100);
    l = load(f, "short");
    assert_int_equal(l.rc, ERR_NOT_FOUND);
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:{short}:q"), 0);
}

/* ---- offline queue ------------------------------------------------------------------------- */

static void test_queue_quota_count(void **state)
{
    struct fixture *f = *state;
    struct result l;

    assert_int_equal(save(f, "c", 0, "s", 0), 0);
    assert_int_equal(push(f, "c", "a", 3, 0), 0);
    assert_int_equal(push(f, "c", "b", 3, 0), 0);
    assert_int_equal(push(f, "c", "c", 3, 0), 0);
    assert_int_equal(push(f, "c", "d", 3, 0), ERR_QUOTA);
    assert_int_equal(push(f, "c", "e", 0, 0), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 4);
    assert_blob(&l, 0, "a");
    assert_blob(&l, 1, "b");
    assert_blob(&l, 2, "c");
    assert_blob(&l, 3, "e");
}

static void test_queue_quota_bytes(void **state)
{
    struct fixture *f = *state;
    struct result l;

    assert_int_equal(save(f, "c", 0, "s", 0), 0);
    assert_int_equal(push(f, "c", "12345", 0, 10), 0);
    assert_int_equal(push(f, "c", "123456", 0, 10), ERR_QUOTA);
    assert_int_equal(push(f, "c", "12345", 0, 10), 0);
    assert_int_equal(push(f, "c", "1", 0, 10), ERR_QUOTA);
    assert_int_equal(save(f, "big", 0, "s", 0), 0);
    assert_int_equal(push(f, "big", "12345678901", 0, 10), ERR_QUOTA);
    l = load(f, "c");
    assert_int_equal(l.n, 2);
    assert_int_equal(trim(f, "c", 0, "12345"), 0);
    assert_int_equal(push(f, "c", "abcde", 0, 10), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 2);
    assert_blob(&l, 0, "12345");
    assert_blob(&l, 1, "abcde");
    {
        long long n = -1;
        assert_int_equal(raw(main_sv.port, NULL, 0, &n, "INCRBY", "shoal:v1:{c}:qb", "0", NULL),
                         ':');
        assert_int_equal(n, 10);
    }
}

static int push_keyed(struct fixture *f, const char *id, const char *key, const char *body)
{
    uint8_t e[64];
    size_t n = 1 + strlen(key) + strlen(body);
    assert_true(strlen(key) == STORE_ENTRY_KEY_LEN && n <= sizeof(e));
    e[0] = 0;
    memcpy(e + 1, key, STORE_ENTRY_KEY_LEN);
    memcpy(e + 1 + STORE_ENTRY_KEY_LEN, body, strlen(body));
    struct result r = {0};
    assert_int_equal(store_queue_push(f->s, id, (struct store_blob){e, n}, 0, 0, on_done, &r), 0);
    wait_one(f, &r);
    return r.rc;
}

static void test_queue_trim(void **state)
{
    struct fixture *f = *state;
    uint64_t e = claim(f, "c");
    const char *msgs[] = {"m0", "m1", "m2", "m3", "m4"};
    struct result l;

    assert_int_equal(save(f, "c", e, "s", 0), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(push(f, "c", msgs[i], 0, 0), 0);
    /* Entries go by name wherever they are, not by position; a name found nowhere is ignored. */
    assert_int_equal(trim(f, "c", e, "m3 m1 gone"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 3);
    assert_blob(&l, 0, "m0");
    assert_blob(&l, 1, "m2");
    assert_blob(&l, 2, "m4");
    assert_int_equal(trim(f, "c", e, "m0"), 0);
    assert_int_equal(trim(f, "c", e, "m0"), 0); /* again: nothing left to do */
    l = load(f, "c");
    assert_int_equal(l.n, 2);
    assert_blob(&l, 0, "m2");
    /* A keyed entry is named by its key alone, not by its content. */
    assert_int_equal(push_keyed(f, "c", "KEY00001", "body"), 0);
    assert_int_equal(push_keyed(f, "c", "KEY00002", "body"), 0);
    assert_int_equal(trim(f, "c", e, "\\0KEY00001body"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 4);
    assert_int_equal(trim(f, "c", e, "KEY00002 m2"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 2);
    assert_blob(&l, 0, "m4");
    assert_int_equal(l.blob_len[1], 13);
    assert_memory_equal(l.blobs[1], "\0KEY00001body", 13);
    /* Two equal entries: one name takes one of them. */
    assert_int_equal(push(f, "c", "d", 0, 0), 0);
    assert_int_equal(push(f, "c", "d", 0, 0), 0);
    assert_int_equal(trim(f, "c", e, "d KEY00001 m4"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 1);
    assert_blob(&l, 0, "d");
    /* Emptied, the queue's byte count starts again from 0. */
    assert_int_equal(trim(f, "c", e, "d"), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 0);
    assert_int_equal(push(f, "c", "m5", 0, 2), 0);
    l = load(f, "c");
    assert_int_equal(l.n, 1);
    assert_blob(&l, 0, "m5");
    assert_int_equal(trim(f, "nobody", 0, "m5"), 0);
}

/* Client ids are binary-safe: spaces, CR LF and braces go into keys as they are. */
static void test_binary_client_ids(void **state)
{
    struct fixture *f = *state;
    const char *ids[] = {"a b", "a b\r\n}{x", "}", "{", "*3\r\n$3\r\nDEL", "%7D"};
    struct result l;

    for (int i = 0; i < 6; i++) {
        char st[32];
        (void)snprintf(st, sizeof(st), "state-%d", i);
        assert_int_equal(save(f, ids[i], claim(f, ids[i]), st, 0), 0);
        assert_int_equal(push(f, ids[i], ids[i], 0, 0), 0);
    }
    for (int i = 0; i < 6; i++) {
        char st[32];
        (void)snprintf(st, sizeof(st), "state-%d", i);
        l = load(f, ids[i]);
        assert_int_equal(l.rc, 0);
        assert_int_equal(l.state_len, strlen(st));
        assert_memory_equal(l.state, st, strlen(st));
        assert_int_equal(l.n, 1);
        assert_blob(&l, 0, ids[i]);
    }
    /* '}' and '%' are escaped inside the braces, so the braces always hold the whole id: the
     * cluster hash tag, which keeps all keys of one client id in one slot. */
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:{a b\r\n%7D{x}:sess"), 1);
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:{%7D}:owner"), 1);
}

/* ---- retained ------------------------------------------------------------------------------ */

static void test_retained(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    int seen_a = 0, seen_c = 0;

    assert_int_equal(store_retain_load(f->s, on_retain, &r), 0);
    wait_one(f, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.n, 0);

    assert_int_equal(retain_set(f, "a/b", "one"), 0);
    assert_int_equal(retain_set(f, "a/c", "two"), 0);
    assert_int_equal(retain_set(f, "a/b", "three"), 0);
    assert_int_equal(retain_set(f, "x", "four"), 0);
    assert_int_equal(retain_set(f, "x", ""), 0);
    assert_int_equal(retain_set(f, "never-set", ""), 0);

    memset(&r, 0, sizeof(r));
    assert_int_equal(store_retain_load(f->s, on_retain, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.n, 2);
    for (size_t i = 0; i < r.n; i++) {
        if (r.blob_len[i] == 5 && memcmp(r.blobs[i], "three", 5) == 0)
            seen_a++;
        else if (r.blob_len[i] == 3 && memcmp(r.blobs[i], "two", 3) == 0)
            seen_c++;
    }
    assert_int_equal(seen_a, 1);
    assert_int_equal(seen_c, 1);
}

struct retained_check {
    int calls;
    int rc;
    size_t n;
    size_t n_t;
    int bad;
};

/* Each blob is "t/<i>/payload" (kept by the test: i % 3 != 0) or "u/<i>/payload" (written
 * meanwhile by another node); none may appear twice. */
static void on_retain_check(void *ctx, int rc, const struct store_blob *msgs, size_t n)
{
    struct retained_check *c = ctx;
    char *seen_t = calloc(N_RETAINED, 1);
    char *seen_u = calloc(N_CONCURRENT, 1);

    assert_non_null(seen_t);
    assert_non_null(seen_u);
    c->calls++;
    c->rc = rc;
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        char buf[64];
        int k;
        if (msgs[i].len >= sizeof(buf)) {
            c->bad++;
            continue;
        }
        memcpy(buf, msgs[i].p, msgs[i].len);
        buf[msgs[i].len] = '\0';
        if (sscanf(buf, "t/%d/payload", &k) == 1 && k >= 0 && k < N_RETAINED && k % 3 != 0 &&
            !seen_t[k]++)
            c->n_t++;
        else if (!(sscanf(buf, "u/%d/payload", &k) == 1 && k >= 0 && k < N_CONCURRENT &&
                   !seen_u[k]++))
            c->bad++;
    }
    free(seen_t);
    free(seen_u);
}

static void test_retained_many(void **state)
{
    struct fixture *f = *state;
    struct result r = {0}, w = {0};
    struct retained_check c = {0};
    struct store *b;
    char topic[32], payload[48], url[128];
    long long n = 0;

    for (int i = 0; i < N_RETAINED; i++) {
        (void)snprintf(topic, sizeof(topic), "t/%d", i);
        (void)snprintf(payload, sizeof(payload), "t/%d/payload", i);
        assert_int_equal(store_retain_set(f->s, topic, blob(payload), on_done, &r), 0);
    }
    for (int i = 0; i < N_RETAINED; i += 3) {
        (void)snprintf(topic, sizeof(topic), "t/%d", i);
        assert_int_equal(store_retain_set(f->s, topic, blob(""), on_done, &r), 0);
    }
    assert_true(wait_count(f, &r.calls, N_RETAINED + N_RETAINED / 3, 10000));
    assert_int_equal(r.rc, 0);
    assert_int_equal(raw(main_sv.port, NULL, 0, &n, "HLEN", "shoal:v1:retained", NULL), ':');
    assert_int_equal(n, N_RETAINED - N_RETAINED / 3);

    /* Another node fills the hash, then empties it again while the scan runs: Redis shrinks
     * the table midway, so the scan sees some entries twice. The store hands each over once. */
    url_of(url, sizeof(url), &main_sv, NULL, 0);
    b = open_store(f, url, "node-b");
    for (int i = 0; i < N_CONCURRENT; i++) {
        (void)snprintf(topic, sizeof(topic), "u/%d", i);
        (void)snprintf(payload, sizeof(payload), "u/%d/payload", i);
        assert_int_equal(store_retain_set(b, topic, blob(payload), on_done, &w), 0);
    }
    assert_true(wait_count(f, &w.calls, N_CONCURRENT, 20000));
    assert_int_equal(store_retain_load(f->s, on_retain_check, &c), 0);
    for (int i = 0; i < N_CONCURRENT; i++) {
        (void)snprintf(topic, sizeof(topic), "u/%d", i);
        assert_int_equal(store_retain_set(b, topic, blob(""), on_done, &w), 0);
    }
    assert_true(wait_count(f, &c.calls, 1, 20000));
    assert_true(wait_count(f, &w.calls, 2 * N_CONCURRENT, 20000));
    assert_int_equal(w.rc, 0);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.bad, 0);
    assert_int_equal(c.n_t, N_RETAINED - N_RETAINED / 3);
    store_destroy(&b);
}

/* ---- pipelining ---------------------------------------------------------------------------- */

struct burst {
    int calls;
    int bad;
    int next; /* the index expected next */
};

struct burst_req {
    struct burst *b;
    int i;
};

static void on_burst(void *ctx, int rc)
{
    struct burst_req *q = ctx;

    if (rc != 0 || q->i != q->b->next)
        q->b->bad++;
    q->b->next = q->i + 1;
    q->b->calls++;
}

struct burst_load {
    int calls;
    int rc;
    size_t n;
    int bad;
};

static void on_burst_load(void *ctx, int rc, struct store_blob state, const struct store_blob *q,
                          size_t n)
{
    struct burst_load *l = ctx;
    (void)state;
    l->calls++;
    l->rc = rc;
    l->n = n;
    for (size_t i = 0; i < n; i++) {
        char want[16];
        int len = snprintf(want, sizeof(want), "%zu", i);
        if (q[i].len != (size_t)len || memcmp(q[i].p, want, q[i].len) != 0)
            l->bad++;
    }
}

/* 10k requests issued in one go complete, in order, well within the command timeout: they are
 * pipelined, not sent one reply at a time. */
static void test_pipelined_burst(void **state)
{
    struct fixture *f = *state;
    struct burst b = {0};
    struct burst_req *reqs = calloc(N_BURST, sizeof(*reqs));
    struct burst_load l = {0};
    uint64_t t0;

    assert_non_null(reqs);
    assert_int_equal(save(f, "c", 0, "s", 0), 0);
    t0 = now_ms();
    for (int i = 0; i < N_BURST; i++) {
        char m[16];
        (void)snprintf(m, sizeof(m), "%d", i);
        reqs[i].b = &b;
        reqs[i].i = i;
        assert_int_equal(store_queue_push(f->s, "c", blob(m), 0, 0, on_burst, &reqs[i]), 0);
    }
    assert_int_equal(b.calls, 0);
    assert_true(wait_count(f, &b.calls, N_BURST, 10000));
    assert_true(now_ms() - t0 < 3000);
    assert_int_equal(b.bad, 0);
    assert_int_equal(store_session_load(f->s, "c", on_burst_load, &l), 0);
    assert_true(wait_count(f, &l.calls, 1, WAIT_MS));
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.n, N_BURST);
    assert_int_equal(l.bad, 0);
    free(reqs);
}

/* ---- SELECT, AUTH, scripts ----------------------------------------------------------------- */

static void test_select_db(void **state)
{
    struct fixture *f = *state;
    struct fixture g;
    struct result r = {0};
    char url[128];
    long long n = -1;

    (void)f;
    loop_init(&g);
    url_of(url, sizeof(url), &main_sv, NULL, 3);
    g.s = open_store(&g, url, "node-a");
    assert_int_equal(store_retain_set(g.s, "t", blob("x"), on_done, &r), 0);
    assert_int_equal(store_session_save(g.s, "c", 0, blob("s"), 0, on_done, &r), 0);
    assert_true(wait_count(&g, &r.calls, 2, WAIT_MS));
    assert_int_equal(r.rc, 0);
    assert_int_equal(raw(main_sv.port, NULL, 3, &n, "HLEN", "shoal:v1:retained", NULL), ':');
    assert_int_equal(n, 1);
    assert_int_equal(raw_int(main_sv.port, 3, "EXISTS", "shoal:v1:{c}:sess"), 1);
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:{c}:sess"), 0);
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:retained"), 0);
    store_destroy(&g.s);
    loop_finish(&g);
}

/* A server that lost its script cache (SCRIPT FLUSH, or a failover) still runs our scripts. */
static void test_script_cache_flushed(void **state)
{
    struct fixture *f = *state;
    uint64_t e;
    struct result l;

    assert_int_equal(raw(main_sv.port, NULL, 0, NULL, "SCRIPT", "FLUSH", NULL), '+');
    e = claim(f, "c");
    assert_int_equal(save(f, "c", e, "after-flush", 0), 0);
    l = load(f, "c");
    assert_int_equal(l.rc, 0);
    assert_memory_equal(l.state, "after-flush", 11);
}

static bool file_contains(const char *path, const char *needle)
{
    char buf[8192];
    size_t n;
    FILE *fp = fopen(path, "r");

    if (!fp)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    (void)fclose(fp);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void test_auth(void **state)
{
    struct server *sv = *state;
    struct fixture f;
    struct store *s = NULL;
    struct result r[2];
    char url[128], logpath[96];
    uint64_t t0;

    loop_init(&f);

    /* Right password, with and without a user name. */
    url_of(url, sizeof(url), sv, ":" PASSWORD, 0);
    s = open_store(&f, url, "n");
    assert_int_equal(claim_on(&f, s, "c").rc, 0);
    store_destroy(&s);
    url_of(url, sizeof(url), sv, "default:" PASSWORD, 0);
    s = open_store(&f, url, "n");
    assert_int_equal(claim_on(&f, s, "c").rc, 0);
    store_destroy(&s);

    /* Wrong password: requests fail with ERR_IO soon, and the refusal is logged without it. */
    (void)snprintf(logpath, sizeof(logpath), "%s/shoal.log", sv->dir);
    assert_int_equal(log_set_dest(-1, logpath), 0);
    url_of(url, sizeof(url), sv, ":wrong-pw", 0);
    assert_int_equal(store_create(&f.loop, url, "n", &s, NULL, 0), 0);
    memset(r, 0, sizeof(r));
    t0 = now_ms();
    assert_int_equal(store_owner_claim(s, "c", on_claim, &r[0]), 0);
    assert_true(wait_count(&f, &r[0].calls, 1, WAIT_MS));
    assert_int_equal(r[0].rc, ERR_IO);
    assert_true(now_ms() - t0 < 2000);
    assert_false(store_is_up(s));
    /* Later requests fail at once, still never from inside the call. */
    assert_int_equal(store_session_load(s, "c", on_load, &r[1]), 0);
    assert_int_equal(r[1].calls, 0);
    assert_true(wait_count(&f, &r[1].calls, 1, 1000));
    assert_int_equal(r[1].rc, ERR_IO);
    store_destroy(&s);
    log_close();
    assert_true(file_contains(logpath, "redis refused the connection"));
    assert_true(file_contains(logpath, "WRONGPASS"));
    assert_false(file_contains(logpath, "wrong-pw"));

    /* No password at all: the server says NOAUTH, which fails requests the same way. */
    url_of(url, sizeof(url), sv, NULL, 0);
    assert_int_equal(store_create(&f.loop, url, "n", &s, NULL, 0), 0);
    memset(r, 0, sizeof(r));
    assert_int_equal(store_retain_set(s, "t", blob("x"), on_done, &r[0]), 0);
    assert_true(wait_count(&f, &r[0].calls, 1, WAIT_MS));
    assert_int_equal(r[0].rc, ERR_IO);
    store_destroy(&s);

    loop_finish(&f);
}

/* ---- outages ------------------------------------------------------------------------------- */

struct outcome {
    int calls;
    int ok;
    int io;
    int timeout;
    int other;
};

static void on_outcome(void *ctx, int rc)
{
    struct outcome *o = ctx;
    o->calls++;
    if (rc == 0)
        o->ok++;
    else if (rc == ERR_IO)
        o->io++;
    else if (rc == ERR_TIMEOUT)
        o->timeout++;
    else
        o->other++;
}

/* The server stops with requests on the wire, stays down past one request's deadline, then
 * comes back on the same port with the same data. */
static void test_server_restart(void **state)
{
    struct server *sv = *state;
    struct fixture f;
    struct outcome o = {0};
    struct result a = {0}, b = {0};
    char url[128];
    uint64_t t0, took;

    loop_init(&f);
    url_of(url, sizeof(url), sv, NULL, 0);
    f.s = open_store(&f, url, "n");
    assert_int_equal(save(&f, "c", 0, "durable", 0), 0);

    for (int i = 0; i < 500; i++)
        assert_int_equal(store_queue_push(f.s, "c", blob("m"), 0, 0, on_outcome, &o), 0);
    assert_true(wait_count(&f, &o.calls, 1, WAIT_MS));
    server_stop(sv);
    assert_true(wait_count(&f, &o.calls, 500, WAIT_MS));
    assert_int_equal(o.other, 0);
    assert_int_equal(o.ok + o.io + o.timeout, 500);
    assert_true(run_until(&f, pred_down, f.s, WAIT_MS));

    /* Down for longer than the command timeout: the request times out within its bound. */
    t0 = now_ms();
    assert_int_equal(store_session_load(f.s, "c", on_load, &a), 0);
    assert_true(wait_count(&f, &a.calls, 1, WAIT_MS));
    took = now_ms() - t0;
    assert_int_equal(a.rc, ERR_TIMEOUT);
    assert_true(took >= 2500 && took <= 4500);

    /* Back within the timeout: the waiting request goes out once the store reconnects. */
    assert_int_equal(store_session_load(f.s, "c", on_load, &b), 0);
    server_start(sv);
    assert_true(wait_count(&f, &b.calls, 1, WAIT_MS));
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.state_len, 7);
    assert_memory_equal(b.state, "durable", 7);
    /* Everything acknowledged was stored; what failed with ERR_IO may or may not have been. */
    assert_true(b.n >= (size_t)o.ok && b.n <= (size_t)(o.ok + o.io));
    assert_true(run_until(&f, pred_up, f.s, WAIT_MS));

    store_destroy(&f.s);
    loop_finish(&f);
}

/* A server that stops answering: the request times out, the connection is dropped as broken,
 * and the store comes back once the server does. */
static void test_stalled_server(void **state)
{
    struct fixture *f = *state;
    struct result a = {0};
    uint64_t t0, took;

    assert_int_equal(raw(main_sv.port, NULL, 0, NULL, "CONFIG", "RESETSTAT", NULL), '+');
    assert_int_equal(kill(main_sv.pid, SIGSTOP), 0);
    t0 = now_ms();
    assert_int_equal(store_owner_claim(f->s, "c", on_claim, &a), 0);
    assert_true(wait_count(f, &a.calls, 1, WAIT_MS));
    took = now_ms() - t0;
    assert_int_equal(a.rc, ERR_TIMEOUT);
    assert_true(took >= 2500 && took <= 4500);
    assert_false(store_is_up(f->s));
    assert_int_equal(kill(main_sv.pid, SIGCONT), 0);
    assert_true(run_until(f, pred_up, f->s, 8000));
    assert_true(claim(f, "c") > 0);
    /* The new connection's handshake killed the old one at the server, so that what was left
     * on it can no longer be applied after the requests made since. */
    assert_true(info_has(main_sv.port, "commandstats", "cmdstat_client|kill:calls="));
}

/* ---- destroy ------------------------------------------------------------------------------- */

static void test_destroy_with_requests_in_flight(void **state)
{
    struct fixture *f = *state;
    struct outcome o = {0};
    struct result r[3];

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 2000; i++)
        assert_int_equal(store_retain_set(f->s, "t", blob("x"), on_outcome, &o), 0);
    assert_int_equal(store_owner_claim(f->s, "c", on_claim, &r[0]), 0);
    assert_int_equal(store_session_load(f->s, "c", on_load, &r[1]), 0);
    assert_int_equal(store_retain_load(f->s, on_retain, &r[2]), 0);
    (void)uv_run(&f->loop, UV_RUN_NOWAIT); /* some go out, none has its reply yet */
    store_destroy(&f->s);
    assert_true(wait_count(f, &r[2].calls, 1, WAIT_MS));
    assert_int_equal(o.calls, 2000);
    assert_int_equal(o.io + o.timeout, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_true(r[i].rc == 0 || r[i].rc == ERR_CANCELED);
    }
    assert_int_equal(o.ok + o.other, 2000);
    if (r[0].rc == 0)
        assert_true(r[0].epoch > 0);
    else
        assert_int_equal(r[0].epoch, 0);
}

static void test_destroy_while_down(void **state)
{
    struct fixture f;
    struct store *s = NULL;
    struct result r[2];
    char url[64];

    (void)state;
    memset(r, 0, sizeof(r));
    loop_init(&f);
    (void)snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
    assert_int_equal(store_create(&f.loop, url, "n", &s, NULL, 0), 0);
    assert_int_equal(store_owner_claim(s, "c", on_claim, &r[0]), 0);
    assert_int_equal(store_retain_load(s, on_retain, &r[1]), 0);
    run_for(&f, 300); /* a few connection attempts */
    assert_int_equal(r[0].calls, 0);
    store_destroy(&s);
    assert_true(wait_count(&f, &r[1].calls, 1, WAIT_MS));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].rc, ERR_CANCELED);
    }
    loop_finish(&f);
}

/* Destroyed while its host name is being resolved on the thread pool, and while connecting. */
static void test_destroy_while_connecting(void **state)
{
    struct fixture f;
    struct store *s = NULL;
    char url[64];

    (void)state;
    loop_init(&f);
    (void)snprintf(url, sizeof(url), "redis://localhost:%d", main_sv.port);
    assert_int_equal(store_create(&f.loop, url, "n", &s, NULL, 0), 0);
    (void)uv_run(&f.loop, UV_RUN_NOWAIT); /* starts the lookup */
    store_destroy(&s);
    (void)snprintf(url, sizeof(url), "redis://127.0.0.1:%d", main_sv.port);
    assert_int_equal(store_create(&f.loop, url, "n", &s, NULL, 0), 0);
    (void)uv_run(&f.loop, UV_RUN_NOWAIT); /* starts the TCP connect */
    store_destroy(&s);
    /* A name that resolves reaches the server too. */
    (void)snprintf(url, sizeof(url), "redis://localhost:%d", main_sv.port);
    s = open_store(&f, url, "n");
    store_destroy(&s);
    loop_finish(&f);
}

/* ---- cluster support ------------------------------------------------------------------------ */

/* Another node on the same server; teardown destroys it. */
static struct store *open_peer(struct fixture *f, int i, const char *node)
{
    char url[128];

    url_of(url, sizeof(url), &main_sv, NULL, 0);
    f->peers[i] = open_store(f, url, node);
    return f->peers[i];
}

static int heartbeat_on(struct fixture *f, struct store *s, const char *node, const char *info,
                        uint32_t ttl_ms)
{
    struct result r = {0};
    assert_int_equal(store_member_heartbeat(s, node, blob(info), ttl_ms, on_done, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    return r.rc;
}

static int leave(struct fixture *f, const char *node)
{
    struct result r = {0};
    assert_int_equal(store_member_leave(f->s, node, on_done, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    return r.rc;
}

/* Lists members (or with owner, the sessions it owns) through s; the result holds the pairs. */
static struct result list_pairs(struct fixture *f, struct store *s, const char *owner)
{
    struct result r = {0};
    if (owner)
        assert_int_equal(store_session_scan_owned(s, owner, on_retain, &r), 0);
    else
        assert_int_equal(store_member_list(s, on_retain, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.n % 2, 0);
    assert_true(r.n <= 16);
    return r;
}

/* Whether the result holds the pair (name, value). */
static bool has_pair(const struct result *r, const char *name, const char *value)
{
    for (size_t i = 0; i + 1 < r->n; i += 2) {
        if (r->blob_len[i] == strlen(name) && memcmp(r->blobs[i], name, strlen(name)) == 0)
            return r->blob_len[i + 1] == strlen(value) &&
                   memcmp(r->blobs[i + 1], value, strlen(value)) == 0;
    }
    return false;
}

static bool has_name(const struct result *r, const char *name)
{
    for (size_t i = 0; i + 1 < r->n; i += 2) {
        if (r->blob_len[i] == strlen(name) && memcmp(r->blobs[i], name, strlen(name)) == 0)
            return true;
    }
    return false;
}

/* The node ids store_member_gone lists through s. */
static struct result gone_of(struct fixture *f, struct store *s)
{
    struct result r = {0};
    assert_int_equal(store_member_gone(s, on_retain, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    assert_int_equal(r.rc, 0);
    return r;
}

static int forget(struct fixture *f, const char *node)
{
    struct result r = {0};
    assert_int_equal(store_member_forget(f->s, node, on_done, &r), 0);
    wait_one(f, &r);
    return r.rc;
}

static void test_members(void **state)
{
    struct fixture *f = *state;
    struct store *b = open_peer(f, 0, "node-b");
    const char *odd = "n}%7D{x y";
    long long ms = -1;
    struct result l;

    l = list_pairs(f, f->s, NULL);
    assert_int_equal(l.n, 0);
    assert_int_equal(heartbeat_on(f, f->s, "node-a", "10.0.0.1:7000/1", 200), 0);
    assert_int_equal(heartbeat_on(f, b, "node-b", "10.0.0.2:7000/1", 60000), 0);
    assert_int_equal(heartbeat_on(f, b, odd, "", 60000), 0);
    assert_int_equal(raw(main_sv.port, NULL, 0, &ms, "PTTL", "shoal:v1:member:{node-a}", NULL),
                     ':');
    assert_in_range(ms, 1, 200);
    assert_int_equal(raw_int(main_sv.port, 0, "SCARD", "shoal:v1:members"), 3);
    /* Each node sees the others. */
    l = list_pairs(f, b, NULL);
    assert_int_equal(l.n, 6);
    assert_true(has_pair(&l, "node-a", "10.0.0.1:7000/1"));
    assert_true(has_pair(&l, "node-b", "10.0.0.2:7000/1"));
    assert_true(has_pair(&l, odd, ""));

    /* A renewed heartbeat moves the deadline and replaces the info. */
    run_for(f, 120);
    assert_int_equal(heartbeat_on(f, f->s, "node-a", "10.0.0.1:7000/2", 200), 0);
    run_for(f, 120);
    l = list_pairs(f, f->s, NULL);
    assert_int_equal(l.n, 6);
    assert_true(has_pair(&l, "node-a", "10.0.0.1:7000/2"));

    /* Missed: not listed, and dropped from the index on the way. */
    run_for(f, 250);
    l = list_pairs(f, f->s, NULL);
    assert_int_equal(l.n, 4);
    assert_false(has_name(&l, "node-a"));
    assert_int_equal(raw_int(main_sv.port, 0, "SCARD", "shoal:v1:members"), 2);

    /* A clean leave takes effect at once; leaving twice is fine. */
    assert_int_equal(leave(f, "node-b"), 0);
    assert_int_equal(leave(f, "node-b"), 0);
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:member:{node-b}"), 0);
    l = list_pairs(f, b, NULL);
    assert_int_equal(l.n, 2);
    assert_true(has_pair(&l, odd, ""));
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:member:{n%7D%257D{x y}"), 1);

    /* Gone: the expired and the departed, not the live one (whose key needs escaping). */
    l = gone_of(f, b);
    assert_int_equal(l.n, 2);
    assert_true(has_blob(&l, "node-a") && has_blob(&l, "node-b"));
    assert_int_equal(forget(f, "node-a"), 0);
    assert_int_equal(forget(f, "nobody"), 0);
    l = gone_of(f, f->s);
    assert_int_equal(l.n, 1);
    assert_true(has_blob(&l, "node-b"));
    /* A heartbeat records a forgotten node again; alive, it is not gone. */
    assert_int_equal(heartbeat_on(f, f->s, "node-a", "10.0.0.1:7000/3", 200), 0);
    l = gone_of(f, f->s);
    assert_int_equal(l.n, 1);
    run_for(f, 250);
    l = gone_of(f, f->s);
    assert_int_equal(l.n, 2);
    assert_true(has_blob(&l, "node-a"));
}

static void test_scan_owned(void **state)
{
    struct fixture *f = *state;
    struct store *b = open_peer(f, 0, "node-b");
    uint64_t now = (uint64_t)time(NULL);
    uint64_t e;
    struct result l, r;

    assert_int_equal(save(f, "a1", claim(f, "a1"), "s-a1", 0), 0);
    assert_int_equal(save(f, "a}2", claim(f, "a}2"), "s-a2", now + 3600), 0);
    assert_int_equal(save(f, "moved", claim(f, "moved"), "s-moved", 0), 0);
    r = claim_on(f, b, "b1");
    assert_int_equal(save(f, "b1", r.epoch, "s-b1", 0), 0);
    r = claim_on(f, b, "moved"); /* node-b took it over */
    assert_int_equal(r.rc, 0);
    assert_int_equal(save(f, "unowned", 0, "s-unowned", 0), 0);
    e = claim(f, "released");
    assert_int_equal(save(f, "released", e, "s-released", 0), 0);
    assert_int_equal(release(f, "released", e), 0);
    (void)claim(f, "no-session");
    assert_int_equal(save(f, "expired", claim(f, "expired"), "s-expired", now + 1), 0);
    run_for(f, 2100);

    l = list_pairs(f, b, "node-a");
    assert_int_equal(l.n, 4);
    assert_true(has_pair(&l, "a1", "s-a1"));
    assert_true(has_pair(&l, "a}2", "s-a2"));
    l = list_pairs(f, f->s, "node-b");
    assert_int_equal(l.n, 4);
    assert_true(has_pair(&l, "b1", "s-b1"));
    assert_true(has_pair(&l, "moved", "s-moved"));
    l = list_pairs(f, f->s, "node");
    assert_int_equal(l.n, 0);
    /* The expired session left the index on the way, as a full scan would do. */
    assert_int_equal(raw_int(main_sv.port, 0, "SCARD", "shoal:v1:sessions"), 6);
}

static struct result adopt_on(struct fixture *f, struct store *s, const char *id, const char *dead)
{
    struct result r = {0};
    assert_int_equal(store_owner_adopt(s, id, dead, on_claim, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    return r;
}

static void test_owner_adopt(void **state)
{
    struct fixture *f = *state;
    struct store *b = open_peer(f, 0, "node-b");
    struct store *c = open_peer(f, 1, "node-c");
    uint64_t e1 = claim(f, "cl");
    struct result r, r2, l;
    long long n = -1;

    assert_int_equal(save(f, "cl", e1, "before", 0), 0);
    assert_int_equal(push(f, "cl", "q1", 0, 0), 0);

    /* node-a is taken for dead: node-b adopts its client id with a newer epoch. */
    r = adopt_on(f, b, "cl", "node-a");
    assert_int_equal(r.rc, 0);
    assert_true(r.epoch > e1);
    assert_true(r.has_prev_owner);
    assert_string_equal(r.prev_owner, "node-a");
    assert_int_equal(r.prev_epoch, e1);
    /* The old owner is fenced off; the adopter writes. */
    assert_int_equal(save(f, "cl", e1, "stale", 0), ERR_EXISTS);
    assert_int_equal(trim(f, "cl", e1, "q1"), ERR_EXISTS);
    assert_int_equal(del(f, "cl", e1), ERR_EXISTS);
    assert_int_equal(save(f, "cl", r.epoch, "adopted", 0), 0);
    l = load(f, "cl");
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.state_len, 7);
    assert_memory_equal(l.state, "adopted", 7);
    assert_int_equal(l.n, 1);
    assert_int_equal(raw(main_sv.port, NULL, 0, &n, "HGET", "shoal:v1:{cl}:owner", "node", NULL),
                     '$');
    assert_int_equal(n, 6); /* "node-b" */

    /* A second adopter of node-a's sessions finds node-b there and changes nothing. */
    r2 = adopt_on(f, c, "cl", "node-a");
    assert_int_equal(r2.rc, ERR_EXISTS);
    assert_int_equal(r2.epoch, 0);
    assert_true(r2.has_prev_owner);
    assert_string_equal(r2.prev_owner, "node-b");
    assert_int_equal(r2.prev_epoch, r.epoch);
    assert_int_equal(save(f, "cl", r.epoch, "still-b", 0), 0);

    /* Epochs keep rising: a later claim, then an adoption of that claim. */
    r2 = claim_on(f, c, "cl");
    assert_true(r2.epoch > r.epoch);
    r = adopt_on(f, f->s, "cl", "node-c");
    assert_int_equal(r.rc, 0);
    assert_true(r.epoch > r2.epoch);
    assert_string_equal(r.prev_owner, "node-c");

    /* Nobody owns these: nothing to adopt. */
    r = adopt_on(f, b, "never-claimed", "node-a");
    assert_int_equal(r.rc, ERR_EXISTS);
    assert_false(r.has_prev_owner);
    assert_int_equal(r.prev_epoch, 0);
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:{never-claimed}:owner"), 0);
    e1 = claim(f, "gone");
    assert_int_equal(release(f, "gone", e1), 0);
    r = adopt_on(f, b, "gone", "node-a");
    assert_int_equal(r.rc, ERR_EXISTS);
    assert_false(r.has_prev_owner);
}

static int adopt_lock_on(struct fixture *f, struct store *s, const char *dead, uint32_t ttl_ms)
{
    struct result r = {0};
    assert_int_equal(store_node_adopt_lock(s, dead, ttl_ms, on_done, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    return r.rc;
}

static void test_adopt_lock(void **state)
{
    struct fixture *f = *state;
    struct store *b = open_peer(f, 0, "node-b");
    long long ms = -1;

    assert_int_equal(adopt_lock_on(f, f->s, "dead}1", 300), 0);
    assert_int_equal(adopt_lock_on(f, b, "dead}1", 300), ERR_EXISTS);
    /* Another dead node is another election. */
    assert_int_equal(adopt_lock_on(f, b, "dead2", 300), 0);
    /* The winner locking again renews its hold. */
    assert_int_equal(adopt_lock_on(f, f->s, "dead}1", 60000), 0);
    assert_int_equal(raw(main_sv.port, NULL, 0, &ms, "PTTL", "shoal:v1:adopt:{dead%7D1}", NULL),
                     ':');
    assert_in_range(ms, 59000, 60000);
    assert_int_equal(adopt_lock_on(f, f->s, "dead}1", 200), 0);
    assert_int_equal(adopt_lock_on(f, b, "dead}1", 300), ERR_EXISTS);

    /* The hold runs out: another node may win now, and then holds it. */
    run_for(f, 300);
    assert_int_equal(adopt_lock_on(f, b, "dead}1", 300), 0);
    assert_int_equal(adopt_lock_on(f, f->s, "dead}1", 300), ERR_EXISTS);
    assert_int_equal(adopt_lock_on(f, b, "dead}1", 300), 0);
}

static int park_on(struct fixture *f, struct store *s, const char *node, const char *m)
{
    struct result r = {0};
    assert_int_equal(store_park_push(s, node, blob(m), on_done, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    return r.rc;
}

static struct result take_on(struct fixture *f, struct store *s, const char *node, size_t max)
{
    struct result r = {0};
    assert_int_equal(store_park_take(s, node, max, on_retain, &r), 0);
    assert_int_equal(r.calls, 0);
    wait_one(f, &r);
    assert_int_equal(r.rc, 0);
    return r;
}

#define N_PARKED 600

/* What concurrent takers got: each message "p<i>" once, each batch in order. */
struct takers {
    int calls;
    int bad;
    size_t got;
    char seen[N_PARKED];
};

static void on_take(void *ctx, int rc, const struct store_blob *msgs, size_t n)
{
    struct takers *t = ctx;
    int prev = -1;

    t->calls++;
    if (rc != 0 || n > 7)
        t->bad++;
    for (size_t i = 0; i < n; i++) {
        char buf[16];
        int k;
        if (msgs[i].len >= sizeof(buf)) {
            t->bad++;
            continue;
        }
        memcpy(buf, msgs[i].p, msgs[i].len);
        buf[msgs[i].len] = '\0';
        if (sscanf(buf, "p%d", &k) != 1 || k < 0 || k >= N_PARKED || t->seen[k]++ || k <= prev)
            t->bad++;
        prev = k;
        t->got++;
    }
}

static void test_park(void **state)
{
    struct fixture *f = *state;
    struct store *b = open_peer(f, 0, "node-b");
    struct takers *t = calloc(1, sizeof(*t));
    struct result r = {0};
    char m[16];

    assert_non_null(t);
    r = take_on(f, f->s, "dead", 10);
    assert_int_equal(r.n, 0);
    assert_int_equal(park_on(f, f->s, "dead", "m0"), 0);
    assert_int_equal(park_on(f, b, "dead", "m1"), 0); /* any node may park */
    assert_int_equal(park_on(f, f->s, "dead", ""), 0);
    assert_int_equal(park_on(f, f->s, "dead", "m3"), 0);
    assert_int_equal(park_on(f, f->s, "other", "o0"), 0);
    assert_int_equal(raw_int(main_sv.port, 0, "LLEN", "shoal:v1:parked:{dead}"), 4);
    assert_int_equal(raw_int(main_sv.port, 0, "TTL", "shoal:v1:parked:{dead}"), -1);

    r = take_on(f, b, "dead", 2);
    assert_int_equal(r.n, 2);
    assert_blob(&r, 0, "m0");
    assert_blob(&r, 1, "m1");
    assert_int_equal(park_on(f, f->s, "dead", "m4"), 0);
    r = take_on(f, b, "dead", SIZE_MAX);
    assert_int_equal(r.n, 3);
    assert_blob(&r, 0, "");
    assert_blob(&r, 1, "m3");
    assert_blob(&r, 2, "m4");
    /* Emptied: the list is gone, and another take finds nothing. */
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:parked:{dead}"), 0);
    r = take_on(f, f->s, "dead", 1);
    assert_int_equal(r.n, 0);
    r = take_on(f, f->s, "other", 1);
    assert_int_equal(r.n, 1);
    assert_blob(&r, 0, "o0");

    /* Two nodes take at once, in batches of up to 7: every message goes to one of them. */
    for (int i = 0; i < N_PARKED; i++) {
        (void)snprintf(m, sizeof(m), "p%d", i);
        assert_int_equal(store_park_push(f->s, "dead", blob(m), on_done, &r), 0);
    }
    assert_true(wait_count(f, &r.calls, N_PARKED, WAIT_MS));
    assert_int_equal(r.rc, 0);
    for (int i = 0; i < N_PARKED / 7 + 10; i++) {
        assert_int_equal(store_park_take(f->s, "dead", 7, on_take, t), 0);
        assert_int_equal(store_park_take(b, "dead", 7, on_take, t), 0);
    }
    assert_true(wait_count(f, &t->calls, 2 * (N_PARKED / 7 + 10), WAIT_MS));
    assert_int_equal(t->bad, 0);
    assert_int_equal(t->got, N_PARKED);
    assert_int_equal(raw_int(main_sv.port, 0, "EXISTS", "shoal:v1:parked:{dead}"), 0);
    free(t);
}

/* The new requests obey the same bounds as the rest while the server is gone. */
static void test_cluster_ops_outage(void **state)
{
    struct server *sv = *state;
    struct fixture f;
    struct result r[4];
    struct result l;
    char url[128];
    uint64_t t0, took;

    memset(r, 0, sizeof(r));
    loop_init(&f);
    url_of(url, sizeof(url), sv, NULL, 0);
    f.s = open_store(&f, url, "node-a");
    assert_int_equal(heartbeat_on(&f, f.s, "node-a", "addr", 60000), 0);
    server_stop(sv);
    assert_true(run_until(&f, pred_down, f.s, WAIT_MS));

    t0 = now_ms();
    assert_int_equal(store_member_heartbeat(f.s, "node-a", blob("addr"), 60000, on_done, &r[0]), 0);
    assert_int_equal(store_park_push(f.s, "dead", blob("m"), on_done, &r[1]), 0);
    assert_int_equal(store_owner_adopt(f.s, "c", "dead", on_claim, &r[2]), 0);
    assert_int_equal(store_park_take(f.s, "dead", 5, on_retain, &r[3]), 0);
    assert_true(wait_count(&f, &r[3].calls, 1, WAIT_MS));
    took = now_ms() - t0;
    assert_true(took >= 2500 && took <= 4500);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_true(r[i].rc == ERR_TIMEOUT || r[i].rc == ERR_IO);
    }
    assert_int_equal(r[2].epoch, 0);
    assert_int_equal(r[3].n, 0);

    /* Back with its data (append-only file): the member is still listed. */
    server_start(sv);
    l = list_pairs(&f, f.s, NULL);
    assert_int_equal(l.n, 2);
    assert_true(has_pair(&l, "node-a", "addr"));
    store_destroy(&f.s);
    loop_finish(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_never_up_times_out),
        cmocka_unit_test_setup_teardown(test_every_api_is_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_from_callback_is_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_epochs_and_prev_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_roundtrip_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fencing_rejects_stale_epochs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_quota_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_quota_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_trim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_client_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(test_select_db, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_cache_flushed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth, setup_server_with_password, teardown_server),
        cmocka_unit_test_setup_teardown(test_server_restart, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_stalled_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_with_requests_in_flight, setup, teardown),
        cmocka_unit_test(test_destroy_while_down),
        cmocka_unit_test(test_destroy_while_connecting),
        cmocka_unit_test_setup_teardown(test_members, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_owned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_adopt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_park, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cluster_ops_outage, setup_server, teardown_server),
    };

    /* hiredis writes with write(2): a server that goes away must not kill the test. */
    (void)signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_LEVEL_ERROR);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * metrics: the exposition of a broker assembled by hand (configuration from a file, listeners,
 * fake connections and sessions) follows the text format line by line, counts clients by
 * listener and protocol, names listeners that share a port by address, splits drops and
 * refusals by reason; and the store's latency histogram counts every completed request.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "conf/conf.h"
#include "node/broker.h"
#include "node/buf.h"
#include "node/conn.h"
#include "node/err.h"
#include "node/listener.h"
#include "node/metrics.h"
#include "node/retain.h"
#include "node/session.h"
#include "node/topic_tree.h"
#include "store/store.h"

/* cmocka needs these first, in this order. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

struct fx {
    char path[64];
    struct broker b;
    struct conn conns[4];
    struct session *sess[3];
    struct session *buckets[1];
    struct buf out;
    char *text; /* out as a NUL-terminated string */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    (void)snprintf(f->path, sizeof(f->path), "/tmp/test_metrics.XXXXXX");
    int fd = mkstemp(f->path);
    assert_true(fd >= 0);
    static const char text[] = "node_id n1\n"
                               "listener 1883 127.0.0.1\n"
                               "listener 1883 10.0.0.1\n"
                               "listener 8080\n"
                               "protocol websockets\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    assert_int_equal(close(fd), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    topic_tree_destroy(&f->b.subs);
    retain_destroy(&f->b.retained);
    free(f->b.listeners);
    conf_free(&f->b.conf);
    buf_free(&f->out);
    free(f->text);
    for (size_t i = 0; i < sizeof(f->sess) / sizeof(f->sess[0]); i++)
        free(f->sess[i]);
    (void)unlink(f->path);
    free(f);
    return 0;
}

static void render(struct fx *f)
{
    buf_free(&f->out);
    free(f->text);
    metrics_render(&f->b, &f->out);
    f->text = strndup((const char *)buf_head(&f->out), buf_used(&f->out));
    assert_non_null(f->text);
}

static bool has_line(const struct fx *f, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = f->text; (p = strstr(p, line)) != NULL; p += n) {
        if ((p == f->text || p[-1] == '\n') && p[n] == '\n')
            return true;
    }
    return false;
}

/* Every sample belongs to the family whose HELP and TYPE came last; families are unique and
 * named shoal_*. A small version of the integration test's parser. */
static void check_format(const struct fx *f)
{
    char fam[128] = "", type[16] = "";
    size_t n_families = 0;
    const char *p = f->text;
    assert_true(buf_used(&f->out) > 0 && f->text[buf_used(&f->out) - 1] == '\n');
    while (*p) {
        const char *eol = strchr(p, '\n');
        assert_non_null(eol);
        size_t len = (size_t)(eol - p);
        char line[512];
        assert_true(len > 0 && len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        if (strncmp(line, "# HELP ", 7) == 0) {
            char name[128];
            assert_int_equal(sscanf(line + 7, "%127s", name), 1);
            assert_memory_equal(name, "shoal_", 6);
            char needle[160];
            (void)snprintf(needle, sizeof(needle), "# HELP %s ", name);
            assert_ptr_equal(strstr(f->text, needle), p); /* declared once */
            (void)snprintf(fam, sizeof(fam), "%s", name);
            type[0] = '\0';
            n_families++;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128];
            assert_int_equal(sscanf(line + 7, "%127s %15s", name, type), 2);
            assert_string_equal(name, fam);
            size_t nl = strlen(name);
            bool is_total = nl > 6 && strcmp(name + nl - 6, "_total") == 0;
            assert_int_equal(is_total, strcmp(type, "counter") == 0);
        } else {
            assert_true(type[0] != '\0');
            size_t nl = strcspn(line, "{ ");
            size_t fl = strlen(fam);
            bool is_own = nl == fl && strncmp(line, fam, fl) == 0;
            if (!is_own && strcmp(type, "histogram") == 0 && nl > fl &&
                strncmp(line, fam, fl) == 0) {
                const char *sfx = line + fl;
                is_own = strncmp(sfx, "_bucket{", 8) == 0 || strncmp(sfx, "_sum ", 5) == 0 ||
                         strncmp(sfx, "_count ", 7) == 0;
            }
            if (!is_own)
                fail_msg("sample outside its family %s: %s", fam, line);
            assert_non_null(strchr(line, ' '));
        }
        p = eol + 1;
    }
    assert_true(n_families > 40);
}

/* A broker with its three listeners open (as far as metrics can tell) and nothing else. */
static void make_broker(struct fx *f)
{
    char err[512];
    struct broker *b = &f->b;
    b->conf = conf_load(f->path, 0, err, sizeof(err));
    if (!b->conf)
        fail_msg("%s", err);
    b->n_listeners = b->conf->n_listeners;
    b->listeners = calloc(b->n_listeners, sizeof(*b->listeners));
    assert_non_null(b->listeners);
    for (size_t i = 0; i < b->n_listeners; i++) {
        b->listeners[i].b = b;
        b->listeners[i].cl = &b->conf->listeners[i];
    }
    b->subs = topic_tree_create();
    b->retained = retain_create();
    b->sess_buckets = f->buckets;
    b->sess_nbuckets = 1;
}

static void add_conn(struct fx *f, size_t i, size_t listener, uint8_t version, uint8_t state)
{
    struct conn *c = &f->conns[i];
    c->tcp.data = &f->b.listeners[listener];
    c->version = version;
    c->state = state;
    conn_listener(c)->n_conns++;
    c->next = f->b.conns;
    f->b.conns = c;
}

static void add_session(struct fx *f, size_t i, struct conn *c, uint32_t expiry_s)
{
    struct session *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    f->sess[i] = s;
    s->conn = c;
    s->expiry_s = expiry_s;
    s->hnext = f->buckets[0];
    f->buckets[0] = s;
    f->b.sess_count++;
}

static void test_exposition(void **state)
{
    struct fx *f = *state;
    make_broker(f);
    add_conn(f, 0, 0, 4, CONN_ACTIVE);
    add_conn(f, 1, 0, 5, CONN_ACTIVE);
    add_conn(f, 2, 2, 3, CONN_ACTIVE);
    add_conn(f, 3, 1, 0, CONN_NEW); /* a socket, not a client yet */
    add_session(f, 0, &f->conns[0], 0);
    add_session(f, 1, &f->conns[1], 3600);
    add_session(f, 2, NULL, UINT32_MAX);
    struct stats *st = &f->b.stats;
    st->pub_in[1] = 7;
    st->pub_out[2] = 3;
    st->drops[STATS_DROP_QUEUE_FULL] = 2;
    st->drops[STATS_DROP_EXPIRED] = 4;
    st->pub_dropped = 2 + 5; /* five from a site that gives no reason */
    st->auth_fail[STATS_AUTH_CERTIFICATE] = 1;

    render(f);
    check_format(f);
    /* A listener that shares its port with another is named by its address too. */
    assert_true(has_line(f, "shoal_build_info{version=\"" SHOAL_VERSION "\",node_id=\"n1\"} 1"));
    assert_true(has_line(
        f,
        "shoal_connections{listener=\"127.0.0.1:1883\",transport=\"tcp\",protocol=\"3.1.1\"} 1"));
    assert_true(has_line(
        f, "shoal_connections{listener=\"127.0.0.1:1883\",transport=\"tcp\",protocol=\"5\"} 1"));
    assert_true(has_line(
        f, "shoal_connections{listener=\"127.0.0.1:1883\",transport=\"tcp\",protocol=\"3.1\"} 0"));
    assert_true(has_line(
        f, "shoal_connections{listener=\"10.0.0.1:1883\",transport=\"tcp\",protocol=\"3.1.1\"} 0"));
    assert_true(
        has_line(f, "shoal_connections{listener=\"8080\",transport=\"ws\",protocol=\"3.1\"} 1"));
    assert_true(
        has_line(f, "shoal_listener_sockets{listener=\"10.0.0.1:1883\",transport=\"tcp\"} 1"));
    assert_true(has_line(f, "shoal_sessions 3"));
    assert_true(has_line(f, "shoal_sessions_persistent 2"));
    assert_true(has_line(f, "shoal_sessions_offline 1"));
    assert_true(has_line(f, "shoal_messages_received_total{qos=\"1\"} 7"));
    assert_true(has_line(f, "shoal_messages_sent_total{qos=\"2\"} 3"));
    assert_true(has_line(f, "shoal_messages_dropped_total{reason=\"queue_full\"} 2"));
    assert_true(has_line(f, "shoal_messages_dropped_total{reason=\"expired\"} 4"));
    assert_true(has_line(f, "shoal_messages_dropped_total{reason=\"other\"} 5"));
    assert_true(has_line(f, "shoal_auth_failures_total{reason=\"certificate\"} 1"));
    assert_true(has_line(f, "shoal_auth_failures_total{reason=\"bad_credentials\"} 0"));
    /* Without a store the node is not ready, and the store histogram is empty. */
    assert_true(has_line(f, "shoal_ready 0"));
    assert_true(has_line(f, "shoal_store_up 0"));
    assert_true(has_line(f, "shoal_store_request_duration_seconds_bucket{le=\"+Inf\"} 0"));
    assert_true(has_line(f, "shoal_cluster_members 0"));
}

static void on_done(void *ctx, int rc)
{
    int *out = ctx;
    *out = rc;
}

static void on_load(void *ctx, int rc, struct store_blob state, const struct store_blob *q,
                    size_t n)
{
    (void)state;
    (void)q;
    (void)n;
    on_done(ctx, rc);
}

static void test_store_histogram(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct store *s = NULL;
    char err[128];
    int rc_load = 1, rc_save = 1;

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(store_create(&loop, "memory", "n1", &s, err, sizeof(err)), 0);
    const struct store_stats *ss = store_get_stats(s);
    assert_int_equal(ss->count, 0);
    assert_int_equal(store_session_load(s, "nobody", on_load, &rc_load), 0);
    uint8_t blob[4] = {1, 2, 3, 4};
    assert_int_equal(
        store_retain_set(s, "t", (struct store_blob){blob, sizeof(blob)}, on_done, &rc_save), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    assert_int_equal(rc_load, ERR_NOT_FOUND);
    assert_int_equal(rc_save, 0);
    assert_int_equal(ss->count, 2);
    assert_int_equal(ss->errors, 0); /* "not found" is an answer, not a failure */
    uint64_t sum = 0;
    for (size_t i = 0; i <= STORE_LATENCY_BUCKETS; i++)
        sum += ss->buckets[i];
    assert_int_equal(sum, 2);
    for (size_t i = 1; i < STORE_LATENCY_BUCKETS; i++)
        assert_true(store_latency_bounds_us[i] > store_latency_bounds_us[i - 1]);
    assert_int_equal(store_latency_bounds_us[STORE_LATENCY_BUCKETS - 1], 1000000);
    store_destroy(&s);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exposition, setup, teardown),
        cmocka_unit_test(test_store_histogram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Retained messages: set/replace/clear, wildcard lookups, '$' topics, expiry, accounting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/msg.h"
#include "node/retain.h"
#include "node/topic.h"

#define MAX_SEEN 64

struct seen {
    const char *topics[MAX_SEEN];
    struct msg *msgs[MAX_SEEN];
    size_t n;
};

static void on_msg(void *ctx, struct msg *m)
{
    struct seen *s = ctx;
    assert_true(m->refs >= 1);
    if (s->n < MAX_SEEN) {
        s->topics[s->n] = m->topic;
        s->msgs[s->n] = m;
    }
    s->n++;
}

static struct seen lookup(struct retain *r, const char *filter, uint64_t now)
{
    struct seen s;
    memset(&s, 0, sizeof(s));
    retain_match(r, filter, strlen(filter), now, on_msg, &s);
    return s;
}

static bool saw(const struct seen *s, const char *topic)
{
    for (size_t i = 0; i < s->n && i < MAX_SEEN; i++) {
        if (strcmp(s->topics[i], topic) == 0)
            return true;
    }
    return false;
}

/* Sets a retained message and drops the caller's reference: the trie keeps it alive. */
static void put(struct retain *r, const char *topic, const char *payload, uint64_t expiry)
{
    struct msg *m = msg_create(topic, strlen(topic), NULL, 0, payload, strlen(payload));
    m->expiry_ms = expiry;
    retain_set(r, m);
    msg_unref(&m);
}

static uint64_t live0;

static int setup(void **state)
{
    (void)state;
    live0 = msg_live_count();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(msg_live_count(), live0);
    return 0;
}

static void test_set_replace_clear(void **state)
{
    (void)state;
    struct retain *r = retain_create();
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_bytes(r), 0);

    struct msg *m = msg_create("a/b", 3, NULL, 0, "hello", 5);
    retain_set(r, m);
    assert_int_equal(m->refs, 2);
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_bytes(r), 5);
    struct seen s = lookup(r, "a/b", 0);
    assert_int_equal(s.n, 1);
    assert_ptr_equal(s.msgs[0], m);

    /* Replacing drops the trie's reference on the old message. */
    struct msg *m2 = msg_create("a/b", 3, NULL, 0, "hi", 2);
    retain_set(r, m2);
    assert_int_equal(m->refs, 1);
    assert_int_equal(m2->refs, 2);
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_bytes(r), 2);
    s = lookup(r, "a/b", 0);
    assert_int_equal(s.n, 1);
    assert_ptr_equal(s.msgs[0], m2);

    /* Setting the same message again keeps one reference. */
    retain_set(r, m2);
    assert_int_equal(m2->refs, 2);
    assert_int_equal(retain_count(r), 1);

    /* An empty payload clears. */
    struct msg *clr = msg_create("a/b", 3, NULL, 0, NULL, 0);
    retain_set(r, clr);
    assert_int_equal(clr->refs, 1);
    assert_int_equal(m2->refs, 1);
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_bytes(r), 0);
    assert_int_equal(lookup(r, "a/b", 0).n, 0);
    assert_int_equal(lookup(r, "#", 0).n, 0);
    assert_int_equal(retain_nodes(r), 1);
    /* Clearing an absent topic, or an interior level, is a no-op. */
    retain_set(r, clr);
    put(r, "x/y/z", "1", 0);
    put(r, "x/y", "", 0);
    put(r, "q", "", 0);
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_nodes(r), 4);
    assert_int_equal(lookup(r, "x/y/z", 0).n, 1);

    msg_unref(&clr);
    msg_unref(&m);
    msg_unref(&m2);
    retain_destroy(&r);
    assert_null(r);
}

static void test_wildcards(void **state)
{
    (void)state;
    struct retain *r = retain_create();
    static const char *topics[] = {"a",  "a/b", "a/c", "a/b/c",     "a/b/d", "b/b",  "a//b",
                                   "/a", "a/",  "/",   "$SYS/load", "$SYS",  "x/$y", "$share/g/a"};
    size_t nt = sizeof(topics) / sizeof(topics[0]);
    for (size_t i = 0; i < nt; i++)
        put(r, topics[i], "p", 0);
    assert_int_equal(retain_count(r), nt);

    static const char *filters[] = {"a",     "a/b",      "a/+",    "a/#",     "+",     "#",
                                    "+/b",   "+/+",      "/#",     "/+",      "a/+/c", "a//b",
                                    "a/b/#", "+/#",      "$SYS/#", "$SYS/+",  "$SYS",  "+/+/+",
                                    "x/+",   "$share/#", "zz/#",   "a/b/c/#", "a/+/+", "//"};
    size_t nf = sizeof(filters) / sizeof(filters[0]);
    for (size_t j = 0; j < nf; j++) {
        struct seen s = lookup(r, filters[j], 0);
        size_t want = 0;
        for (size_t i = 0; i < nt; i++) {
            bool m = topic_match(filters[j], strlen(filters[j]), topics[i], strlen(topics[i]));
            if (m != saw(&s, topics[i]))
                print_error("filter '%s' topic '%s': want %d\n", filters[j], topics[i], m);
            assert_int_equal(saw(&s, topics[i]), m);
            want += m;
        }
        assert_int_equal(s.n, want);
    }
    /* Spot checks of the '$' rule and the parent rule. */
    assert_int_equal(lookup(r, "#", 0).n, nt - 3);
    assert_int_equal(lookup(r, "$SYS/#", 0).n, 2);
    assert_int_equal(lookup(r, "a/b/#", 0).n, 3);
    retain_destroy(&r);
}

static void test_expiry(void **state)
{
    (void)state;
    struct retain *r = retain_create();
    put(r, "e/1", "aaaa", 100);
    put(r, "e/2", "bb", 200);
    put(r, "e/3", "c", 0);
    put(r, "e/1/child", "dd", 100);
    assert_int_equal(retain_count(r), 4);
    assert_int_equal(retain_bytes(r), 9);

    assert_int_equal(lookup(r, "e/#", 99).n, 4);
    /* Literal lookups skip and drop an expired message. */
    assert_int_equal(lookup(r, "e/1", 100).n, 0);
    assert_int_equal(retain_count(r), 3);
    assert_int_equal(retain_bytes(r), 5);
    /* The node stays for its child, which is still found until it expires too. */
    struct seen s = lookup(r, "e/+/child", 99);
    assert_int_equal(s.n, 1);
    s = lookup(r, "e/#", 150);
    assert_int_equal(s.n, 2); /* e/2, e/3 */
    assert_true(saw(&s, "e/2"));
    assert_true(saw(&s, "e/3"));
    assert_int_equal(retain_count(r), 2);
    assert_int_equal(retain_bytes(r), 3);
    s = lookup(r, "+/+", 1000);
    assert_int_equal(s.n, 1);
    assert_true(saw(&s, "e/3"));
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_bytes(r), 1);
    assert_int_equal(retain_nodes(r), 3); /* root, e, e/3: expired branches pruned */
    /* A later set on an expired-and-dropped topic starts fresh. */
    put(r, "e/1", "x", 0);
    assert_int_equal(retain_count(r), 2);
    retain_destroy(&r);
}

/* Expiring under '+' must not disturb the siblings still on the walk stack. */
static void test_expiry_wide(void **state)
{
    (void)state;
    enum { N = 2000 };
    char t[32];
    struct retain *r = retain_create();
    for (int i = 0; i < N; i++) {
        (void)snprintf(t, sizeof(t), "w/%d", i);
        put(r, t, "12345", i % 2 ? 10 : 0);
        (void)snprintf(t, sizeof(t), "w/%d/s/%d", i, i);
        put(r, t, "1", i % 3 ? 10 : 0);
    }
    assert_int_equal(retain_count(r), 2 * N);
    struct seen s = lookup(r, "w/+", 50);
    assert_int_equal(s.n, N / 2);
    s = lookup(r, "w/#", 50);
    assert_int_equal(s.n, N / 2 + (N + 2) / 3);
    assert_int_equal(retain_count(r), N / 2 + (N + 2) / 3);
    s = lookup(r, "w/+/s/+", 50);
    assert_int_equal(s.n, (N + 2) / 3);
    /* root, w, every w/i that kept a message or a child, and the live w/i/s/i chains. */
    assert_int_equal(retain_nodes(r),
                     2 + (N / 2 + (N + 2) / 3 - (N / 2 + 2) / 3) + 2 * ((N + 2) / 3));
    retain_destroy(&r);
}

static void test_bytes_and_many(void **state)
{
    (void)state;
    enum { N = 10000 };
    char t[32], p[16];
    struct retain *r = retain_create();
    uint64_t bytes = 0;
    for (int i = 0; i < N; i++) {
        (void)snprintf(t, sizeof(t), "s/%d/v", i);
        int pl = snprintf(p, sizeof(p), "%d", i * 7);
        put(r, t, p, 0);
        bytes += (uint64_t)pl;
    }
    assert_int_equal(retain_count(r), N);
    assert_int_equal(retain_bytes(r), bytes);
    assert_int_equal(lookup(r, "s/1234/v", 0).n, 1);
    assert_int_equal(lookup(r, "s/1234/+", 0).n, 1);
    assert_int_equal(lookup(r, "s/+/x", 0).n, 0);
    struct seen s;
    memset(&s, 0, sizeof(s));
    retain_match(r, "s/+/v", 5, 0, on_msg, &s);
    assert_int_equal(s.n, N);
    /* Clear every other topic, then all: accounting returns to zero. */
    for (int i = 0; i < N; i += 2) {
        (void)snprintf(t, sizeof(t), "s/%d/v", i);
        int pl = snprintf(p, sizeof(p), "%d", i * 7);
        put(r, t, "", 0);
        bytes -= (uint64_t)pl;
    }
    assert_int_equal(retain_count(r), N / 2);
    assert_int_equal(retain_bytes(r), bytes);
    for (int i = 1; i < N; i += 2) {
        (void)snprintf(t, sizeof(t), "s/%d/v", i);
        put(r, t, "", 0);
    }
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_bytes(r), 0);
    assert_int_equal(retain_nodes(r), 1);
    assert_int_equal(lookup(r, "#", 0).n, 0);
    retain_destroy(&r);
}

static void test_destroy_drops_refs(void **state)
{
    (void)state;
    uint64_t live = msg_live_count();
    struct retain *r = retain_create();
    put(r, "d/1", "a", 0);
    put(r, "d/1/2", "b", 0);
    put(r, "$d", "c", 0);
    assert_int_equal(msg_live_count(), live + 3);
    struct msg *kept = NULL;
    struct seen s = lookup(r, "d/1", 0);
    assert_int_equal(s.n, 1);
    kept = msg_ref(s.msgs[0]);
    retain_destroy(&r);
    assert_null(r);
    assert_int_equal(msg_live_count(), live + 1);
    assert_string_equal(kept->topic, "d/1");
    msg_unref(&kept);
    assert_int_equal(msg_live_count(), live);
    retain_destroy(&r); /* NULL is fine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_replace_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wildcards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_wide, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_and_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_drops_refs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

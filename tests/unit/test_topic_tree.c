/* Subscription trie: add/replace/remove codes, matching, shared groups, pruning and scale. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/err.h"
#include "node/topic.h"
#include "node/topic_tree.h"

#define MAX_HITS 64

struct hit {
    void *owner;
    void *rec;
};

struct hits {
    struct hit v[MAX_HITS];
    size_t n;
    size_t total; /* counts past MAX_HITS too */
};

static void on_match(void *ctx, void *owner, void *rec)
{
    struct hits *h = ctx;
    if (h->n < MAX_HITS) {
        h->v[h->n].owner = owner;
        h->v[h->n].rec = rec;
        h->n++;
    }
    h->total++;
}

static struct hits match(struct topic_tree *t, const char *topic)
{
    struct hits h;
    memset(&h, 0, sizeof(h));
    topic_tree_match(t, topic, strlen(topic), NULL, on_match, &h);
    return h;
}

static size_t count_owner(const struct hits *h, void *owner, void *rec)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i].owner == owner && (!rec || h->v[i].rec == rec))
            n++;
    }
    return n;
}

static int add(struct topic_tree *t, const char *f, void *owner, void *rec)
{
    return topic_tree_add(t, f, strlen(f), owner, rec);
}

static int del(struct topic_tree *t, const char *f, void *owner)
{
    return topic_tree_remove(t, f, strlen(f), owner);
}

static char o1, o2, o3, o4;
static char r1, r2, r3, r4;

static void test_add_replace_remove_codes(void **state)
{
    (void)state;
    struct topic_tree *t = topic_tree_create();
    assert_int_equal(topic_tree_count(t), 0);
    assert_int_equal(add(t, "a/b", &o1, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "a/b", &o2, &r2), TOPIC_TREE_ADDED);
    assert_int_equal(add(t, "a/b", &o1, &r3), TOPIC_TREE_REPLACED);
    assert_int_equal(topic_tree_count(t), 2);

    struct hits h = match(t, "a/b");
    assert_int_equal(h.total, 2);
    assert_int_equal(count_owner(&h, &o1, &r3), 1);
    assert_int_equal(count_owner(&h, &o2, &r2), 1);

    assert_int_equal(del(t, "a/b", &o3), ERR_NOT_FOUND);
    assert_int_equal(del(t, "a/c", &o1), ERR_NOT_FOUND);
    assert_int_equal(del(t, "a", &o1), ERR_NOT_FOUND);
    assert_int_equal(del(t, "a/b", &o1), 0);
    assert_int_equal(del(t, "a/b", &o1), ERR_NOT_FOUND);
    assert_int_equal(topic_tree_count(t), 1);
    assert_int_equal(topic_tree_nodes(t), 3);
    assert_int_equal(del(t, "a/b", &o2), 1);
    assert_int_equal(topic_tree_count(t), 0);
    assert_int_equal(topic_tree_nodes(t), 1);
    assert_int_equal(match(t, "a/b").total, 0);
    /* The route reappears from scratch. */
    assert_int_equal(add(t, "a/b", &o2, &r2), TOPIC_TREE_FIRST);
    topic_tree_destroy(&t);
    assert_null(t);
}

static void test_parent_route_independent(void **state)
{
    (void)state;
    struct topic_tree *t = topic_tree_create();
    assert_int_equal(add(t, "a/b/c", &o1, &r1), TOPIC_TREE_FIRST);
    /* "a" is an interior node with no subscribers: its route is new. */
    assert_int_equal(add(t, "a", &o1, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(del(t, "a", &o1), 1);
    assert_int_equal(topic_tree_nodes(t), 4); /* interior "a" stays for "a/b/c" */
    assert_int_equal(match(t, "a/b/c").total, 1);
    assert_int_equal(match(t, "a").total, 0);
    assert_int_equal(del(t, "a/b", &o1), ERR_NOT_FOUND);
    assert_int_equal(del(t, "a/b/c", &o1), 1);
    assert_int_equal(topic_tree_nodes(t), 1);
    topic_tree_destroy(&t);
}

static void test_wildcards_and_overlap(void **state)
{
    (void)state;
    struct topic_tree *t = topic_tree_create();
    assert_int_equal(add(t, "a/+", &o1, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "a/#", &o1, &r2), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "a/b", &o1, &r3), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "#", &o2, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "+/+", &o3, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "$SYS/#", &o4, &r4), TOPIC_TREE_FIRST);
    assert_int_equal(topic_tree_count(t), 6);

    struct hits h = match(t, "a/b");
    assert_int_equal(h.total, 5);
    assert_int_equal(count_owner(&h, &o1, NULL), 3); /* one callback per matching filter */
    assert_int_equal(count_owner(&h, &o1, &r1), 1);
    assert_int_equal(count_owner(&h, &o1, &r2), 1);
    assert_int_equal(count_owner(&h, &o1, &r3), 1);
    assert_int_equal(count_owner(&h, &o2, NULL), 1);
    assert_int_equal(count_owner(&h, &o3, NULL), 1);

    h = match(t, "a"); /* "a/#" and "#" match "a" */
    assert_int_equal(h.total, 2);
    assert_int_equal(count_owner(&h, &o1, &r2), 1);
    assert_int_equal(count_owner(&h, &o2, NULL), 1);

    h = match(t, "a/"); /* empty last level */
    assert_int_equal(h.total, 4);
    assert_int_equal(count_owner(&h, &o1, &r1), 1);
    assert_int_equal(count_owner(&h, &o3, NULL), 1);

    h = match(t, "a/b/c");
    assert_int_equal(h.total, 2);
    assert_int_equal(count_owner(&h, &o1, &r2), 1);

    h = match(t, "$SYS/load"); /* '#' and '+/+' at the root skip '$' topics */
    assert_int_equal(h.total, 1);
    assert_int_equal(count_owner(&h, &o4, &r4), 1);
    h = match(t, "$SYS");
    assert_int_equal(h.total, 1);

    h = match(t, "/");
    assert_int_equal(h.total, 2); /* "#" and "+/+" */
    topic_tree_destroy(&t);
}

static void test_empty_levels(void **state)
{
    (void)state;
    struct topic_tree *t = topic_tree_create();
    assert_int_equal(add(t, "a//b", &o1, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "/a", &o1, &r2), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "a/+/b", &o2, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "+/a", &o3, &r1), TOPIC_TREE_FIRST);
    struct hits h = match(t, "a//b");
    assert_int_equal(h.total, 2);
    h = match(t, "/a");
    assert_int_equal(h.total, 2);
    h = match(t, "a/b");
    assert_int_equal(h.total, 0);
    topic_tree_destroy(&t);
}

/* Randomised cross-check against topic_match over a fixed vocabulary. */
static void test_agrees_with_topic_match(void **state)
{
    (void)state;
    static const char *filters[] = {"a",      "a/b", "a/+",   "a/#",   "+",     "#",   "+/b",
                                    "+/+",    "/",   "/+",    "a//b",  "a/",    "+/#", "$SYS/#",
                                    "$SYS/+", "b/#", "a/b/c", "+/b/#", "a/+/c", "//#", "+/+/+"};
    static const char *topics[] = {"a",    "b",     "a/b",  "a/c", "a/b/c",  "/",
                                   "/a",   "a/",    "a//b", "b/b", "$SYS/x", "$SYS",
                                   "$a/b", "b/b/c", "a/b/", "//",  "x/b/y/z"};
    size_t nf = sizeof(filters) / sizeof(filters[0]);
    size_t nt = sizeof(topics) / sizeof(topics[0]);
    struct topic_tree *t = topic_tree_create();
    for (size_t i = 0; i < nf; i++)
        assert_int_equal(add(t, filters[i], (void *)(uintptr_t)(i + 1), NULL), TOPIC_TREE_FIRST);
    for (size_t j = 0; j < nt; j++) {
        struct hits h = match(t, topics[j]);
        size_t want = 0;
        for (size_t i = 0; i < nf; i++) {
            bool m = topic_match(filters[i], strlen(filters[i]), topics[j], strlen(topics[j]));
            size_t got = count_owner(&h, (void *)(uintptr_t)(i + 1), NULL);
            if (got != (m ? 1u : 0u))
                print_error("filter '%s' topic '%s': want %d got %zu\n", filters[i], topics[j], m,
                            got);
            assert_int_equal(got, m ? 1 : 0);
            want += m;
        }
        assert_int_equal(h.total, want);
    }
    for (size_t i = 0; i < nf; i++)
        assert_int_equal(del(t, filters[i], (void *)(uintptr_t)(i + 1)), 1);
    assert_int_equal(topic_tree_count(t), 0);
    assert_int_equal(topic_tree_nodes(t), 1);
    topic_tree_destroy(&t);
}

static bool online[3];
static char members[3] = {'0', '1', '2'};

static bool is_eligible(void *owner)
{
    return online[*(char *)owner - '0'];
}

/* The group member picked for one "a/x" message (the plain subscriber o1 also matches). */
static void *pick_one(struct topic_tree *t, topic_tree_eligible_cb eligible)
{
    struct hits h;
    memset(&h, 0, sizeof(h));
    topic_tree_match(t, "a/x", 3, eligible, on_match, &h);
    assert_int_equal(h.total, 2);
    assert_int_equal(count_owner(&h, &o1, &r1), 1);
    void *got = h.v[0].owner == &o1 ? h.v[1].owner : h.v[0].owner;
    assert_ptr_not_equal(got, &o1);
    if (got == &members[2])
        assert_ptr_equal(h.v[0].owner == &o1 ? h.v[1].rec : h.v[0].rec, &r2);
    return got;
}

static struct topic_tree *shared_setup(void)
{
    struct topic_tree *t = topic_tree_create();
    assert_int_equal(add(t, "$share/g/a/+", &members[0], &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "$share/g/a/+", &members[1], &r1), TOPIC_TREE_ADDED);
    assert_int_equal(add(t, "$share/g/a/+", &members[2], &r1), TOPIC_TREE_ADDED);
    assert_int_equal(add(t, "$share/g/a/+", &members[2], &r2), TOPIC_TREE_REPLACED);
    /* The plain route shares the node with the group, but is a route of its own. */
    assert_int_equal(add(t, "a/+", &o1, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(topic_tree_count(t), 4);
    return t;
}

static void test_shared_round_robin(void **state)
{
    (void)state;
    struct topic_tree *t = shared_setup();
    /* Without an eligibility callback, plain round robin: each member once per lap. */
    size_t seen[3] = {0};
    for (int i = 0; i < 30; i++)
        seen[*(char *)pick_one(t, NULL) - '0']++;
    assert_int_equal(seen[0], 10);
    assert_int_equal(seen[1], 10);
    assert_int_equal(seen[2], 10);

    /* Nobody eligible: still exactly one member per message, rotating. */
    memset(online, 0, sizeof(online));
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 9; i++)
        seen[*(char *)pick_one(t, is_eligible) - '0']++;
    assert_int_equal(seen[0], 3);
    assert_int_equal(seen[1], 3);
    assert_int_equal(seen[2], 3);
    topic_tree_destroy(&t);
}

static void test_shared_eligible(void **state)
{
    (void)state;
    struct topic_tree *t = shared_setup();
    /* Only eligible members are picked, alternating between them. */
    online[0] = true;
    online[1] = false;
    online[2] = true;
    void *prev = NULL;
    size_t seen[3] = {0};
    for (int i = 0; i < 10; i++) {
        void *got = pick_one(t, is_eligible);
        assert_ptr_not_equal(got, &members[1]);
        assert_ptr_not_equal(got, prev);
        seen[*(char *)got - '0']++;
        prev = got;
    }
    assert_int_equal(seen[0], 5);
    assert_int_equal(seen[2], 5);
    /* One comes back: it joins the rotation. */
    online[1] = true;
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 9; i++)
        seen[*(char *)pick_one(t, is_eligible) - '0']++;
    assert_int_equal(seen[0], 3);
    assert_int_equal(seen[1], 3);
    assert_int_equal(seen[2], 3);
    topic_tree_destroy(&t);
}

static void test_shared_remove(void **state)
{
    (void)state;
    struct topic_tree *t = shared_setup();
    (void)pick_one(t, NULL);
    (void)pick_one(t, NULL); /* cursor now past the members about to go */
    /* Each route (the group, the plain filter) stays while it has a subscriber. */
    assert_int_equal(del(t, "$share/h/a/+", &members[0]), ERR_NOT_FOUND);
    assert_int_equal(del(t, "$share/g/a/+", &o1), ERR_NOT_FOUND);
    assert_int_equal(del(t, "a/+", &members[0]), ERR_NOT_FOUND);
    assert_int_equal(del(t, "$share/g/a/+", &members[0]), 0);
    assert_int_equal(del(t, "$share/g/a/+", &members[1]), 0);
    assert_int_equal(del(t, "a/+", &o1), 1);
    for (int i = 0; i < 3; i++) {
        struct hits h = match(t, "a/y");
        assert_int_equal(h.total, 1);
        assert_ptr_equal(h.v[0].owner, &members[2]);
    }
    assert_int_equal(del(t, "$share/g/a/+", &members[2]), 1);
    assert_int_equal(topic_tree_count(t), 0);
    assert_int_equal(topic_tree_nodes(t), 1);
    assert_int_equal(match(t, "a/y").total, 0);
    topic_tree_destroy(&t);
}

static void test_shared_groups_independent(void **state)
{
    (void)state;
    struct topic_tree *t = topic_tree_create();
    assert_int_equal(add(t, "$share/g1/x/#", &o1, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "$share/g1/x/#", &o2, &r1), TOPIC_TREE_ADDED);
    /* Each group, and the plain filter, is a route of its own. */
    assert_int_equal(add(t, "$share/g2/x/#", &o3, &r1), TOPIC_TREE_FIRST);
    /* Same owner in another group and as a plain subscriber: distinct subscriptions. */
    assert_int_equal(add(t, "$share/g2/x/#", &o1, &r2), TOPIC_TREE_ADDED);
    assert_int_equal(add(t, "x/#", &o1, &r3), TOPIC_TREE_FIRST);
    assert_int_equal(topic_tree_count(t), 5);
    for (int i = 0; i < 4; i++) {
        struct hits h = match(t, "x/y/z");
        assert_int_equal(h.total, 3); /* one per group, one plain */
        assert_int_equal(count_owner(&h, &o1, &r3), 1);
    }
    struct hits h = match(t, "x"); /* "#" matches the parent for groups too */
    assert_int_equal(h.total, 3);
    assert_int_equal(del(t, "$share/g2/x/#", &o1), 0);
    assert_int_equal(del(t, "$share/g2/x/#", &o3), 1);
    assert_int_equal(del(t, "x/#", &o1), 1);
    assert_int_equal(del(t, "$share/g1/x/#", &o1), 0);
    assert_int_equal(del(t, "$share/g1/x/#", &o2), 1);
    topic_tree_destroy(&t);
}

/* A callback may run a nested match on the same tree (e.g. a $SYS publish from a deliver). */
struct nested {
    struct topic_tree *t;
    struct hits inner;
    int outer;
};

static void on_nested(void *ctx, void *owner, void *rec)
{
    (void)owner;
    (void)rec;
    struct nested *n = ctx;
    n->outer++;
    topic_tree_match(n->t, "q/r/s/t/u/v/w/x/y/z/a/b/c/d/e/f/g/h", 35, NULL, on_match, &n->inner);
}

static void test_nested_match(void **state)
{
    (void)state;
    struct topic_tree *t = topic_tree_create();
    assert_int_equal(add(t, "p/+", &o1, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "p/#", &o1, &r2), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "q/#", &o2, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "q/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+", &o3, &r1), TOPIC_TREE_FIRST);
    struct nested n;
    memset(&n, 0, sizeof(n));
    n.t = t;
    topic_tree_match(t, "p/x", 3, NULL, on_nested, &n);
    assert_int_equal(n.outer, 2);
    assert_int_equal(n.inner.total, 4);
    topic_tree_destroy(&t);
}

static void test_pruning(void **state)
{
    (void)state;
    static const char *filters[] = {"a/b/c/d",        "a/b/+/d", "a/b/#", "a/+", "+/+/+/+/+",
                                    "$share/g/a/b/c", "z",       "/",     "//",  "a//b//c"};
    size_t nf = sizeof(filters) / sizeof(filters[0]);
    struct topic_tree *t = topic_tree_create();
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < nf; i++) {
            assert_int_equal(add(t, filters[i], &o1, &r1), TOPIC_TREE_FIRST);
            assert_int_equal(add(t, filters[i], &o2, &r2), TOPIC_TREE_ADDED);
        }
        assert_int_equal(topic_tree_count(t), 2 * nf);
        for (size_t i = nf; i-- > 0;) {
            assert_int_equal(del(t, filters[i], &o2), 0);
            assert_int_equal(del(t, filters[i], &o1), 1);
            /* Once removed, the path is gone: removing again finds nothing. */
            assert_int_equal(del(t, filters[i], &o1), ERR_NOT_FOUND);
        }
        assert_int_equal(topic_tree_count(t), 0);
        assert_int_equal(topic_tree_nodes(t), 1);
        assert_int_equal(match(t, "a/b/c/d").total, 0);
    }
    /* Leave some behind: destroy must free them (ASan/LSan checks). */
    assert_int_equal(add(t, "l/e/a/k", &o1, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "$share/g/l/#", &o1, &r1), TOPIC_TREE_FIRST);
    topic_tree_destroy(&t);
    topic_tree_destroy(&t); /* NULL is fine */
}

/* 10k subscribers: 10k distinct topics at one level plus 10k owners on one wildcard. */
static void test_scale(void **state)
{
    (void)state;
    enum { N = 10000 };
    static char owners[N];
    char f[64];
    struct topic_tree *t = topic_tree_create();
    for (int i = 0; i < N; i++) {
        (void)snprintf(f, sizeof(f), "dev/%d/temp", i);
        assert_int_equal(add(t, f, &owners[i], NULL), TOPIC_TREE_FIRST);
        assert_int_equal(add(t, "dev/+/temp", &owners[i], NULL),
                         i == 0 ? TOPIC_TREE_FIRST : TOPIC_TREE_ADDED);
    }
    assert_int_equal(add(t, "dev/+/temp", &owners[N / 2], &r1), TOPIC_TREE_REPLACED);
    assert_int_equal(topic_tree_count(t), 2 * N);
    for (int i = 0; i < N; i += 97) {
        (void)snprintf(f, sizeof(f), "dev/%d/temp", i);
        struct hits h;
        memset(&h, 0, sizeof(h));
        topic_tree_match(t, f, strlen(f), NULL, on_match, &h);
        assert_int_equal(h.total, N + 1);
        (void)snprintf(f, sizeof(f), "dev/%d/hum", i);
        assert_int_equal(match(t, f).total, 0);
    }
    /* Remove the wildcard subscribers in a scattered order, checking the index stays right. */
    for (int i = 0; i < N; i++) {
        int k = (int)(((long)i * 7919) % N);
        assert_int_equal(del(t, "dev/+/temp", &owners[k]), i == N - 1 ? 1 : 0);
    }
    for (int i = 0; i < N; i++) {
        (void)snprintf(f, sizeof(f), "dev/%d/temp", i);
        struct hits h = match(t, f);
        assert_int_equal(h.total, 1);
        assert_ptr_equal(h.v[0].owner, &owners[i]);
        assert_int_equal(del(t, f, &owners[i]), 1);
    }
    assert_int_equal(topic_tree_count(t), 0);
    assert_int_equal(topic_tree_nodes(t), 1);
    topic_tree_destroy(&t);
}

/* Deep topics grow the match stack; a '/'-only topic is the worst case for depth. */
static void test_deep(void **state)
{
    (void)state;
    const size_t depth = 5000, flen = 2 * depth + 1;
    char *f = malloc(flen);
    assert_non_null(f);
    for (size_t i = 0; i < depth; i++) {
        f[2 * i] = '+';
        f[2 * i + 1] = '/';
    }
    f[flen - 1] = '#';
    assert_true(topic_filter_valid(f, flen));
    struct topic_tree *t = topic_tree_create();
    assert_int_equal(topic_tree_add(t, f, flen, &o1, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(add(t, "#", &o2, &r1), TOPIC_TREE_FIRST);
    assert_int_equal(topic_tree_nodes(t), depth + 3);
    memset(f, '/', flen - 1); /* 2 * depth + 1 empty levels */
    struct hits h;
    memset(&h, 0, sizeof(h));
    topic_tree_match(t, f, flen - 1, NULL, on_match, &h);
    assert_int_equal(h.total, 2);
    h.n = h.total = 0;
    topic_tree_match(t, f, depth - 2, NULL, on_match, &h); /* depth - 1 levels: too shallow */
    assert_int_equal(h.total, 1);
    topic_tree_destroy(&t);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_replace_remove_codes),
        cmocka_unit_test(test_parent_route_independent),
        cmocka_unit_test(test_wildcards_and_overlap),
        cmocka_unit_test(test_empty_levels),
        cmocka_unit_test(test_agrees_with_topic_match),
        cmocka_unit_test(test_shared_round_robin),
        cmocka_unit_test(test_shared_eligible),
        cmocka_unit_test(test_shared_remove),
        cmocka_unit_test(test_shared_groups_independent),
        cmocka_unit_test(test_nested_match),
        cmocka_unit_test(test_pruning),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

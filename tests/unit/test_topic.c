/* Topic names and filters: validity tables, $share parsing and the matching table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/topic.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

struct match_row {
    const char *filter;
    const char *topic;
    bool expect;
};

static const struct match_row match_rows[] = {
    {"a", "a", true},
    {"a", "b", false},
    {"a", "a/b", false},
    {"a/b", "a", false},
    {"a/b", "a/b", true},
    {"a/b", "a/bc", false},
    {"a/bc", "a/b", false},
    {"a/b/c", "a/b/c", true},
    {"A", "a", false},
    {"+", "a", true},
    {"+", "a/b", false},
    {"+", "/", false},
    {"+/+", "/", true},
    {"+/+", "a/b", true},
    {"/+", "/a", true},
    {"/+", "a", false},
    {"a/+", "a/b", true},
    {"a/+", "a/", true},
    {"a/+", "a", false},
    {"a/+", "a/b/c", false},
    {"a/+/c", "a//c", true},
    {"a/+/c", "a/b/c", true},
    {"a/+/c", "a/b/d", false},
    {"+/b", "a/b", true},
    {"+/+/+", "a/b", false},
    {"#", "a", true},
    {"#", "a/b/c", true},
    {"#", "/", true},
    {"#", "/a", true},
    {"a/#", "a", true},
    {"a/#", "a/", true},
    {"a/#", "a/b", true},
    {"a/#", "a/b/c", true},
    {"a/#", "ab", false},
    {"a/#", "b/a", false},
    {"a/b/#", "a", false},
    {"a/b/#", "a/b", true},
    {"+/#", "a", true},
    {"+/#", "a/b/c", true},
    {"a/+/#", "a/b", true},
    {"a/+/#", "a", false},
    {"//", "//", true},
    {"a//b", "a//b", true},
    {"a//b", "a/b", false},
    {"/#", "/a/b", true},
    {"/#", "a", false},
    {"a/", "a", false},
    {"a", "a/", false},
    {"a/", "a/", true},
    /* Wildcards at the first level never match '$' topics. */
    {"#", "$SYS/broker/load", false},
    {"#", "$SYS", false},
    {"+/broker/load", "$SYS/broker/load", false},
    {"+", "$SYS", false},
    {"+/#", "$SYS/x", false},
    {"$SYS/#", "$SYS/broker/load", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/+/load", "$SYS/broker/load", true},
    {"$SYS/broker/+", "$SYS/broker/load", true},
    {"$SYS", "$SYS", true},
    {"a/#", "a/$SYS", true},
    {"a/+", "a/$x", true},
    {"$", "$", true},
    {"+", "x$", true},
};

static void test_match_table(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < N_ELEMS(match_rows); i++) {
        const struct match_row *r = &match_rows[i];
        bool got = topic_match(r->filter, strlen(r->filter), r->topic, strlen(r->topic));
        if (got != r->expect) {
            print_error("row %zu: filter '%s' topic '%s' expected %d got %d\n", i, r->filter,
                        r->topic, r->expect, got);
            bad++;
        }
    }
    assert_true(N_ELEMS(match_rows) >= 40);
    assert_int_equal(bad, 0);
}

/* Matching uses the given lengths, not NUL terminators. */
static void test_match_lengths(void **state)
{
    (void)state;
    assert_true(topic_match("a/b/c", 3, "a/bXYZ", 3));
    assert_false(topic_match("a/b", 3, "a/bc", 4));
    assert_true(topic_match("a/#", 3, "a/b/c/d", 7));
    assert_false(topic_match("", 0, "a", 1));
}

struct valid_row {
    const char *s;
    bool expect;
};

static const struct valid_row name_rows[] = {
    {"a", true},    {"a/b", true},    {"/", true},          {"/a", true}, {"a/", true},
    {"a//b", true}, {"$SYS/x", true}, {"$share/g/a", true}, /* a topic name may look like a share;
                                                               only filters are special */
    {" ", true},    {"", false},      {"+", false},         {"#", false}, {"a/+", false},
    {"a/#", false}, {"a+b", false},   {"a#", false},
};

static const struct valid_row filter_rows[] = {
    {"a", true},
    {"a/b", true},
    {"/", true},
    {"//", true},
    {"a//b", true},
    {"+", true},
    {"#", true},
    {"+/+", true},
    {"a/+/b", true},
    {"a/#", true},
    {"+/#", true},
    {"/#", true},
    {"$SYS/#", true},
    {"$share", true},
    {"$sharex/a", true},
    {"", false},
    {"a+", false},
    {"+a", false},
    {"a/b+/c", false},
    {"a/+b", false},
    {"++", false},
    {"a#", false},
    {"#a", false},
    {"a/#/b", false},
    {"#/", false},
    {"#/a", false},
    {"a/##", false},
    {"a/b#", false},
    /* $share/GROUP/FILTER */
    {"$share/g/a", true},
    {"$share/g/a/b", true},
    {"$share/g/#", true},
    {"$share/g/+/x", true},
    {"$share/g//", true},
    {"$share/g/$SYS/#", true},
    {"$share/group-1/a", true},
    {"$share/", false},
    {"$share/g", false},
    {"$share/g/", false},
    {"$share//a", false},
    {"$share/+/a", false},
    {"$share/#/a", false},
    {"$share/g+/a", false},
    {"$share/g#/a", false},
    {"$share/g/a+", false},
    {"$share/g/a/#/b", false},
    {"$share/g/$share/h/a", true}, /* nested share is just a literal filter inside */
};

static void run_valid(const struct valid_row *rows, size_t n, bool (*fn)(const char *, size_t))
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        bool got = fn(rows[i].s, strlen(rows[i].s));
        if (got != rows[i].expect) {
            print_error("row %zu: '%s' expected %d got %d\n", i, rows[i].s, rows[i].expect, got);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static void test_name_valid(void **state)
{
    (void)state;
    run_valid(name_rows, N_ELEMS(name_rows), topic_name_valid);
    assert_false(topic_name_valid("a\0b", 3));
}

static void test_filter_valid(void **state)
{
    (void)state;
    run_valid(filter_rows, N_ELEMS(filter_rows), topic_filter_valid);
    assert_false(topic_filter_valid("a\0b", 3));
    /* Length is taken from the argument: "a/#x" cut to 3 bytes is "a/#". */
    assert_true(topic_filter_valid("a/#x", 3));
    assert_false(topic_filter_valid("a/#x", 4));
}

static void test_length_limit(void **state)
{
    (void)state;
    size_t n = 65536;
    char *s = malloc(n);
    assert_non_null(s);
    memset(s, 'a', n);
    assert_true(topic_name_valid(s, n - 1));
    assert_false(topic_name_valid(s, n));
    assert_true(topic_filter_valid(s, n - 1));
    assert_false(topic_filter_valid(s, n));
    free(s);
}

struct share_row {
    const char *in;
    bool is_shared;
    const char *group;
    const char *filter;
};

static const struct share_row share_rows[] = {
    {"$share/g/a", true, "g", "a"},     {"$share/g/a/b/c", true, "g", "a/b/c"},
    {"$share/grp/#", true, "grp", "#"}, {"$share/g/+/x", true, "g", "+/x"},
    {"$share/g//", true, "g", "/"},     {"$share/g/$SYS/#", true, "g", "$SYS/#"},
    {"a/b", false, NULL, NULL},         {"$share", false, NULL, NULL},
    {"$SHARE/g/a", false, NULL, NULL},  {"$sharex/g/a", false, NULL, NULL},
    {"#", false, NULL, NULL},
};

static void test_share_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(share_rows); i++) {
        const struct share_row *r = &share_rows[i];
        const char *g = "untouched", *f = "untouched";
        size_t glen = 999, flen = 999;
        bool got = topic_share_split(r->in, strlen(r->in), &g, &glen, &f, &flen);
        assert_int_equal(got, r->is_shared);
        if (!r->is_shared) {
            assert_string_equal(g, "untouched");
            assert_string_equal(f, "untouched");
            assert_int_equal(glen, 999);
            assert_int_equal(flen, 999);
            continue;
        }
        assert_int_equal(glen, strlen(r->group));
        assert_memory_equal(g, r->group, glen);
        assert_int_equal(flen, strlen(r->filter));
        assert_memory_equal(f, r->filter, flen);
        assert_true(topic_filter_valid(r->in, strlen(r->in)));
    }
}

static void test_has_wildcard(void **state)
{
    (void)state;
    assert_false(topic_has_wildcard("a/b", 3));
    assert_false(topic_has_wildcard("", 0));
    assert_true(topic_has_wildcard("a/+", 3));
    assert_true(topic_has_wildcard("#", 1));
    assert_true(topic_has_wildcard("a/+/#", 5));
    assert_false(topic_has_wildcard("a/b/#", 4));
}

/* Cross-check: a filter matches a topic exactly when it is the topic itself, level by level. */
static void test_literal_filters_match_self(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(name_rows); i++) {
        const char *s = name_rows[i].s;
        if (!name_rows[i].expect)
            continue;
        assert_true(topic_filter_valid(s, strlen(s)) || strncmp(s, "$share/", 7) == 0);
        assert_true(topic_match(s, strlen(s), s, strlen(s)));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_table),  cmocka_unit_test(test_match_lengths),
        cmocka_unit_test(test_name_valid),   cmocka_unit_test(test_filter_valid),
        cmocka_unit_test(test_length_limit), cmocka_unit_test(test_share_split),
        cmocka_unit_test(test_has_wildcard), cmocka_unit_test(test_literal_filters_match_self),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

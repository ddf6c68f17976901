/*
 * bench_seq: loss, duplicate, reordering and late accounting, for one and several publishers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bench/bench_seq.h"

static struct bench_seq_stats stats_of(const struct bench_seq *s)
{
    struct bench_seq_stats st;
    memset(&st, 0, sizeof(st));
    bench_seq_stats_add(s, &st);
    return st;
}

static void test_in_order(void **state)
{
    struct bench_seq s;
    (void)state;
    bench_seq_init(&s);
    for (uint64_t i = 1; i <= 10000; i++)
        assert_int_equal(bench_seq_record(&s, 7, i), BENCH_SEQ_NEW);
    struct bench_seq_stats st = stats_of(&s);
    assert_int_equal(st.streams, 1);
    assert_int_equal(st.received, 10000);
    assert_int_equal(st.unique, 10000);
    assert_int_equal(st.lost, 0);
    assert_int_equal(st.duplicates, 0);
    assert_int_equal(st.reordered, 0);
    bench_seq_free(&s);
}

static void test_gaps_are_lost(void **state)
{
    struct bench_seq s;
    (void)state;
    bench_seq_init(&s);
    /* 1..101 without multiples of 10, and without the first message either. */
    for (uint64_t i = 2; i <= 101; i++) {
        if (i % 10)
            bench_seq_record(&s, 1, i);
    }
    struct bench_seq_stats st = stats_of(&s);
    assert_int_equal(st.lost, 1 + 10);
    assert_int_equal(st.unique, 101 - 11);
    /* A jump past the whole window loses everything in between. */
    bench_seq_record(&s, 1, 101 + 5000);
    st = stats_of(&s);
    assert_int_equal(st.lost, 11 + 4999);
    bench_seq_free(&s);
}

static void test_duplicates(void **state)
{
    struct bench_seq s;
    (void)state;
    bench_seq_init(&s);
    for (uint64_t i = 1; i <= 300; i++)
        bench_seq_record(&s, 3, i);
    assert_int_equal(bench_seq_record(&s, 3, 300), BENCH_SEQ_DUPLICATE);
    assert_int_equal(bench_seq_record(&s, 3, 299), BENCH_SEQ_DUPLICATE);
    assert_int_equal(bench_seq_record(&s, 3, 300 - BENCH_SEQ_WINDOW + 1), BENCH_SEQ_DUPLICATE);
    assert_int_equal(bench_seq_record(&s, 3, 1), BENCH_SEQ_LATE); /* beyond the window */
    assert_int_equal(bench_seq_record(&s, 3, 0), BENCH_SEQ_INVALID);
    struct bench_seq_stats st = stats_of(&s);
    assert_int_equal(st.duplicates, 3);
    assert_int_equal(st.late, 1);
    assert_int_equal(st.invalid, 1);
    assert_int_equal(st.received, 304);
    assert_int_equal(st.lost, 0);
    bench_seq_free(&s);
}

static void test_reordering_fills_gaps(void **state)
{
    struct bench_seq s;
    (void)state;
    bench_seq_init(&s);
    uint64_t order[] = {1, 3, 2, 6, 5, 4, 4, 7, 70, 8, 69, 9};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        bench_seq_record(&s, 9, order[i]);
    struct bench_seq_stats st = stats_of(&s);
    assert_int_equal(st.reordered, 6); /* 2, 5, 4, 8, 69, 9 */
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.unique, 11);
    assert_int_equal(st.lost, 70 - 11); /* 10..68 */
    /* Crossing a 64-bit word boundary of the window keeps the bits right. */
    assert_int_equal(bench_seq_record(&s, 9, 10), BENCH_SEQ_REORDERED);
    assert_int_equal(bench_seq_record(&s, 9, 10), BENCH_SEQ_DUPLICATE);
    assert_int_equal(bench_seq_record(&s, 9, 200), BENCH_SEQ_NEW);
    assert_int_equal(bench_seq_record(&s, 9, 70), BENCH_SEQ_DUPLICATE);
    assert_int_equal(bench_seq_record(&s, 9, 11), BENCH_SEQ_REORDERED);
    assert_int_equal(bench_seq_record(&s, 9, 8), BENCH_SEQ_DUPLICATE);
    bench_seq_free(&s);
}

static void test_many_publishers(void **state)
{
    struct bench_seq s;
    (void)state;
    bench_seq_init(&s);
    /* 1000 publishers interleaved; publisher p skips its sequence number p % 5 + 1 when
     * p is odd, and sends 50 twice when p % 7 == 0. */
    uint64_t want_lost = 0, want_dups = 0;
    for (uint64_t i = 1; i <= 100; i++) {
        for (uint32_t p = 0; p < 1000; p++) {
            if ((p & 1) && i == p % 5 + 1)
                continue;
            assert_int_not_equal(bench_seq_record(&s, p * 2654435761u, i), BENCH_SEQ_INVALID);
            if (p % 7 == 0 && i == 50)
                bench_seq_record(&s, p * 2654435761u, i);
        }
    }
    for (uint32_t p = 0; p < 1000; p++) {
        want_lost += p & 1;
        want_dups += p % 7 == 0;
    }
    struct bench_seq_stats st = stats_of(&s);
    assert_int_equal(st.streams, 1000);
    assert_int_equal(st.lost, want_lost);
    assert_int_equal(st.duplicates, want_dups);
    assert_int_equal(st.reordered, 0);

    /* Stats from two receivers add up. */
    struct bench_seq other;
    bench_seq_init(&other);
    bench_seq_record(&other, 1, 5);
    bench_seq_stats_add(&other, &st);
    assert_int_equal(st.streams, 1001);
    assert_int_equal(st.lost, want_lost + 4);
    bench_seq_free(&other);
    bench_seq_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order),        cmocka_unit_test(test_gaps_are_lost),
        cmocka_unit_test(test_duplicates),      cmocka_unit_test(test_reordering_fills_gaps),
        cmocka_unit_test(test_many_publishers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * bench_hist: bucket arithmetic and percentiles against distributions whose answers are known.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "bench/bench_hist.h"

static struct bench_hist *new_hist(void)
{
    struct bench_hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    bench_hist_init(h);
    return h;
}

/* |got - want| <= want / 64 (the documented resolution), and never below want. */
static void assert_close(uint64_t got, uint64_t want)
{
    if (got < want || got - want > want / 64 + 1)
        fail_msg("got %llu, want %llu (+1/64)", (unsigned long long)got, (unsigned long long)want);
}

static void test_buckets_cover_every_value(void **state)
{
    (void)state;
    /* Every bucket's range starts right after the previous one's: no gap, no overlap. */
    assert_int_equal(bench_hist_bucket_low(0), 0);
    for (size_t i = 1; i < BENCH_HIST_BUCKETS; i++)
        assert_int_equal(bench_hist_bucket_low(i), bench_hist_bucket_high(i - 1) + 1);
    assert_int_equal(bench_hist_bucket_high(BENCH_HIST_BUCKETS - 1), BENCH_HIST_MAX);
    uint64_t probes[] = {0, 1, 127, 128, 129, 255, 256, 1000, 65535, 1000000, BENCH_HIST_MAX};
    for (size_t k = 0; k < sizeof(probes) / sizeof(probes[0]); k++) {
        size_t i = bench_hist_bucket_of(probes[k]);
        assert_true(bench_hist_bucket_low(i) <= probes[k]);
        assert_true(bench_hist_bucket_high(i) >= probes[k]);
    }
    assert_int_equal(bench_hist_bucket_of(UINT64_MAX), BENCH_HIST_BUCKETS - 1);
}

static void test_small_values_exact(void **state)
{
    struct bench_hist *h = new_hist();
    (void)state;
    for (uint64_t v = 1; v <= 100; v++)
        bench_hist_record(h, v);
    assert_int_equal(h->count, 100);
    assert_int_equal(bench_hist_percentile(h, 50), 50);
    assert_int_equal(bench_hist_percentile(h, 90), 90);
    assert_int_equal(bench_hist_percentile(h, 99), 99);
    assert_int_equal(bench_hist_percentile(h, 99.9), 100);
    assert_int_equal(bench_hist_percentile(h, 100), 100);
    assert_int_equal(bench_hist_percentile(h, 0), 1);
    assert_true(bench_hist_mean(h) > 50.49 && bench_hist_mean(h) < 50.51);
    free(h);
}

static void test_uniform_large(void **state)
{
    struct bench_hist *h = new_hist();
    (void)state;
    for (uint64_t v = 1; v <= 1000000; v++)
        bench_hist_record(h, v);
    assert_close(bench_hist_percentile(h, 50), 500000);
    assert_close(bench_hist_percentile(h, 90), 900000);
    assert_close(bench_hist_percentile(h, 99), 990000);
    assert_close(bench_hist_percentile(h, 99.9), 999000);
    assert_int_equal(bench_hist_percentile(h, 100), 1000000);
    assert_int_equal(h->min, 1);
    assert_int_equal(h->max, 1000000);
    free(h);
}

static void test_bimodal_tail(void **state)
{
    struct bench_hist *h = new_hist();
    (void)state;
    /* 99 % at 200 µs, 1 % at 50 ms: p99 is still the fast mode, p99.9 the slow one. */
    bench_hist_record_n(h, 200, 99000);
    bench_hist_record_n(h, 50000, 1000);
    assert_close(bench_hist_percentile(h, 50), 200);
    assert_close(bench_hist_percentile(h, 99), 200);
    assert_close(bench_hist_percentile(h, 99.01), 50000);
    assert_int_equal(bench_hist_percentile(h, 99.9), 50000); /* clamped to max */
    assert_int_equal(h->count, 100000);
    free(h);
}

static void test_exponential_like(void **state)
{
    struct bench_hist *h = new_hist();
    (void)state;
    /* n values 2^k for k = 0..19, value 2^k recorded 2^(19-k) times: half of all values are 1,
     * a quarter 2, … so p50 = 1, p75 = 2, p87.5 = 4; only 1023 values (< 0.1 %) are >= 1024,
     * so p99.9 = 512; the top value appears once. */
    uint64_t total = 0;
    for (int k = 0; k < 20; k++) {
        bench_hist_record_n(h, UINT64_C(1) << k, UINT64_C(1) << (19 - k));
        total += UINT64_C(1) << (19 - k);
    }
    assert_int_equal(h->count, total);
    assert_int_equal(bench_hist_percentile(h, 50), 1);
    assert_int_equal(bench_hist_percentile(h, 75), 2);
    assert_int_equal(bench_hist_percentile(h, 87.5), 4);
    assert_close(bench_hist_percentile(h, 99.9), 512);
    assert_close(bench_hist_percentile(h, 99.95), 1024);
    assert_int_equal(bench_hist_percentile(h, 100), UINT64_C(1) << 19);
    free(h);
}

static void test_merge_and_clamp(void **state)
{
    struct bench_hist *a = new_hist(), *b = new_hist();
    (void)state;
    assert_int_equal(bench_hist_percentile(a, 50), 0);
    for (uint64_t v = 1; v <= 500; v++)
        bench_hist_record(a, v);
    for (uint64_t v = 501; v <= 1000; v++)
        bench_hist_record(b, v);
    bench_hist_merge(a, b);
    assert_int_equal(a->count, 1000);
    assert_close(bench_hist_percentile(a, 50), 500);
    assert_close(bench_hist_percentile(a, 90), 900);
    assert_int_equal(a->max, 1000);
    bench_hist_record(a, UINT64_MAX);
    assert_int_equal(a->max, BENCH_HIST_MAX);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_cover_every_value),
        cmocka_unit_test(test_small_values_exact),
        cmocka_unit_test(test_uniform_large),
        cmocka_unit_test(test_bimodal_tail),
        cmocka_unit_test(test_exponential_like),
        cmocka_unit_test(test_merge_and_clamp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Log-linear latency histogram. Bucket i < SUB holds the value i. Above that, a value whose
 * highest set bit is m (m >= SUB_BITS) is shifted right by e = m - (SUB_BITS - 1), which leaves
 * a mantissa in [SUB/2, SUB); the bucket is then its octave's base plus that mantissa. This is
 * the HDR histogram layout with one fixed array and no allocation, so recording is a clz, a
 * shift and an increment.
 */
#include "bench/bench_hist.h"

#include <string.h>

#define HALF (BENCH_HIST_SUB / 2)

void bench_hist_init(struct bench_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

size_t bench_hist_bucket_of(uint64_t v)
{
    if (v > BENCH_HIST_MAX)
        v = BENCH_HIST_MAX;
    if (v < BENCH_HIST_SUB)
        return (size_t)v;
    unsigned m = 63u - (unsigned)__builtin_clzll(v);
    unsigned e = m - (BENCH_HIST_SUB_BITS - 1);
    return BENCH_HIST_SUB + (size_t)(m - BENCH_HIST_SUB_BITS) * HALF + (size_t)((v >> e) - HALF);
}

uint64_t bench_hist_bucket_low(size_t i)
{
    if (i < BENCH_HIST_SUB)
        return i;
    size_t octave = (i - BENCH_HIST_SUB) / HALF; /* 0 for m == SUB_BITS */
    uint64_t mant = HALF + (i - BENCH_HIST_SUB) % HALF;
    unsigned e = (unsigned)octave + 1;
    return mant << e;
}

uint64_t bench_hist_bucket_high(size_t i)
{
    if (i < BENCH_HIST_SUB)
        return i;
    unsigned e = (unsigned)((i - BENCH_HIST_SUB) / HALF) + 1;
    return bench_hist_bucket_low(i) + (UINT64_C(1) << e) - 1;
}

void bench_hist_record_n(struct bench_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    if (v > BENCH_HIST_MAX)
        v = BENCH_HIST_MAX;
    h->buckets[bench_hist_bucket_of(v)] += n;
    h->count += n;
    h->sum += v * n;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void bench_hist_record(struct bench_hist *h, uint64_t v)
{
    bench_hist_record_n(h, v, 1);
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
    if (src->count == 0)
        return;
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t bench_hist_percentile(const struct bench_hist *h, double pct)
{
    if (h->count == 0)
        return 0;
    if (pct <= 0)
        return h->min;
    if (pct >= 100)
        return h->max;
    /* rank = ceil(pct% of count), at least 1; computed so that 50% of 10 is exactly 5. */
    double want = pct / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = bench_hist_bucket_high(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

double bench_hist_mean(const struct bench_hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}

#ifndef SHOAL_BENCH_BENCH_HIST_H
#define SHOAL_BENCH_BENCH_HIST_H

/*
 * Fixed-memory latency histogram with HDR-style log-linear buckets. Values (microseconds)
 * below BENCH_HIST_SUB are counted exactly; above, every power of two is split into
 * BENCH_HIST_SUB / 2 equal buckets, so a reported value is never more than 1/64 (1.6 %) above
 * the true one. Values above BENCH_HIST_MAX are counted as BENCH_HIST_MAX.
 */

#include <stddef.h>
#include <stdint.h>

#define BENCH_HIST_SUB_BITS 7
#define BENCH_HIST_SUB      (1u << BENCH_HIST_SUB_BITS) /* 128 exact buckets */
#define BENCH_HIST_MAX_BITS 36                          /* ~19 hours in µs */
#define BENCH_HIST_MAX      ((UINT64_C(1) << BENCH_HIST_MAX_BITS) - 1)
#define BENCH_HIST_BUCKETS                                                                         \
    (BENCH_HIST_SUB + (BENCH_HIST_MAX_BITS - BENCH_HIST_SUB_BITS) * (BENCH_HIST_SUB / 2))

struct bench_hist {
    uint64_t count;
    uint64_t sum;
    uint64_t min; /* UINT64_MAX while empty */
    uint64_t max;
    uint64_t buckets[BENCH_HIST_BUCKETS];
};

/* Empties h. */
void bench_hist_init(struct bench_hist *h);
/* Counts one value v (clamped to BENCH_HIST_MAX). */
void bench_hist_record(struct bench_hist *h, uint64_t v);
/* Counts n occurrences of v. */
void bench_hist_record_n(struct bench_hist *h, uint64_t v, uint64_t n);
/* Adds every count of src to dst. */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);

/*
 * The smallest value v (at bucket resolution, clamped to [min, max]) such that at least pct
 * percent of the recorded values are <= v. pct is in [0, 100]; 0 gives min, 100 gives max.
 * Returns 0 for an empty histogram.
 */
uint64_t bench_hist_percentile(const struct bench_hist *h, double pct);
/* Arithmetic mean of the recorded (clamped) values; 0 when empty. */
double bench_hist_mean(const struct bench_hist *h);

/* Bucket arithmetic, exported for printing and tests. */
size_t bench_hist_bucket_of(uint64_t v);
uint64_t bench_hist_bucket_low(size_t i);
uint64_t bench_hist_bucket_high(size_t i);

#endif

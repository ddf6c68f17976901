#ifndef SHOAL_BENCH_BENCH_SEQ_H
#define SHOAL_BENCH_BENCH_SEQ_H

/*
 * Loss, duplicate and reordering accounting for one receiver (one subscriber connection).
 *
 * Each publisher numbers its messages 1, 2, 3… (0 is invalid). For every publisher seen, the
 * tracker keeps the highest sequence number received and a window of BENCH_SEQ_WINDOW bits
 * below it, so that a repeat inside the window is a duplicate and a first arrival below the
 * highest is a reordering that fills a gap. An arrival older than the window cannot be told
 * apart and is counted as `late` (and as unique). At the end, every number from 1 to the
 * highest that never arrived is lost.
 *
 * Memory grows only when a new publisher appears (a hash table doubling), never per message.
 */

#include <stdint.h>

#define BENCH_SEQ_WINDOW 256
#define BENCH_SEQ_WORDS  (BENCH_SEQ_WINDOW / 64)

enum bench_seq_result {
    BENCH_SEQ_NEW,       /* in order (above the highest so far) */
    BENCH_SEQ_REORDERED, /* below the highest, first arrival */
    BENCH_SEQ_DUPLICATE, /* seen before */
    BENCH_SEQ_LATE,      /* older than the window: unique or not, we cannot tell */
    BENCH_SEQ_INVALID,   /* sequence number 0 */
};

struct bench_seq_entry {
    uint32_t pub;
    uint32_t is_used;
    uint64_t max;    /* highest sequence number received */
    uint64_t unique; /* distinct numbers received (late ones included) */
    /* bit i of word i/64 set: max - i was received */
    uint64_t window[BENCH_SEQ_WORDS];
};

struct bench_seq {
    struct bench_seq_entry *tab; /* open addressing, capacity a power of two */
    uint32_t cap;
    uint32_t used;
    uint64_t received; /* every valid arrival */
    uint64_t duplicates;
    uint64_t reordered;
    uint64_t late;
    uint64_t invalid;
};

/* Sums of one or more trackers (bench_seq_stats_add accumulates). */
struct bench_seq_stats {
    uint64_t streams; /* (receiver, publisher) pairs seen */
    uint64_t received;
    uint64_t unique;
    uint64_t lost;
    uint64_t duplicates;
    uint64_t reordered;
    uint64_t late;
    uint64_t invalid;
};

/* Empties s; allocates nothing until the first record. */
void bench_seq_init(struct bench_seq *s);
/* Frees the table and empties s. */
void bench_seq_free(struct bench_seq *s);
/* Accounts one arrival of sequence number seq from publisher pub. */
enum bench_seq_result bench_seq_record(struct bench_seq *s, uint32_t pub, uint64_t seq);
/* Adds s's counts to *out (which the caller zeroes once). */
void bench_seq_stats_add(const struct bench_seq *s, struct bench_seq_stats *out);

#endif

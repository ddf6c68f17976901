#ifndef SHOAL_BENCH_BENCH_REPORT_H
#define SHOAL_BENCH_BENCH_REPORT_H

/*
 * shoal-bench's output: the per-second progress line, the final text report and the final
 * JSON object. Pure formatting of the numbers the run collected.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bench/bench_hist.h"
#include "bench/bench_seq.h"

/* One second of progress: counters as deltas over the second, gauges as they stand. */
struct bench_sample {
    double t_s;         /* seconds since the start */
    uint64_t connected; /* gauge: connections up */
    uint64_t conn;      /* connections completed in this second */
    uint64_t sent;
    uint64_t acked;
    uint64_t recv;
    uint64_t errors; /* cumulative */
};

/* A [first, last] window of activity in µs, for rates that ignore idle time. */
struct bench_window {
    uint64_t first_us;
    uint64_t last_us;
};

struct bench_stats {
    const char *mode;
    uint32_t clients;
    double elapsed_s;
    uint64_t connected;    /* CONNACK success, cumulative */
    uint64_t conn_errors;  /* connect, handshake or CONNACK failures */
    uint64_t subscribed;   /* SUBACK success */
    uint64_t disconnected; /* lost after CONNACK (peer close, error) */
    uint64_t errors;       /* everything that went wrong, conn_errors included */
    uint64_t sent;
    uint64_t acked;
    uint64_t recv;
    uint64_t bytes_sent;
    uint64_t bytes_recv;
    uint64_t nohdr; /* messages without a payload header when one was expected */
    struct bench_window conn_win, sent_win, acked_win, recv_win;
    const struct bench_hist *latency;      /* end-to-end, µs; NULL without ts headers */
    const struct bench_hist *conn_latency; /* TCP connect to CONNACK, µs */
    bool has_seq;
    struct bench_seq_stats seq;
    const struct bench_sample *samples;
    uint32_t n_samples;
};

/* Notes one event at now_us in w. */
static inline void bench_window_note(struct bench_window *w, uint64_t now_us)
{
    if (w->first_us == 0)
        w->first_us = now_us;
    w->last_us = now_us;
}

/* count / active window (or / elapsed when the window is shorter than a millisecond). */
double bench_report_rate(uint64_t count, const struct bench_window *w, double elapsed_s);

/* Writes the one-line progress report for s. */
void bench_report_progress(FILE *f, const struct bench_sample *s);
/* Writes the human-readable final report. */
void bench_report_text(FILE *f, const struct bench_stats *st);
/* Writes the final report as one JSON object and a newline. */
void bench_report_json(FILE *f, const struct bench_stats *st);

#endif

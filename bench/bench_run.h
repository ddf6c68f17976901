#ifndef SHOAL_BENCH_BENCH_RUN_H
#define SHOAL_BENCH_BENCH_RUN_H

/*
 * One shoal-bench run: opens the clients on one libuv loop, drives the conn, sub or pub
 * workload until --duration, -L or a signal ends it, and prints the final report.
 */

#include "bench/bench_opts.h"

#define BENCH_EXIT_OK        0
#define BENCH_EXIT_USAGE     1 /* bad flags or files */
#define BENCH_EXIT_NOCONNECT 2 /* no client could connect */

/* Runs the workload o describes (o must stay valid). Returns a BENCH_EXIT_* code. */
int bench_run(const struct bench_opts *o);

#endif

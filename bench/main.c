/*
 * shoal-bench entry point: parse the command line, run, exit with the run's code.
 */
#include <stdio.h>

#include "bench/bench_opts.h"
#include "bench/bench_run.h"

int main(int argc, char **argv)
{
    struct bench_opts o;
    char err[256];
    int rc = bench_opts_parse(&o, argc, argv, err, sizeof(err));

    if (rc == BENCH_OPTS_HELP) {
        bench_opts_usage(stdout);
        return BENCH_EXIT_OK;
    }
    if (rc < 0) {
        fprintf(stderr, "shoal-bench: %s (see shoal-bench --help)\n", err);
        return BENCH_EXIT_USAGE;
    }
    return bench_run(&o);
}

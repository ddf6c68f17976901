/*
 * shoal: command line, configuration, logging set-up, then one libuv loop until shutdown.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "conf/conf.h"
#include "node/broker.h"
#include "node/log.h"
#include "node/security.h"
#include "node/signals.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: shoal -c FILE [-p PORT] [-v] [-t]\n"
               "  -c FILE  configuration file (mosquitto.conf compatible)\n"
               "  -p PORT  port of the default listener\n"
               "  -v       verbose (debug) logging\n"
               "  -t       check the configuration, print 'config ok' and exit\n");
}

static int setup_logging(const struct conf *c, bool verbose)
{
    if (verbose || (c->log_type & LOG_TYPE_DEBUG))
        log_set_level(LOG_LEVEL_DEBUG);
    else if (c->log_type & (LOG_TYPE_INFORMATION | LOG_TYPE_NOTICE))
        log_set_level(LOG_LEVEL_INFO);
    else if (c->log_type & LOG_TYPE_WARNING)
        log_set_level(LOG_LEVEL_WARN);
    else
        log_set_level(LOG_LEVEL_ERROR);
    log_set_timestamp(c->log_timestamp);
    if (c->log_dest & CONF_LOG_FILE)
        return log_set_dest(-1, c->log_file);
    if (c->log_dest & CONF_LOG_STDOUT)
        return log_set_dest(1, NULL);
    return log_set_dest(2, NULL);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int port = 0;
    bool verbose = false;
    bool check_only = false;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
            char *end = NULL;
            long v = strtol(argv[++i], &end, 10);
            if (!end || *end || v < 1 || v > 65535) {
                fprintf(stderr, "shoal: -p: invalid port '%s'\n", argv[i]);
                return 1;
            }
            port = (int)v;
        } else if (strcmp(argv[i], "-v") == 0) {
            verbose = true;
        } else if (strcmp(argv[i], "-t") == 0) {
            check_only = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "shoal: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 1;
        }
    }
    if (!path) {
        usage(stderr);
        return 1;
    }
    char err[512];
    struct conf *c = conf_load(path, port, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check_only && security_check(c, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        conf_free(&c);
        return 1;
    }
    if (check_only) {
        printf("config ok\n");
        conf_free(&c);
        return 0;
    }
    if (setup_logging(c, verbose) < 0) {
        fprintf(stderr, "%s: cannot open log file '%s'\n", path, c->log_file);
        conf_free(&c);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        conf_free(&c);
        return 1;
    }
    struct broker b;
    int rc = broker_start(&b, &loop, c);
    if (rc < 0) {
        broker_stop(&b);
        b.exit_code = 1;
    }
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    /* From here on a late SIGTERM stays pending instead of killing a clean exit. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    (void)sigprocmask(SIG_BLOCK, &mask, NULL);
    signals_stop(&b);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    int code = b.exit_code;
    broker_free(&b);
    if (uv_loop_close(&loop) != 0)
        log_warn("broker", "loop closed with handles still open");
    log_info("broker", "stopped");
    log_close();
    return code;
}

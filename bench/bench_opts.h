#ifndef SHOAL_BENCH_BENCH_OPTS_H
#define SHOAL_BENCH_BENCH_OPTS_H

/*
 * shoal-bench's command line, emqtt-bench compatible: `shoal-bench conn|sub|pub [options]`.
 * Strings in struct bench_opts point into argv (which outlives the run), except the host list,
 * which is split into a copy held inside the struct.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_MAX_HOSTS 64
#define BENCH_OPTS_HELP 1 /* bench_opts_parse: --help was given */

enum bench_mode { BENCH_CONN, BENCH_SUB, BENCH_PUB };

struct bench_opts {
    enum bench_mode mode;
    char hosts_buf[1024];
    const char *hosts[BENCH_MAX_HOSTS];
    uint32_t n_hosts;
    uint16_t port;
    uint8_t version; /* 3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0 */
    uint32_t count;
    uint32_t start;           /* -n: index of the first client */
    uint32_t interval_ms;     /* -i: between connection starts */
    double conn_rate;         /* -R: connections per second; 0 = use interval_ms */
    uint32_t pub_interval_ms; /* -I: per publisher; 0 = as fast as inflight allows */
    const char *topic;
    uint32_t size;
    uint8_t qos;
    bool retain;
    uint32_t inflight; /* -F: unacknowledged QoS>0 messages per publisher */
    uint64_t limit;    /* -L: messages per publisher, 0 = unlimited */
    uint16_t keepalive;
    bool clean;
    bool has_session_expiry;
    uint32_t session_expiry;
    const char *username;
    const char *password;
    bool tls;
    const char *cacertfile;
    const char *certfile;
    const char *keyfile;
    bool hdr_ts;        /* --payload-hdrs ts */
    bool hdr_seq;       /* --payload-hdrs cnt64 */
    double duration_s;  /* 0 = until done or signalled */
    double idle_exit_s; /* sub: stop once nothing arrived for this long (after a first message) */
    bool json;
    bool quiet;
    const char *prefix; /* client id prefix; NULL = "<hostname>_bench_<pid>" */
};

/*
 * Parses argv[1] (the mode) and the options after it into *o, starting from the defaults.
 * Returns 0, BENCH_OPTS_HELP, or ERR_INVALID with a one-line reason in err.
 */
int bench_opts_parse(struct bench_opts *o, int argc, char **argv, char *err, size_t errlen);

/* Writes the usage text to f (a FILE *, void to keep stdio out of this header). */
void bench_opts_usage(void *f);

/* "conn", "sub" or "pub". */
const char *bench_opts_mode_name(enum bench_mode m);

/*
 * Expands tmpl into out (NUL-terminated, at most outlen bytes): `%i` becomes index, `%c`
 * client_id, `%%` a percent sign. Returns the length written, or -1 if it does not fit.
 */
int bench_opts_expand(const char *tmpl, uint32_t index, const char *client_id, char *out,
                      size_t outlen);

#endif

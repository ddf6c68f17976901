/*
 * Command-line parsing for shoal-bench. One table maps short and long names to a field offset
 * and a kind (nginx-style directive table), so each emqtt-bench flag is a single line here.
 * Accepted forms: `-c 10`, `-c10`, `--count 10`, `--count=10`; boolean flags (-r, -S, -C)
 * take an optional `true`/`false`. Parsing is re-entrant (no getopt state), which the unit
 * tests rely on.
 */
#include "bench/bench_opts.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/err.h"

enum opt_kind {
    OPT_U32,
    OPT_U16,
    OPT_U8,
    OPT_U64,
    OPT_DOUBLE,
    OPT_STR,
    OPT_BOOL,
    OPT_HOSTS,
    OPT_HDRS,
    OPT_EXPIRY,
    OPT_HELP,
};

struct opt {
    char short_name; /* 0: long form only */
    const char *long_name;
    enum opt_kind kind;
    size_t offset;
    double min;
    double max;
};

#define F(field) offsetof(struct bench_opts, field)

static const struct opt opts[] = {
    {'h', "host", OPT_HOSTS, F(hosts_buf), 0, 0},
    {'p', "port", OPT_U16, F(port), 1, 65535},
    {'V', "version", OPT_U8, F(version), 3, 5},
    {'c', "count", OPT_U32, F(count), 1, 10000000},
    {'n', "startnumber", OPT_U32, F(start), 0, 4000000000.0},
    {'i', "interval", OPT_U32, F(interval_ms), 0, 3600000},
    {'R', "connrate", OPT_DOUBLE, F(conn_rate), 0, 1e9},
    {'I', "interval_of_msg", OPT_U32, F(pub_interval_ms), 0, 3600000},
    {'t', "topic", OPT_STR, F(topic), 0, 0},
    {'s', "size", OPT_U32, F(size), 0, 256 * 1024 * 1024},
    {'q', "qos", OPT_U8, F(qos), 0, 2},
    {'r', "retain", OPT_BOOL, F(retain), 0, 0},
    {'F', "inflight", OPT_U32, F(inflight), 1, 65535},
    {'L', "limit", OPT_U64, F(limit), 0, 1e18},
    {'k', "keepalive", OPT_U16, F(keepalive), 0, 65535},
    {'C', "clean", OPT_BOOL, F(clean), 0, 0},
    {'x', "session-expiry", OPT_EXPIRY, F(session_expiry), 0, 4294967295.0},
    {'u', "username", OPT_STR, F(username), 0, 0},
    {'P', "password", OPT_STR, F(password), 0, 0},
    {'S', "ssl", OPT_BOOL, F(tls), 0, 0},
    {0, "cacertfile", OPT_STR, F(cacertfile), 0, 0},
    {0, "certfile", OPT_STR, F(certfile), 0, 0},
    {0, "keyfile", OPT_STR, F(keyfile), 0, 0},
    {0, "payload-hdrs", OPT_HDRS, 0, 0, 0},
    {0, "duration", OPT_DOUBLE, F(duration_s), 0, 1e9},
    {0, "idle-exit", OPT_DOUBLE, F(idle_exit_s), 0, 1e9},
    {0, "json", OPT_BOOL, F(json), 0, 0},
    {0, "quiet", OPT_BOOL, F(quiet), 0, 0},
    {0, "prefix", OPT_STR, F(prefix), 0, 0},
    {0, "help", OPT_HELP, 0, 0, 0},
};

#undef F

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void defaults(struct bench_opts *o)
{
    memset(o, 0, sizeof(*o));
    (void)snprintf(o->hosts_buf, sizeof(o->hosts_buf), "localhost");
    o->hosts[0] = o->hosts_buf;
    o->n_hosts = 1;
    o->port = 1883;
    o->version = 5;
    o->count = 200;
    o->interval_ms = 10;
    o->pub_interval_ms = 1000;
    o->size = 256;
    o->inflight = 1;
    o->keepalive = 300;
    o->clean = true;
}

const char *bench_opts_mode_name(enum bench_mode m)
{
    switch (m) {
    case BENCH_CONN:
        return "conn";
    case BENCH_SUB:
        return "sub";
    case BENCH_PUB:
        return "pub";
    }
    return "?";
}

void bench_opts_usage(void *fp)
{
    FILE *f = fp;
    fputs("usage: shoal-bench conn|sub|pub [options]\n"
          "  -h, --host HOST[,HOST...]   brokers; clients are spread round-robin (localhost)\n"
          "  -p, --port PORT             (1883)\n"
          "  -V, --version 3|4|5         MQTT 3.1, 3.1.1 or 5.0 (5)\n"
          "  -c, --count N               clients (200)\n"
          "  -n, --startnumber N         index of the first client (0)\n"
          "  -i, --interval MS           between connection starts (10)\n"
          "  -R, --connrate N            connections per second (instead of -i)\n"
          "  -I, --interval_of_msg MS    per publisher; 0 = as fast as inflight allows (1000)\n"
          "  -t, --topic TOPIC           %i = client index, %c = client id\n"
          "  -s, --size BYTES            payload size (256)\n"
          "  -q, --qos 0|1|2             (0)\n"
          "  -r, --retain [true|false]   publish retained\n"
          "  -F, --inflight N            unacked QoS>0 messages per publisher (1)\n"
          "  -L, --limit N               messages per publisher, then stop; 0 = no limit\n"
          "  -k, --keepalive S           (300)\n"
          "  -C, --clean true|false      clean start (true)\n"
          "  -x, --session-expiry S      MQTT 5 session expiry interval\n"
          "  -u, --username U  -P, --password P\n"
          "  -S, --ssl [true|false]      TLS; --cacertfile (verifies the server), --certfile,\n"
          "                              --keyfile (client certificate)\n"
          "  --payload-hdrs ts,cnt64     timestamp / sequence headers in the payload\n"
          "  --duration S                stop after S seconds\n"
          "  --idle-exit S               sub: stop once nothing arrived for S seconds\n"
          "  --prefix P                  client ids are P_<mode>_<index>\n"
          "  --json                      final report as one JSON object on stdout\n"
          "  --quiet                     no progress lines\n",
          f);
}

static const struct opt *find_short(char c)
{
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (opts[i].short_name == c)
            return &opts[i];
    }
    return NULL;
}

static const struct opt *find_long(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (strlen(opts[i].long_name) == len && memcmp(opts[i].long_name, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

static bool parse_bool_word(const char *s, bool *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcmp(s, "yes") == 0) {
        *out = true;
        return true;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0 || strcmp(s, "no") == 0) {
        *out = false;
        return true;
    }
    return false;
}

static int parse_hosts(struct bench_opts *o, const char *v, char *err, size_t errlen)
{
    size_t n = strlen(v);
    if (n == 0 || n >= sizeof(o->hosts_buf)) {
        set_err(err, errlen, "-h: host list empty or too long");
        return ERR_INVALID;
    }
    memcpy(o->hosts_buf, v, n + 1);
    o->n_hosts = 0;
    for (char *p = o->hosts_buf; p;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (*p == '\0' || o->n_hosts == BENCH_MAX_HOSTS) {
            set_err(err, errlen, "-h: empty host name or more than %d hosts", BENCH_MAX_HOSTS);
            return ERR_INVALID;
        }
        o->hosts[o->n_hosts++] = p;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static int parse_hdrs(struct bench_opts *o, const char *v, char *err, size_t errlen)
{
    const char *p = v;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == 2 && memcmp(p, "ts", 2) == 0) {
            o->hdr_ts = true;
        } else if (len == 5 && memcmp(p, "cnt64", 5) == 0) {
            o->hdr_seq = true;
        } else {
            set_err(err, errlen, "--payload-hdrs: unknown header '%.*s' (ts, cnt64)", (int)len, p);
            return ERR_INVALID;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    if (!o->hdr_ts && !o->hdr_seq) {
        set_err(err, errlen, "--payload-hdrs: expected ts, cnt64 or ts,cnt64");
        return ERR_INVALID;
    }
    return 0;
}

static int parse_number(const struct opt *d, const char *v, double *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    bool is_int = d->kind != OPT_DOUBLE && d->kind != OPT_EXPIRY;
    if (errno || end == v || *end != '\0' || (is_int && x != (double)(uint64_t)x) || x < d->min ||
        x > d->max) {
        set_err(err, errlen, "--%s: '%s' is not %s between %.0f and %.0f", d->long_name, v,
                is_int ? "an integer" : "a number", d->min, d->max);
        return ERR_INVALID;
    }
    *out = x;
    return 0;
}

/* Stores value v (NULL for a boolean given without one) into the field d describes. */
static int apply(struct bench_opts *o, const struct opt *d, const char *v, char *err, size_t errlen)
{
    char *field = (char *)o + d->offset;
    double x = 0;
    int rc;

    switch (d->kind) {
    case OPT_HELP:
        return BENCH_OPTS_HELP;
    case OPT_BOOL: {
        bool b = true;
        if (v && !parse_bool_word(v, &b)) {
            set_err(err, errlen, "--%s: expected true or false, got '%s'", d->long_name, v);
            return ERR_INVALID;
        }
        memcpy(field, &b, sizeof(b));
        return 0;
    }
    case OPT_STR:
        memcpy(field, &v, sizeof(v));
        return 0;
    case OPT_HOSTS:
        return parse_hosts(o, v, err, errlen);
    case OPT_HDRS:
        return parse_hdrs(o, v, err, errlen);
    default:
        break;
    }
    rc = parse_number(d, v, &x, err, errlen);
    if (rc < 0)
        return rc;
    switch (d->kind) {
    case OPT_U32:
    case OPT_EXPIRY: {
        uint32_t u = (uint32_t)x;
        memcpy(field, &u, sizeof(u));
        if (d->kind == OPT_EXPIRY)
            o->has_session_expiry = true;
        break;
    }
    case OPT_U16: {
        uint16_t u = (uint16_t)x;
        memcpy(field, &u, sizeof(u));
        break;
    }
    case OPT_U8: {
        uint8_t u = (uint8_t)x;
        memcpy(field, &u, sizeof(u));
        break;
    }
    case OPT_U64: {
        uint64_t u = (uint64_t)x;
        memcpy(field, &u, sizeof(u));
        break;
    }
    default:
        memcpy(field, &x, sizeof(x));
        break;
    }
    return 0;
}

static int parse_mode(struct bench_opts *o, const char *m, char *err, size_t errlen)
{
    if (strcmp(m, "conn") == 0)
        o->mode = BENCH_CONN;
    else if (strcmp(m, "sub") == 0)
        o->mode = BENCH_SUB;
    else if (strcmp(m, "pub") == 0)
        o->mode = BENCH_PUB;
    else {
        set_err(err, errlen, "unknown mode '%s' (conn, sub or pub)", m);
        return ERR_INVALID;
    }
    return 0;
}

static int check(const struct bench_opts *o, char *err, size_t errlen)
{
    if (o->mode != BENCH_CONN && (!o->topic || !*o->topic)) {
        set_err(err, errlen, "%s needs a topic (-t)", bench_opts_mode_name(o->mode));
        return ERR_INVALID;
    }
    if ((o->certfile == NULL) != (o->keyfile == NULL)) {
        set_err(err, errlen, "--certfile and --keyfile go together");
        return ERR_INVALID;
    }
    if (o->has_session_expiry && o->version != 5) {
        set_err(err, errlen, "-x (session expiry) needs MQTT 5 (-V 5)");
        return ERR_INVALID;
    }
    return 0;
}

/* Handles argv[*i], which starts with '-'; advances *i past any value it consumes. */
static int parse_one(struct bench_opts *o, int argc, char **argv, int *i, char *err, size_t errlen)
{
    const char *a = argv[*i];
    const struct opt *d;
    const char *v = NULL;
    bool is_long = a[1] == '-';

    if (is_long) {
        const char *eq = strchr(a + 2, '=');
        d = find_long(a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
        if (eq)
            v = eq + 1;
    } else {
        d = find_short(a[1]);
        if (d && a[2])
            v = a + 2;
    }
    if (!d) {
        set_err(err, errlen, "unknown option '%s' (see --help)", a);
        return ERR_INVALID;
    }
    if (d->kind == OPT_HELP) {
        return BENCH_OPTS_HELP;
    } else if (d->kind == OPT_BOOL) {
        /* The value is optional; a following word that is not an option is taken as it. */
        if (!v && *i + 1 < argc && argv[*i + 1][0] != '-')
            v = argv[++*i];
    } else if (!v) {
        if (*i + 1 >= argc) {
            set_err(err, errlen, "option '%s' needs a value", a);
            return ERR_INVALID;
        }
        v = argv[++*i];
    }
    return apply(o, d, v, err, errlen);
}

int bench_opts_parse(struct bench_opts *o, int argc, char **argv, char *err, size_t errlen)
{
    int rc;

    defaults(o);
    if (argc < 2) {
        set_err(err, errlen, "missing mode (conn, sub or pub)");
        return ERR_INVALID;
    }
    if (strcmp(argv[1], "--help") == 0)
        return BENCH_OPTS_HELP;
    rc = parse_mode(o, argv[1], err, errlen);
    if (rc < 0)
        return rc;
    for (int i = 2; i < argc; i++) {
        if (argv[i][0] != '-' || argv[i][1] == '\0') {
            set_err(err, errlen, "unexpected argument '%s'", argv[i]);
            return ERR_INVALID;
        }
        rc = parse_one(o, argc, argv, &i, err, errlen);
        if (rc != 0)
            return rc;
    }
    return check(o, err, errlen);
}

int bench_opts_expand(const char *tmpl, uint32_t index, const char *client_id, char *out,
                      size_t outlen)
{
    size_t n = 0;
    for (const char *p = tmpl; *p; p++) {
        char num[16];
        const char *ins = NULL;
        size_t len;
        if (p[0] == '%' && p[1] == 'i') {
            (void)snprintf(num, sizeof(num), "%u", (unsigned)index);
            ins = num;
            p++;
        } else if (p[0] == '%' && p[1] == 'c') {
            ins = client_id;
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            ins = "%";
            p++;
        }
        len = ins ? strlen(ins) : 1;
        if (n + len + 1 > outlen)
            return -1;
        memcpy(out + n, ins ? ins : p, len);
        n += len;
    }
    if (n + 1 > outlen)
        return -1;
    out[n] = '\0';
    return (int)n;
}

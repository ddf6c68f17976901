/*
 * The directive table (nginx style): each entry names a directive, its value type, the offset
 * of its field in struct conf or struct conf_listener, its range and, for the few directives
 * that need it, a setter. An entry with `later` set is a directive we know but do not
 * support yet: enabling it is removing that one string. Names of mosquitto directives that
 * shoal does not implement have their own list, so that every rejection says why.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf_int.h"
#include "node/buf.h"
#include "node/err.h"
#include "node/log.h"

#define LATER_CLUSTER "clustering arrives with cluster support"
#define NO_PLS        "security settings apply to every listener"

static bool is_first(const struct conf__parser *p, const struct conf__directive *d)
{
    return p->seen[d - conf__directives].file == NULL;
}

static int parse_int(struct conf__parser *p, const struct conf__directive *d, const char *v,
                     int64_t *out)
{
    const char *digits = v[0] == '-' ? v + 1 : v;
    char *end;

    if (!isdigit((unsigned char)digits[0]))
        return conf__error(p, "%s: '%s' is not an integer", d->name, v);
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (*end)
        return conf__error(p, "%s: '%s' is not an integer", d->name, v);
    if (errno == ERANGE || n < d->min || n > d->max)
        return conf__error(p, "%s: '%s' is out of range (%" PRId64 "..%" PRId64 ")", d->name, v,
                           d->min, d->max);
    *out = n;
    return 0;
}

static int parse_bool(struct conf__parser *p, const struct conf__directive *d, const char *v,
                      bool *out)
{
    /* mosquitto also accepts 1 and 0. */
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        *out = true;
    else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        *out = false;
    else
        return conf__error(p, "%s: '%s' is not a boolean (true|false)", d->name, v);
    return 0;
}

static const struct {
    char unit;
    uint64_t seconds;
} duration_units[] = {
    {'s', 1},
    {'h', 3600},
    {'d', 86400},
    {'w', 7ULL * 86400},
    {'m', 30ULL * 86400},
    {'y', 365ULL * 86400},
};

/* mosquitto's durations: a number and a unit; a bare number (and `s`) means seconds. */
static int parse_duration(struct conf__parser *p, const struct conf__directive *d, const char *v,
                          uint64_t *out)
{
    uint64_t n = 0, mult = 0;
    bool is_huge = false;
    size_t i = 0;

    for (; isdigit((unsigned char)v[i]); i++) {
        if (n > (UINT64_MAX - 9) / 10)
            is_huge = true;
        else
            n = n * 10 + (uint64_t)(v[i] - '0');
    }
    if (i > 0 && v[i] == '\0')
        mult = 1;
    for (size_t u = 0; i > 0 && v[i] && v[i + 1] == '\0' &&
                       u < sizeof(duration_units) / sizeof(duration_units[0]);
         u++) {
        if (duration_units[u].unit == v[i])
            mult = duration_units[u].seconds;
    }
    if (mult == 0)
        return conf__error(p, "%s: '%s' is not a duration (N, Nh, Nd, Nw, Nm or Ny)", d->name, v);
    if (is_huge || n > (uint64_t)d->max / mult || n * mult < (uint64_t)d->min)
        return conf__error(p, "%s: '%s' is out of range (%" PRId64 "..%" PRId64 " seconds)",
                           d->name, v, d->min, d->max);
    *out = n * mult;
    return 0;
}

static int set_generic(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    char *field = (char *)base + d->offset;
    const char *v = p->argv[1];
    int64_t n = 0;
    uint64_t u = 0;
    bool b = false;
    int rc;

    switch (d->type) {
    case CONF__T_BOOL:
        rc = parse_bool(p, d, v, &b);
        if (rc == 0)
            *(bool *)field = b;
        return rc;
    case CONF__T_I32:
    case CONF__T_U32:
    case CONF__T_U64:
        rc = parse_int(p, d, v, &n);
        if (rc == 0 && d->type == CONF__T_I32)
            *(int32_t *)field = (int32_t)n;
        else if (rc == 0 && d->type == CONF__T_U32)
            *(uint32_t *)field = (uint32_t)n;
        else if (rc == 0)
            *(uint64_t *)field = (uint64_t)n;
        return rc;
    case CONF__T_DURATION:
        rc = parse_duration(p, d, v, &u);
        if (rc == 0)
            *(uint64_t *)field = u;
        return rc;
    case CONF__T_WORD:
    case CONF__T_STRING:
        if (*(char **)field)
            return conf__error(p, "%s: duplicate value", d->name);
        *(char **)field = xstrdup(d->type == CONF__T_WORD ? v : p->rest[1]);
        return 0;
    case CONF__T_NONE:
        break;
    }
    return conf__error(p, "%s: has no value to set", d->name);
}

static int set_port(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    int64_t port = 0; /* set by parse_int; GCC -O2 cannot see it */
    (void)base;
    int rc = parse_int(p, d, p->argv[1], &port);
    if (rc)
        return rc;
    p->dflt.port = (uint16_t)port;
    p->dflt_wanted = true;
    p->dflt_origin = (struct conf__origin){p->file, p->line, d->name};
    return 0;
}

static int set_listener(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    struct conf *c = base;
    int64_t port = 0; /* set by parse_int; GCC -O2 cannot see it */

    int rc = parse_int(p, d, p->argv[1], &port);
    if (rc)
        return rc;
    c->listeners = xrealloc(c->listeners, (c->n_listeners + 1) * sizeof(*c->listeners));
    p->lorigin = xrealloc(p->lorigin, (c->n_listeners + 1) * sizeof(*p->lorigin));
    struct conf_listener *l = &c->listeners[c->n_listeners];
    conf__listener_init(l);
    l->port = (uint16_t)port;
    l->bind = p->argc > 2 ? xstrdup(p->argv[2]) : NULL;
    p->lorigin[c->n_listeners] = (struct conf__origin){p->file, p->line, d->name};
    p->cur = (long)c->n_listeners++;
    return 0;
}

static int set_protocol(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    struct conf_listener *l = base;
    const char *v = p->argv[1];

    if (strcmp(v, "mqtt") == 0)
        l->protocol = CONF_PROTO_MQTT;
    else if (strcmp(v, "websockets") == 0)
        l->protocol = CONF_PROTO_WEBSOCKETS;
    else
        return conf__error(p, "%s: '%s' is not a protocol (mqtt|websockets)", d->name, v);
    return 0;
}

static int set_log_dest(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    struct conf *c = base;
    const char *v = p->argv[1];
    unsigned bit = 0;

    if (strcmp(v, "file") == 0) {
        if (p->argc < 3)
            return conf__error(p, "%s: file: missing path", d->name);
        if (c->log_file)
            return conf__error(p, "%s: only one log file is supported", d->name);
    } else if (p->argc > 2) {
        return conf__error(p, "%s: too many arguments", d->name);
    }
    if (strcmp(v, "stdout") == 0)
        bit = CONF_LOG_STDOUT;
    else if (strcmp(v, "stderr") == 0)
        bit = CONF_LOG_STDERR;
    else if (strcmp(v, "file") == 0)
        bit = CONF_LOG_FILE;
    else if (strcmp(v, "syslog") == 0 || strcmp(v, "topic") == 0 || strcmp(v, "dlt") == 0)
        return conf__error(p, "%s: '%s' is not supported (use stdout, stderr, file or none)",
                           d->name, v);
    else if (strcmp(v, "none") != 0)
        return conf__error(p, "%s: '%s' is not a log destination (stdout|stderr|file|none)",
                           d->name, v);
    /* The first log_dest replaces the default; later ones add to it, as in mosquitto. */
    if (is_first(p, d) || bit == 0)
        c->log_dest = 0;
    if (bit == 0) {
        free(c->log_file);
        c->log_file = NULL;
    }
    c->log_dest |= bit;
    if (bit == CONF_LOG_FILE)
        c->log_file = xstrdup(p->rest[2]);
    return 0;
}

static const struct {
    const char *name;
    unsigned bits;
} log_types[] = {
    {"error", LOG_TYPE_ERROR},
    {"warning", LOG_TYPE_WARNING},
    {"notice", LOG_TYPE_NOTICE},
    {"information", LOG_TYPE_INFORMATION},
    {"debug", LOG_TYPE_DEBUG},
    {"subscribe", LOG_TYPE_SUBSCRIBE},
    {"unsubscribe", LOG_TYPE_UNSUBSCRIBE},
    {"websockets", LOG_TYPE_WEBSOCKETS},
    {"all", LOG_TYPE_ALL},
    {"none", 0},
};

static int set_log_type(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    struct conf *c = base;
    const char *v = p->argv[1];

    for (size_t i = 0; i < sizeof(log_types) / sizeof(log_types[0]); i++) {
        if (strcmp(v, log_types[i].name) != 0)
            continue;
        /* Like log_dest: the first log_type replaces the default set. */
        if (is_first(p, d) || log_types[i].bits == 0)
            c->log_type = 0;
        c->log_type |= log_types[i].bits;
        return 0;
    }
    return conf__error(p,
                       "%s: '%s' is not a log type (error|warning|notice|information|debug|"
                       "subscribe|unsubscribe|websockets|all|none)",
                       d->name, v);
}

/* HOST[:PORT][/DB] after an optional USER:PASS@; the URL itself is never echoed back, since
 * it may hold a password. */
static bool redis_url_ok(const char *u)
{
    const char *at = strrchr(u, '@');
    const char *h = at ? at + 1 : u;
    size_t hlen = strcspn(h, ":/");
    if (hlen == 0)
        return false;
    const char *r = h + hlen;
    if (*r == ':') {
        char *end;
        long port = strtol(r + 1, &end, 10);
        if (end == r + 1 || port < 1 || port > 65535)
            return false;
        r = end;
    }
    if (*r == '/') {
        char *end;
        long db = strtol(r + 1, &end, 10);
        if (end == r + 1 || db < 0 || db > 1000000)
            return false;
        r = end;
    }
    return *r == '\0';
}

static int set_store(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    struct conf *c = base;
    const char *v = p->argv[1];

    if (strncmp(v, "rediss://", 9) == 0)
        return conf__error(p, "%s: TLS to Redis (rediss://) is not supported", d->name);
    if (strncmp(v, "redis://", 8) == 0) {
        if (!redis_url_ok(v + 8))
            return conf__error(p,
                               "%s: malformed Redis URL (expected "
                               "redis://[USER:PASS@]HOST[:PORT][/DB])",
                               d->name);
    } else if (strcmp(v, "memory") != 0)
        return conf__error(p, "%s: '%s' is not a store (memory|redis://HOST:PORT)", d->name, v);
    free(c->store_url);
    c->store_url = xstrdup(v);
    return 0;
}

static int set_per_listener_settings(struct conf__parser *p, const struct conf__directive *d,
                                     void *base)
{
    bool on = false;
    (void)base;
    int rc = parse_bool(p, d, p->argv[1], &on);
    if (rc == 0 && on)
        rc = conf__error(p, "%s: '%s' is not supported (%s)", d->name, p->argv[1], NO_PLS);
    return rc;
}

static int set_node_id(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    const char *v = p->argv[1];
    size_t len = strlen(v);
    bool is_ok = len <= 64;

    for (size_t i = 0; is_ok && i < len; i++)
        is_ok = isalnum((unsigned char)v[i]) || v[i] == '.' || v[i] == '_' || v[i] == '-';
    if (!is_ok)
        return conf__error(p,
                           "%s: '%s' is not a valid node id (up to 64 letters, digits, '.', "
                           "'_' or '-')",
                           d->name, v);
    return set_generic(p, d, base);
}

static int set_cluster_listener(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    struct conf *c = base;
    int64_t port = 0; /* set by parse_int; GCC -O2 cannot see it */

    int rc = parse_int(p, d, p->argv[1], &port);
    if (rc)
        return rc;
    c->cluster_port = (uint16_t)port;
    free(c->cluster_bind);
    c->cluster_bind = p->argc > 2 ? xstrdup(p->argv[2]) : NULL;
    return 0;
}

static int set_http_listener(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    struct conf *c = base;
    int64_t port = 0; /* set by parse_int; GCC -O2 cannot see it */

    if (!is_first(p, d))
        return conf__error(p, "%s: only one HTTP listener is supported", d->name);
    int rc = parse_int(p, d, p->argv[1], &port);
    if (rc)
        return rc;
    c->http_port = (uint16_t)port;
    c->http_bind = p->argc > 2 ? xstrdup(p->argv[2]) : NULL;
    return 0;
}

/* One HOST:PORT, or a comma-separated list of them; HOST may be [IPv6]. */
static bool host_port_ok(const char *v, size_t n)
{
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
        if (v[i] == ':')
            colon = v + i;
    if (!colon || colon == v || (size_t)(colon - v) + 1 >= n)
        return false;
    long port = 0;
    for (const char *q = colon + 1; q < v + n; q++) {
        if (*q < '0' || *q > '9')
            return false;
        port = port * 10 + (*q - '0');
        if (port > 65535)
            return false;
    }
    return port > 0;
}

static int set_host_port(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    const char *v = p->argv[1];
    bool is_list = strcmp(d->name, "cluster_seeds") == 0;

    for (const char *item = v;;) {
        const char *end = strchr(item, ',');
        size_t n = end ? (size_t)(end - item) : strlen(item);
        if (!host_port_ok(item, n) || (end && !is_list))
            return conf__error(p, "%s: '%s' is not %s", d->name, v,
                               is_list ? "a list of HOST:PORT" : "HOST:PORT");
        if (!end)
            break;
        item = end + 1;
    }
    return set_generic(p, d, base);
}

#define G(f)    offsetof(struct conf, f), CONF__SCOPE_GLOBAL
#define L(f)    offsetof(struct conf_listener, f), CONF__SCOPE_LISTENER
#define NOFIELD 0, CONF__SCOPE_GLOBAL
#define U16MAX  65535
#define I32MAX  INT32_MAX
#define PKTMAX  268435455 /* MQTT's largest remaining length */

/* name, type, field, min, max, values min..max, setter, later */
const struct conf__directive conf__directives[] = {
    /* Listeners */
    {"port", CONF__T_U32, NOFIELD, 1, U16MAX, 1, 1, set_port, NULL},
    {"listener", CONF__T_U32, G(listeners), 1, U16MAX, 1, 2, set_listener, NULL},
    {"protocol", CONF__T_WORD, L(protocol), 0, 0, 1, 1, set_protocol, NULL},
    {"max_connections", CONF__T_I32, L(max_connections), -1, I32MAX, 1, 1, NULL, NULL},
    {"cafile", CONF__T_STRING, L(cafile), 0, 0, 1, 1, NULL, NULL},
    {"capath", CONF__T_STRING, L(capath), 0, 0, 1, 1, NULL, NULL},
    {"certfile", CONF__T_STRING, L(certfile), 0, 0, 1, 1, NULL, NULL},
    {"keyfile", CONF__T_STRING, L(keyfile), 0, 0, 1, 1, NULL, NULL},
    {"crlfile", CONF__T_STRING, L(crlfile), 0, 0, 1, 1, NULL, NULL},
    {"require_certificate", CONF__T_BOOL, L(require_certificate), 0, 0, 1, 1, NULL, NULL},
    {"use_identity_as_username", CONF__T_BOOL, L(use_identity_as_username), 0, 0, 1, 1, NULL, NULL},
    {"use_subject_as_username", CONF__T_BOOL, L(use_subject_as_username), 0, 0, 1, 1, NULL, NULL},
    {"tls_version", CONF__T_WORD, L(tls_version), 0, 0, 1, 1, NULL, NULL},
    {"ciphers", CONF__T_WORD, L(ciphers), 0, 0, 1, 1, NULL, NULL},
    {"ciphers_tls1.3", CONF__T_WORD, L(ciphers_tls13), 0, 0, 1, 1, NULL, NULL},
    /* Security */
    {"per_listener_settings", CONF__T_BOOL, NOFIELD, 0, 0, 1, 1, set_per_listener_settings, NULL},
    {"allow_anonymous", CONF__T_BOOL, G(allow_anonymous), 0, 0, 1, 1, NULL, NULL},
    {"allow_zero_length_clientid", CONF__T_BOOL, G(allow_zero_length_clientid), 0, 0, 1, 1, NULL,
     NULL},
    {"auto_id_prefix", CONF__T_WORD, G(auto_id_prefix), 0, 0, 1, 1, NULL, NULL},
    {"password_file", CONF__T_STRING, G(password_file), 0, 0, 1, 1, NULL, NULL},
    {"acl_file", CONF__T_STRING, G(acl_file), 0, 0, 1, 1, NULL, NULL},
    {"clientid_prefixes", CONF__T_WORD, G(clientid_prefixes), 0, 0, 1, 1, NULL, NULL},
    /* Limits */
    {"max_packet_size", CONF__T_U32, G(max_packet_size), 0, PKTMAX, 1, 1, NULL, NULL},
    {"message_size_limit", CONF__T_U32, G(message_size_limit), 0, PKTMAX, 1, 1, NULL, NULL},
    {"max_inflight_messages", CONF__T_U32, G(max_inflight_messages), 0, U16MAX, 1, 1, NULL, NULL},
    {"max_queued_messages", CONF__T_U32, G(max_queued_messages), 0, I32MAX, 1, 1, NULL, NULL},
    {"max_queued_bytes", CONF__T_U64, G(max_queued_bytes), 0, INT64_MAX, 1, 1, NULL, NULL},
    {"max_keepalive", CONF__T_U32, G(max_keepalive), 0, U16MAX, 1, 1, NULL, NULL},
    {"persistent_client_expiration", CONF__T_DURATION, G(persistent_client_expiration_s), 0,
     UINT32_MAX, 1, 1, NULL, NULL},
    {"retain_available", CONF__T_BOOL, G(retain_available), 0, 0, 1, 1, NULL, NULL},
    {"max_topic_alias", CONF__T_U32, G(max_topic_alias), 0, U16MAX, 1, 1, NULL, NULL},
    {"set_tcp_nodelay", CONF__T_BOOL, G(set_tcp_nodelay), 0, 0, 1, 1, NULL, NULL},
    {"sys_interval", CONF__T_U32, G(sys_interval_s), 0, U16MAX, 1, 1, NULL, NULL},
    /* Logging */
    {"log_dest", CONF__T_STRING, G(log_dest), 0, 0, 1, 2, set_log_dest, NULL},
    {"log_type", CONF__T_WORD, G(log_type), 0, 0, 1, 1, set_log_type, NULL},
    {"connection_messages", CONF__T_BOOL, G(connection_messages), 0, 0, 1, 1, NULL, NULL},
    {"log_timestamp", CONF__T_BOOL, G(log_timestamp), 0, 0, 1, 1, NULL, NULL},
    /* Files */
    {"include_dir", CONF__T_STRING, NOFIELD, 0, 0, 1, 1, conf__set_include_dir, NULL},
    /* shoal */
    {"node_id", CONF__T_WORD, G(node_id), 0, 0, 1, 1, set_node_id, NULL},
    {"store", CONF__T_WORD, G(store_url), 0, 0, 1, 1, set_store, NULL},
    {"cluster_listener", CONF__T_NONE, NOFIELD, 1, U16MAX, 1, 2, set_cluster_listener, NULL},
    {"cluster_advertise", CONF__T_WORD, G(cluster_advertise), 0, 0, 1, 1, set_host_port, NULL},
    {"cluster_seeds", CONF__T_WORD, G(cluster_seeds), 0, 0, 1, 1, set_host_port, NULL},
    {"cluster_dns", CONF__T_WORD, G(cluster_dns), 0, 0, 1, 1, NULL, NULL},
    {"cluster_name", CONF__T_WORD, G(cluster_name), 0, 0, 1, 1, set_node_id, NULL},
    {"cluster_secret_file", CONF__T_STRING, G(cluster_secret_file), 0, 0, 1, 1, NULL, NULL},
    {"http_listener", CONF__T_NONE, NOFIELD, 1, U16MAX, 1, 2, set_http_listener, NULL},
};

const size_t conf__n_directives = sizeof(conf__directives) / sizeof(conf__directives[0]);

/* mosquitto directives that shoal does not implement, each followed by a space; a trailing
 * '*' matches a prefix (plugin_opt_NAME). */
static const char mosquitto_only[] =
    "accept_protocol_versions address addresses allow_duplicate_messages auth_opt_* "
    "auth_plugin auth_plugin_deny_special_chars autosave_interval autosave_on_changes "
    "bind_address bind_interface bridge_* check_retain_source cleansession clientid "
    "connection dhparamfile enable_proxy_protocol global_max_clients global_max_connections "
    "global_plugin http_dir idle_timeout keepalive_interval local_cleansession local_clientid "
    "local_password local_username log_facility log_timestamp_format max_inflight_bytes "
    "max_qos memory_limit mount_point notification_topic notifications "
    "notifications_local_only password persistence persistence_file persistence_location "
    "pid_file plugin plugin_opt_* psk_file psk_hint queue_qos0_messages remote_clientid "
    "remote_password remote_username restart_timeout retry_interval round_robin socket_domain "
    "start_type store_clean_interval threshold tls_engine tls_engine_kpass_sha1 tls_keyform "
    "topic try_private upgrade_outgoing_qos use_username_as_clientid user username "
    "websockets_headers_size websockets_log_level ";

static bool is_mosquitto_only(const char *name)
{
    size_t nlen = strlen(name);
    for (const char *m = mosquitto_only; *m;) {
        size_t len = strcspn(m, " ");
        bool is_prefix = m[len - 1] == '*';
        if (is_prefix ? nlen >= len - 1 && strncmp(name, m, len - 1) == 0
                      : nlen == len && strncmp(name, m, len) == 0)
            return true;
        m += len + 1;
    }
    return false;
}

static const struct conf__directive *find(const char *name)
{
    for (size_t i = 0; i < conf__n_directives; i++) {
        if (strcmp(conf__directives[i].name, name) == 0)
            return &conf__directives[i];
    }
    return NULL;
}

const struct conf__origin *conf__seen(const struct conf__parser *p, const char *name)
{
    const struct conf__directive *d = find(name);
    if (NEVER(!d) || !p->seen[d - conf__directives].file)
        return NULL;
    return &p->seen[d - conf__directives];
}

int conf__line_apply(struct conf__parser *p)
{
    const char *name = p->argv[0];
    const struct conf__directive *d = find(name);

    if (!d && is_mosquitto_only(name))
        return conf__error(p, "'%s' is a mosquitto directive that shoal does not implement", name);
    if (!d)
        return conf__error(p, "unknown directive '%s'", name);
    if (d->later)
        return conf__error(p, "'%s' is not supported yet (%s)", name, d->later);
    size_t nargs = p->argc - 1;
    if (nargs < d->nargs_min)
        return conf__error(p, "%s: missing value", name);
    if (d->type != CONF__T_STRING && (nargs > d->nargs_max || p->has_extra_args))
        return conf__error(p, "%s: too many arguments", name);

    void *base = p->c;
    bool is_dflt = d->scope == CONF__SCOPE_LISTENER && p->cur < 0;
    if (d->scope == CONF__SCOPE_LISTENER)
        base = is_dflt ? (void *)&p->dflt : (void *)&p->c->listeners[p->cur];
    int rc = d->set ? d->set(p, d, base) : set_generic(p, d, base);
    if (rc)
        return rc;
    struct conf__origin here = {p->file, p->line, d->name};
    p->seen[d - conf__directives] = here;
    if (is_dflt && !p->dflt_origin.file)
        p->dflt_origin = here;
    return 0;
}

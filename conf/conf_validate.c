/*
 * Defaults and the rules that need the whole file: which listeners exist (the default
 * listener, -p, mosquitto 2's local-only mode), defaults that depend on them
 * (allow_anonymous), duplicate listeners and limits that constrain each other. Messages
 * point at the line that set the offending value.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf_int.h"
#include "conf/conf_tls.h"
#include "node/buf.h"
#include "node/err.h"
#include "node/log.h"

#define DEFAULT_PORT     1883
#define MIN_PACKET_LIMIT 20 /* mosquitto refuses smaller max_packet_size values */

void conf__listener_init(struct conf_listener *l)
{
    memset(l, 0, sizeof(*l));
    l->protocol = CONF_PROTO_MQTT;
    l->max_connections = -1;
}

void conf__listener_clear(struct conf_listener *l)
{
    free(l->bind);
    free(l->cafile);
    free(l->capath);
    free(l->certfile);
    free(l->keyfile);
    free(l->crlfile);
    free(l->tls_version);
    free(l->ciphers);
    free(l->ciphers_tls13);
    memset(l, 0, sizeof(*l));
}

void conf__defaults(struct conf *c)
{
    c->allow_anonymous = false;
    c->allow_zero_length_clientid = true;
    c->max_packet_size = 0;
    c->message_size_limit = 0;
    c->max_inflight_messages = 20;
    c->max_queued_messages = 1000;
    c->max_queued_bytes = 0;
    c->max_keepalive = 65535;
    c->persistent_client_expiration_s = 0;
    c->retain_available = true;
    c->max_topic_alias = 10;
    c->set_tcp_nodelay = false;
    c->sys_interval_s = 10;
    c->log_dest = CONF_LOG_STDERR;
    c->log_type = LOG_TYPE_ERROR | LOG_TYPE_WARNING | LOG_TYPE_NOTICE | LOG_TYPE_INFORMATION;
    c->connection_messages = true;
    c->log_timestamp = true;
}

static struct conf_listener *listener_add(struct conf__parser *p, const struct conf__origin *o)
{
    struct conf *c = p->c;
    c->listeners = xrealloc(c->listeners, (c->n_listeners + 1) * sizeof(*c->listeners));
    p->lorigin = xrealloc(p->lorigin, (c->n_listeners + 1) * sizeof(*p->lorigin));
    p->lorigin[c->n_listeners] = *o;
    return &c->listeners[c->n_listeners++];
}

/* mosquitto creates the default listener when `port` or any setting of it was given. */
static bool dflt_is_configured(const struct conf__parser *p)
{
    const struct conf_listener *l = &p->dflt;
    return p->dflt_wanted || l->max_connections != -1 || l->protocol != CONF_PROTO_MQTT ||
           l->cafile || l->capath || l->certfile || l->keyfile || l->crlfile || l->ciphers ||
           l->ciphers_tls13 || l->tls_version || l->require_certificate ||
           l->use_identity_as_username || l->use_subject_as_username;
}

static int make_listeners(struct conf__parser *p, int port_override)
{
    static const struct conf__origin none = {NULL, 0, "port"};
    struct conf *c = p->c;

    if (port_override < 0 || port_override > 65535)
        return conf__error_at(p, &none, "-p: '%d' is out of range (1..65535)", port_override);
    if (port_override > 0) {
        p->dflt.port = (uint16_t)port_override;
        p->dflt_wanted = true;
    }
    if (dflt_is_configured(p)) {
        if (!p->dflt_origin.name)
            p->dflt_origin.name = "port";
        struct conf_listener *l = listener_add(p, &p->dflt_origin);
        *l = p->dflt;
        memset(&p->dflt, 0, sizeof(p->dflt));
        if (l->port == 0)
            l->port = DEFAULT_PORT;
        l->is_default = true;
    }
    if (c->n_listeners == 0) {
        /* mosquitto 2: no listener at all means 1883 on the loopback addresses only. */
        struct conf_listener *l = listener_add(p, &none);
        conf__listener_init(l);
        l->port = DEFAULT_PORT;
        l->is_default = true;
        c->local_only = true;
    }
    return 0;
}

static bool same_bind(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int check_duplicates(struct conf__parser *p)
{
    const struct conf *c = p->c;

    for (size_t j = 1; j < c->n_listeners; j++) {
        for (size_t i = 0; i < j; i++) {
            const struct conf_listener *a = &c->listeners[i], *b = &c->listeners[j];
            if (a->port != b->port || !same_bind(a->bind, b->bind))
                continue;
            /* Blame the later one, unless it has no line (the default listener made by -p). */
            const struct conf__origin *o = p->lorigin[j].file ? &p->lorigin[j] : &p->lorigin[i];
            return conf__error_at(p, o, "%s: port %u on %s is already configured", o->name,
                                  (unsigned)b->port, b->bind ? b->bind : "all addresses");
        }
    }
    return 0;
}

static int check_limits(struct conf__parser *p)
{
    const struct conf *c = p->c;
    if (c->max_packet_size != 0 && c->max_packet_size < MIN_PACKET_LIMIT)
        return conf__error_at(p, conf__seen(p, "max_packet_size"),
                              "max_packet_size: '%u' is too small (at least %d, or 0 for the "
                              "protocol maximum)",
                              (unsigned)c->max_packet_size, MIN_PACKET_LIMIT);
    return 0;
}

static void fill_late_defaults(struct conf__parser *p)
{
    struct conf *c = p->c;
    char host[256];

    /* mosquitto 2: anonymous clients are allowed by default only in local-only mode. */
    if (!conf__seen(p, "allow_anonymous"))
        c->allow_anonymous = c->local_only;
    if (!c->auto_id_prefix)
        c->auto_id_prefix = xstrdup("auto-");
    if (!c->store_url)
        c->store_url = xstrdup("memory");
    if (!c->cluster_name)
        c->cluster_name = xstrdup("shoal");
    if (!c->node_id) {
        if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
            (void)strcpy(host, "shoal");
        host[sizeof(host) - 1] = '\0';
        c->node_id = xstrdup(host);
    }
}

static bool has_tls_setting(const struct conf_listener *l)
{
    return l->cafile || l->capath || l->keyfile || l->crlfile || l->tls_version || l->ciphers ||
           l->ciphers_tls13 || l->require_certificate || l->use_identity_as_username ||
           l->use_subject_as_username;
}

/* TLS settings must form a whole: a certificate with its key, and a CA for anything that
 * checks client certificates. The files themselves are loaded here too, so `shoal -t` and
 * start-up fail on the same errors. */
static int check_tls(struct conf__parser *p)
{
    const struct conf *c = p->c;
    char why[512];

    for (size_t i = 0; i < c->n_listeners; i++) {
        const struct conf_listener *l = &c->listeners[i];
        const struct conf__origin *o = &p->lorigin[i];
        unsigned port = l->port;
        if (!l->certfile && has_tls_setting(l))
            return conf__error_at(p, o, "listener %u: TLS settings need certfile and keyfile",
                                  port);
        if (!l->certfile)
            continue;
        if (!l->keyfile)
            return conf__error_at(p, o, "listener %u: certfile needs keyfile", port);
        bool checks_clients = l->require_certificate || l->use_identity_as_username ||
                              l->use_subject_as_username || l->crlfile;
        if (checks_clients && !l->cafile && !l->capath)
            return conf__error_at(p, o,
                                  "listener %u: client certificates (require_certificate, "
                                  "use_identity_as_username, use_subject_as_username, crlfile) "
                                  "need cafile or capath",
                                  port);
        if (l->use_identity_as_username && l->use_subject_as_username)
            return conf__error_at(p, o,
                                  "listener %u: use_identity_as_username and "
                                  "use_subject_as_username exclude each other",
                                  port);
        if (conf_tls_check(l, why, sizeof(why)) < 0)
            return conf__error_at(p, o, "listener %u: %s", port, why);
    }
    return 0;
}

/* The cluster settings belong together: peers share sessions through Redis, and the secret
 * file is read now so that a missing or empty one fails `shoal -t` too. */
static int check_cluster(struct conf__parser *p)
{
    const struct conf *c = p->c;
    static const char *const needs_listener[] = {
        "cluster_advertise", "cluster_seeds", "cluster_dns", "cluster_name", "cluster_secret_file"};

    for (size_t i = 0; c->cluster_port == 0 && i < 5; i++) {
        const struct conf__origin *o = conf__seen(p, needs_listener[i]);
        if (o)
            return conf__error_at(p, o, "%s: needs cluster_listener", needs_listener[i]);
    }
    if (c->cluster_port == 0)
        return 0;
    const struct conf__origin *lo = conf__seen(p, "cluster_listener");
    if (!c->store_url || strncmp(c->store_url, "redis://", 8) != 0)
        return conf__error_at(p, lo,
                              "cluster_listener: a cluster needs a shared store (store "
                              "redis://HOST:PORT)");
    for (size_t i = 0; i < c->n_listeners; i++)
        if (c->listeners[i].port == c->cluster_port)
            return conf__error_at(p, lo, "cluster_listener: port %u is also an MQTT listener",
                                  (unsigned)c->cluster_port);
    if (c->cluster_secret_file) {
        const struct conf__origin *so = conf__seen(p, "cluster_secret_file");
        FILE *f = fopen(c->cluster_secret_file, "rb");
        if (!f)
            return conf__error_at(p, so, "cluster_secret_file: %s: %s", c->cluster_secret_file,
                                  strerror(errno));
        char buf[8];
        size_t n = fread(buf, 1, sizeof(buf), f);
        (void)fclose(f);
        if (n == 0 || (n == 1 && buf[0] == '\n'))
            return conf__error_at(p, so, "cluster_secret_file: %s: empty", c->cluster_secret_file);
    }
    return 0;
}

/* Two sockets on one port collide unless both name different addresses. */
static bool binds_overlap(const char *a, const char *b)
{
    return !a || !b || strcmp(a, b) == 0;
}

/* The HTTP listener shares no port with an MQTT or cluster listener: a clash would otherwise
 * surface only at start, as a bind error. */
static int check_http(struct conf__parser *p)
{
    const struct conf *c = p->c;

    if (c->http_port == 0)
        return 0;
    const struct conf__origin *o = conf__seen(p, "http_listener");
    for (size_t i = 0; i < c->n_listeners; i++) {
        const struct conf_listener *l = &c->listeners[i];
        if (l->port == c->http_port && binds_overlap(l->bind, c->http_bind))
            return conf__error_at(p, o, "http_listener: port %u is also an MQTT listener",
                                  (unsigned)c->http_port);
    }
    if (c->cluster_port == c->http_port && binds_overlap(c->cluster_bind, c->http_bind))
        return conf__error_at(p, o, "http_listener: port %u is also the cluster listener",
                              (unsigned)c->http_port);
    return 0;
}

int conf__finish(struct conf__parser *p, int port_override)
{
    int rc = make_listeners(p, port_override);
    if (rc == 0)
        rc = check_duplicates(p);
    if (rc == 0)
        rc = check_limits(p);
    if (rc == 0)
        rc = check_tls(p);
    if (rc == 0)
        rc = check_cluster(p);
    if (rc == 0)
        rc = check_http(p);
    if (rc == 0)
        fill_late_defaults(p);
    return rc;
}

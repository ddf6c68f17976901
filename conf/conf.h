#ifndef SHOAL_CONF_CONF_H
#define SHOAL_CONF_CONF_H

/*
 * The broker configuration: a superset of mosquitto.conf. conf_load parses a file (and any
 * include_dir) into an immutable struct conf, or fails with "FILE:LINE: message". Directives
 * are described by one table (conf_table.c); cross-field rules live in conf_validate.c.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum conf_protocol { CONF_PROTO_MQTT = 0, CONF_PROTO_WEBSOCKETS };

struct conf_listener {
    uint16_t port;
    char *bind; /* NULL = all addresses */
    enum conf_protocol protocol;
    int32_t max_connections; /* -1 = unlimited */
    bool is_default;         /* made by `port`, -p or the implicit local-only listener */
    /* TLS settings: parsed only once TLS is supported; NULL/false until then. */
    char *cafile;
    char *capath;
    char *certfile;
    char *keyfile;
    char *crlfile;
    bool require_certificate;
    bool use_identity_as_username;
    bool use_subject_as_username;
    char *tls_version;
    char *ciphers;
    char *ciphers_tls13;
};

enum conf_log_dest { CONF_LOG_STDOUT = 1 << 0, CONF_LOG_STDERR = 1 << 1, CONF_LOG_FILE = 1 << 2 };

struct conf {
    char *path; /* the main file */

    struct conf_listener *listeners; /* array */
    size_t n_listeners;
    bool local_only; /* no listener configured: serving 127.0.0.1/::1 on 1883 as mosquitto 2 */

    /* Security */
    bool allow_anonymous;            /* default false (mosquitto 2), true in local-only mode */
    bool allow_zero_length_clientid; /* default true */
    char *auto_id_prefix;            /* default "auto-" */
    char *password_file;             /* later issue */
    char *acl_file;                  /* later issue */
    char *clientid_prefixes;         /* later issue */

    /* Limits (0 = unlimited where mosquitto says so) */
    uint32_t max_packet_size;                /* default 0 = protocol maximum */
    uint32_t message_size_limit;             /* default 0 */
    uint32_t max_inflight_messages;          /* default 20; 0 = unlimited (65535) */
    uint32_t max_queued_messages;            /* default 1000; 0 = unlimited */
    uint64_t max_queued_bytes;               /* default 0 */
    uint32_t max_keepalive;                  /* default 65535 */
    uint64_t persistent_client_expiration_s; /* default 0 = never */
    bool retain_available;                   /* default true */
    uint32_t max_topic_alias;                /* default 10 */
    bool set_tcp_nodelay;                    /* default false */
    uint32_t sys_interval_s;                 /* default 10; 0 = disabled */

    /* Logging */
    unsigned log_dest;        /* enum conf_log_dest bits; default stderr */
    char *log_file;           /* for CONF_LOG_FILE */
    unsigned log_type;        /* enum log_type_bits; default error|warning|notice|information */
    bool connection_messages; /* default true */
    bool log_timestamp;       /* default true */

    /* shoal */
    char *node_id;   /* default: hostname */
    char *store_url; /* "memory" (default) or redis:// */

    /* Cluster: all unset (cluster_port 0) on a single node. */
    uint16_t cluster_port;     /* cluster_listener PORT */
    char *cluster_bind;        /* its bind address; NULL = all */
    char *cluster_advertise;   /* HOST:PORT peers dial; default: bind address and port */
    char *cluster_seeds;       /* HOST:PORT[,HOST:PORT...] as written */
    char *cluster_dns;         /* a name whose A/AAAA records are seeds */
    char *cluster_name;        /* default "shoal" */
    char *cluster_secret_file; /* path; its contents (trailing newline cut) are the secret */

    /* Metrics and health endpoint: http_port 0 when there is none. */
    uint16_t http_port; /* http_listener PORT */
    char *http_bind;    /* its bind address; NULL = all */
};

/*
 * Parses path into a new struct conf. port_override > 0 replaces the default listener's port
 * (the CLI's -p). On failure returns NULL and writes "FILE:LINE: message" (or "FILE: message")
 * into err (errlen bytes). Never returns a half-filled conf.
 */
struct conf *conf_load(const char *path, int port_override, char *err, size_t errlen);

/* Frees c and everything it owns. Sets *c to NULL. */
void conf_free(struct conf **c);

#endif

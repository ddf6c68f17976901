/*
 * conf: every directive lands in its field, defaults follow mosquitto 2.x, and every error
 * class produces its exact "FILE:LINE: message". Config files are written into a fresh
 * mkdtemp directory per test and removed afterwards.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* cmocka needs these first, in this order. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include "conf/conf.h"
#include "node/log.h"

#define MAX_PATHS 64

struct fx {
    char dir[64];
    char err[512];
    char *paths[MAX_PATHS]; /* created, removed in reverse order */
    size_t n_paths;
};

static const char *track(struct fx *f, const char *name)
{
    char path[512];
    (void)snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    for (size_t i = 0; i < f->n_paths; i++) {
        if (strcmp(f->paths[i], path) == 0)
            return f->paths[i];
    }
    assert_true(f->n_paths < MAX_PATHS);
    f->paths[f->n_paths] = strdup(path);
    return f->paths[f->n_paths++];
}

static const char *put(struct fx *f, const char *name, const char *text)
{
    const char *path = track(f, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    return path;
}

static const char *mkd(struct fx *f, const char *name)
{
    const char *path = track(f, name);
    assert_int_equal(mkdir(path, 0755), 0);
    return path;
}

static const char *lnk(struct fx *f, const char *target, const char *name)
{
    const char *path = track(f, name);
    assert_int_equal(symlink(target, path), 0);
    return path;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    (void)snprintf(f->dir, sizeof(f->dir), "/tmp/test_conf.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    for (size_t i = f->n_paths; i-- > 0;) {
        struct stat st;
        if (lstat(f->paths[i], &st) == 0 && S_ISDIR(st.st_mode))
            (void)rmdir(f->paths[i]);
        else
            (void)unlink(f->paths[i]);
        free(f->paths[i]);
    }
    (void)rmdir(f->dir);
    free(f);
    return 0;
}

/* Writes text as main.conf and loads it. */
static struct conf *load_port(struct fx *f, const char *text, int port)
{
    const char *path = put(f, "main.conf", text);
    f->err[0] = 'X';
    f->err[1] = '\0';
    struct conf *c = conf_load(path, port, f->err, sizeof(f->err));
    if (c)
        assert_string_equal(f->err, "");
    return c;
}

static struct conf *load(struct fx *f, const char *text)
{
    struct conf *c = load_port(f, text, 0);
    if (!c)
        fail_msg("unexpected error: %s", f->err);
    return c;
}

/* Loads text, expects failure with "<main.conf path><suffix>". */
static void expect_err(struct fx *f, const char *text, const char *suffix)
{
    char want[1024];
    struct conf *c = load_port(f, text, 0);
    if (c) {
        conf_free(&c);
        fail_msg("config loaded but expected error %s for:\n%s", suffix, text);
    }
    (void)snprintf(want, sizeof(want), "%s/main.conf%s", f->dir, suffix);
    assert_string_equal(f->err, want);
}

static void test_defaults(void **state)
{
    struct fx *f = *state;
    char host[256] = "";
    struct conf *c = load(f, "# only comments\n\n   # indented comment\n\t\n");

    assert_true(c->local_only);
    assert_int_equal(c->n_listeners, 1);
    assert_int_equal(c->listeners[0].port, 1883);
    assert_null(c->listeners[0].bind);
    assert_true(c->listeners[0].is_default);
    assert_int_equal(c->listeners[0].protocol, CONF_PROTO_MQTT);
    assert_int_equal(c->listeners[0].max_connections, -1);
    assert_null(c->listeners[0].cafile);
    assert_true(c->allow_anonymous); /* local-only mode */
    assert_true(c->allow_zero_length_clientid);
    assert_string_equal(c->auto_id_prefix, "auto-");
    assert_null(c->password_file);
    assert_null(c->acl_file);
    assert_null(c->clientid_prefixes);
    assert_int_equal(c->max_packet_size, 0);
    assert_int_equal(c->message_size_limit, 0);
    assert_int_equal(c->max_inflight_messages, 20);
    assert_int_equal(c->max_queued_messages, 1000);
    assert_int_equal(c->max_queued_bytes, 0);
    assert_int_equal(c->max_keepalive, 65535);
    assert_int_equal(c->persistent_client_expiration_s, 0);
    assert_true(c->retain_available);
    assert_int_equal(c->max_topic_alias, 10);
    assert_false(c->set_tcp_nodelay);
    assert_int_equal(c->sys_interval_s, 10);
    assert_int_equal(c->log_dest, CONF_LOG_STDERR);
    assert_null(c->log_file);
    assert_int_equal(c->log_type,
                     LOG_TYPE_ERROR | LOG_TYPE_WARNING | LOG_TYPE_NOTICE | LOG_TYPE_INFORMATION);
    assert_true(c->connection_messages);
    assert_true(c->log_timestamp);
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    assert_string_equal(c->node_id, host);
    assert_string_equal(c->store_url, "memory");
    assert_int_equal(c->http_port, 0);
    assert_null(c->http_bind);
    assert_string_equal(c->path, put(f, "main.conf", ""));
    conf_free(&c);
    assert_null(c);
}

static void test_every_directive(void **state)
{
    struct fx *f = *state;
    struct conf *c = load(f, "per_listener_settings false\n"
                             "listener 8883 10.0.0.1\n"
                             "protocol mqtt\n"
                             "max_connections 500\n"
                             "allow_anonymous true\n"
                             "allow_zero_length_clientid false\n"
                             "auto_id_prefix gen-\n"
                             "max_packet_size 65536\n"
                             "message_size_limit 1000\n"
                             "max_inflight_messages 0\n"
                             "max_queued_messages 5000\n"
                             "max_queued_bytes 10000000000\n"
                             "max_keepalive 300\n"
                             "persistent_client_expiration 2d\n"
                             "retain_available false\n"
                             "max_topic_alias 0\n"
                             "set_tcp_nodelay true\n"
                             "sys_interval 0\n"
                             "log_dest stdout\n"
                             "log_dest file /var/log/shoal/my broker.log\n"
                             "log_type subscribe\n"
                             "log_type websockets\n"
                             "connection_messages false\n"
                             "log_timestamp false\n"
                             "node_id node-a.1_x\n"
                             "store redis://user:pw@10.0.0.5:6380/2\n"
                             "password_file /etc/shoal/passwd\n"
                             "acl_file /etc/shoal/acl\n"
                             "clientid_prefixes dev-\n"
                             "listener 8080 127.0.0.1\n"
                             "protocol websockets\n");

    assert_false(c->local_only);
    assert_int_equal(c->n_listeners, 2);
    assert_int_equal(c->listeners[0].port, 8883);
    assert_string_equal(c->listeners[0].bind, "10.0.0.1");
    assert_int_equal(c->listeners[0].protocol, CONF_PROTO_MQTT);
    assert_int_equal(c->listeners[1].protocol, CONF_PROTO_WEBSOCKETS);
    assert_string_equal(c->password_file, "/etc/shoal/passwd");
    assert_string_equal(c->acl_file, "/etc/shoal/acl");
    assert_string_equal(c->clientid_prefixes, "dev-");
    assert_false(c->listeners[0].is_default);
    assert_int_equal(c->listeners[0].max_connections, 500);
    assert_true(c->allow_anonymous);
    assert_false(c->allow_zero_length_clientid);
    assert_string_equal(c->auto_id_prefix, "gen-");
    assert_int_equal(c->max_packet_size, 65536);
    assert_int_equal(c->message_size_limit, 1000);
    assert_int_equal(c->max_inflight_messages, 0);
    assert_int_equal(c->max_queued_messages, 5000);
    assert_true(c->max_queued_bytes == 10000000000ULL);
    assert_int_equal(c->max_keepalive, 300);
    assert_int_equal(c->persistent_client_expiration_s, 2 * 86400);
    assert_false(c->retain_available);
    assert_int_equal(c->max_topic_alias, 0);
    assert_true(c->set_tcp_nodelay);
    assert_int_equal(c->sys_interval_s, 0);
    assert_int_equal(c->log_dest, CONF_LOG_STDOUT | CONF_LOG_FILE);
    assert_string_equal(c->log_file, "/var/log/shoal/my broker.log");
    assert_int_equal(c->log_type, LOG_TYPE_SUBSCRIBE | LOG_TYPE_WEBSOCKETS);
    assert_false(c->connection_messages);
    assert_false(c->log_timestamp);
    assert_string_equal(c->node_id, "node-a.1_x");
    assert_string_equal(c->store_url, "redis://user:pw@10.0.0.5:6380/2");
    conf_free(&c);
}

static void test_syntax_forms(void **state)
{
    struct fx *f = *state;
    /* CRLF, tabs, leading and trailing blanks, mosquitto's 1/0 booleans, last value wins. */
    struct conf *c = load(f, "  # comment after blanks\r\n"
                             "\tmax_keepalive\t\t60   \r\n"
                             "set_tcp_nodelay 1\n"
                             "retain_available 0\n"
                             "max_keepalive 61\n"
                             "allow_anonymous false");
    assert_int_equal(c->max_keepalive, 61);
    assert_true(c->set_tcp_nodelay);
    assert_false(c->retain_available);
    assert_false(c->allow_anonymous);
    assert_true(c->local_only);
    conf_free(&c);
}

static void test_listener_scoping(void **state)
{
    struct fx *f = *state;
    struct conf *c = load(f, "listener 1883\n"
                             "max_connections 10\n"
                             "allow_anonymous true\n"
                             "listener 1884 127.0.0.1\n"
                             "protocol mqtt\n"
                             "max_connections 20\n"
                             "listener 1884 ::1\n");
    assert_int_equal(c->n_listeners, 3);
    assert_int_equal(c->listeners[0].port, 1883);
    assert_null(c->listeners[0].bind);
    assert_int_equal(c->listeners[0].max_connections, 10);
    assert_int_equal(c->listeners[1].port, 1884);
    assert_string_equal(c->listeners[1].bind, "127.0.0.1");
    assert_int_equal(c->listeners[1].max_connections, 20);
    assert_string_equal(c->listeners[2].bind, "::1");
    assert_int_equal(c->listeners[2].max_connections, -1);
    for (size_t i = 0; i < c->n_listeners; i++)
        assert_false(c->listeners[i].is_default);
    assert_true(c->allow_anonymous);
    assert_false(c->local_only);
    conf_free(&c);
}

static void test_default_listener(void **state)
{
    struct fx *f = *state;

    /* As in mosquitto, max_connections before any listener configures the default one. */
    struct conf *c = load(f, "max_connections 10\nlistener 8883\n");
    assert_int_equal(c->n_listeners, 2);
    assert_int_equal(c->listeners[0].port, 8883);
    assert_int_equal(c->listeners[0].max_connections, -1);
    assert_int_equal(c->listeners[1].port, 1883);
    assert_null(c->listeners[1].bind);
    assert_true(c->listeners[1].is_default);
    assert_int_equal(c->listeners[1].max_connections, 10);
    assert_false(c->local_only);
    assert_false(c->allow_anonymous);
    conf_free(&c);

    /* ...but its default value (-1) does not create it. */
    c = load(f, "max_connections -1\nlistener 1883\n");
    assert_int_equal(c->n_listeners, 1);
    assert_false(c->listeners[0].is_default);
    conf_free(&c);

    /* `port` makes the default listener on all addresses, whatever its position. */
    c = load(f, "max_connections 5\nport 1884\n");
    assert_int_equal(c->n_listeners, 1);
    assert_int_equal(c->listeners[0].port, 1884);
    assert_null(c->listeners[0].bind);
    assert_int_equal(c->listeners[0].max_connections, 5);
    assert_true(c->listeners[0].is_default);
    assert_false(c->local_only);
    assert_false(c->allow_anonymous);
    conf_free(&c);
}

static void test_port_override(void **state)
{
    struct fx *f = *state;

    struct conf *c = load_port(f, "", 1999);
    assert_non_null(c);
    assert_int_equal(c->n_listeners, 1);
    assert_int_equal(c->listeners[0].port, 1999);
    assert_null(c->listeners[0].bind);
    assert_true(c->listeners[0].is_default);
    assert_false(c->local_only); /* -p binds all addresses, as mosquitto */
    assert_false(c->allow_anonymous);
    conf_free(&c);

    c = load_port(f, "port 1884\n", 1999);
    assert_non_null(c);
    assert_int_equal(c->n_listeners, 1);
    assert_int_equal(c->listeners[0].port, 1999);
    conf_free(&c);

    c = load_port(f, "listener 8883\nallow_anonymous true\n", 1999);
    assert_non_null(c);
    assert_int_equal(c->n_listeners, 2);
    assert_int_equal(c->listeners[0].port, 8883);
    assert_int_equal(c->listeners[1].port, 1999);
    assert_true(c->listeners[1].is_default);
    assert_true(c->allow_anonymous);
    conf_free(&c);

    /* -p clashing with a listener blames the listener's line. */
    c = load_port(f, "\nlistener 1999\n", 1999);
    assert_null(c);
    char want[256];
    (void)snprintf(want, sizeof(want),
                   "%s/main.conf:2: listener: port 1999 on all addresses is already configured",
                   f->dir);
    assert_string_equal(f->err, want);
}

static void test_logging(void **state)
{
    struct fx *f = *state;

    struct conf *c = load(f, "log_dest none\nlog_type all\n");
    assert_int_equal(c->log_dest, 0);
    assert_int_equal(c->log_type, LOG_TYPE_ALL);
    conf_free(&c);

    c = load(f, "log_dest file /tmp/a.log\nlog_dest none\nlog_dest stderr\n"
                "log_type none\nlog_type debug\nlog_type error\n");
    assert_int_equal(c->log_dest, CONF_LOG_STDERR);
    assert_null(c->log_file);
    assert_int_equal(c->log_type, LOG_TYPE_DEBUG | LOG_TYPE_ERROR);
    conf_free(&c);

    c = load(f, "log_type information\nlog_type notice\nlog_type unsubscribe\nlog_type warning\n");
    assert_int_equal(c->log_type, LOG_TYPE_INFORMATION | LOG_TYPE_NOTICE | LOG_TYPE_UNSUBSCRIBE |
                                      LOG_TYPE_WARNING);
    assert_int_equal(c->log_dest, CONF_LOG_STDERR);
    conf_free(&c);
}

static void test_durations(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *text;
        uint64_t seconds;
    } cases[] = {
        {"0", 0},
        {"30", 30},
        {"45s", 45},
        {"1h", 3600},
        {"2d", 2ULL * 86400},
        {"1w", 7ULL * 86400},
        {"1m", 30ULL * 86400},
        {"1y", 365ULL * 86400},
        {"136y", 136ULL * 365 * 86400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[128];
        (void)snprintf(text, sizeof(text), "persistent_client_expiration %s\n", cases[i].text);
        struct conf *c = load(f, text);
        assert_true(c->persistent_client_expiration_s == cases[i].seconds);
        conf_free(&c);
    }
}

static void test_errors(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *text;
        const char *err;
    } cases[] = {
        /* unknown */
        {"foo 1\n", ":1: unknown directive 'foo'"},
        {"\n\nFoo\n", ":3: unknown directive 'Foo'"},
        /* TLS settings must form a whole */
        {"listener 8883\ncafile /x\n", ":1: listener 8883: TLS settings need certfile and keyfile"},
        {"ciphers_tls1.3 X\n", ":1: listener 1883: TLS settings need certfile and keyfile"},
        {"listener 8883\ncertfile /c\n", ":1: listener 8883: certfile needs keyfile"},
        {"listener 8883\ncertfile /c\nkeyfile /k\nrequire_certificate true\n",
         ":1: listener 8883: client certificates (require_certificate, use_identity_as_username, "
         "use_subject_as_username, crlfile) need cafile or capath"},
        {"listener 8883\ncertfile /c\nkeyfile /k\ncafile /a\nuse_identity_as_username "
         "true\nuse_subject_as_username true\n",
         ":1: listener 8883: use_identity_as_username and use_subject_as_username exclude each "
         "other"},
        {"listener 8883\ncertfile /nonexistent/server.crt\nkeyfile /nonexistent/server.key\n",
         ":1: listener 8883: /nonexistent/server.crt: cannot read (No such file or directory)"},
        {"cluster_seeds a:1,b:2\n", ":1: cluster_seeds: needs cluster_listener"},
        {"cluster_listener 7000\n",
         ":1: cluster_listener: a cluster needs a shared store (store redis://HOST:PORT)"},
        {"store redis://h:1\ncluster_listener 1883\n",
         ":2: cluster_listener: port 1883 is also an MQTT listener"},
        {"store redis://h:1\ncluster_listener 7000\ncluster_seeds a:1,b\n",
         ":3: cluster_seeds: 'a:1,b' is not a list of HOST:PORT"},
        {"store redis://h:1\ncluster_listener 7000\ncluster_advertise a:1,b:2\n",
         ":3: cluster_advertise: 'a:1,b:2' is not HOST:PORT"},
        {"store redis://h:1\ncluster_listener 7000\ncluster_secret_file /nonexistent/s\n",
         ":3: cluster_secret_file: /nonexistent/s: No such file or directory"},
        {"store redis://h:1\ncluster_listener 70000\n",
         ":2: cluster_listener: '70000' is out of range (1..65535)"},
        {"http_listener 8080\nhttp_listener 8081\n",
         ":2: http_listener: only one HTTP listener is supported"},
        {"http_listener 0\n", ":1: http_listener: '0' is out of range (1..65535)"},
        {"http_listener 65536\n", ":1: http_listener: '65536' is out of range (1..65535)"},
        {"http_listener\n", ":1: http_listener: missing value"},
        {"http_listener 9100 127.0.0.1 x\n", ":1: http_listener: too many arguments"},
        {"http_listener 1883\n", ":1: http_listener: port 1883 is also an MQTT listener"},
        {"listener 8883 10.0.0.1\nhttp_listener 8883\n",
         ":2: http_listener: port 8883 is also an MQTT listener"},
        {"listener 8883 10.0.0.1\nhttp_listener 8883 10.0.0.1\n",
         ":2: http_listener: port 8883 is also an MQTT listener"},
        {"store redis://h:1\ncluster_listener 7000\nhttp_listener 7000\n",
         ":3: http_listener: port 7000 is also the cluster listener"},
        {"store redis://localhost:port\n",
         ":1: store: malformed Redis URL (expected redis://[USER:PASS@]HOST[:PORT][/DB])"},
        {"store redis://u:secret@\n",
         ":1: store: malformed Redis URL (expected redis://[USER:PASS@]HOST[:PORT][/DB])"},
        {"store rediss://h:1\n", ":1: store: TLS to Redis (rediss://) is not supported"},
        {"per_listener_settings true\n",
         ":1: per_listener_settings: 'true' is not supported (security settings apply to every "
         "listener)"},
        /* mosquitto directives shoal does not implement */
        {"persistence true\n", ":1: 'persistence' is a mosquitto directive that shoal does not "
                               "implement"},
        {"persistence_location /var/lib/mosquitto/\n",
         ":1: 'persistence_location' is a mosquitto directive that shoal does not implement"},
        {"plugin_opt_db x\n",
         ":1: 'plugin_opt_db' is a mosquitto directive that shoal does not implement"},
        {"connection bridge1\n",
         ":1: 'connection' is a mosquitto directive that shoal does not implement"},
        {"bridge_cafile /x\n",
         ":1: 'bridge_cafile' is a mosquitto directive that shoal does not implement"},
        {"max_inflight_bytes 10\n",
         ":1: 'max_inflight_bytes' is a mosquitto directive that shoal does not implement"},
        /* values */
        {"allow_anonymous yes\n", ":1: allow_anonymous: 'yes' is not a boolean (true|false)"},
        {"max_keepalive 70000\n", ":1: max_keepalive: '70000' is out of range (0..65535)"},
        {"max_keepalive -1\n", ":1: max_keepalive: '-1' is out of range (0..65535)"},
        {"max_keepalive 12abc\n", ":1: max_keepalive: '12abc' is not an integer"},
        {"max_keepalive +5\n", ":1: max_keepalive: '+5' is not an integer"},
        {"max_topic_alias 65536\n", ":1: max_topic_alias: '65536' is out of range (0..65535)"},
        {"max_connections -2\n", ":1: max_connections: '-2' is out of range (-1..2147483647)"},
        {"max_queued_bytes 99999999999999999999\n",
         ":1: max_queued_bytes: '99999999999999999999' is out of range "
         "(0..9223372036854775807)"},
        {"listener 0\n", ":1: listener: '0' is out of range (1..65535)"},
        {"port 65536\n", ":1: port: '65536' is out of range (1..65535)"},
        {"max_keepalive\n", ":1: max_keepalive: missing value"},
        {"  max_keepalive  \t \n", ":1: max_keepalive: missing value"},
        {"include_dir\n", ":1: include_dir: missing value"},
        {"max_keepalive 10 20\n", ":1: max_keepalive: too many arguments"},
        {"port 1883 # not a comment here\n", ":1: port: too many arguments"},
        {"listener 1883 0.0.0.0 extra\n", ":1: listener: too many arguments"},
        {"a b c d e f g h i j\n", ":1: unknown directive 'a'"},
        {"max_keepalive 1 2 3 4 5 6 7 8 9\n", ":1: max_keepalive: too many arguments"},
        {"persistent_client_expiration 1x\n",
         ":1: persistent_client_expiration: '1x' is not a duration (N, Nh, Nd, Nw, Nm or Ny)"},
        {"persistent_client_expiration h\n",
         ":1: persistent_client_expiration: 'h' is not a duration (N, Nh, Nd, Nw, Nm or Ny)"},
        {"persistent_client_expiration 1hh\n",
         ":1: persistent_client_expiration: '1hh' is not a duration (N, Nh, Nd, Nw, Nm or Ny)"},
        {"persistent_client_expiration -1d\n",
         ":1: persistent_client_expiration: '-1d' is not a duration (N, Nh, Nd, Nw, Nm or Ny)"},
        {"persistent_client_expiration 200y\n",
         ":1: persistent_client_expiration: '200y' is out of range (0..4294967295 seconds)"},
        {"persistent_client_expiration 99999999999999999999999\n",
         ":1: persistent_client_expiration: '99999999999999999999999' is out of range "
         "(0..4294967295 seconds)"},
        {"log_dest syslog\n",
         ":1: log_dest: 'syslog' is not supported (use stdout, stderr, file or none)"},
        {"log_dest topic\n",
         ":1: log_dest: 'topic' is not supported (use stdout, stderr, file or none)"},
        {"log_dest dlt\n", ":1: log_dest: 'dlt' is not supported (use stdout, stderr, file or "
                           "none)"},
        {"log_dest paper\n",
         ":1: log_dest: 'paper' is not a log destination (stdout|stderr|file|none)"},
        {"log_dest file\n", ":1: log_dest: file: missing path"},
        {"log_dest stdout stderr\n", ":1: log_dest: too many arguments"},
        {"log_dest file /a\nlog_dest file /b\n", ":2: log_dest: only one log file is supported"},
        {"log_type verbose\n",
         ":1: log_type: 'verbose' is not a log type (error|warning|notice|information|debug|"
         "subscribe|unsubscribe|websockets|all|none)"},
        {"protocol mqtts\n", ":1: protocol: 'mqtts' is not a protocol (mqtt|websockets)"},
        {"store disk\n", ":1: store: 'disk' is not a store (memory|redis://HOST:PORT)"},
        {"auto_id_prefix a\nauto_id_prefix b\n", ":2: auto_id_prefix: duplicate value"},
        {"node_id a/b\n", ":1: node_id: 'a/b' is not a valid node id (up to 64 letters, "
                          "digits, '.', '_' or '-')"},
        {"\nmax_packet_size 10\n", ":2: max_packet_size: '10' is too small (at least 20, or 0 "
                                   "for the protocol maximum)"},
        /* duplicate listeners */
        {"listener 1883\nlistener 1884\nlistener 1883\n",
         ":3: listener: port 1883 on all addresses is already configured"},
        {"listener 1883 127.0.0.1\nlistener 1883 127.0.0.1\n",
         ":2: listener: port 1883 on 127.0.0.1 is already configured"},
        {"listener 1883\nport 1883\n", ":2: port: port 1883 on all addresses is already "
                                       "configured"},
        {"max_connections 3\nlistener 1883\n",
         ":1: max_connections: port 1883 on all addresses is already configured"},
        /* an error after listeners and strings were allocated frees them (ASan checks) */
        {"listener 1\nlistener 2 ::1\nauto_id_prefix x\nnode_id n\nlog_dest file /tmp/x\n"
         "max_connections 3\nport 5\nbogus\n",
         ":8: unknown directive 'bogus'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_err(f, cases[i].text, cases[i].err);
}

static void test_http_listener(void **state)
{
    struct fx *f = *state;
    struct conf *c = load(f, "http_listener 9100\n");
    assert_int_equal(c->http_port, 9100);
    assert_null(c->http_bind);
    assert_int_equal(c->n_listeners, 1); /* no MQTT listener of its own */
    assert_true(c->local_only);
    conf_free(&c);

    /* One port on two distinct addresses is no clash. */
    c = load(f, "listener 1883 10.0.0.1\n"
                "store redis://h:1\n"
                "cluster_listener 7000 10.0.0.1\n"
                "http_listener 1883 127.0.0.1\n");
    assert_int_equal(c->http_port, 1883);
    assert_string_equal(c->http_bind, "127.0.0.1");
    conf_free(&c);
    c = load(f, "listener 1883\nstore redis://h:1\ncluster_listener 7000 10.0.0.1\n"
                "http_listener 7000 127.0.0.1\n");
    assert_int_equal(c->http_port, 7000);
    conf_free(&c);
}

static void test_nul_byte(void **state)
{
    struct fx *f = *state;
    const char *path = track(f, "nul.conf");
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite("port 1\0 2\n", 1, 10, fp), 10);
    assert_int_equal(fclose(fp), 0);
    char want[256];
    (void)snprintf(want, sizeof(want), "%s:1: line contains a NUL byte", path);
    assert_null(conf_load(path, 0, f->err, sizeof(f->err)));
    assert_string_equal(f->err, want);
}

static void test_missing_file(void **state)
{
    struct fx *f = *state;
    char path[256], want[512];

    (void)snprintf(path, sizeof(path), "%s/nope.conf", f->dir);
    (void)snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
    assert_null(conf_load(path, 0, f->err, sizeof(f->err)));
    assert_string_equal(f->err, want);

    (void)snprintf(want, sizeof(want), "%s: cannot open: Is a directory", f->dir);
    assert_null(conf_load(f->dir, 0, f->err, sizeof(f->err)));
    assert_string_equal(f->err, want);

    /* A tiny or absent error buffer is never overrun. */
    char tiny[8];
    assert_null(conf_load(path, 0, tiny, sizeof(tiny)));
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
    assert_null(conf_load(path, 0, NULL, 0));

    struct conf *c = NULL;
    conf_free(&c);
    assert_null(c);
}

static void test_include_dir_order(void **state)
{
    struct fx *f = *state;
    char text[512];

    const char *dir = mkd(f, "conf.d");
    put(f, "conf.d/b.conf", "listener 2002\nmax_keepalive 200\n");
    put(f, "conf.d/a.conf", "listener 2001\nmax_keepalive 100\nmax_connections 9\n");
    put(f, "conf.d/10.conf", "max_connections 4\nlistener 2000\n");
    put(f, "conf.d/notes.txt", "not a config\n");
    put(f, "conf.d/.hidden.conf", "not a config\n");
    mkd(f, "conf.d/sub.conf");
    (void)snprintf(text, sizeof(text),
                   "listener 1000\nmax_connections 5\ninclude_dir %s\nmax_connections 7\n", dir);
    struct conf *c = load(f, text);

    /* Files are read in name order; each starts in the default listener's context, and the
     * main file's context resumes after them. */
    assert_int_equal(c->n_listeners, 5);
    assert_int_equal(c->listeners[0].port, 1000);
    assert_int_equal(c->listeners[0].max_connections, 7);
    assert_int_equal(c->listeners[1].port, 2000);
    assert_int_equal(c->listeners[1].max_connections, -1);
    assert_int_equal(c->listeners[2].port, 2001);
    assert_int_equal(c->listeners[2].max_connections, 9);
    assert_int_equal(c->listeners[3].port, 2002);
    assert_int_equal(c->listeners[4].port, 1883);
    assert_true(c->listeners[4].is_default);
    assert_int_equal(c->listeners[4].max_connections, 4);
    assert_int_equal(c->max_keepalive, 200);
    conf_free(&c);

    /* An empty directory is fine; a trailing slash too. */
    mkd(f, "empty");
    (void)snprintf(text, sizeof(text), "include_dir %s/empty/\nmax_keepalive 5\n", f->dir);
    c = load(f, text);
    assert_int_equal(c->max_keepalive, 5);
    conf_free(&c);
}

static void test_include_dir_errors(void **state)
{
    struct fx *f = *state;
    char text[512], want[512];

    const char *dir = mkd(f, "inc");
    put(f, "inc/a.conf", "max_keepalive 1\n");
    put(f, "inc/b.conf", "# two\nmax_keepalive 70000\n");
    (void)snprintf(text, sizeof(text), "listener 1883\ninclude_dir %s\n", dir);
    assert_null(load_port(f, text, 0));
    (void)snprintf(want, sizeof(want),
                   "%s/b.conf:2: max_keepalive: '70000' is out of range (0..65535)", dir);
    assert_string_equal(f->err, want);

    /* Line numbers of the main file carry on after the included files. */
    put(f, "inc/b.conf", "# fixed\n");
    (void)snprintf(text, sizeof(text), "\ninclude_dir %s\n\nbogus\n", dir);
    expect_err(f, text, ":4: unknown directive 'bogus'");

    /* include_dir inside an included file. */
    put(f, "inc/c.conf", "\ninclude_dir /tmp\n");
    (void)snprintf(text, sizeof(text), "include_dir %s\n", dir);
    assert_null(load_port(f, text, 0));
    (void)snprintf(want, sizeof(want),
                   "%s/c.conf:2: include_dir: only allowed in the main configuration file", dir);
    assert_string_equal(f->err, want);

    (void)snprintf(text, sizeof(text), "include_dir %s/missing\n", f->dir);
    (void)snprintf(want, sizeof(want),
                   ":1: include_dir: cannot open '%s/missing': No such file or directory", f->dir);
    expect_err(f, text, want);

    /* A duplicate across files names the later file and line. */
    put(f, "inc/c.conf", "listener 1883\n");
    (void)snprintf(text, sizeof(text), "listener 1883\ninclude_dir %s\n", dir);
    assert_null(load_port(f, text, 0));
    (void)snprintf(want, sizeof(want),
                   "%s/c.conf:1: listener: port 1883 on all addresses is already configured", dir);
    assert_string_equal(f->err, want);
}

static void test_symlinks(void **state)
{
    struct fx *f = *state;
    char target[512], text[512];

    /* The Kubernetes ConfigMap layout: name -> ..data/name, ..data -> ..2024_01_01. */
    mkd(f, "..2024_01_01");
    put(f, "..2024_01_01/broker.conf", "listener 1885\nmax_keepalive 42\n");
    put(f, "..2024_01_01/extra.conf", "max_queued_messages 7\n");
    lnk(f, "..2024_01_01", "..data");
    const char *main_link = lnk(f, "..data/broker.conf", "broker.conf");
    struct conf *c = conf_load(main_link, 0, f->err, sizeof(f->err));
    if (!c) {
        fail_msg("%s", f->err);
        return;
    }
    assert_int_equal(c->listeners[0].port, 1885);
    assert_int_equal(c->max_keepalive, 42);
    conf_free(&c);

    /* An include_dir of symbolic links to files, as a mounted directory shows them. */
    const char *d = mkd(f, "links.d");
    (void)snprintf(target, sizeof(target), "%s/..data/extra.conf", f->dir);
    lnk(f, target, "links.d/extra.conf");
    (void)snprintf(text, sizeof(text), "include_dir %s\n", d);
    c = load(f, text);
    assert_int_equal(c->max_queued_messages, 7);
    conf_free(&c);
}

static void test_realistic_mosquitto_conf(void **state)
{
    struct fx *f = *state;
    struct conf *c = load(f, "# Place your local configuration in /etc/mosquitto/conf.d/\n"
                             "#\n"
                             "# A full description of the configuration file is at\n"
                             "# /usr/share/doc/mosquitto/examples/mosquitto.conf.example\n"
                             "\n"
                             "per_listener_settings false\n"
                             "\n"
                             "listener 1883\n"
                             "protocol mqtt\n"
                             "max_connections -1\n"
                             "\n"
                             "listener 1884 127.0.0.1\n"
                             "\n"
                             "allow_anonymous true\n"
                             "allow_zero_length_clientid true\n"
                             "max_queued_messages 1000\n"
                             "max_inflight_messages 20\n"
                             "max_keepalive 65535\n"
                             "persistent_client_expiration 1w\n"
                             "set_tcp_nodelay true\n"
                             "\n"
                             "log_dest stdout\n"
                             "log_dest file /var/log/mosquitto/mosquitto.log\n"
                             "log_type error\n"
                             "log_type warning\n"
                             "log_type notice\n"
                             "log_type information\n"
                             "connection_messages true\n"
                             "log_timestamp true\n");
    assert_int_equal(c->n_listeners, 2);
    assert_int_equal(c->listeners[0].port, 1883);
    assert_int_equal(c->listeners[1].port, 1884);
    assert_string_equal(c->listeners[1].bind, "127.0.0.1");
    assert_true(c->allow_anonymous);
    assert_int_equal(c->max_queued_messages, 1000);
    assert_int_equal(c->persistent_client_expiration_s, 7 * 86400);
    assert_int_equal(c->log_dest, CONF_LOG_STDOUT | CONF_LOG_FILE);
    assert_string_equal(c->log_file, "/var/log/mosquitto/mosquitto.log");
    assert_int_equal(c->log_type,
                     LOG_TYPE_ERROR | LOG_TYPE_WARNING | LOG_TYPE_NOTICE | LOG_TYPE_INFORMATION);
    assert_true(c->connection_messages);
    conf_free(&c);
}

static void test_example_broker_conf(void **state)
{
    struct fx *f = *state;
    char path[512];
    /* ctest runs from the build directory; find the source tree through this file's path. */
    const char *me = __FILE__, *tail = strstr(me, "tests/unit/test_conf.c");
    if (!tail || me[0] != '/')
        skip();
    (void)snprintf(path, sizeof(path), "%.*sconf/examples/broker.conf", (int)(tail - me), me);
    struct conf *c = conf_load(path, 0, f->err, sizeof(f->err));
    if (!c) {
        fail_msg("%s", f->err);
        return;
    }
    assert_int_equal(c->n_listeners, 1);
    assert_int_equal(c->listeners[0].port, 1883);
    assert_true(c->allow_anonymous);
    conf_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_directive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syntax_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener_scoping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_port_override, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_include_dir_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_include_dir_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_realistic_mosquitto_conf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_example_broker_conf, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#ifndef SHOAL_NODE_ERR_H
#define SHOAL_NODE_ERR_H

/*
 * Error codes shared by every module. Actions return 0, a negative ERR_* value, or a negated
 * UV_E* value from libuv (which uses the errno range; ours start well below it).
 */

#define MUST_CHECK __attribute__((warn_unused_result))

/* Believed invariants: cheap checks that log instead of aborting in release builds. */
#define ALWAYS(x) (__builtin_expect(!!(x), 1))
#define NEVER(x)  (__builtin_expect(!!(x), 0))

enum err_code {
    ERR_OK = 0,
    ERR_BASE = -10000,
    ERR_MALFORMED,            /* packet cannot be parsed (reason 0x81) */
    ERR_PROTOCOL,             /* parsed but violates the protocol (0x82) */
    ERR_UNSUPPORTED_VERSION,  /* bad protocol name or level (0x84) */
    ERR_CLIENT_ID,            /* client identifier not valid (0x85) */
    ERR_BAD_AUTH,             /* bad user name or password (0x86) */
    ERR_BAD_AUTH_METHOD,      /* bad authentication method (0x8C) */
    ERR_NOT_AUTHORIZED,       /* (0x87) */
    ERR_SERVER_UNAVAILABLE,   /* (0x88) */
    ERR_SERVER_BUSY,          /* (0x89) */
    ERR_BANNED,               /* (0x8A) */
    ERR_SHUTTING_DOWN,        /* (0x8B) */
    ERR_KEEPALIVE,            /* keep alive timeout (0x8D) */
    ERR_TAKEN_OVER,           /* session taken over (0x8E) */
    ERR_TOPIC_FILTER,         /* topic filter invalid (0x8F) */
    ERR_TOPIC_NAME,           /* topic name invalid (0x90) */
    ERR_PACKET_ID_IN_USE,     /* (0x91) */
    ERR_PACKET_ID_NOT_FOUND,  /* (0x92) */
    ERR_RECEIVE_MAX,          /* receive maximum exceeded (0x93) */
    ERR_TOPIC_ALIAS,          /* topic alias invalid (0x94) */
    ERR_PACKET_TOO_LARGE,     /* (0x95) */
    ERR_QUOTA,                /* quota exceeded (0x97) */
    ERR_PAYLOAD_FORMAT,       /* payload format invalid (0x99) */
    ERR_RETAIN_UNSUPPORTED,   /* (0x9A) */
    ERR_QOS_UNSUPPORTED,      /* (0x9B) */
    ERR_SHARED_UNSUPPORTED,   /* (0x9E) */
    ERR_CONN_RATE,            /* connection rate exceeded (0x9F) */
    ERR_SUBID_UNSUPPORTED,    /* (0xA1) */
    ERR_WILDCARD_UNSUPPORTED, /* (0xA2) */
    ERR_NOMEM,
    ERR_INVALID, /* invalid argument or configuration value */
    ERR_NOT_FOUND,
    ERR_EXISTS,
    ERR_CANCELED, /* async request abandoned at shutdown */
    ERR_TIMEOUT,
    ERR_IO,
    ERR_CLOSED,
    ERR_TLS,       /* TLS handshake or record failure */
    ERR_WEBSOCKET, /* WebSocket upgrade or framing failure */
    ERR_LAST
};

/* Returns a static, human-readable description of any error code (ERR_* or UV_E*). */
const char *err_str(int rc);

#endif

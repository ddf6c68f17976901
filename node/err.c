/*
 * Human-readable names for error codes. libuv codes (the negated errno range) are delegated to
 * uv_strerror so that a caller can print any action's return value the same way.
 */
#include "node/err.h"

#include <uv.h>

static const char *const names[] = {
    [ERR_MALFORMED - ERR_BASE] = "malformed packet",
    [ERR_PROTOCOL - ERR_BASE] = "protocol error",
    [ERR_UNSUPPORTED_VERSION - ERR_BASE] = "unsupported protocol version",
    [ERR_CLIENT_ID - ERR_BASE] = "client identifier not valid",
    [ERR_BAD_AUTH - ERR_BASE] = "bad user name or password",
    [ERR_BAD_AUTH_METHOD - ERR_BASE] = "bad authentication method",
    [ERR_NOT_AUTHORIZED - ERR_BASE] = "not authorized",
    [ERR_SERVER_UNAVAILABLE - ERR_BASE] = "server unavailable",
    [ERR_SERVER_BUSY - ERR_BASE] = "server busy",
    [ERR_BANNED - ERR_BASE] = "banned",
    [ERR_SHUTTING_DOWN - ERR_BASE] = "server shutting down",
    [ERR_KEEPALIVE - ERR_BASE] = "keep alive timeout",
    [ERR_TAKEN_OVER - ERR_BASE] = "session taken over",
    [ERR_TOPIC_FILTER - ERR_BASE] = "topic filter invalid",
    [ERR_TOPIC_NAME - ERR_BASE] = "topic name invalid",
    [ERR_PACKET_ID_IN_USE - ERR_BASE] = "packet identifier in use",
    [ERR_PACKET_ID_NOT_FOUND - ERR_BASE] = "packet identifier not found",
    [ERR_RECEIVE_MAX - ERR_BASE] = "receive maximum exceeded",
    [ERR_TOPIC_ALIAS - ERR_BASE] = "topic alias invalid",
    [ERR_PACKET_TOO_LARGE - ERR_BASE] = "packet too large",
    [ERR_QUOTA - ERR_BASE] = "quota exceeded",
    [ERR_PAYLOAD_FORMAT - ERR_BASE] = "payload format invalid",
    [ERR_RETAIN_UNSUPPORTED - ERR_BASE] = "retain not supported",
    [ERR_QOS_UNSUPPORTED - ERR_BASE] = "qos not supported",
    [ERR_SHARED_UNSUPPORTED - ERR_BASE] = "shared subscriptions not supported",
    [ERR_CONN_RATE - ERR_BASE] = "connection rate exceeded",
    [ERR_SUBID_UNSUPPORTED - ERR_BASE] = "subscription identifiers not supported",
    [ERR_WILDCARD_UNSUPPORTED - ERR_BASE] = "wildcard subscriptions not supported",
    [ERR_NOMEM - ERR_BASE] = "out of memory",
    [ERR_INVALID - ERR_BASE] = "invalid argument",
    [ERR_NOT_FOUND - ERR_BASE] = "not found",
    [ERR_EXISTS - ERR_BASE] = "already exists",
    [ERR_CANCELED - ERR_BASE] = "canceled",
    [ERR_TIMEOUT - ERR_BASE] = "timed out",
    [ERR_IO - ERR_BASE] = "i/o error",
    [ERR_CLOSED - ERR_BASE] = "closed",
    [ERR_TLS - ERR_BASE] = "tls failure",
    [ERR_WEBSOCKET - ERR_BASE] = "websocket failure",
};

const char *err_str(int rc)
{
    if (rc == 0)
        return "ok";
    if (rc > ERR_BASE && rc < ERR_LAST && names[rc - ERR_BASE])
        return names[rc - ERR_BASE];
    if (rc < 0 && rc > ERR_BASE)
        return uv_strerror(rc);
    return "unknown error";
}

#ifndef SHOAL_NODE_WS_H
#define SHOAL_NODE_WS_H

/*
 * WebSocket transport (RFC 6455) for `protocol websockets` listeners, as a struct xport layer
 * above TCP or TLS. The HTTP upgrade is parsed with http-parser and framing is done by wslay.
 * The upgrade is accepted on any path and requires the `mqtt` subprotocol (or `mqttv3.1`).
 * MQTT bytes are carried in binary messages: a packet may span frames and a frame may hold
 * several packets, so the layer passes payload bytes through without regard to boundaries.
 */

#include "node/xport.h"

/* A new server-side WebSocket layer. peer is the printable address for log lines (copied). */
struct xport *ws_create(const char *peer);

#endif

#ifndef SHOAL_NODE_HANDLE_H
#define SHOAL_NODE_HANDLE_H

/*
 * Packet dispatch by type and connection state, and the only place where internal errors
 * become MQTT reason codes. Each packet type has its own handler file.
 */

#include <stdint.h>

struct conn;
struct codec_packet;

/* Handles one decoded packet. Returns 0, or an error after which the caller must stop reading
 * (the connection has been told why and is closing). */
int handle_packet(struct conn *c, struct codec_packet *p);

/* Tells the client why it is being dropped (CONNACK before CONNECT completes, DISCONNECT for
 * v5 afterwards) and closes the connection. */
void handle_fail(struct conn *c, int err);

/* Adds a Reason String describing err to p when the protocol and the client allow it. */
void handle_reason_string(struct conn *c, struct codec_packet *p, int err);

/* MQTT 5 reason code for err. */
uint8_t handle_reason_code(int err);

/* Handlers (one file each). */
int handle_connect(struct conn *c, struct codec_packet *p);
int handle_publish(struct conn *c, struct codec_packet *p);
int handle_ack(struct conn *c, struct codec_packet *p);
int handle_subscribe(struct conn *c, struct codec_packet *p);
int handle_unsubscribe(struct conn *c, struct codec_packet *p);
int handle_pingreq(struct conn *c, struct codec_packet *p);
int handle_disconnect(struct conn *c, struct codec_packet *p);
int handle_auth(struct conn *c, struct codec_packet *p);

#endif

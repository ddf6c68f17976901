#ifndef SHOAL_NODE_DRAIN_H
#define SHOAL_NODE_DRAIN_H

/*
 * Graceful drain on SIGTERM (DESIGN.md): stop accepting clients, send MQTT 5 clients away,
 * hand every session to the store, leave the cluster, then stop, all within a bound.
 */

struct broker;
struct session;

/* Starts draining; the broker stops by itself when done or when the bound runs out. A second
 * call stops at once. */
void drain_start(struct broker *b);
/* Called as a session leaves this node: one fewer to wait for. */
void drain_session_gone(struct session *s);
/* Called once per loop pass, after the cluster links were flushed: stops a node that left
 * the cluster as soon as the links are settled, without waiting for the next timer tick. */
void drain_poll(struct broker *b);

#endif

#ifndef SHOAL_NODE_SIGNALS_H
#define SHOAL_NODE_SIGNALS_H

/*
 * Process signals on the loop: SIGTERM and SIGINT stop the node in order; SIGHUP reloads the
 * files that can change under a running broker.
 */

struct broker;

/* Installs the handlers. Returns 0 or a negated UV_E* code. */
int signals_start(struct broker *b);
/* Closes the signal handles; call after uv_run returned, then run the loop once more. */
void signals_stop(struct broker *b);

#endif

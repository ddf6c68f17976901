#ifndef SHOAL_NODE_HTTP_H
#define SHOAL_NODE_HTTP_H

/*
 * The node's HTTP endpoint (http_listener): GET /metrics in Prometheus text format, /healthz
 * and /readyz for load balancers and Kubernetes probes. It runs on the broker's loop, answers
 * one request per connection and never holds more than a few small buffers per connection.
 */

struct broker;

/*
 * Opens the HTTP listener when the configuration has one (otherwise does nothing). Returns 0,
 * or a negative ERR_* / UV_E* after logging which address failed; nothing is left open then.
 */
int http_start(struct broker *b);
/* Closes the listener and every HTTP connection; their handles finish closing on the loop.
 * Safe to call twice, and when http_start was never called or failed. */
void http_stop(struct broker *b);

/*
 * Why the node does not accept clients now, as the short line /readyz answers with 503
 * ("starting\n", "draining\n", "store unreachable\n", "cluster not joined\n"), or NULL when
 * it is ready. Never calls back.
 */
const char *http_unready_reason(const struct broker *b);

#endif

#ifndef SHOAL_NODE_METRICS_H
#define SHOAL_NODE_METRICS_H

/*
 * The node's statistics in the Prometheus text exposition format 0.0.4, every family named
 * shoal_*. Counters are the plain increments of struct stats (and the store's and cluster's
 * own); gauges are computed when rendered, so the hot path pays nothing for them.
 */

struct broker;
struct buf;

/* The Content-Type that goes with metrics_render's output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends every metric family of b to out. O(connections + sessions); never calls back. */
void metrics_render(struct broker *b, struct buf *out);

#endif

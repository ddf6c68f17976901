#ifndef SHOAL_NODE_TOPIC_H
#define SHOAL_NODE_TOPIC_H

/*
 * Topic names and filters: syntax checks, shared-subscription parsing and matching. Pure
 * functions over byte ranges (not NUL-terminated); UTF-8 validity is checked by the codec.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A PUBLISH topic: non-empty, no '+' or '#', at most 65535 bytes. */
bool topic_name_valid(const char *t, size_t len);

/* A subscription filter: non-empty; '#' only as the whole last level; '+' only as a whole
 * level. A "$share/GROUP/FILTER" is valid when GROUP is non-empty without '+', '#' or '/' and
 * FILTER is a valid non-shared filter. */
bool topic_filter_valid(const char *f, size_t len);

/* If f is "$share/GROUP/FILTER" sets the two views and returns true; otherwise false (and
 * the outputs are untouched). Assumes topic_filter_valid(f). */
bool topic_share_split(const char *f, size_t len, const char **group, size_t *group_len,
                       const char **filter, size_t *filter_len);

/* Whether filter (non-shared) matches topic. Wildcards at the first level never match topics
 * starting with '$'. */
bool topic_match(const char *filter, size_t flen, const char *topic, size_t tlen);

/* Whether the filter has '+' or '#'. */
bool topic_has_wildcard(const char *f, size_t len);

#endif

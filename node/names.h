#ifndef SHOAL_NODE_NAMES_H
#define SHOAL_NODE_NAMES_H

/*
 * Node ids interned for the life of the process. A message names its publishing node with
 * one pointer, and two names are equal exactly when their pointers are. A cluster sees few
 * distinct node ids (one per node incarnation name), so the table is never pruned.
 */

#include <stddef.h>

/* The one copy of id[0..len). Never fails (aborts on OOM). Returns NULL for an empty id. */
const char *names_intern(const char *id, size_t len);

#endif

#ifndef SHOAL_NODE_ACL_H
#define SHOAL_NODE_ACL_H

/*
 * Topic access control with mosquitto's acl_file semantics, compiled at load into an immutable
 * struct acl (a reload swaps in a new one):
 *  - `topic [read|write|readwrite|deny] T` before any `user` line applies to anonymous clients;
 *  - `user NAME` starts a block whose `topic` lines apply to that user;
 *  - `pattern [...] T` applies to every client wherever it appears in the file, with `%c`
 *    (client id) and `%u` (username) allowed only as whole topic levels;
 *  - no rule means no access; a matching deny rule wins over any grant.
 * A client id or username that holds '+', '#' or '/' never gains access through a pattern
 * that substitutes it, and deny patterns still apply to it.
 */

#include <stdbool.h>
#include <stddef.h>

struct acl;

enum acl_access {
    ACL_READ = 1,      /* a delivery of topic to the client */
    ACL_WRITE = 2,     /* a PUBLISH (or will) to topic by the client */
    ACL_SUBSCRIBE = 4, /* topic is a subscription filter (may hold wildcards) */
};

/*
 * Reads path (through symlinks) and compiles it. Returns NULL with "FILE:LINE: why" in err on
 * a syntax error. Pure and thread-safe.
 */
struct acl *acl_load(const char *path, char *err, size_t errlen);
void acl_free(struct acl **a);

/*
 * May this client do access on topic? username is NULL for an anonymous client. For
 * ACL_SUBSCRIBE, topic is the filter without any `$share/GROUP/` prefix.
 */
bool acl_check(const struct acl *a, const char *client_id, const char *username, const char *topic,
               size_t topic_len, enum acl_access access);

#endif

#ifndef SHOAL_NODE_SECURITY_H
#define SHOAL_NODE_SECURITY_H

/*
 * The node's security files: the password file, the ACL file and each TLS listener's
 * certificate, key, CA and CRL files. Loads them at start, watches them for changes and
 * reloads them on SIGHUP, swapping in new immutable state without touching connected clients.
 */

#include <stddef.h>

struct broker;
struct conf;

/*
 * Loads the password and ACL files into b->auth and b->acl and starts watching every security
 * file (TLS contexts are made by the listeners). Returns 0, or ERR_INVALID after logging
 * "FILE:LINE: why".
 */
int security_start(struct broker *b);
/* Re-reads every security file. Password and ACL files are parsed on the thread pool; a file
 * that fails keeps the previous state and logs why. */
void security_reload(struct broker *b);
/* Stops watching; reloads still running finish and are discarded. */
void security_stop(struct broker *b);
/* Releases everything once the loop has ended. */
void security_free(struct broker *b);

/* For `shoal -t`: loads the password and ACL files of c once. Returns 0, or ERR_INVALID with
 * "FILE:LINE: why" in err. */
int security_check(const struct conf *c, char *err, size_t errlen);

#endif

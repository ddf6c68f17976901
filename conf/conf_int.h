#ifndef SHOAL_CONF_CONF_INT_H
#define SHOAL_CONF_CONF_INT_H

/*
 * Internals shared by conf.c (reading lines), conf_table.c (the directive table and its
 * setters) and conf_validate.c (defaults and cross-field checks). Not for use outside conf/.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "conf/conf.h"

#define CONF__MAX_ARGS 8 /* name + up to 7 values; more is "too many arguments" */

enum conf__type {
    CONF__T_NONE,     /* reserved name, no field yet (only with `later`) */
    CONF__T_BOOL,     /* bool: true|false (and mosquitto's 1|0) */
    CONF__T_I32,      /* int32_t */
    CONF__T_U32,      /* uint32_t */
    CONF__T_U64,      /* uint64_t */
    CONF__T_DURATION, /* uint64_t seconds: N, Ns, Nh, Nd, Nw, Nm (30 days), Ny (365 days) */
    CONF__T_WORD,     /* char *: exactly one token */
    CONF__T_STRING,   /* char *: the rest of the line (paths may hold spaces, as in mosquitto) */
};

enum conf__scope { CONF__SCOPE_GLOBAL, CONF__SCOPE_LISTENER };

struct conf__parser;
struct conf__directive;

/* A special-case setter: base is struct conf * or struct conf_listener * by scope. The value
 * tokens are p->argv[1..argc-1]. Returns 0 or ERR_INVALID after conf__error(). */
typedef int conf__set_cb(struct conf__parser *p, const struct conf__directive *d, void *base);

struct conf__directive {
    const char *name;
    enum conf__type type;
    size_t offset; /* offsetof into struct conf or struct conf_listener (scope) */
    enum conf__scope scope;
    int64_t min, max;  /* range for integer and duration types */
    uint8_t nargs_min; /* value tokens required */
    uint8_t nargs_max; /* value tokens allowed (ignored by CONF__T_STRING) */
    conf__set_cb *set; /* NULL: generic setter by type */
    const char *later; /* non-NULL: rejected as "not supported yet (later)" */
};

/* Where a directive or listener came from, for messages about it. file NULL = not a file. */
struct conf__origin {
    const char *file;
    unsigned line;
    const char *name; /* directive name */
};

struct conf__parser {
    struct conf *c;
    char *err;
    size_t errlen;

    /* Current position: file name as opened and 1-based line (0 = whole file). */
    const char *file;
    unsigned line;

    /* Tokens of the current line. rest[i] is the rest of the line from token i on. */
    char *argv[CONF__MAX_ARGS];
    const char *rest[CONF__MAX_ARGS];
    size_t argc;
    bool has_extra_args; /* more than CONF__MAX_ARGS tokens */
    char *buf, *tok;     /* getline buffer and its tokenized copy */
    size_t bufcap, tokcap;

    /* Listener context: index into c->listeners, or -1 for the default listener. */
    long cur;
    struct conf_listener dflt; /* settings given before any `listener` line */
    bool dflt_wanted;          /* `port`, or a default-listener setting, was given */
    struct conf__origin dflt_origin;
    struct conf__origin *lorigin; /* one per entry of c->listeners */

    struct conf__origin *seen; /* one per table entry: last place it was set */

    /* Every file name opened, owned here so that origins can point at them. */
    char **names;
    size_t n_names;

    /* include_dir in progress: files still to read, and where the main file was. */
    FILE *incl_f;
    const char **incl;
    size_t n_incl, incl_next;
    const char *main_file;
    unsigned main_line;
    long main_cur;
};

/* conf.c */
/* Formats "FILE:LINE: message" (or "FILE: message" when line is 0) into p->err.
 * Returns ERR_INVALID so callers can `return conf__error(...)`. */
int conf__error(struct conf__parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int conf__error_at(struct conf__parser *p, const struct conf__origin *o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Setter of `include_dir DIR`: queues the *.conf files of DIR in name order, read before the next
 * line. */
int conf__set_include_dir(struct conf__parser *p, const struct conf__directive *d, void *base);

/* conf_table.c */
extern const struct conf__directive conf__directives[];
extern const size_t conf__n_directives;
/* Looks argv[0] up and applies the current line. Returns 0 or ERR_INVALID (p->err set). */
int conf__line_apply(struct conf__parser *p);
/* Where the named directive was last set, or NULL when it was not. */
const struct conf__origin *conf__seen(const struct conf__parser *p, const char *name);

/* conf_validate.c */
/* Puts mosquitto 2.x defaults into a zeroed conf / listener. */
void conf__defaults(struct conf *c);
void conf__listener_init(struct conf_listener *l);
/* Frees what l owns and zeroes it. */
void conf__listener_clear(struct conf_listener *l);
/* Applies -p, creates implicit listeners, fills late defaults and checks cross-field rules.
 * Returns 0 or ERR_INVALID (p->err set). */
int conf__finish(struct conf__parser *p, int port_override);

#endif

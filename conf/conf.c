/*
 * Reading configuration files: lines, tokens, include_dir and error messages. Each line is
 * split into whitespace-separated tokens and handed to the directive table (conf_table.c);
 * this file knows no directive except include_dir, which changes where lines come from.
 * include_dir is only valid in the main file (as in mosquitto), so the reader needs no
 * recursion: it switches between the main file and the current included file.
 */
#include "conf/conf.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "conf/conf_int.h"
#include "node/buf.h"
#include "node/err.h"

static void verror(struct conf__parser *p, const char *file, unsigned line, const char *fmt,
                   va_list ap) __attribute__((format(printf, 4, 0)));

static void verror(struct conf__parser *p, const char *file, unsigned line, const char *fmt,
                   va_list ap)
{
    if (!p->err || p->errlen == 0)
        return;
    int n = line ? snprintf(p->err, p->errlen, "%s:%u: ", file, line)
                 : snprintf(p->err, p->errlen, "%s: ", file);
    if (n < 0 || (size_t)n >= p->errlen)
        return;
    (void)vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
}

int conf__error(struct conf__parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(p, p->file, p->line, fmt, ap);
    va_end(ap);
    return ERR_INVALID;
}

int conf__error_at(struct conf__parser *p, const struct conf__origin *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (o && o->file)
        verror(p, o->file, o->line, fmt, ap);
    else
        verror(p, p->c->path, 0, fmt, ap);
    va_end(ap);
    return ERR_INVALID;
}

/* Keeps a copy of name for the life of the parser, so origins can point at it. */
static const char *keep_name(struct conf__parser *p, const char *name)
{
    p->names = xrealloc(p->names, (p->n_names + 1) * sizeof(*p->names));
    p->names[p->n_names] = xstrdup(name);
    return p->names[p->n_names++];
}

/* Opens a config file for reading; fopen follows symbolic links. Sets p->file to name. */
static int open_file(struct conf__parser *p, const char *name, FILE **out)
{
    struct stat st;

    p->file = keep_name(p, name);
    p->line = 0;
    FILE *f = fopen(name, "r");
    if (!f)
        return conf__error(p, "cannot open: %s", strerror(errno));
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        (void)fclose(f);
        return conf__error(p, "cannot open: %s", strerror(EISDIR));
    }
    *out = f;
    return 0;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f';
}

/* Splits p->buf (len bytes, trailing blanks already cut) into p->argv / p->rest. */
static void tokenize(struct conf__parser *p, size_t len)
{
    if (p->tokcap < len + 1) {
        p->tok = xrealloc(p->tok, len + 1);
        p->tokcap = len + 1;
    }
    memcpy(p->tok, p->buf, len + 1);
    p->argc = 0;
    p->has_extra_args = false;
    char *s = p->tok;
    for (;;) {
        while (*s && is_blank(*s))
            s++;
        if (!*s)
            break;
        if (p->argc == CONF__MAX_ARGS) {
            p->has_extra_args = true;
            break;
        }
        p->argv[p->argc] = s;
        p->rest[p->argc] = p->buf + (s - p->tok);
        p->argc++;
        while (*s && !is_blank(*s))
            s++;
        if (*s)
            *s++ = '\0';
    }
}

/* One raw line of n bytes in p->buf: skips blanks and comments, else applies it. */
static int parse_line(struct conf__parser *p, size_t n)
{
    if (strlen(p->buf) != n)
        return conf__error(p, "line contains a NUL byte");
    while (n > 0 && is_blank(p->buf[n - 1]))
        p->buf[--n] = '\0';
    size_t lead = 0;
    while (lead < n && is_blank(p->buf[lead]))
        lead++;
    /* As in mosquitto, '#' starts a comment only as the first non-blank character. */
    if (lead == n || p->buf[lead] == '#')
        return 0;
    tokenize(p, n);
    return conf__line_apply(p);
}

static void include_list_drop(struct conf__parser *p)
{
    free(p->incl);
    p->incl = NULL;
    p->n_incl = 0;
    p->incl_next = 0;
}

/* Closes the current included file and opens the next one; after the last one, returns to
 * the main file with its listener context. Each included file starts in the default
 * listener's context, as in mosquitto. */
static int include_next(struct conf__parser *p)
{
    if (p->incl_f) {
        (void)fclose(p->incl_f);
        p->incl_f = NULL;
    }
    if (p->incl_next < p->n_incl) {
        p->cur = -1;
        return open_file(p, p->incl[p->incl_next++], &p->incl_f);
    }
    include_list_drop(p);
    p->file = p->main_file;
    p->line = p->main_line;
    p->cur = p->main_cur;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool is_conf_name(const char *name)
{
    size_t len = strlen(name);
    return name[0] != '.' && len > 5 && strcmp(name + len - 5, ".conf") == 0;
}

/* Collects DIR/NAME for every NAME matching *.conf that is a regular file (after links). */
static int list_dir(struct conf__parser *p, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return conf__error(p, "include_dir: cannot open '%s': %s", dir, strerror(errno));
    size_t dlen = strlen(dir);
    bool has_slash = dlen > 0 && dir[dlen - 1] == '/';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (!is_conf_name(e->d_name))
            continue;
        size_t len = dlen + 1 + strlen(e->d_name) + 1;
        char *path = xmalloc(len);
        (void)snprintf(path, len, "%s%s%s", dir, has_slash ? "" : "/", e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            p->incl = xrealloc(p->incl, (p->n_incl + 1) * sizeof(*p->incl));
            p->incl[p->n_incl++] = keep_name(p, path);
        }
        free(path);
    }
    (void)closedir(d);
    if (p->n_incl > 1)
        qsort(p->incl, p->n_incl, sizeof(*p->incl), cmp_names);
    return 0;
}

int conf__set_include_dir(struct conf__parser *p, const struct conf__directive *d, void *base)
{
    (void)base;
    if (p->incl_f)
        return conf__error(p, "%s: only allowed in the main configuration file", d->name);
    p->main_line = p->line;
    p->main_cur = p->cur;
    /* read_lines opens the first file once this line is fully applied. */
    return list_dir(p, p->rest[1]);
}

/* Reads lines from the main file, and from included files while an include_dir runs. */
static int read_lines(struct conf__parser *p, FILE *mainf)
{
    for (;;) {
        FILE *f = p->incl_f ? p->incl_f : mainf;
        errno = 0;
        ssize_t n = getline(&p->buf, &p->bufcap, f);
        if (n < 0) {
            if (ferror(f))
                return conf__error(p, "read error: %s", strerror(errno ? errno : EIO));
            if (f == mainf)
                return 0;
            int rc = include_next(p);
            if (rc)
                return rc;
            continue;
        }
        p->line++;
        int rc = parse_line(p, (size_t)n);
        if (rc == 0 && p->n_incl > 0 && !p->incl_f)
            rc = include_next(p);
        if (rc)
            return rc;
    }
}

static void parser_cleanup(struct conf__parser *p)
{
    if (p->incl_f) {
        (void)fclose(p->incl_f);
        p->incl_f = NULL;
    }
    include_list_drop(p);
    for (size_t i = 0; i < p->n_names; i++)
        free(p->names[i]);
    free(p->names);
    p->names = NULL;
    free(p->buf);
    p->buf = NULL;
    free(p->tok);
    p->tok = NULL;
    free(p->seen);
    p->seen = NULL;
    free(p->lorigin);
    p->lorigin = NULL;
    conf__listener_clear(&p->dflt);
}

struct conf *conf_load(const char *path, int port_override, char *err, size_t errlen)
{
    struct conf__parser p;
    FILE *f = NULL;

    memset(&p, 0, sizeof(p));
    p.err = err;
    p.errlen = errlen;
    if (err && errlen)
        err[0] = '\0';
    p.c = xcalloc(1, sizeof(*p.c));
    p.c->path = xstrdup(path);
    conf__defaults(p.c);
    conf__listener_init(&p.dflt);
    p.cur = -1;
    p.seen = xcalloc(conf__n_directives, sizeof(*p.seen));

    int rc = open_file(&p, path, &f);
    if (rc)
        goto out_fail;
    p.main_file = p.file;
    rc = read_lines(&p, f);
    (void)fclose(f);
    if (rc)
        goto out_fail;
    rc = conf__finish(&p, port_override);
    if (rc)
        goto out_fail;
    parser_cleanup(&p);
    return p.c;

out_fail:
    parser_cleanup(&p);
    conf_free(&p.c);
    return NULL;
}

void conf_free(struct conf **pc)
{
    struct conf *c = *pc;
    if (!c)
        return;
    for (size_t i = 0; i < c->n_listeners; i++)
        conf__listener_clear(&c->listeners[i]);
    free(c->listeners);
    free(c->path);
    free(c->auto_id_prefix);
    free(c->password_file);
    free(c->acl_file);
    free(c->clientid_prefixes);
    free(c->log_file);
    free(c->node_id);
    free(c->store_url);
    free(c->cluster_bind);
    free(c->cluster_advertise);
    free(c->cluster_seeds);
    free(c->cluster_dns);
    free(c->cluster_name);
    free(c->cluster_secret_file);
    free(c->http_bind);
    free(c);
    *pc = NULL;
}

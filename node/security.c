/*
 * Security files and their reloads. Password and ACL files are compiled on the libuv thread
 * pool into immutable objects that the loop then swaps in whole, so a check in progress never
 * sees half a file and a failed reload leaves the old rules in force. Files are watched with
 * uv_fs_poll, which stats through symbolic links: the link swap Kubernetes does when it
 * updates a mounted Secret shows up as a new inode, so it is seen like any edit.
 */
#include "node/security.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "conf/conf.h"
#include "node/acl.h"
#include "node/auth.h"
#include "node/broker.h"
#include "node/buf.h"
#include "node/err.h"
#include "node/listener.h"
#include "node/log.h"
#include "node/tls.h"

#define SECURITY_POLL_MS 1000

enum security_kind { SECURITY_PASSWD = 0, SECURITY_ACL, SECURITY_TLS };

struct security_watch {
    uv_fs_poll_t poll;
    struct security *sec;
    enum security_kind kind;
    struct listener *l; /* SECURITY_TLS only */
    const char *path;   /* borrowed from the configuration */
};

struct security_job {
    uv_work_t req;
    struct security *sec;
    enum security_kind kind;
    const char *path;
    void *result; /* struct auth * or struct acl * */
    char err[512];
};

struct security {
    struct broker *b;
    struct security_watch **w;
    size_t n_w;
    bool is_running[2]; /* a job per kind is on the thread pool */
    bool is_wanted[2];  /* run it again when it ends: the file changed meanwhile */
    bool is_stopping;
};

static void *load(enum security_kind kind, const char *path, char *err, size_t errlen)
{
    if (kind == SECURITY_PASSWD)
        return auth_load(path, err, errlen);
    return acl_load(path, err, errlen);
}

static void swap_in(struct broker *b, enum security_kind kind, void *result)
{
    if (kind == SECURITY_PASSWD) {
        struct auth *old = b->auth;
        b->auth = result;
        auth_unref(&old);
        log_info("security", "password file reloaded users=%zu", auth_count(b->auth));
    } else {
        struct acl *old = b->acl;
        b->acl = result;
        acl_free(&old);
        log_info("security", "acl file reloaded");
    }
}

static void discard(enum security_kind kind, void *result)
{
    if (kind == SECURITY_PASSWD) {
        struct auth *a = result;
        auth_unref(&a);
    } else {
        struct acl *a = result;
        acl_free(&a);
    }
}

static void on_load_work(uv_work_t *req)
{
    struct security_job *j = req->data;
    j->result = load(j->kind, j->path, j->err, sizeof(j->err));
}

static void start_job(struct security *sec, enum security_kind kind);

static void on_load_done(uv_work_t *req, int status)
{
    struct security_job *j = req->data;
    struct security *sec = j->sec;

    sec->is_running[j->kind] = false;
    if (status < 0 || sec->is_stopping) {
        if (j->result)
            discard(j->kind, j->result);
    } else if (!j->result) {
        sec->b->stats.reload_failures++;
        log_error("security", "reload failed, previous rules stay in force: %s", j->err);
    } else {
        swap_in(sec->b, j->kind, j->result);
    }
    enum security_kind kind = j->kind;
    free(j);
    if (sec->is_wanted[kind] && !sec->is_stopping) {
        sec->is_wanted[kind] = false;
        start_job(sec, kind);
    }
}

static void start_job(struct security *sec, enum security_kind kind)
{
    const struct conf *c = sec->b->conf;
    const char *path = kind == SECURITY_PASSWD ? c->password_file : c->acl_file;

    if (!path || sec->is_stopping)
        return;
    if (sec->is_running[kind]) {
        sec->is_wanted[kind] = true;
        return;
    }
    struct security_job *j = xcalloc(1, sizeof(*j));
    j->sec = sec;
    j->kind = kind;
    j->path = path;
    j->req.data = j;
    int rc = uv_queue_work(sec->b->loop, &j->req, on_load_work, on_load_done);
    if (rc < 0) {
        log_error("security", "cannot schedule reload file=%s rc=%s", path, err_str(rc));
        free(j);
        return;
    }
    sec->is_running[kind] = true;
}

static void reload_tls(struct listener *l)
{
    char err[512];
    if (tls_ctx_reload(l->tls, err, sizeof(err)) < 0) {
        l->b->stats.reload_failures++;
        log_error("security", "tls reload failed port=%u, previous files stay in force: %s",
                  l->cl->port, err);
    } else {
        log_info("security", "tls files reloaded port=%u", l->cl->port);
    }
}

static void on_change(uv_fs_poll_t *h, int status, const uv_stat_t *prev, const uv_stat_t *cur)
{
    struct security_watch *w = h->data;
    (void)prev;
    (void)cur;

    if (status < 0) {
        log_warn("security", "cannot stat watched file file=%s rc=%s", w->path, err_str(status));
        return;
    }
    log_info("security", "file changed file=%s", w->path);
    if (w->kind == SECURITY_TLS)
        reload_tls(w->l);
    else
        start_job(w->sec, w->kind);
}

static void on_watch_closed(uv_handle_t *h)
{
    free(h->data);
}

static void watch(struct security *sec, enum security_kind kind, struct listener *l,
                  const char *path)
{
    if (!path)
        return;
    struct security_watch *w = xcalloc(1, sizeof(*w));
    w->sec = sec;
    w->kind = kind;
    w->l = l;
    w->path = path;
    (void)uv_fs_poll_init(sec->b->loop, &w->poll); /* cannot fail */
    w->poll.data = w;
    int rc = uv_fs_poll_start(&w->poll, on_change, path, SECURITY_POLL_MS);
    if (rc < 0) {
        log_warn("security", "cannot watch file=%s rc=%s (SIGHUP still reloads it)", path,
                 err_str(rc));
        uv_close((uv_handle_t *)&w->poll, on_watch_closed);
        return;
    }
    /* Watching alone never keeps the loop alive. */
    uv_unref((uv_handle_t *)&w->poll);
    sec->w = xrealloc(sec->w, (sec->n_w + 1) * sizeof(*sec->w));
    sec->w[sec->n_w++] = w;
}

int security_start(struct broker *b)
{
    const struct conf *c = b->conf;
    char err[512];

    if (c->password_file) {
        b->auth = auth_load(c->password_file, err, sizeof(err));
        if (!b->auth) {
            log_error("security", "%s", err);
            return ERR_INVALID;
        }
        log_info("security", "password file loaded users=%zu", auth_count(b->auth));
    }
    if (c->acl_file) {
        b->acl = acl_load(c->acl_file, err, sizeof(err));
        if (!b->acl) {
            log_error("security", "%s", err);
            return ERR_INVALID;
        }
        log_info("security", "acl file loaded");
    }
    struct security *sec = xcalloc(1, sizeof(*sec));
    sec->b = b;
    b->sec = sec;
    watch(sec, SECURITY_PASSWD, NULL, c->password_file);
    watch(sec, SECURITY_ACL, NULL, c->acl_file);
    for (size_t i = 0; i < b->n_listeners; i++) {
        struct listener *l = &b->listeners[i];
        if (!l->tls)
            continue;
        watch(sec, SECURITY_TLS, l, l->cl->certfile);
        watch(sec, SECURITY_TLS, l, l->cl->keyfile);
        watch(sec, SECURITY_TLS, l, l->cl->cafile);
        watch(sec, SECURITY_TLS, l, l->cl->capath);
        watch(sec, SECURITY_TLS, l, l->cl->crlfile);
    }
    return 0;
}

void security_reload(struct broker *b)
{
    if (!b->sec || b->sec->is_stopping)
        return;
    start_job(b->sec, SECURITY_PASSWD);
    start_job(b->sec, SECURITY_ACL);
    for (size_t i = 0; i < b->n_listeners; i++)
        if (b->listeners[i].tls)
            reload_tls(&b->listeners[i]);
}

void security_stop(struct broker *b)
{
    struct security *sec = b->sec;
    if (!sec || sec->is_stopping)
        return;
    sec->is_stopping = true;
    for (size_t i = 0; i < sec->n_w; i++)
        uv_close((uv_handle_t *)&sec->w[i]->poll, on_watch_closed);
    free(sec->w);
    sec->w = NULL;
    sec->n_w = 0;
}

void security_free(struct broker *b)
{
    security_stop(b);
    free(b->sec);
    b->sec = NULL;
    auth_unref(&b->auth);
    acl_free(&b->acl);
}

int security_check(const struct conf *c, char *err, size_t errlen)
{
    if (c->password_file) {
        struct auth *a = auth_load(c->password_file, err, errlen);
        if (!a)
            return ERR_INVALID;
        auth_unref(&a);
    }
    if (c->acl_file) {
        struct acl *a = acl_load(c->acl_file, err, errlen);
        if (!a)
            return ERR_INVALID;
        acl_free(&a);
    }
    return 0;
}

/*
 * shoal-passwd: creates and edits password files with mosquitto_passwd's flags and line
 * format, so that files move freely between shoal and mosquitto. The default hash is
 * sha512-pbkdf2, the newest kind that mosquitto 2.0 reads.
 *
 * Every change rewrites the whole file atomically (a temporary file in the same directory,
 * fsync, rename), so a broker reloading at that moment sees the old file or the new one,
 * never half of one. A symlinked file is updated through its link, because Kubernetes and
 * configuration managers point the link at the real file; the file keeps its mode and, when
 * we may, its owner. A read-only file is refused rather than chmod'ed.
 */
/* realpath() is an XSI function in glibc's headers; XSI 7 is a superset of the POSIX 2008
 * level the build sets. */
#define _XOPEN_SOURCE 700 /* NOLINT(bugprone-reserved-identifier) */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "node/auth.h"
#include "node/buf.h"
#include "node/err.h"

#define PASSWD_PW_MAX   65535 /* an MQTT password */
#define PASSWD_USER_MAX 65535
#define PASSWD_FILE_MAX (256u << 20)

enum passwd_mode { PASSWD_SET, PASSWD_DELETE, PASSWD_UPGRADE };

struct passwd_opts {
    enum passwd_mode mode;
    bool is_create;
    bool is_batch;
    enum auth_hash_kind kind;
    uint32_t cost;
    const char *cost_arg; /* -I as given; checked once -H is known */
    const char *file;
    const char *user;
    const char *password;
};

/* The target of the edit: the file itself, or what its symlinks resolve to. */
struct passwd_target {
    char *path;
    bool exists;
    struct stat st;
};

static void *(*const volatile wipe_fn)(void *, int, size_t) = memset;

static void wipe(void *p, size_t n)
{
    if (n > 0)
        wipe_fn(p, 0, n);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)fputs("shoal-passwd: ", stderr);
    (void)vfprintf(stderr, fmt, ap);
    va_end(ap);
    (void)fputc('\n', stderr);
}

static void usage(FILE *f)
{
    (void)fputs("shoal-passwd manages password files for shoal (and mosquitto).\n"
                "\n"
                "Usage: shoal-passwd [-H HASH] [-I ITER] [-c | -D] FILE USER\n"
                "       shoal-passwd [-H HASH] [-I ITER] [-c] -b FILE USER PASSWORD\n"
                "       shoal-passwd [-H HASH] [-I ITER] -U FILE\n"
                " -b : batch mode: take the password from the command line.\n"
                " -c : create a new password file; an existing one is replaced.\n"
                " -D : delete USER rather than adding it or changing its password.\n"
                " -H : hash: sha512-pbkdf2 (default; read by mosquitto 2.0 and later),\n"
                "      argon2id (read by shoal and mosquitto 2.1), or sha512 (mosquitto 1.6).\n"
                " -I : PBKDF2 iterations (default 101) or argon2id passes (default 1).\n"
                " -U : hash the plain-text passwords of a 'user:password' file. Lines that are\n"
                "      already hashed are kept as they are.\n"
                "\n"
                "Without -b the password is asked twice on the terminal, or read as two lines\n"
                "from standard input when that is not a terminal.\n",
                f);
}

/* ---- arguments --------------------------------------------------------------------------- */

static bool parse_kind(const char *s, enum auth_hash_kind *kind)
{
    if (strcmp(s, "sha512-pbkdf2") == 0)
        *kind = AUTH_HASH_SHA512_PBKDF2;
    else if (strcmp(s, "sha512") == 0)
        *kind = AUTH_HASH_SHA512;
    else if (strcmp(s, "argon2id") == 0)
        *kind = AUTH_HASH_ARGON2ID;
    else
        return false;
    return true;
}

static bool parse_cost(struct passwd_opts *o)
{
    uint32_t max = o->kind == AUTH_HASH_ARGON2ID ? AUTH_ARGON2ID_MAX_T : AUTH_PBKDF2_MAX_ITER;
    o->cost = o->kind == AUTH_HASH_ARGON2ID ? AUTH_ARGON2ID_DEFAULT_T : AUTH_PBKDF2_DEFAULT_ITER;
    if (!o->cost_arg)
        return true;
    if (o->kind == AUTH_HASH_SHA512) {
        fail("-I does not apply to -H sha512");
        return false;
    }
    const char *s = o->cost_arg;
    uint64_t v = 0;
    size_t n = strlen(s);
    for (size_t i = 0; i < n && n <= 10; i++) {
        if (s[i] < '0' || s[i] > '9') {
            n = 0;
            break;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (n == 0 || n > 10 || v == 0 || v > max) {
        fail("-I must be a number from 1 to %u", max);
        return false;
    }
    o->cost = (uint32_t)v;
    return true;
}

/* User names end up as "user:hash" lines that auth_load reads back: no ':', no line breaks,
 * no blanks at either end (the loader trims them) and no leading '#' (a comment). */
static bool user_ok(const char *u)
{
    size_t n = strlen(u);
    if (n == 0) {
        fail("the user name must not be empty");
        return false;
    }
    if (n > PASSWD_USER_MAX) {
        fail("the user name is longer than %d bytes", PASSWD_USER_MAX);
        return false;
    }
    if (strchr(u, ':')) {
        fail("the user name must not contain ':'");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (c < 0x20 || c == 0x7f) {
            fail("the user name must not contain control characters");
            return false;
        }
    }
    if (u[0] == ' ' || u[n - 1] == ' ' || u[0] == '#') {
        fail("the user name must not start or end with a space, nor start with '#'");
        return false;
    }
    return true;
}

static bool check_combination(struct passwd_opts *o, int npos)
{
    if (o->mode == PASSWD_UPGRADE) {
        if (o->is_create) {
            fail("-U cannot be used with -c or -D");
            return false;
        }
        if (npos != 1) {
            fail("-U takes the password file only");
            return false;
        }
        return true;
    }
    if (o->mode == PASSWD_DELETE && o->is_create) {
        fail("-c and -D cannot be used together");
        return false;
    }
    if (o->mode == PASSWD_DELETE && o->is_batch) {
        fail("-b and -D cannot be used together");
        return false;
    }
    int want = o->is_batch ? 3 : 2;
    if (npos != want) {
        usage(stderr);
        return false;
    }
    return user_ok(o->user);
}

static bool parse_args(int argc, char **argv, struct passwd_opts *o)
{
    int c;
    bool is_delete = false;
    bool is_upgrade = false;

    o->kind = AUTH_HASH_SHA512_PBKDF2;
    while ((c = getopt(argc, argv, "bcDhH:I:U")) != -1) {
        switch (c) {
        case 'b':
            o->is_batch = true;
            break;
        case 'c':
            o->is_create = true;
            break;
        case 'D':
            is_delete = true;
            break;
        case 'H':
            if (!parse_kind(optarg, &o->kind)) {
                fail("unknown hash '%s' (argon2id, sha512-pbkdf2 or sha512)", optarg);
                return false;
            }
            break;
        case 'I':
            o->cost_arg = optarg;
            break;
        case 'U':
            is_upgrade = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return false;
        }
    }
    if (is_upgrade && is_delete) {
        fail("-U cannot be used with -c or -D");
        return false;
    }
    o->mode = is_upgrade ? PASSWD_UPGRADE : is_delete ? PASSWD_DELETE : PASSWD_SET;
    int npos = argc - optind;
    if (npos < 1) {
        usage(stderr);
        return false;
    }
    o->file = argv[optind];
    o->user = npos > 1 ? argv[optind + 1] : NULL;
    o->password = npos > 2 ? argv[optind + 2] : NULL;
    return check_combination(o, npos) && parse_cost(o);
}

/* ---- password input ---------------------------------------------------------------------- */

static struct termios saved_tty;
static volatile sig_atomic_t is_echo_off;

/* Puts the terminal back before dying of a signal that arrived at the prompt. */
static void on_signal(int sig)
{
    if (is_echo_off)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
    (void)signal(sig, SIG_DFL);
    (void)raise(sig);
}

static bool echo_off(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    struct termios t;
    if (tcgetattr(STDIN_FILENO, &saved_tty) != 0)
        return false;
    t = saved_tty;
    t.c_lflag &= ~(tcflag_t)ECHO;
    t.c_lflag |= ECHONL;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
    is_echo_off = 1;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) != 0) {
        is_echo_off = 0;
        return false;
    }
    return true;
}

static void echo_on(void)
{
    if (is_echo_off)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
    is_echo_off = 0;
}

/* Reads one line from standard input, byte by byte so that nothing past the newline is
 * consumed (the second prompt reads the next line of a pipe). Returns its length, or -1. */
static long read_line(char *buf, size_t cap)
{
    size_t n = 0;
    bool is_long = false;
    for (;;) {
        char ch;
        ssize_t r = read(STDIN_FILENO, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fail("cannot read the password: %s", strerror(errno));
            return -1;
        }
        if (r == 0 && n == 0 && !is_long) {
            fail("no password on standard input");
            return -1;
        }
        if (r == 0 || ch == '\n')
            break;
        if (n + 1 < cap)
            buf[n++] = ch;
        else
            is_long = true;
    }
    if (is_long) {
        fail("the password is longer than %d bytes", PASSWD_PW_MAX);
        return -1;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    return (long)n;
}

static long prompt(const char *text, char *buf, size_t cap)
{
    bool is_tty = isatty(STDIN_FILENO);
    /* Echo goes off before the prompt shows, so nothing typed after it can be echoed. */
    if (is_tty && !echo_off()) {
        fail("cannot turn off echo on the terminal: %s", strerror(errno));
        return -1;
    }
    (void)fputs(text, stderr);
    (void)fflush(stderr);
    long n = read_line(buf, cap);
    if (is_tty)
        echo_on();
    else
        (void)fputc('\n', stderr);
    return n;
}

/* Asks twice; the two answers must match. buf holds cap bytes. */
static long ask_password(char *buf, size_t cap)
{
    char *again = xmalloc(cap);
    long n = prompt("Password: ", buf, cap);
    long m = n < 0 ? -1 : prompt("Reenter password: ", again, cap);
    if (m >= 0 && (n != m || memcmp(buf, again, (size_t)n) != 0)) {
        fail("passwords do not match");
        n = -1;
    }
    if (m < 0)
        n = -1;
    wipe(again, cap);
    free(again);
    return n;
}

/* ---- the file ---------------------------------------------------------------------------- */

static bool target_open(const char *file, bool is_create, struct passwd_target *t)
{
    struct stat lst;
    memset(t, 0, sizeof(*t));
    if (lstat(file, &lst) != 0) {
        if (errno == ENOENT && is_create) {
            t->path = xstrdup(file);
            return true;
        }
        fail("cannot open %s: %s", file, strerror(errno));
        return false;
    }
    t->path = realpath(file, NULL);
    if (!t->path) {
        fail("cannot resolve %s: %s", file, strerror(errno));
        return false;
    }
    if (stat(t->path, &t->st) != 0 || !S_ISREG(t->st.st_mode)) {
        fail("%s is not a regular file", file);
        goto out_free;
    }
    /* Root may write anywhere, so the mode bits are checked as well as access(). */
    if ((t->st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) == 0 || access(t->path, W_OK) != 0) {
        fail("%s is read-only; it is left unchanged", file);
        goto out_free;
    }
    t->exists = true;
    return true;

out_free:
    free(t->path);
    t->path = NULL;
    return false;
}

static bool read_all(const char *path, struct buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail("cannot open %s: %s", path, strerror(errno));
        return false;
    }
    for (;;) {
        if (buf_used(out) > PASSWD_FILE_MAX) {
            fail("%s is larger than %u MiB", path, PASSWD_FILE_MAX >> 20);
            close(fd);
            return false;
        }
        uint8_t *p = buf_reserve(out, 65536);
        ssize_t r = read(fd, p, 65536);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fail("cannot read %s: %s", path, strerror(errno));
            close(fd);
            return false;
        }
        if (r == 0)
            break;
        buf_commit(out, (size_t)r);
    }
    close(fd);
    return true;
}

static bool write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Gives the new file the old one's mode and owner; a new file stays 0600 as mkstemp made it. */
static bool keep_attributes(int fd, const struct passwd_target *t)
{
    if (!t->exists)
        return true;
    if (fchmod(fd, t->st.st_mode & 07777) != 0)
        return false;
    if ((t->st.st_uid != geteuid() || t->st.st_gid != getegid()) &&
        fchown(fd, t->st.st_uid, t->st.st_gid) != 0)
        (void)fprintf(stderr, "shoal-passwd: warning: could not keep the owner of %s: %s\n",
                      t->path, strerror(errno));
    return true;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static bool write_atomic(const struct passwd_target *t, const struct buf *content)
{
    const char *slash = strrchr(t->path, '/');
    size_t dlen = slash ? (size_t)(slash - t->path) : 0;
    const char *base = slash ? slash + 1 : t->path;
    char *dir = slash ? xstrndup(t->path, dlen ? dlen : 1) : xstrdup(".");
    size_t tlen = strlen(dir) + strlen(base) + 16;
    char *tmp = xmalloc(tlen);
    bool is_ok = false;

    (void)snprintf(tmp, tlen, "%s/.%s.XXXXXX", dir, base);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        fail("cannot create a temporary file in %s: %s", dir, strerror(errno));
        goto out_free;
    }
    if (!keep_attributes(fd, t) || !write_all(fd, buf_head(content), buf_used(content)) ||
        fsync(fd) != 0) {
        fail("cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        goto out_unlink;
    }
    if (close(fd) != 0) {
        fail("cannot write %s: %s", tmp, strerror(errno));
        goto out_unlink;
    }
    if (rename(tmp, t->path) != 0) {
        fail("cannot replace %s: %s", t->path, strerror(errno));
        goto out_unlink;
    }
    sync_dir(dir);
    is_ok = true;
    goto out_free;

out_unlink:
    unlink(tmp);
out_free:
    free(tmp);
    free(dir);
    return is_ok;
}

/* ---- editing ----------------------------------------------------------------------------- */

struct line {
    const char *p; /* without the newline */
    size_t n;
    const char *user; /* NULL for blank lines and comments */
    size_t ulen;
    const char *rest; /* after the ':' up to the end (a trailing '\r' removed) */
    size_t rlen;
    bool has_colon;
};

static void line_parse(struct line *l)
{
    const char *p = l->p;
    size_t n = l->n;
    if (n > 0 && p[n - 1] == '\r')
        n--;
    while (n > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    l->user = NULL;
    l->has_colon = false;
    if (n == 0 || *p == '#')
        return;
    const char *colon = memchr(p, ':', n);
    size_t ulen = colon ? (size_t)(colon - p) : n;
    while (ulen > 0 && (p[ulen - 1] == ' ' || p[ulen - 1] == '\t'))
        ulen--;
    l->user = p;
    l->ulen = ulen;
    l->has_colon = colon != NULL;
    l->rest = colon ? colon + 1 : p + n;
    l->rlen = colon ? (size_t)(p + n - colon - 1) : 0;
}

/* Calls fn for each line of text; stops when it returns false. */
static bool each_line(const struct buf *text, bool (*fn)(void *, struct line *, uint32_t),
                      void *ctx)
{
    const char *p = (const char *)buf_head(text);
    const char *end = p + buf_used(text);
    uint32_t lineno = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        struct line l = {.p = p, .n = (size_t)((nl ? nl : end) - p)};
        line_parse(&l);
        if (!fn(ctx, &l, ++lineno))
            return false;
        p = nl ? nl + 1 : end;
    }
    return true;
}

struct edit {
    const struct passwd_opts *o;
    const char *hash; /* PASSWD_SET: the new hash */
    struct buf out;
    bool is_found;
};

static void emit(struct buf *out, const void *p, size_t n)
{
    buf_append(out, p, n);
    buf_append(out, "\n", 1);
}

static void emit_user(struct buf *out, const char *user, size_t ulen, const char *hash)
{
    buf_append(out, user, ulen);
    buf_append(out, ":", 1);
    emit(out, hash, strlen(hash));
}

static bool is_user(const struct line *l, const char *user)
{
    size_t n = strlen(user);
    return l->user && l->ulen == n && memcmp(l->user, user, n) == 0;
}

/* Set and delete: the user's line is replaced (or dropped), every other line kept as is. */
static bool edit_line(void *ctx, struct line *l, uint32_t lineno)
{
    struct edit *e = ctx;
    (void)lineno;
    if (!is_user(l, e->o->user)) {
        emit(&e->out, l->p, l->n);
        return true;
    }
    if (e->o->mode == PASSWD_SET && !e->is_found)
        emit_user(&e->out, l->user, l->ulen, e->hash);
    e->is_found = true;
    return true;
}

static bool upgrade_line(void *ctx, struct line *l, uint32_t lineno)
{
    struct edit *e = ctx;
    char hash[AUTH_HASH_CAP];

    if (!l->user) {
        emit(&e->out, l->p, l->n);
        return true;
    }
    if (!l->has_colon || l->ulen == 0) {
        fail("%s:%u: expected 'user:password'", e->o->file, lineno);
        return false;
    }
    const char *h = l->rest;
    size_t hn = l->rlen;
    while (hn > 0 && (*h == ' ' || *h == '\t')) {
        h++;
        hn--;
    }
    while (hn > 0 && (h[hn - 1] == ' ' || h[hn - 1] == '\t'))
        hn--;
    if (auth_hash_is_valid(h, hn)) {
        emit(&e->out, l->p, l->n);
        return true;
    }
    if (l->rlen == 0) {
        fail("%s:%u: empty password", e->o->file, lineno);
        return false;
    }
    int rc =
        auth_hash(e->o->kind, e->o->cost, (const uint8_t *)l->rest, l->rlen, hash, sizeof(hash));
    if (rc != 0) {
        fail("%s:%u: cannot hash the password: %s", e->o->file, lineno, err_str(rc));
        return false;
    }
    emit_user(&e->out, l->user, l->ulen, hash);
    return true;
}

/* Builds the new file text into e->out. */
static bool build(struct edit *e, const struct buf *old)
{
    const struct passwd_opts *o = e->o;
    if (o->mode == PASSWD_UPGRADE)
        return each_line(old, upgrade_line, e);
    if (!o->is_create && !each_line(old, edit_line, e))
        return false;
    if (o->mode == PASSWD_DELETE && !e->is_found) {
        fail("user '%s' not found in %s", o->user, o->file);
        return false;
    }
    if (o->mode == PASSWD_SET && !e->is_found)
        emit_user(&e->out, o->user, strlen(o->user), e->hash);
    return true;
}

/* Fills hash for PASSWD_SET from -b's argument or the prompts. */
static bool make_hash(const struct passwd_opts *o, char *hash, size_t cap)
{
    char *pw = xmalloc(PASSWD_PW_MAX + 1);
    long n;
    bool is_ok = false;

    if (o->is_batch) {
        size_t len = strlen(o->password);
        n = len > PASSWD_PW_MAX ? -1 : (long)len;
        if (n < 0)
            fail("the password is longer than %d bytes", PASSWD_PW_MAX);
        else
            memcpy(pw, o->password, len);
    } else {
        n = ask_password(pw, PASSWD_PW_MAX + 1);
    }
    if (n == 0)
        fail("the password must not be empty");
    if (n > 0) {
        int rc = auth_hash(o->kind, o->cost, (const uint8_t *)pw, (size_t)n, hash, cap);
        if (rc != 0)
            fail("cannot hash the password: %s", err_str(rc));
        is_ok = rc == 0;
    }
    wipe(pw, PASSWD_PW_MAX + 1);
    free(pw);
    return is_ok;
}

/* A file that shoal would refuse is worth a warning, though editing it was still right. */
static void warn_if_unloadable(const char *file)
{
    char err[512];
    struct auth *a = auth_load(file, err, sizeof(err));
    if (!a)
        (void)fprintf(stderr, "shoal-passwd: warning: shoal will not load the file: %s\n", err);
    auth_unref(&a);
}

int main(int argc, char **argv)
{
    struct passwd_opts o = {0};
    struct passwd_target t = {0};
    struct buf old = {0};
    char hash[AUTH_HASH_CAP];
    int status = 1;

    if (!parse_args(argc, argv, &o))
        return 1;
    if (!target_open(o.file, o.is_create && o.mode == PASSWD_SET, &t))
        return 1;
    if (t.exists && !o.is_create && !read_all(t.path, &old))
        goto out;
    if (o.mode == PASSWD_SET && !make_hash(&o, hash, sizeof(hash)))
        goto out;

    struct edit e = {.o = &o, .hash = hash};
    if (build(&e, &old) && write_atomic(&t, &e.out)) {
        warn_if_unloadable(o.file);
        status = 0;
    }
    wipe(e.out.data, e.out.cap);
    buf_free(&e.out);
out:
    /* -U read plain-text passwords into old. */
    wipe(old.data, old.cap);
    buf_free(&old);
    free(t.path);
    return status;
}

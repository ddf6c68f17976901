/*
 * acl: every rule form and access word, who each rule applies to, deny precedence, wildcard
 * and '$' matching, subscription checks with the filter's wildcards taken literally, the
 * client-id and username tricks that must never widen access, and every parse error with its
 * "FILE:LINE: why". ACL files are written into a fresh mkdtemp directory per test.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* cmocka needs these first, in this order. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include "node/acl.h"

#define MAX_PATHS 16

struct fx {
    char dir[64];
    char err[512];
    char *paths[MAX_PATHS]; /* created, removed in reverse order */
    size_t n_paths;
    struct acl *acl;
};

static const char *track(struct fx *f, const char *name)
{
    char path[512];
    (void)snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    for (size_t i = 0; i < f->n_paths; i++) {
        if (strcmp(f->paths[i], path) == 0)
            return f->paths[i];
    }
    assert_true(f->n_paths < MAX_PATHS);
    f->paths[f->n_paths] = strdup(path);
    assert_non_null(f->paths[f->n_paths]);
    return f->paths[f->n_paths++];
}

static const char *write_bytes(struct fx *f, const char *name, const char *data, size_t len)
{
    const char *path = track(f, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
    return path;
}

static const char *write_file(struct fx *f, const char *name, const char *text)
{
    return write_bytes(f, name, text, strlen(text));
}

/* Loads text as f->acl, failing the test with the parser's message if it is rejected. */
static struct acl *load(struct fx *f, const char *text)
{
    acl_free(&f->acl);
    const char *path = write_file(f, "acl", text);
    f->acl = acl_load(path, f->err, sizeof(f->err));
    if (!f->acl)
        fail_msg("acl_load: %s", f->err);
    return f->acl;
}

/* Asserts that text is rejected with exactly "PATH:LINE: why". */
static void expect_error_bytes(struct fx *f, const char *data, size_t len, unsigned line,
                               const char *why)
{
    const char *path = write_bytes(f, "bad.acl", data, len);
    char want[1024];
    (void)snprintf(want, sizeof(want), "%s:%u: %s", path, line, why);
    struct acl *a = acl_load(path, f->err, sizeof(f->err));
    if (a) {
        acl_free(&a);
        fail_msg("accepted, expected: %s", want);
    }
    assert_string_equal(f->err, want);
}

static void expect_error(struct fx *f, const char *text, unsigned line, const char *why)
{
    expect_error_bytes(f, text, strlen(text), line, why);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    (void)snprintf(f->dir, sizeof(f->dir), "/tmp/shoal-acl-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    acl_free(&f->acl);
    while (f->n_paths > 0) {
        char *p = f->paths[--f->n_paths];
        (void)unlink(p);
        free(p);
    }
    assert_int_equal(rmdir(f->dir), 0);
    free(f);
    return 0;
}

static bool chk(const struct acl *a, const char *cid, const char *user, const char *topic,
                enum acl_access access)
{
    return acl_check(a, cid, user, topic, strlen(topic), access);
}

/* Anonymous client "c" shortcuts. */
static bool anon_read(const struct acl *a, const char *t)
{
    return chk(a, "c", NULL, t, ACL_READ);
}
static bool anon_write(const struct acl *a, const char *t)
{
    return chk(a, "c", NULL, t, ACL_WRITE);
}
static bool anon_sub(const struct acl *a, const char *t)
{
    return chk(a, "c", NULL, t, ACL_SUBSCRIBE);
}

static void test_access_words(void **state)
{
    struct acl *a = load(*state, "topic read r/#\n"
                                 "topic write w/#\n"
                                 "topic readwrite rw/#\n"
                                 "topic both/#\n"
                                 "topic deny rw/secret\n");
    assert_true(anon_read(a, "r/x"));
    assert_false(anon_write(a, "r/x"));
    assert_true(anon_sub(a, "r/#"));

    assert_false(anon_read(a, "w/x"));
    assert_true(anon_write(a, "w/x"));
    assert_false(anon_sub(a, "w/#"));
    assert_false(anon_sub(a, "w/x"));

    assert_true(anon_read(a, "rw/x"));
    assert_true(anon_write(a, "rw/x"));
    assert_true(anon_sub(a, "rw/x"));
    assert_true(anon_read(a, "both/x"));
    assert_true(anon_write(a, "both/x"));

    assert_false(anon_read(a, "rw/secret"));
    assert_false(anon_write(a, "rw/secret"));
    assert_false(anon_sub(a, "rw/secret"));
    assert_true(anon_read(a, "rw/secret/below"));

    assert_false(anon_read(a, "other"));
    assert_false(anon_write(a, "other/x"));

    /* Only one access kind at a time; anything else is refused. */
    assert_false(chk(a, "c", NULL, "rw/x", (enum acl_access)0));
    assert_false(chk(a, "c", NULL, "rw/x", (enum acl_access)(ACL_READ | ACL_WRITE)));
    assert_false(chk(a, "c", NULL, "rw/x", (enum acl_access)8));

    /* Empty or missing topics match nothing. */
    assert_false(acl_check(a, "c", NULL, "rw/x", 0, ACL_READ));
    assert_false(acl_check(a, "c", NULL, NULL, 0, ACL_READ));
}

static void test_topic_len_is_respected(void **state)
{
    struct acl *a = load(*state, "topic read a/b\n");
    assert_true(acl_check(a, "c", NULL, "a/bcdef", 3, ACL_READ));
    assert_false(acl_check(a, "c", NULL, "a/bcdef", 4, ACL_READ));
    assert_false(acl_check(a, "c", NULL, "a/bcdef", 2, ACL_READ));
}

static void test_anonymous_vs_user(void **state)
{
    struct acl *a = load(*state, "topic anon/#\n"
                                 "user alice\n"
                                 "topic alice/#\n"
                                 "user bob smith\n"
                                 "topic bob/#\n"
                                 "user alice\n"
                                 "topic alice2/#\n");
    assert_true(chk(a, "c", NULL, "anon/x", ACL_WRITE));
    assert_false(chk(a, "c", NULL, "alice/x", ACL_WRITE));
    assert_false(chk(a, "c", NULL, "bob/x", ACL_WRITE));

    assert_true(chk(a, "c", "alice", "alice/x", ACL_WRITE));
    assert_true(chk(a, "c", "alice", "alice2/x", ACL_READ)); /* blocks merge */
    assert_false(chk(a, "c", "alice", "anon/x", ACL_READ));  /* anonymous rules are not hers */
    assert_false(chk(a, "c", "alice", "bob/x", ACL_READ));

    assert_true(chk(a, "c", "bob smith", "bob/x", ACL_READ));
    assert_false(chk(a, "c", "bob", "bob/x", ACL_READ));
    assert_false(chk(a, "c", "bob smith ", "bob/x", ACL_READ));
    assert_false(chk(a, "c", "Alice", "alice/x", ACL_READ));

    /* A user without a block, and the empty username, get nothing. */
    assert_false(chk(a, "c", "carol", "anon/x", ACL_READ));
    assert_false(chk(a, "c", "", "anon/x", ACL_READ));
}

static void test_pattern_in_user_block_applies_to_all(void **state)
{
    struct acl *a = load(*state, "user alice\n"
                                 "topic alice/#\n"
                                 "pattern read shared/%u/#\n"
                                 "pattern write everyone/x\n"
                                 "pattern readwrite clients/%c\n");
    assert_true(chk(a, "c", "bob", "shared/bob/1", ACL_READ));
    assert_false(chk(a, "c", "bob", "shared/bob/1", ACL_WRITE));
    assert_false(chk(a, "c", "bob", "shared/alice/1", ACL_READ));
    assert_true(chk(a, "c", "alice", "shared/alice/1", ACL_READ));
    assert_true(chk(a, "c", "bob", "everyone/x", ACL_WRITE));
    assert_false(chk(a, "c", "bob", "alice/x", ACL_READ));

    /* Anonymous clients get the patterns too, except those that need a username. */
    assert_true(chk(a, "c", NULL, "everyone/x", ACL_WRITE));
    assert_true(chk(a, "c9", NULL, "clients/c9", ACL_READ));
    assert_false(chk(a, "c9", NULL, "clients/c8", ACL_READ));
    assert_false(chk(a, "c", NULL, "shared/c/1", ACL_READ));
    assert_false(chk(a, "c", NULL, "shared//1", ACL_READ));
    assert_false(chk(a, "c", NULL, "shared/+/1", ACL_SUBSCRIBE));
}

static void test_deny_precedence(void **state)
{
    struct acl *a = load(*state, "pattern readwrite devices/%c/#\n"
                                 "pattern deny devices/%c/locked\n"
                                 "user alice\n"
                                 "topic deny devices/c1/private\n"
                                 "topic readwrite secret/#\n"
                                 "pattern deny secret/%u/hidden\n"
                                 "user bob\n"
                                 "topic read x/#\n"
                                 "topic deny x/y\n"
                                 "topic deny z/y\n"
                                 "topic read z/#\n");
    /* A user's deny beats a pattern's grant. */
    assert_true(chk(a, "c1", "alice", "devices/c1/x", ACL_WRITE));
    assert_false(chk(a, "c1", "alice", "devices/c1/private", ACL_WRITE));
    assert_false(chk(a, "c1", "alice", "devices/c1/private", ACL_READ));
    assert_true(chk(a, "c1", "bob", "devices/c1/private", ACL_WRITE));
    /* A pattern's deny beats the pattern grant and the user's grant. */
    assert_false(chk(a, "c1", "bob", "devices/c1/locked", ACL_WRITE));
    assert_true(chk(a, "c1", "alice", "secret/a", ACL_READ));
    assert_true(chk(a, "c1", "alice", "secret/bob/hidden", ACL_READ));
    assert_false(chk(a, "c1", "alice", "secret/alice/hidden", ACL_READ));
    assert_false(chk(a, "c1", "alice", "secret/alice/hidden", ACL_WRITE));
    /* Order in the file does not matter. */
    assert_true(chk(a, "c", "bob", "x/z", ACL_READ));
    assert_false(chk(a, "c", "bob", "x/y", ACL_READ));
    assert_true(chk(a, "c", "bob", "z/z", ACL_READ));
    assert_false(chk(a, "c", "bob", "z/y", ACL_READ));
}

static void test_wildcards(void **state)
{
    struct acl *a = load(*state, "topic read a/#\n"
                                 "topic read +/b/+\n"
                                 "topic read c/+\n"
                                 "user root\n"
                                 "topic #\n");
    assert_true(anon_read(a, "a"));
    assert_true(anon_read(a, "a/"));
    assert_true(anon_read(a, "a/x/y/z"));
    assert_false(anon_read(a, "ab"));
    assert_false(anon_read(a, "ab/x"));
    assert_true(anon_read(a, "x/b/y"));
    assert_true(anon_read(a, "/b/"));
    assert_false(anon_read(a, "x/b"));
    assert_false(anon_read(a, "x/b/y/z"));
    assert_false(anon_read(a, "x/bb/y"));
    assert_true(anon_read(a, "c/x"));
    assert_true(anon_read(a, "c/"));
    assert_false(anon_read(a, "c"));
    assert_false(anon_read(a, "c/x/y"));
    assert_false(anon_read(a, "/c/x"));

    assert_true(chk(a, "c", "root", "anything/at/all", ACL_WRITE));
    assert_true(chk(a, "c", "root", "/", ACL_WRITE));
    assert_true(chk(a, "c", "root", "#", ACL_SUBSCRIBE));
}

static void test_dollar_topics(void **state)
{
    struct acl *a = load(*state, "topic #\n"
                                 "topic +/broker/#\n"
                                 "pattern readwrite %c/#\n"
                                 "pattern read $SYS/client/%c\n"
                                 "user admin\n"
                                 "topic $SYS/#\n");
    assert_true(anon_read(a, "normal/x"));
    assert_false(anon_read(a, "$SYS/broker/x"));
    assert_false(anon_write(a, "$SYS/broker/x"));
    assert_false(anon_read(a, "$SYS"));
    assert_false(anon_sub(a, "$SYS/#"));
    assert_false(anon_sub(a, "$SYS/+"));
    assert_true(anon_sub(a, "#"));
    assert_true(anon_sub(a, "+/x"));

    assert_true(chk(a, "c", "admin", "$SYS/broker/x", ACL_READ));
    assert_true(chk(a, "c", "admin", "$SYS", ACL_READ));
    assert_true(chk(a, "c", "admin", "$SYS/#", ACL_SUBSCRIBE));
    assert_false(chk(a, "c", "admin", "$OTHER/x", ACL_READ));
    assert_false(chk(a, "c", "admin", "normal/x", ACL_READ));

    /* A pattern that does not start with '$' never reaches a '$' topic, even when the
     * client id is "$SYS". A pattern that does, does. */
    assert_true(chk(a, "c1", "u", "c1/x", ACL_WRITE));
    assert_false(chk(a, "$SYS", "u", "$SYS/x", ACL_READ));
    assert_false(chk(a, "$SYS", "u", "$SYS/#", ACL_SUBSCRIBE));
    assert_true(chk(a, "c1", "u", "$SYS/client/c1", ACL_READ));
    assert_false(chk(a, "c1", "u", "$SYS/client/c2", ACL_READ));
}

static void test_dollar_deny_placeholder(void **state)
{
    struct acl *a = load(*state, "topic $x/#\n"
                                 "topic #\n"
                                 "topic deny #\n" /* '#' never reaches '$' topics, even in a deny */
                                 "pattern deny %c/#\n");
    assert_true(chk(a, "c1", NULL, "$x/y", ACL_READ));
    assert_false(chk(a, "$x", NULL, "$x/y", ACL_READ));
    assert_false(chk(a, "c1", NULL, "a", ACL_READ));
}

static void test_subscribe_literal(void **state)
{
    struct acl *a = load(*state, "topic read a/#\n"
                                 "topic read b/+\n"
                                 "topic read c/d\n"
                                 "topic write w/#\n"
                                 "topic deny a/secret\n"
                                 "topic read e/#\n"
                                 "topic deny e/+\n");
    assert_true(anon_sub(a, "a/+"));
    assert_true(anon_sub(a, "a/#"));
    assert_true(anon_sub(a, "a"));
    assert_true(anon_sub(a, "a/+/x/#"));
    assert_false(anon_sub(a, "#"));
    assert_false(anon_sub(a, "+"));
    assert_false(anon_sub(a, "+/x"));

    /* b/+ matches any one level, the literal "+" and "#" included. */
    assert_true(anon_sub(a, "b/+"));
    assert_true(anon_sub(a, "b/x"));
    assert_true(anon_sub(a, "b/#"));
    assert_false(anon_sub(a, "b/+/c"));
    assert_false(anon_sub(a, "b"));

    assert_true(anon_sub(a, "c/d"));
    assert_false(anon_sub(a, "c/+"));
    assert_false(anon_sub(a, "c/#"));
    assert_false(anon_sub(a, "+/d"));

    assert_false(anon_sub(a, "w/#"));

    /* "deny a/secret" blocks exactly that filter, not the wider ones; the delivery check
     * withholds a/secret. */
    assert_false(anon_sub(a, "a/secret"));
    assert_false(anon_read(a, "a/secret"));
    assert_true(anon_sub(a, "a/+"));
    assert_true(anon_sub(a, "a/secret/x"));
    /* "deny e/+" matches the filters e/+ and e/# level for level. */
    assert_false(anon_sub(a, "e/+"));
    assert_false(anon_sub(a, "e/#"));
    assert_false(anon_sub(a, "e/x"));
    assert_true(anon_sub(a, "e/x/y"));
    assert_true(anon_sub(a, "e/+/#"));
}

static void test_bypass_client_id(void **state)
{
    struct acl *a = load(*state, "pattern readwrite devices/%c/#\n");
    static const enum acl_access all[] = {ACL_READ, ACL_WRITE, ACL_SUBSCRIBE};

    assert_true(chk(a, "c1", NULL, "devices/c1/x", ACL_WRITE));
    assert_true(chk(a, "c1", "u", "devices/c1", ACL_READ));
    assert_true(chk(a, "c1", NULL, "devices/c1/#", ACL_SUBSCRIBE));
    assert_false(chk(a, "c1", NULL, "devices/c2/x", ACL_WRITE));
    assert_false(chk(a, "c1", NULL, "devices/+/x", ACL_SUBSCRIBE));
    assert_false(chk(a, "c1", NULL, "devices/#", ACL_SUBSCRIBE));

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        enum acl_access x = all[i];
        assert_false(chk(a, "+", NULL, "devices/+/x", x));
        assert_false(chk(a, "+", NULL, "devices/+", x));
        assert_false(chk(a, "+", NULL, "devices/other/x", x));
        assert_false(chk(a, "#", NULL, "devices/#", x));
        assert_false(chk(a, "#", NULL, "devices/other/x", x));
        assert_false(chk(a, "a/b", NULL, "devices/a/b/x", x));
        assert_false(chk(a, "a/b", NULL, "devices/a/b", x));
        assert_false(chk(a, "a/b", NULL, "devices/a", x));
        assert_false(chk(a, "", NULL, "devices//x", x));
        assert_false(chk(a, "", NULL, "devices/", x));
        assert_false(chk(a, NULL, NULL, "devices//x", x));
        assert_false(chk(a, "x+", NULL, "devices/x+/y", x));
        assert_false(chk(a, "x#", NULL, "devices/x#/y", x));
    }
}

static void test_bypass_username(void **state)
{
    struct acl *a = load(*state, "pattern read users/%u\n");
    assert_true(chk(a, "c", "bob", "users/bob", ACL_READ));
    assert_true(chk(a, "c", "bob", "users/bob", ACL_SUBSCRIBE));
    assert_false(chk(a, "c", "bob", "users/bob", ACL_WRITE));
    assert_false(chk(a, "c", "bob", "users/bob/x", ACL_READ));
    assert_false(chk(a, "c", "bob", "users/+", ACL_SUBSCRIBE));

    assert_false(chk(a, "c", "a/b", "users/a/b", ACL_READ));
    assert_false(chk(a, "c", "a/b", "users/a", ACL_READ));
    assert_false(chk(a, "c", "#", "users/#", ACL_SUBSCRIBE));
    assert_false(chk(a, "c", "#", "users/x", ACL_READ));
    assert_false(chk(a, "c", "+", "users/+", ACL_SUBSCRIBE));
    assert_false(chk(a, "c", "+", "users/x", ACL_READ));
    assert_false(chk(a, "c", "", "users/", ACL_READ));
    assert_false(chk(a, "c", NULL, "users/", ACL_READ));
    assert_false(chk(a, "c", NULL, "users/c", ACL_READ));
}

static void test_subscribe_wider_than_grant(void **state)
{
    struct acl *a = load(*state, "pattern read devices/%c/x\n");
    assert_true(chk(a, "c1", NULL, "devices/c1/x", ACL_SUBSCRIBE));
    assert_false(chk(a, "c1", NULL, "#", ACL_SUBSCRIBE));
    assert_false(chk(a, "c1", NULL, "devices/+/x", ACL_SUBSCRIBE));
    assert_false(chk(a, "c1", NULL, "devices/#", ACL_SUBSCRIBE));
    assert_false(chk(a, "c1", NULL, "devices/c1/+", ACL_SUBSCRIBE));
    assert_false(chk(a, "c1", NULL, "devices/c1/#", ACL_SUBSCRIBE));
    assert_false(chk(a, "c1", NULL, "+/c1/x", ACL_SUBSCRIBE));
    assert_false(chk(a, "+", NULL, "devices/+/x", ACL_SUBSCRIBE));
}

static void test_deny_pattern_unusable_values(void **state)
{
    struct acl *a = load(*state, "topic readwrite devices/#\n"
                                 "topic readwrite open/#\n"
                                 "pattern deny devices/%c/secret\n"
                                 "pattern deny open/%u/private\n");
    assert_false(chk(a, "c1", NULL, "devices/c1/secret", ACL_READ));
    assert_true(chk(a, "c1", NULL, "devices/c2/secret", ACL_READ));
    assert_true(chk(a, "c1", NULL, "devices/c1/x", ACL_READ));

    /* '/' or '#': the placeholder stands for every level below, so the literal expansion
     * devices/a/b/secret is denied, and so is the rest of that subtree. */
    assert_false(chk(a, "a/b", NULL, "devices/a/b/secret", ACL_READ));
    assert_false(chk(a, "a/b", NULL, "devices/a/b/secret", ACL_WRITE));
    assert_false(chk(a, "a/b", NULL, "devices/a/b/secret", ACL_SUBSCRIBE));
    assert_false(chk(a, "a/b", NULL, "devices/zzz", ACL_READ));
    assert_true(chk(a, "a/b", NULL, "devices", ACL_READ));
    assert_true(chk(a, "a/b", NULL, "open/x", ACL_READ));
    assert_false(chk(a, "#", NULL, "devices/x/y", ACL_READ));
    assert_false(chk(a, "x/#", NULL, "devices/x/secret", ACL_READ));

    /* '+', empty or absent: any one level. */
    assert_false(chk(a, "+", NULL, "devices/x/secret", ACL_READ));
    assert_false(chk(a, "+", NULL, "devices/+/secret", ACL_SUBSCRIBE));
    assert_true(chk(a, "+", NULL, "devices/x/other", ACL_READ));
    assert_false(chk(a, "", NULL, "devices/x/secret", ACL_READ));
    assert_true(chk(a, "", NULL, "devices/x/other", ACL_READ));
    assert_false(chk(a, NULL, NULL, "devices//secret", ACL_WRITE));

    /* An anonymous client has no username: deny patterns with %u still apply. */
    assert_false(chk(a, "c1", NULL, "open/x/private", ACL_READ));
    assert_true(chk(a, "c1", NULL, "open/x/public", ACL_READ));
}

static void test_syntax_forms(void **state)
{
    struct acl *a = load(*state, "# a comment\n"
                                 "   # an indented comment\n"
                                 "\n"
                                 "   \t  \n"
                                 " \t topic  \t read   a b c  \r\n"
                                 "topic read\n"
                                 "topic deny\n"
                                 "topic readwrite my topic/with space\n"
                                 "topic read /x//y\n"
                                 "topic %c/x\n"
                                 "pattern read public/#\n"
                                 "user   John Smith  \r\n"
                                 "topic john/#\n"
                                 "user #1\n"
                                 "topic hash/#\n"
                                 "user topic\n"
                                 "topic t/#");
    assert_true(anon_read(a, "a b c"));
    assert_false(anon_write(a, "a b c"));
    assert_false(anon_read(a, "a b c  "));
    assert_true(anon_read(a, "read"));
    assert_true(anon_write(a, "read"));
    assert_true(anon_write(a, "deny"));
    assert_true(anon_write(a, "my topic/with space"));
    assert_true(anon_read(a, "/x//y"));
    assert_false(anon_read(a, "/x/y"));

    /* %c is only substituted in patterns. */
    assert_true(chk(a, "c1", NULL, "%c/x", ACL_READ));
    assert_false(chk(a, "c1", NULL, "c1/x", ACL_READ));

    assert_true(chk(a, "c1", NULL, "public/x", ACL_READ));
    assert_true(chk(a, "c1", "someone", "public/x", ACL_READ));
    assert_true(chk(a, "c1", "John Smith", "john/x", ACL_READ));
    assert_false(chk(a, "c1", "John", "john/x", ACL_READ));
    assert_true(chk(a, "c1", "#1", "hash/x", ACL_READ));
    assert_true(chk(a, "c1", "topic", "t/x", ACL_READ)); /* last line without a newline */
}

static void test_parse_errors(void **state)
{
    struct fx *f = *state;
    expect_error(f, "bogus a/b\n", 1, "unknown keyword \"bogus\" (topic, pattern or user)");
    expect_error(f, "Topic a\n", 1, "unknown keyword \"Topic\" (topic, pattern or user)");
    expect_error(f, "topic a\n  users bob\n", 2,
                 "unknown keyword \"users\" (topic, pattern or user)");
    expect_error(f, "# c\n\ntopic\n", 3, "topic needs a topic");
    expect_error(f, "topic  \t \r\n", 1, "topic needs a topic");
    expect_error(f, "pattern   \n", 1, "pattern needs a topic");
    expect_error(f, "user\n", 1, "user needs a name");
    expect_error(f, "user  \t \n", 1, "user needs a name");
    expect_error(f, "topic reed a/b\n", 1,
                 "unknown access \"reed\" (read, write, readwrite or deny)");
    expect_error(f, "topic a b\n", 1, "unknown access \"a\" (read, write, readwrite or deny)");
    expect_error(f, "pattern READ a\n", 1,
                 "unknown access \"READ\" (read, write, readwrite or deny)");
    expect_error(f, "topic a/#/b\n", 1, "invalid topic \"a/#/b\": '#' must be the last level");
    expect_error(f, "topic deny #/a\n", 1, "invalid topic \"#/a\": '#' must be the last level");
    expect_error(f, "topic a+\n", 1, "invalid topic \"a+\": '+' and '#' must fill a whole level");
    expect_error(f, "topic read a/b#\n", 1,
                 "invalid topic \"a/b#\": '+' and '#' must fill a whole level");
    expect_error(f, "user u\npattern write a/++/c\n", 2,
                 "invalid topic \"a/++/c\": '+' and '#' must fill a whole level");
    expect_error(f, "pattern a/x%c/b\n", 1,
                 "invalid pattern \"a/x%c/b\": %c and %u must fill a whole level");
    expect_error(f, "pattern read %u%c\n", 1,
                 "invalid pattern \"%u%c\": %c and %u must fill a whole level");
    expect_error(f, "pattern read a/%u-x\n", 1,
                 "invalid pattern \"a/%u-x\": %c and %u must fill a whole level");
    expect_error(f, "topic a\r\ntopic b\r\nfoo\r\n", 3,
                 "unknown keyword \"foo\" (topic, pattern or user)");

    static const char nul[] = "topic a\ntopic a\0b\n";
    expect_error_bytes(f, nul, sizeof(nul) - 1, 2, "NUL byte in line");

    size_t big = 65536;
    char *s = malloc(big + 16);
    assert_non_null(s);
    memcpy(s, "topic ", 6);
    memset(s + 6, 'x', big);
    memcpy(s + 6 + big, "\n", 2);
    expect_error(f, s, 1, "topic longer than 65535 bytes");
    /* Exactly the limit loads. */
    s[6 + big - 1] = '\n';
    s[6 + big] = '\0';
    s[6] = 'y';
    struct acl *a = load(f, s);
    s[6 + big - 1] = '\0';
    assert_true(anon_read(a, s + 6));
    free(s);
}

static void test_file_errors(void **state)
{
    struct fx *f = *state;
    char want[600];

    const char *missing = track(f, "missing.acl");
    assert_null(acl_load(missing, f->err, sizeof(f->err)));
    (void)snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", missing);
    assert_string_equal(f->err, want);

    assert_null(acl_load(f->dir, f->err, sizeof(f->err)));
    (void)snprintf(want, sizeof(want), "%s: read error: Is a directory", f->dir);
    assert_string_equal(f->err, want);

    /* A short or absent error buffer is never overrun. */
    const char *bad = write_file(f, "bad.acl", "nonsense\n");
    char tiny[8];
    memset(tiny, 'Z', sizeof(tiny));
    assert_null(acl_load(bad, tiny, 4));
    assert_int_equal(strlen(tiny), 3);
    assert_int_equal(tiny[4], 'Z');
    assert_null(acl_load(bad, NULL, 0));
    assert_null(acl_load(missing, NULL, 0));
}

static void test_symlinks(void **state)
{
    struct fx *f = *state;
    const char *real = write_file(f, "real.acl", "topic read a/#\n");
    const char *link1 = track(f, "link1.acl");
    const char *link2 = track(f, "link2.acl");
    assert_int_equal(symlink(real, link1), 0);
    assert_int_equal(symlink("link1.acl", link2), 0); /* relative, and a chain */
    struct acl *a = acl_load(link2, f->err, sizeof(f->err));
    if (!a)
        fail_msg("acl_load: %s", f->err);
    assert_true(anon_read(a, "a/b"));
    assert_false(anon_write(a, "a/b"));
    acl_free(&a);
    assert_null(a);
}

static void test_empty_file(void **state)
{
    struct acl *a = load(*state, "");
    assert_false(anon_read(a, "a"));
    assert_false(chk(a, "c", "u", "a", ACL_WRITE));
    a = load(*state, "# only comments\n\n");
    assert_false(anon_sub(a, "#"));

    struct acl *none = NULL;
    acl_free(&none);
    assert_null(none);
}

static void test_many_users(void **state)
{
    enum { N = 10000 };
    size_t cap = (size_t)N * 64 + 64;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(s + len, cap - len, "user u%d\ntopic readwrite home/u%d/#\n", i, i);
    len += (size_t)snprintf(s + len, cap - len, "pattern read all/%%u\n");
    assert_true(len < cap);
    struct acl *a = load(*state, s);
    free(s);

    char name[32], own[64], other[64], pat[64];
    for (int i = 0; i < N; i++) {
        (void)snprintf(name, sizeof(name), "u%d", i);
        (void)snprintf(own, sizeof(own), "home/u%d/x", i);
        (void)snprintf(other, sizeof(other), "home/u%d/x", (i + 1) % N);
        (void)snprintf(pat, sizeof(pat), "all/u%d", i);
        assert_true(chk(a, "c", name, own, ACL_WRITE));
        assert_false(chk(a, "c", name, other, ACL_WRITE));
        assert_true(chk(a, "c", name, pat, ACL_READ));
    }
    assert_false(chk(a, "c", "u10000", "home/u10000/x", ACL_READ));
    assert_false(chk(a, "c", NULL, "home/u1/x", ACL_READ));
}

static void test_deep_topics(void **state)
{
    struct acl *a = load(*state, "topic read a/#\n"
                                 "topic read +/+\n"
                                 "topic deny a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/"
                                 "a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/z\n");
    enum { LEVELS = 20000 };
    char *t = malloc((size_t)LEVELS * 2);
    assert_non_null(t);
    for (size_t i = 0; i < LEVELS; i++) {
        t[2 * i] = 'a';
        t[2 * i + 1] = '/';
    }
    size_t len = LEVELS * 2 - 1;
    assert_true(acl_check(a, "c", NULL, t, len, ACL_READ));
    t[0] = 'b';
    assert_false(acl_check(a, "c", NULL, t, len, ACL_READ));
    t[0] = 'a';
    t[80] = 'z'; /* level 41: the deny's last level */
    t[81] = '\0';
    assert_false(acl_check(a, "c", NULL, t, 81, ACL_READ));
    assert_true(acl_check(a, "c", NULL, t, 79, ACL_READ));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_access_words, setup, teardown),
        cmocka_unit_test_setup_teardown(test_topic_len_is_respected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anonymous_vs_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pattern_in_user_block_applies_to_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deny_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wildcards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dollar_topics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dollar_deny_placeholder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscribe_literal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bypass_client_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bypass_username, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscribe_wider_than_grant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deny_pattern_unusable_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syntax_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deep_topics, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

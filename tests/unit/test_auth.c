/*
 * Unit tests for node/auth: fixed vectors written by Debian's mosquitto_passwd 2.0.11 ($7$
 * with 101 and 1000 iterations, $6$) and by the argon2 CLI (argon2id v=19 and v=16, one and
 * two lanes); comments, blank lines, CRLF and blanks around fields; every load error with its
 * FILE:LINE and without secrets; lookups among 10,000 users; files reached through symlinks;
 * auth_hash round trips; async checks on a real loop, including an unref while a check runs;
 * and that an unknown user costs a hash too. Every loop test ends with uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "node/auth.h"
#include "node/err.h"

/* cmocka.h needs the headers above first, so it stays out of include sorting. */
/* clang-format off */
#include <cmocka.h>
/* clang-format on */

/* mosquitto_passwd -c -b pw alice 'correct horse' (Debian 2.0.11) */
#define V_ALICE                                                                                    \
    "alice:$7$101$/2xLGqT119gVaH2U$1EBdX9ck8RYvzmlBIADLQv20CXb/cS1U+B0bUfs/Bz/"                    \
    "FIIJEwJrWK24vJAy32Xwdksg2Cx3EJVkbpyCOH0Zhyw=="
/* mosquitto_passwd -H sha512 -c -b pw bob b0b-pw */
#define V_BOB                                                                                      \
    "bob:$6$AgLdfCjkbm01D/L/$65Og2eGYq4BTBT/xt//SbmXKbKNnUsM89ymsoaQ7slU6ALsh3P+nQsmRUcMhd4CQ+0Ze" \
    "gRK/rxWNtM3OK+j2GA=="
/* mosquitto_passwd -H sha512-pbkdf2 -I 1000 -c -b pw carol 'ca:rol pw' */
#define V_CAROL                                                                                    \
    "carol:$7$1000$1rFfP/m6XKRkkkav$fQq4+R30rfSEd7M4CgMEBtFIMRr0HjTYab0qansEY36PrtQWqHv9xvDobIfTa" \
    "+6h1YKwHAX24kxPkVTBiIp7Vg=="
/* echo -n 'dave pw' | argon2 saltsalt12 -id -e -t 2 -k 1024 */
#define V_DAVE                                                                                     \
    "dave:$argon2id$v=19$m=1024,t=2,p=1$c2FsdHNhbHQxMg$rlik29kJaeOSrOZ6+"                          \
    "pAukpji8pTMQuTLkCDULgYWQXY"
/* echo -n eve | argon2 anothersalt -id -e -v 10 -t 1 -k 256 */
#define V_EVE                                                                                      \
    "eve:$argon2id$v=16$m=256,t=1,p=1$YW5vdGhlcnNhbHQ$VFL9jvWODjLBjsbR5RNDXRxBTMjJUqx0BxIKexYvm9c"
/* echo -n p | argon2 multilane -id -e -t 1 -k 64 -p 2 */
#define V_FRANK                                                                                    \
    "frank:$argon2id$v=19$m=64,t=1,p=2$bXVsdGlsYW5l$w/xOL92IED0jFgyMP5iI5zKiNHDactg5rBnEnwXJLNw"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_auth.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes n bytes of text to dir/name; returns the path (static storage, one at a time). */
static const char *put(const char *name, const char *text, size_t n)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    return path;
}

static const char *put_str(const char *name, const char *text)
{
    return put(name, text, strlen(text));
}

static struct auth *load_ok(const char *path)
{
    char err[512] = "";
    struct auth *a = auth_load(path, err, sizeof(err));
    if (!a)
        fail_msg("auth_load(%s): %s", path, err);
    return a;
}

static int check(const struct auth *a, const char *user, const char *pw)
{
    return auth_check_sync(a, user, strlen(user), (const uint8_t *)pw, strlen(pw));
}

static void test_mosquitto_and_argon2_vectors(void **state)
{
    (void)state;
    const char *path =
        put_str("pw", V_ALICE "\n" V_BOB "\n" V_CAROL "\n" V_DAVE "\n" V_EVE "\n" V_FRANK "\n");
    struct auth *a = load_ok(path);
    assert_int_equal(auth_count(a), 6);

    assert_int_equal(check(a, "alice", "correct horse"), 0);
    assert_int_equal(check(a, "bob", "b0b-pw"), 0);
    assert_int_equal(check(a, "carol", "ca:rol pw"), 0);
    assert_int_equal(check(a, "dave", "dave pw"), 0);
    assert_int_equal(check(a, "eve", "eve"), 0);
    assert_int_equal(check(a, "frank", "p"), 0);

    assert_int_equal(check(a, "alice", "correct horsE"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "alice", "correct horse "), ERR_BAD_AUTH);
    assert_int_equal(check(a, "alice", ""), ERR_BAD_AUTH);
    assert_int_equal(check(a, "bob", "b0b-p"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "carol", "ca"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "dave", "dave pW"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "eve", ""), ERR_BAD_AUTH);
    assert_int_equal(check(a, "frank", "q"), ERR_BAD_AUTH);
    /* Passwords of other users, and names that are prefixes or extensions of real ones. */
    assert_int_equal(check(a, "bob", "correct horse"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "mallory", "correct horse"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "alic", "correct horse"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "alicee", "correct horse"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "", "correct horse"), ERR_BAD_AUTH);
    /* The name is compared with its length: an embedded NUL is not the end of it. */
    assert_int_equal(auth_check_sync(a, "alice\0x", 7, (const uint8_t *)"correct horse", 13),
                     ERR_BAD_AUTH);
    /* So is the password: mosquitto's C strings would stop at the NUL, we do not. */
    assert_int_equal(auth_check_sync(a, "bob", 3, (const uint8_t *)"b0b-pw\0z", 8), ERR_BAD_AUTH);
    auth_unref(&a);
    assert_null(a);
}

static void test_comments_blank_lines_crlf(void **state)
{
    (void)state;
    const char *path =
        put_str("pw", "# made by hand\n"
                      "\n"
                      "   \t\r\n"
                      "  # an indented comment\r\n" V_ALICE "\r\n"
                      " " V_BOB " \t\n"
                      "carol :  $7$1000$1rFfP/m6XKRkkkav$fQq4+R30rfSEd7M4CgMEBtFIMRr0"
                      "HjTYab0qansEY36PrtQWqHv9xvDobIfTa+6h1YKwHAX24kxPkVTBiIp7Vg=="
                      "\n" V_EVE);
    struct auth *a = load_ok(path);
    assert_int_equal(auth_count(a), 4);
    assert_int_equal(check(a, "alice", "correct horse"), 0);
    assert_int_equal(check(a, "bob", "b0b-pw"), 0);
    assert_int_equal(check(a, "carol", "ca:rol pw"), 0);
    assert_int_equal(check(a, "eve", "eve"), 0); /* last line without a newline */
    assert_int_equal(check(a, "# made by hand", ""), ERR_BAD_AUTH);
    auth_unref(&a);
}

static void test_empty_and_comment_only_files(void **state)
{
    (void)state;
    struct auth *a = load_ok(put_str("empty", ""));
    assert_int_equal(auth_count(a), 0);
    assert_int_equal(check(a, "alice", "correct horse"), ERR_BAD_AUTH);
    auth_unref(&a);

    a = load_ok(put_str("comments", "# nobody yet\n\n"));
    assert_int_equal(auth_count(a), 0);
    assert_int_equal(check(a, "", ""), ERR_BAD_AUTH);
    auth_unref(&a);
}

struct bad_case {
    const char *text;
    const char *want;   /* after "PATH:" */
    const char *secret; /* must not appear in the message */
};

static void expect_error(const char *text, size_t n, const char *want, const char *secret)
{
    const char *path = put("bad", text, n);
    char err[512] = "";
    char full[600];
    struct auth *a = auth_load(path, err, sizeof(err));
    assert_null(a);
    snprintf(full, sizeof(full), "%s:%s", path, want);
    if (strcmp(err, full) != 0)
        fail_msg("for %.60s:\n got  %s\n want %s", text, err, full);
    if (secret)
        assert_null(strstr(err, secret));
}

#define H7                                                                                         \
    "$7$101$/2xLGqT119gVaH2U$1EBdX9ck8RYvzmlBIADLQv20CXb/cS1U+B0bUfs/Bz/"                          \
    "FIIJEwJrWK24vJAy32Xwdksg2Cx3EJVkbpyCOH0Zhyw=="
#define SALT12 "AgLdfCjkbm01D/L/"
#define HASH64                                                                                     \
    "65Og2eGYq4BTBT/xt//SbmXKbKNnUsM89ymsoaQ7slU6ALsh3P+nQsmRUcMhd4CQ+0ZegRK/rxWNtM3OK+j2GA=="
#define ARGS "c2FsdHNhbHQxMg$rlik29kJaeOSrOZ6+pAukpji8pTMQuTLkCDULgYWQXY"

static void test_load_errors(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"alice\n", "1: expected 'user:hash'", NULL},
        {"# c\n\nbob:$5$abc$def\n", "3: user 'bob': unsupported hash '$5$'", "abc"},
        {"bob:$argon2i$v=19$m=64,t=1,p=1$" ARGS "\n", "1: user 'bob': unsupported hash '$argon2i$'",
         "rlik"},
        {"bob:hunter2\n",
         "1: user 'bob': password is not hashed (convert the file with shoal-passwd -U)",
         "hunter2"},
        {"bob:$hunter2\n", "1: user 'bob': unsupported hash", "hunter2"},
        {"bob:$Hunter$2\n", "1: user 'bob': unsupported hash", "unter"},
        {"bob:\n", "1: user 'bob': no password hash", NULL},
        {":" H7 "\n", "1: empty user name", NULL},
        {"  :" H7 "\n", "1: empty user name", NULL},
        {"bob:$7$101$short$hash\n",
         "1: user 'bob': malformed $7$ hash (or iterations not in 1..10000000)", "short"},
        {"bob:$7$0$" SALT12 "$" HASH64 "\n",
         "1: user 'bob': malformed $7$ hash (or iterations not in 1..10000000)", HASH64},
        {"bob:$7$10000001$" SALT12 "$" HASH64 "\n",
         "1: user 'bob': malformed $7$ hash (or iterations not in 1..10000000)", NULL},
        {"bob:$7$-5$" SALT12 "$" HASH64 "\n",
         "1: user 'bob': malformed $7$ hash (or iterations not in 1..10000000)", NULL},
        {"bob:$7$101$" SALT12 "$" HASH64 "$\n",
         "1: user 'bob': malformed $7$ hash (or iterations not in 1..10000000)", NULL},
        {"bob:$6$" SALT12 "\n", "1: user 'bob': malformed $6$ hash", SALT12},
        {"bob:$6$" SALT12 "$" HASH64 "$x\n", "1: user 'bob': malformed $6$ hash", NULL},
        {"bob:$6$$" HASH64 "\n", "1: user 'bob': malformed $6$ hash", NULL},
        /* a 16-byte salt: mosquitto reads 12 or 64 only */
        {"bob:$6$AgLdfCjkbm01D/L/AgLdfA==$" HASH64 "\n", "1: user 'bob': malformed $6$ hash", NULL},
        /* 63-byte hash */
        {"bob:$6$" SALT12 "$65Og2eGYq4BTBT/xt//SbmXKbKNnUsM89ymsoaQ7slU6ALsh3P+nQsmRUcMhd4CQ+0Ze"
         "gRK/rxWNtM3OK+j2\n",
         "1: user 'bob': malformed $6$ hash", NULL},
        {"bob:$6$" SALT12 "$not*base64\n", "1: user 'bob': malformed $6$ hash", NULL},
        {"alice:" H7 "\nbob:" H7 "\nalice:" H7 "\n", "3: duplicate user 'alice' (first on line 1)",
         NULL},
        {"b:" H7 "\na:" H7 "\nb:" H7 "\na:" H7 "\n", "3: duplicate user 'b' (first on line 1)",
         NULL},
        {"bob:" H7 "\n bob :" H7 "\n", "2: duplicate user 'bob' (first on line 1)", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error(cases[i].text, strlen(cases[i].text), cases[i].want, cases[i].secret);

    static const char nul[] = "bob:" H7 "\nal\0ice:" H7 "\n";
    expect_error(nul, sizeof(nul) - 1, "2: line contains a NUL byte", NULL);
}

static void test_load_errors_argon2id(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "v=19$m=1024,t=0,p=1$" ARGS,     /* no passes */
        "v=19$m=1024,t=1,p=0$" ARGS,     /* no lanes */
        "v=19$m=0,t=1,p=1$" ARGS,        /* no memory */
        "v=19$m=8,t=1,p=2$" ARGS,        /* under 8 KiB per lane */
        "v=18$m=1024,t=1,p=1$" ARGS,     /* unknown version */
        "v=19$m=01024,t=1,p=1$" ARGS,    /* leading zero (libargon2 refuses it) */
        "v=19$m=1024,t=+1,p=1$" ARGS,    /* sign */
        "v=19$t=1,m=1024,p=1$" ARGS,     /* order */
        "v=19$m=1024,t=1$" ARGS,         /* missing p */
        "v=19$m=1024,t=1,p=1,x=2$" ARGS, /* extra parameter */
        "v=19$m=4194305,t=1,p=1$" ARGS,  /* over 4 GiB */
        "v=19$m=1024,t=1001,p=1$" ARGS,  /* over the cap on passes */
        "v=19$m=1024,t=1,p=65$" ARGS,    /* over the cap on lanes */
        "v=19$m=1024,t=1,p=1$c2FsdA$rlik29kJaeOSrOZ6+pAukpji8pTMQuTLkCDULgYWQXY", /* 4-byte salt */
        "v=19$m=1024,t=1,p=1$c2FsdHNhbHQxMg$rlik",                                /* 3-byte hash */
        "v=19$m=1024,t=1,p=1$c2FsdHNhbHQxMh$rlik29kJaeOSrOZ6+pAukpji8pTMQuTLkCDULgYWQXY", /* bits */
        "v=19$m=1024,t=1,p=1$c2FsdHNhbHQxMg==$rlik29kJaeOSrOZ6+pAukpji8pTMQuTLkCDULgYWQXY", /* pad
                                                                                             */
        "v=19$m=1024,t=1,p=1$c2FsdHNhbHQxMg",                               /* no hash */
        "v=19$m=1024,t=1,p=1$" ARGS "$x",                                   /* extra */
        "v=19$m=1024,t=1,p=1$$rlik29kJaeOSrOZ6+pAukpji8pTMQuTLkCDULgYWQXY", /* empty salt */
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        char text[300];
        snprintf(text, sizeof(text), "# x\nbob:$argon2id$%s\n", bodies[i]);
        expect_error(text, strlen(text),
                     "2: user 'bob': malformed $argon2id$ hash (or cost over "
                     "m=4194304,t=1000,p=64)",
                     "rlik");
    }
    /* The version is optional in a PHC string (it then means 0x10). */
    const char *path = put_str("pw", "eve:$argon2id$m=256,t=1,p=1$YW5vdGhlcnNhbHQ$"
                                     "VFL9jvWODjLBjsbR5RNDXRxBTMjJUqx0BxIKexYvm9c\n");
    struct auth *a = load_ok(path);
    assert_int_equal(check(a, "eve", "eve"), 0);
    auth_unref(&a);
}

static void test_load_errors_sizes_and_files(void **state)
{
    (void)state;
    char err[512];
    char want[600];

    /* A user name over 65535 bytes. */
    size_t n = 65536;
    char *text = malloc(70000 + 200);
    memset(text, 'u', n);
    snprintf(text + n, 200, ":%s\n", H7);
    expect_error(text, strlen(text), "1: user name longer than 65535 bytes", NULL);
    /* A line far too long to be a user and a hash. */
    memset(text, 'u', 10);
    text[10] = ':';
    text[11] = '$';
    memset(text + 12, 'x', 70000);
    text[70012] = '\n';
    expect_error(text, 70013, "1: line longer than 66560 bytes", "xxxx");
    /* A hash over 1024 bytes on a line of acceptable length. */
    memcpy(text, "bob:$7$", 7);
    memset(text + 7, '1', 1100);
    text[1107] = '\n';
    expect_error(text, 1108, "1: user 'bob': hash longer than 1024 bytes", "1111");
    free(text);

    char path[256];
    snprintf(path, sizeof(path), "%s/missing", dir);
    snprintf(want, sizeof(want), "%s/missing: No such file or directory", dir);
    assert_null(auth_load(path, err, sizeof(err)));
    assert_string_equal(err, want);

    snprintf(path, sizeof(path), "%s", dir);
    snprintf(want, sizeof(want), "%s: is a directory", dir);
    assert_null(auth_load(path, err, sizeof(err)));
    assert_string_equal(err, want);

    /* A NULL or tiny error buffer is fine. */
    assert_null(auth_load(path, NULL, 0));
    err[0] = 'x';
    assert_null(auth_load(path, err, 1));
    assert_int_equal(err[0], '\0');
}

static void test_symlinks(void **state)
{
    (void)state;
    char target[256], data[256], link1[256], link2[256];
    /* Kubernetes mounts: pw -> ..data/pw, ..data -> ..2024_01_01/ */
    snprintf(data, sizeof(data), "%s/..2024_01_01", dir);
    assert_int_equal(mkdir(data, 0700), 0);
    snprintf(target, sizeof(target), "%s/..2024_01_01/pw", dir);
    FILE *f = fopen(target, "w");
    assert_non_null(f);
    fputs(V_ALICE "\n", f);
    assert_int_equal(fclose(f), 0);
    snprintf(link1, sizeof(link1), "%s/..data", dir);
    assert_int_equal(symlink("..2024_01_01", link1), 0);
    snprintf(link2, sizeof(link2), "%s/pw", dir);
    assert_int_equal(symlink("..data/pw", link2), 0);
    /* Read-only, as a mounted Secret is: loading must not need more. */
    assert_int_equal(chmod(target, 0400), 0);

    struct auth *a = load_ok(link2);
    assert_int_equal(auth_count(a), 1);
    assert_int_equal(check(a, "alice", "correct horse"), 0);
    auth_unref(&a);

    struct stat st;
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0400);

    char dangling[256], err[512];
    snprintf(dangling, sizeof(dangling), "%s/dangling", dir);
    assert_int_equal(symlink("nowhere", dangling), 0);
    assert_null(auth_load(dangling, err, sizeof(err)));
    assert_non_null(strstr(err, "No such file or directory"));
}

static void test_many_users(void **state)
{
    (void)state;
    enum { N = 10000 };
    char hash[AUTH_HASH_CAP];
    assert_int_equal(auth_hash(AUTH_HASH_SHA512, 0, (const uint8_t *)"pw", 2, hash, sizeof(hash)),
                     0);
    char path[256];
    snprintf(path, sizeof(path), "%s/many", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = N - 1; i >= 0; i--) /* reverse order: the loader sorts */
        fprintf(f, "user%05d:%s\n", i * 7 % N, hash);
    assert_int_equal(fclose(f), 0);

    struct auth *a = load_ok(path);
    assert_int_equal(auth_count(a), N);
    for (int i = 0; i < N; i += 97) {
        char u[16];
        snprintf(u, sizeof(u), "user%05d", i);
        assert_int_equal(check(a, u, "pw"), 0);
        assert_int_equal(check(a, u, "pW"), ERR_BAD_AUTH);
    }
    assert_int_equal(check(a, "user00000", "pw"), 0);
    assert_int_equal(check(a, "user09999", "pw"), 0);
    assert_int_equal(check(a, "user10000", "pw"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "user", "pw"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "aaa", "pw"), ERR_BAD_AUTH);
    assert_int_equal(check(a, "zzz", "pw"), ERR_BAD_AUTH);
    auth_unref(&a);
}

static void test_hash_round_trip(void **state)
{
    (void)state;
    static const struct {
        enum auth_hash_kind kind;
        uint32_t cost;
        const char *prefix;
    } kinds[] = {
        {AUTH_HASH_SHA512, 0, "$6$"},
        {AUTH_HASH_SHA512_PBKDF2, AUTH_PBKDF2_DEFAULT_ITER, "$7$101$"},
        {AUTH_HASH_SHA512_PBKDF2, 2000, "$7$2000$"},
        {AUTH_HASH_ARGON2ID, AUTH_ARGON2ID_DEFAULT_T, "$argon2id$v=19$m=47104,t=1,p=1$"},
        {AUTH_HASH_ARGON2ID, 2, "$argon2id$v=19$m=47104,t=2,p=1$"},
    };
    char hash[AUTH_HASH_CAP], other[AUTH_HASH_CAP], line[AUTH_HASH_CAP + 16];
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const uint8_t *pw = (const uint8_t *)"s3cret:with colon";
        assert_int_equal(auth_hash(kinds[i].kind, kinds[i].cost, pw, 17, hash, sizeof(hash)), 0);
        assert_int_equal(strncmp(hash, kinds[i].prefix, strlen(kinds[i].prefix)), 0);
        assert_true(auth_hash_is_valid(hash, strlen(hash)));
        /* a fresh salt each time */
        assert_int_equal(auth_hash(kinds[i].kind, kinds[i].cost, pw, 17, other, sizeof(other)), 0);
        assert_string_not_equal(hash, other);

        snprintf(line, sizeof(line), "zoe:%s\n", hash);
        struct auth *a = load_ok(put_str("rt", line));
        assert_int_equal(auth_check_sync(a, "zoe", 3, pw, 17), 0);
        assert_int_equal(auth_check_sync(a, "zoe", 3, pw, 16), ERR_BAD_AUTH);
        assert_int_equal(auth_check_sync(a, "zoe", 3, pw, 0), ERR_BAD_AUTH);
        auth_unref(&a);
    }
    /* $6$ and $7$ salts are 12 bytes (16 base64 digits), as mosquitto 2.0 requires. */
    assert_int_equal(
        auth_hash(AUTH_HASH_SHA512_PBKDF2, 101, (const uint8_t *)"x", 1, hash, sizeof(hash)), 0);
    assert_int_equal(strlen(hash), strlen("$7$101$") + 16 + 1 + 88);
    assert_int_equal(strchr(hash + 7, '$') - (hash + 7), 16);

    assert_int_equal(auth_hash(AUTH_HASH_SHA512_PBKDF2, 0, (const uint8_t *)"x", 1, hash, 512),
                     ERR_INVALID);
    assert_int_equal(auth_hash(AUTH_HASH_SHA512_PBKDF2, AUTH_PBKDF2_MAX_ITER + 1,
                               (const uint8_t *)"x", 1, hash, 512),
                     ERR_INVALID);
    assert_int_equal(auth_hash(AUTH_HASH_ARGON2ID, 0, (const uint8_t *)"x", 1, hash, 512),
                     ERR_INVALID);
    assert_int_equal(
        auth_hash(AUTH_HASH_ARGON2ID, AUTH_ARGON2ID_MAX_T + 1, (const uint8_t *)"x", 1, hash, 512),
        ERR_INVALID);
    assert_int_equal(auth_hash((enum auth_hash_kind)5, 1, (const uint8_t *)"x", 1, hash, 512),
                     ERR_INVALID);
    assert_int_equal(auth_hash(AUTH_HASH_SHA512, 0, (const uint8_t *)"x", 1, hash, 50),
                     ERR_INVALID);
    assert_int_equal(auth_hash(AUTH_HASH_ARGON2ID, 1, (const uint8_t *)"x", 1, hash, 100),
                     ERR_INVALID);
}

static void test_hash_is_valid(void **state)
{
    (void)state;
    static const char *const good[] = {
        H7,
        ("$6$" SALT12 "$" HASH64),
        ("$argon2id$v=19$m=1024,t=2,p=1$" ARGS),
    };
    static const char *const bad[] = {
        "",
        "plain",
        "$",
        "$6$",
        "$7$101$" SALT12,
        "$argon2i$v=19$m=1024,t=2,p=1$" ARGS,
        "$argon2id$v=19$m=1024,t=2,p=1$",
        "$1$abc$def",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(auth_hash_is_valid(good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(auth_hash_is_valid(bad[i], strlen(bad[i])));
    /* length-bounded: the valid prefix of a longer string is judged on its own */
    assert_true(auth_hash_is_valid(H7 "trailing", strlen(H7)));
}

/* ---- async ------------------------------------------------------------------------------- */

struct outcome {
    int calls;
    int result;
};

static void on_done(void *ctx, int result)
{
    struct outcome *o = ctx;
    o->calls++;
    o->result = result;
}

static void test_async_checks(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct auth *a = load_ok(put_str("pw", V_ALICE "\n" V_BOB "\n" V_DAVE "\n"));

    struct outcome o[6] = {{0}};
    char pw[32];
    snprintf(pw, sizeof(pw), "correct horse");
    assert_int_equal(
        auth_check(&loop, a, "alice", 5, (const uint8_t *)pw, strlen(pw), on_done, &o[0]), 0);
    /* The password is copied: the caller may reuse its buffer at once. */
    memset(pw, 'x', sizeof(pw));
    assert_int_equal(auth_check(&loop, a, "alice", 5, (const uint8_t *)"wrong", 5, on_done, &o[1]),
                     0);
    assert_int_equal(auth_check(&loop, a, "bob", 3, (const uint8_t *)"b0b-pw", 6, on_done, &o[2]),
                     0);
    assert_int_equal(auth_check(&loop, a, "dave", 4, (const uint8_t *)"dave pw", 7, on_done, &o[3]),
                     0);
    assert_int_equal(
        auth_check(&loop, a, "nobody", 6, (const uint8_t *)"b0b-pw", 6, on_done, &o[4]), 0);
    assert_int_equal(auth_check(&loop, a, "", 0, (const uint8_t *)"", 0, on_done, &o[5]), 0);
    /* Never called back from inside the call. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(o[i].calls, 0);

    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    static const int want[6] = {0, ERR_BAD_AUTH, 0, 0, ERR_BAD_AUTH, ERR_BAD_AUTH};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].result, want[i]);
    }

    /* Over-long inputs are refused up front, with no callback. */
    static uint8_t big[65536];
    struct outcome none = {0};
    assert_int_equal(auth_check(&loop, a, "alice", 5, big, sizeof(big), on_done, &none),
                     ERR_INVALID);
    assert_int_equal(auth_check(&loop, a, (const char *)big, sizeof(big), big, 1, on_done, &none),
                     ERR_INVALID);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(none.calls, 0);

    auth_unref(&a);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A reload drops the old struct auth while checks still run against it. */
static void test_unref_while_checking(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct auth *a = load_ok(put_str("pw", V_ALICE "\n" V_DAVE "\n"));
    struct auth *extra = auth_ref(a);
    assert_ptr_equal(extra, a);
    auth_unref(&extra);
    assert_null(extra);

    struct outcome o[3] = {{0}};
    assert_int_equal(
        auth_check(&loop, a, "alice", 5, (const uint8_t *)"correct horse", 13, on_done, &o[0]), 0);
    assert_int_equal(auth_check(&loop, a, "dave", 4, (const uint8_t *)"dave pw", 7, on_done, &o[1]),
                     0);
    assert_int_equal(auth_check(&loop, a, "x", 1, (const uint8_t *)"y", 1, on_done, &o[2]), 0);
    auth_unref(&a); /* the last reference held outside the checks */
    assert_null(a);
    auth_unref(&a); /* NULL is fine */

    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(o[0].calls, 1);
    assert_int_equal(o[0].result, 0);
    assert_int_equal(o[1].calls, 1);
    assert_int_equal(o[1].result, 0);
    assert_int_equal(o[2].calls, 1);
    assert_int_equal(o[2].result, ERR_BAD_AUTH);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* An unknown name is hashed like the file's first entry, so it costs about as much as a
 * known one. Without the stand-in it would return in microseconds; the bound is loose so a
 * busy machine does not make it flaky. */
static void test_unknown_user_costs_a_hash(void **state)
{
    (void)state;
    char hash[AUTH_HASH_CAP], line[AUTH_HASH_CAP + 16];
    assert_int_equal(
        auth_hash(AUTH_HASH_SHA512_PBKDF2, 200000, (const uint8_t *)"pw", 2, hash, sizeof(hash)),
        0);
    snprintf(line, sizeof(line), "known:%s\n", hash);
    struct auth *a = load_ok(put_str("slow", line));

    double t0 = now_s();
    assert_int_equal(check(a, "known", "wrong"), ERR_BAD_AUTH);
    double known = now_s() - t0;
    t0 = now_s();
    assert_int_equal(check(a, "unknown", "wrong"), ERR_BAD_AUTH);
    double unknown = now_s() - t0;
    if (unknown < known / 4)
        fail_msg("unknown user took %.4fs, known %.4fs", unknown, known);
    auth_unref(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mosquitto_and_argon2_vectors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_comments_blank_lines_crlf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_and_comment_only_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors_argon2id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors_sizes_and_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_round_trip, setup, teardown),
        cmocka_unit_test(test_hash_is_valid),
        cmocka_unit_test_setup_teardown(test_async_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unref_while_checking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_user_costs_a_hash, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

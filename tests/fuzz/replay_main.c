/*
 * Replays a fuzz corpus without libFuzzer: runs LLVMFuzzerTestOneInput once per regular file
 * in the directory argv[1], so that ctest can run the corpus under gcc and ASan. Each input
 * gets its own exactly-sized heap copy, so that a read past the end is caught. Fails when the
 * directory cannot be read or holds no file, so that a lost corpus never passes silently.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
        perror(path);
        (void)fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || (n && fread(buf, 1, n, f) != n)) {
        fprintf(stderr, "%s: read failed\n", path);
        free(buf);
        (void)fclose(f);
        return -1;
    }
    (void)fclose(f);
    (void)LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    DIR *d = opendir(argv[1]);
    if (!d) {
        perror(argv[1]);
        return 1;
    }
    unsigned count = 0, failed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        int n = snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        if (n < 0 || (size_t)n >= sizeof(path) || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (run_file(path) != 0)
            failed++;
        count++;
    }
    (void)closedir(d);
    if (count == 0) {
        fprintf(stderr, "%s: no corpus files\n", argv[1]);
        return 1;
    }
    printf("replayed %u inputs from %s\n", count, argv[1]);
    return failed ? 1 : 0;
}

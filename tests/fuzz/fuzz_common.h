/* fuzz_common.h - what every libFuzzer harness in tests/fuzz/ shares.

   Each harness is one translation unit: it includes this file, which
   compiles the library (PARAFORMER_IMPLEMENTATION) and, with PF_HAVE_STB,
   stb_image's implementation exactly as tools/paraformer.c does (bounded
   dimensions, allocations through pf_stbi_malloc & co.), then defines
   LLVMFuzzerTestOneInput.

   The readers take paths, so the input is written to a file in a private
   scratch folder: $TMPDIR (else /tmp)/pf_fuzz.XXXXXX, made once per process
   and removed with everything in it at exit (not after a crash: libFuzzer
   then ends the process without exit handlers; `make fuzz-run` points
   TMPDIR into build-fuzz/run/NAME/tmp and empties it). A harness clears
   what it wrote before each input (fz_reset), so that no input sees
   another's files and every crash reproduces from its input alone.

   PF_FUZZ_VERBOSE=1 in the environment prints each step's status and
   pf_last_error() to stderr: run a harness on one file to see how far an
   input gets (build-fuzz/fuzz_safetensors tests/fuzz/corpus/safetensors/x). */
#ifndef PF_FUZZ_COMMON_H
#define PF_FUZZ_COMMON_H

#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */
#define PARAFORMER_IMPLEMENTATION
#include "../../paraformer.h"

#ifdef PF_HAVE_STB /* the same block as tools/paraformer.c */
/* UBSan stays on inside stb_image, all but two checks: on a PNG whose
   first IDAT chunk is empty (legal), stb_image 2.27 computes z->idata + 0
   while z->idata is still NULL and then memcpy's 0 bytes to it - undefined
   in C by the letter, harmless in fact. Only stb's own functions lose
   those two checks (pointer-overflow, nonnull-attribute); bounds, shifts,
   integer overflows and the rest stay fatal there. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((no_sanitize("pointer-overflow", "nonnull-attribute"))), apply_to = function)
#endif
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_MAX_DIMENSIONS (1 << 14)
#define STBI_MALLOC(sz) pf_stbi_malloc(sz)
#define STBI_REALLOC(p, sz) pf_stbi_realloc(p, sz)
#define STBI_FREE(p) pf_stbi_free(p)
#include <stb/stb_image.h>
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fz__root[1024];
static volatile unsigned fz_sink; /* reads the harnesses make so that ASan checks them */

static inline int fz__rm(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    remove(p);
    return 0;
}

static inline void fz__cleanup(void) {
    if (fz__root[0]) nftw(fz__root, fz__rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* The process's scratch folder (made on first use). */
static inline const char *fz_root(void) {
    if (!fz__root[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fz__root, sizeof fz__root, "%s/pf_fuzz.XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fz__root)) {
            fprintf(stderr, "fuzz: cannot make a scratch folder %s: %s\n", fz__root, strerror(errno));
            abort();
        }
        atexit(fz__cleanup);
    }
    return fz__root;
}

/* path = scratch/name */
static inline const char *fz_path(char *path, size_t cap, const char *name) {
    if ((size_t)snprintf(path, cap, "%s/%s", fz_root(), name) >= cap) abort();
    return path;
}

/* Removes scratch/name (a file or a whole folder) if it is there. */
static inline void fz_remove(const char *name) {
    char p[1100];
    struct stat sb;
    fz_path(p, sizeof p, name);
    if (lstat(p, &sb) == 0) nftw(p, fz__rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* An empty folder scratch/name (whatever was there is removed). */
static inline void fz_reset(const char *name) {
    char p[1100];
    fz_remove(name);
    if (mkdir(fz_path(p, sizeof p, name), 0700) != 0) { perror(p); abort(); }
}

/* Writes n bytes to scratch/name; the full path in path. */
static inline const char *fz_write(const char *name, const void *data, size_t n, char *path, size_t cap) {
    FILE *f = fopen(fz_path(path, cap, name), "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) { perror(path); abort(); }
    return path;
}

/* PF_FUZZ_VERBOSE: one line per step */
static inline void fz_note(const char *step, pf_status st) {
    static int v = -1;
    if (v < 0) v = getenv("PF_FUZZ_VERBOSE") && *getenv("PF_FUZZ_VERBOSE") && strcmp(getenv("PF_FUZZ_VERBOSE"), "0");
    if (v) fprintf(stderr, "fuzz: %-16s %s%s%s\n", step, pf_status_name(st), st ? ": " : "", st ? pf_last_error() : "");
}

#endif

/* io_util.h - what the tests of the file readers share (test_safetensors,
   test_npy): the rules a refusal must follow, readers run under them, the
   generator of their random files, and .npy bytes written by hand.

   Include after pf_alloc_guard.h (before paraformer.h: it routes the
   library's allocations through the guard), paraformer.h and pf_test.h
   (with PF_TEST_FILES).

   A reader refuses a bad file as it must when the call
     - returns a status other than PF_OK,
     - leaves a non-empty pf_last_error() that contains the file's path,
     - never asks for more than PF_GUARD_LIMIT (64 MiB) in one allocation,
     - leaves its output unset,
   and does not crash (`make test SAN=1` turns any overflow or UB into a
   failure). */
#ifndef PF_IO_UTIL_H
#define PF_IO_UTIL_H

static void clear_error(void) { pf_fail(PF_OK, "%s", ""); }

/* Judges a refusal; `why` gets the reason (for the check line). */
static int judge(pf_status st, const char *path, char *why, size_t cap) {
    const char *e = pf_last_error();
    if (st == PF_OK) {
        snprintf(why, cap, "accepted");
        return 0;
    }
    if (!e[0]) {
        snprintf(why, cap, "%s with an empty error message", pf_status_name(st));
        return 0;
    }
    if (!strstr(e, path)) {
        snprintf(why, cap, "message does not name the file: %s", e);
        return 0;
    }
    if (pf_guard_biggest > PF_GUARD_LIMIT) {
        snprintf(why, cap, "asked for %lu bytes in one allocation (limit %lu MiB): %s", (unsigned long)pf_guard_biggest,
                 (unsigned long)(PF_GUARD_LIMIT >> 20), e);
        return 0;
    }
    snprintf(why, cap, "%s: %s", pf_status_name(st), e);
    return 1;
}

/* A reader under test: runs the library on path and frees what it got. On
   PF_OK `note` says what it accepted; after a failure a non-empty `note`
   says how the call broke its contract (its output left set). */
typedef pf_status (*io_reader)(const char *path, char *note, size_t cap);

/* One run of `read` with a fresh error and allocation record: 1 when it
   accepted the file (why says what it read), 0 when it refused it as it
   must (why: status and message), -1 when the refusal breaks a rule (why
   says which). */
static int io_verdict(io_reader read, const char *path, char *why, size_t cap) {
    char note[512];
    pf_status st;
    note[0] = 0;
    clear_error();
    pf_guard_biggest = 0;
    st = read(path, note, sizeof note);
    if (st == PF_OK || note[0]) {
        snprintf(why, cap, "%s", note);
        return st == PF_OK ? 1 : -1;
    }
    return judge(st, path, why, cap) ? 0 : -1;
}
static int refuses(io_reader read, const char *path, char *why, size_t cap) {
    return io_verdict(read, path, why, cap) == 0;
}

/* Writes a malformed file and checks that each of the n readers refuses it:
   a line `TAG LABEL why` per reader. */
static void refused_by(const io_reader *readers, const char *const *tags, int n, const char *label, const char *name,
                       const void *bytes, size_t len) {
    const char *path = tmp_path("%s", name);
    char why[1024];
    int r;
    write_file(path, bytes, len);
    for (r = 0; r < n; r++) {
        int ok = refuses(readers[r], path, why, sizeof why);
        check(ok, "%-10s %-44s %s", tags[r], label, why);
    }
}

/* ---------------------------------------------------------------------- */
/* a seeded generator for the random files (xorshift64*) */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}
static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* 160 files PREFIX_NNN.EXT of random bytes from seed, 0..63 bytes for the
   first 80 and 0..4095 after; from the 120th on, preamble(buf, len, brace)
   may give a file a valid start (brace from the 140th: make the header
   open with '{'). Each of the n readers must refuse each file (a failed
   check for each that does not); returns how many did not. */
static int random_files(uint64_t seed, const char *prefix, const char *ext,
                        void (*preamble)(unsigned char *buf, size_t len, int brace), const io_reader *readers,
                        const char *const *tags, int n) {
    unsigned char buf[4096];
    char why[1024];
    int i, r, bad = 0;
    g_rng = seed;
    for (i = 0; i < 160; i++) {
        size_t len = rnd_below(i < 80 ? 64 : 4096), k;
        const char *path = tmp_path("%s_%03d.%s", prefix, i, ext);
        for (k = 0; k < len; k++) buf[k] = (unsigned char)rnd();
        if (i >= 120) preamble(buf, len, i >= 140);
        write_file(path, buf, len);
        for (r = 0; r < n; r++)
            if (!refuses(readers[r], path, why, sizeof why)) {
                bad++;
                check(0, "%-10s random file %s_%03d.%s (%lu bytes): %s", tags[r], prefix, i, ext, (unsigned long)len, why);
            }
    }
    return bad;
}

/* 200 files PREFIX_NNN.EXT, each the n bytes of base with 1 to 4 bytes in
   [from, from + span) replaced by a byte of pool or a random one, through
   `read`. Such a file may stay valid: what is required is no crash and a
   refusal by the rules (a failed check for each that is not). Counts the
   refusals and acceptances; returns how many broke the rules. */
static int flip_files(const unsigned char *base, size_t n, size_t from, size_t span, const char *pool,
                      const char *prefix, const char *ext, io_reader read, const char *tag, int *refused,
                      int *accepted) {
    unsigned char *buf = (unsigned char *)malloc(n + 1);
    size_t pool_n = strlen(pool);
    char why[1024];
    int i, bad = 0;
    if (!buf) { fprintf(stderr, "out of memory\n"); exit(2); }
    for (i = 0; i < 200; i++) {
        int flips = 1 + (int)rnd_below(4), t, v;
        const char *path = tmp_path("%s_%03d.%s", prefix, i, ext);
        memcpy(buf, base, n);
        for (t = 0; t < flips; t++) {
            size_t at = from + rnd_below(span);
            buf[at] = rnd_below(2) ? (unsigned char)pool[rnd_below(pool_n)] : (unsigned char)rnd();
        }
        write_file(path, buf, n);
        v = io_verdict(read, path, why, sizeof why);
        if (v == 1) {
            (*accepted)++;
            continue;
        }
        (*refused)++;
        if (v < 0) {
            bad++;
            check(0, "%-10s byte flips %s_%03d.%s: %s", tag, prefix, i, ext, why);
        }
    }
    free(buf);
    return bad;
}

/* ---------------------------------------------------------------------- */
/* .npy bytes: magic, version, header length (2 bytes for v1, 4 for v2/v3),
   the dict padded with spaces and a newline to a multiple of 64, data. */
static tbuf npy_bytes(int major, const char *dict, const void *data, size_t dlen) {
    tbuf b = {NULL, 0, 0};
    size_t pre = major == 1 ? 10 : 12, hl = strlen(dict) + 1;
    hl += (64 - (pre + hl) % 64) % 64;
    tb_add(&b, "\x93NUMPY", 6);
    tb_byte(&b, major, 1);
    tb_byte(&b, 0, 1);
    tb_le(&b, hl, major == 1 ? 2 : 4);
    tb_str(&b, dict);
    tb_byte(&b, ' ', hl - strlen(dict) - 1);
    tb_byte(&b, '\n', 1);
    tb_add(&b, data, dlen);
    return b;
}

/* the data of the hand-written files: 0, 1, ..., 9 as float32 */
static float g_base_data[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};

#endif

/* pf_alloc_guard.h - the library's allocations, counted and capped, for the
   tests of hostile files (test_safetensors, test_npy, test_data). Include
   before paraformer.h: it defines PF_MALLOC/PF_REALLOC/PF_FREE. A request above
   PF_GUARD_LIMIT fails (NULL) as if memory had run out, so a file that
   makes the library ask for too much is caught; pf_guard_biggest holds the
   largest request since the test last reset it, pf_guard_live the
   allocations not yet freed. */
#ifndef PF_ALLOC_GUARD_H
#define PF_ALLOC_GUARD_H
#include <stdlib.h>

#define PF_GUARD_LIMIT ((size_t)64 << 20)
static size_t pf_guard_biggest;
static long pf_guard_live;

static void *pf_guard_malloc(size_t n) {
    void *p;
    if (n > pf_guard_biggest) pf_guard_biggest = n;
    if (n > PF_GUARD_LIMIT) return NULL;
    p = malloc(n ? n : 1);
    if (p) pf_guard_live++;
    return p;
}
static void *pf_guard_realloc(void *p, size_t n) {
    void *q;
    if (n > pf_guard_biggest) pf_guard_biggest = n;
    if (n > PF_GUARD_LIMIT) return NULL;
    q = realloc(p, n ? n : 1);
    if (q && !p) pf_guard_live++;
    return q;
}
static void pf_guard_free(void *p) {
    if (p) pf_guard_live--;
    free(p);
}
#define PF_MALLOC(sz) pf_guard_malloc(sz)
#define PF_REALLOC(p, sz) pf_guard_realloc(p, sz)
#define PF_FREE(p) pf_guard_free(p)

#endif

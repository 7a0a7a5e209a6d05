/* fuzz_npy.c - libFuzzer harness: the input is a .npy file.

   pf_npy_load; an array that loads must be exactly what its shape says
   (nbytes = numel x dtype size, every byte readable), and must survive a
   round trip through the writer: pf_npy_save, pf_npy_load again, the same
   dtype, shape and bytes (else abort: what the reader accepts, the writer
   must write and the reader read back unchanged).
   Corpus: tests/fuzz/corpus/npy. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[1100], back[1100];
    pf_array a, b;
    pf_status st;
    size_t i;
    fz_write("in.npy", data, size, path, sizeof path);

    fz_note("npy_load", st = pf_npy_load(path, &a));
    if (st != PF_OK) return 0;
    if (a.ndim < 0 || a.ndim > PF_MAX_DIMS || a.nbytes != pf_array_numel(&a) * pf_dtype_size(a.dtype)) abort();
    for (i = 0; i < a.nbytes; i++) fz_sink += ((const unsigned char *)a.data)[i]; /* ASan: the buffer is that long */

    fz_path(back, sizeof back, "back.npy");
    fz_note("npy_save", st = pf_npy_save(back, &a));
    if (st == PF_OK) fz_note("npy_load again", st = pf_npy_load(back, &b));
    if (st != PF_OK || b.dtype != a.dtype || b.ndim != a.ndim || b.nbytes != a.nbytes ||
        memcmp(b.shape, a.shape, sizeof a.shape[0] * (size_t)a.ndim) || (a.nbytes && memcmp(a.data, b.data, a.nbytes))) {
        fprintf(stderr, "fuzz_npy: the array does not come back through pf_npy_save and pf_npy_load (%s)\n",
                st ? pf_last_error() : "it differs");
        abort();
    }
    pf_array_free(&b);
    pf_array_free(&a);
    remove(back);
    return 0;
}

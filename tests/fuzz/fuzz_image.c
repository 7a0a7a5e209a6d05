/* fuzz_image.c - libFuzzer harness: the input is an image file (PNG, JPEG,
   BMP) for pf_image_load, which checks it and decodes it with stb_image
   (compiled in by fuzz_common.h with the program's limits and allocator,
   under the same sanitizers).

   An image that loads must be what it says (h, w in 1..16384, c in 1..4,
   h*w*c readable bytes) and convert to a 3-channel 8x8 model input with
   pf_image_to_input. Corpus: tests/fuzz/corpus/image. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[1100];
    unsigned char *px = NULL;
    int h, w, c;
    size_t i, n;
    float x[3 * 8 * 8];
    pf_config cfg;
    pf_status st;
    fz_write("in.img", data, size, path, sizeof path);

    fz_note("image_load", st = pf_image_load(path, &px, &h, &w, &c));
    if (st != PF_OK) return 0;
    if (!px || h < 1 || w < 1 || h > 16384 || w > 16384 || c < 1 || c > 4) abort();
    n = (size_t)h * w * c;
    for (i = 0; i < n; i++) fz_sink += px[i]; /* ASan: the buffer is that long */
    pf_config_preset(&cfg, "paraformer");
    cfg.image_size = 8;
    cfg.channels = 3;
    fz_note("image_to_input", pf_image_to_input(px, h, w, c, &cfg, x));
    pf_image_free(px);
    return 0;
}

/* fuzz_config.c - libFuzzer harness: the input is a model config JSON
   object (the "config" metadata of a checkpoint, docs/design.md §4.1).

   pf_config_from_json on the bytes as they are (not NUL-terminated: a read
   past the end is an ASan report), then pf_config_validate. A config that
   is accepted must round-trip through the writer: pf_config_to_json, read
   back, written again, the same text (else abort). Corpus:
   tests/fuzz/corpus/config. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pf_config c, c2;
    char j1[4096], j2[4096];
    int n1, n2;
    pf_status st;

    fz_note("config_from_json", st = pf_config_from_json((const char *)data, size, &c));
    if (st != PF_OK) return 0;
    fz_note("config_validate", st = pf_config_validate(&c));
    if (st != PF_OK) abort(); /* from_json validates: what it accepts is valid */
    (void)pf_config_tokens(&c);

    n1 = pf_config_to_json(&c, j1, sizeof j1);
    if (n1 < 0 || (size_t)n1 != strlen(j1)) abort();
    st = pf_config_from_json(j1, (size_t)n1, &c2);
    n2 = st == PF_OK ? pf_config_to_json(&c2, j2, sizeof j2) : -1;
    if (st != PF_OK || n2 != n1 || memcmp(j1, j2, (size_t)n1)) {
        fprintf(stderr, "fuzz_config: the config does not round-trip\n  written: %s\n  read back: %s\n", j1,
                st == PF_OK ? j2 : pf_last_error());
        abort();
    }
    return 0;
}

/* fuzz_dataset.c - libFuzzer harness: the dataset readers of
   pf_dataset_load, every format.

   Input: byte 0 picks the format and the spec (bits 0-2, below; bit 3 adds
   "#classes=0-1#limit=2"; bit 4 reads the @test split), bytes 1-2 (little
   endian) are the length of file A, the rest is file A then file B:

     0 fmnist     A {train,t10k}-images-idx3-ubyte     B ...-labels-idx1-ubyte
     1 fmnist     the same files as .gz (their bytes are gzip data)
     2 cifar10    A data_batch_1.bin / test_batch.bin  B batches.meta.txt
     3 cifar10    A as .gz                             B batches.meta.txt
     4 cifar100   A train.bin / test.bin               B fine_label_names.txt
     5 cifar100   A as .gz                             B fine_label_names.txt
     6 npy        A x.npy                              B y.npy
     7 folder     A a/0.png                            B b/1.bmp (none if empty)

   The files are written to a fresh folder for each input. A dataset that
   loads must keep its promises (n >= 1, c in 1..4, labels in 0..classes-1)
   and go through pf_dataset_stats and pf_dataset_batch with augmentation
   (crop, flip, RandAugment) into a 3-channel 8x8 model input. Corpus:
   tests/fuzz/corpus/dataset (made by tests/fuzz/make_corpus.c). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const fmnist[2][2] = {{"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
                                             {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}};
    char dir[1100], spec[1100], path[1100], a[128], b[128];
    const char *kind;
    size_t la, lb;
    int fmt, test, gz, i;
    pf_dataset d;
    pf_status st;
    if (size < 3) return 0;
    fmt = data[0] & 7;
    test = (data[0] >> 4) & 1;
    gz = fmt <= 5 && (fmt & 1);
    la = (size_t)data[1] | (size_t)data[2] << 8;
    if (la > size - 3) la = size - 3;
    lb = size - 3 - la;

    fz_reset("ds");
    fz_path(dir, sizeof dir, "ds");
    if (fmt <= 1) {
        kind = "fmnist";
        snprintf(a, sizeof a, "ds/%s%s", fmnist[test][0], gz ? ".gz" : "");
        snprintf(b, sizeof b, "ds/%s%s", fmnist[test][1], gz ? ".gz" : "");
    } else if (fmt <= 3) {
        kind = "cifar10";
        snprintf(a, sizeof a, "ds/%s%s", test ? "test_batch.bin" : "data_batch_1.bin", gz ? ".gz" : "");
        snprintf(b, sizeof b, "ds/batches.meta.txt");
    } else if (fmt <= 5) {
        kind = "cifar100";
        snprintf(a, sizeof a, "ds/%s%s", test ? "test.bin" : "train.bin", gz ? ".gz" : "");
        snprintf(b, sizeof b, "ds/fine_label_names.txt");
    } else if (fmt == 6) {
        kind = "npy";
        snprintf(a, sizeof a, "ds/x.npy");
        snprintf(b, sizeof b, "ds/y.npy");
    } else {
        kind = "folder";
        fz_reset("ds/a");
        snprintf(a, sizeof a, "ds/a/0.png");
        if (lb) fz_reset("ds/b");
        snprintf(b, sizeof b, "ds/b/1.bmp");
    }
    fz_write(a, data + 3, la, path, sizeof path);
    if (lb || fmt != 7) fz_write(b, data + 3 + la, lb, path, sizeof path);
    if (fmt == 6) snprintf(spec, sizeof spec, "npy:%s/x.npy,%s/y.npy", dir, dir);
    else snprintf(spec, sizeof spec, "%s:%s%s", kind, dir, fmt <= 5 && test ? "@test" : "");
    if (data[0] & 8) strcat(spec, "#classes=0-1#limit=2");

    fz_note("dataset_load", st = pf_dataset_load(spec, PF_SPLIT_TRAIN, &d));
    if (st != PF_OK) return 0;
    if (d.n < 1 || d.h < 1 || d.w < 1 || d.c < 1 || d.c > 4 || d.classes < 1 || !d.images || !d.labels) abort();
    for (i = 0; i < d.n; i++)
        if (d.labels[i] < 0 || d.labels[i] >= d.classes) abort();
    {
        float mean[PF_MAX_CHANNELS], sd[PF_MAX_CHANNELS];
        pf_real x[2 * 3 * 8 * 8];
        int idx[2] = {0, d.n - 1};
        pf_augment aug = {2, 1, 2, 9, 0.5f}; /* crop pad 2, flip, RandAugment(2, 9), erasing p 0.5 */
        pf_config c;
        pf_dataset_stats(&d, mean, sd);
        pf_config_preset(&c, "paraformer");
        c.image_size = 8;
        c.channels = 3;
        fz_note("dataset_batch", pf_dataset_batch(&d, idx, 2, &c, &aug, 1, 0, x));
    }
    pf_dataset_free(&d);
    return 0;
}

/* classify.c: a C program that uses the digits classifier compiled by graphc.
 *
 *   graphc compile examples/digits/model.py -o out/digits
 *   python examples/c_api/export_testset.py out/digits/testset    # images.f32 + labels.i64
 *   make -C examples/c_api MODEL_DIR=../../out/digits
 *   examples/c_api/classify out/digits/testset [threads]
 *
 * It reads the test images (raw float32, [N,1,8,8]) and labels (raw int64, [N]), runs the whole set
 * through the library in batches, and prints one line per image ("index label predicted logit0..9")
 * followed by the accuracy. Only digits.h, libdigits.so, libc, libm and OpenMP are involved.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits.h"

#define PIXELS (1 * 8 * 8)
#define CLASSES 10

/* Read a whole file; *size gets its length in bytes. */
static void *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "classify: cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TESTSET_DIR [threads]\n", argv[0]);
        return 2;
    }
    char path[4096];
    size_t image_bytes = 0, label_bytes = 0;
    snprintf(path, sizeof path, "%s/images.f32", argv[1]);
    float *images = read_file(path, &image_bytes);
    snprintf(path, sizeof path, "%s/labels.i64", argv[1]);
    int64_t *labels = read_file(path, &label_bytes);
    if (!images || !labels)
        return 1;
    const int64_t n = (int64_t)(label_bytes / sizeof(int64_t));
    if (image_bytes != (size_t)n * PIXELS * sizeof(float)) {
        fprintf(stderr, "classify: %zu bytes of images do not match %lld labels\n", image_bytes, (long long)n);
        return 1;
    }

    /* Baked weights: no path. A non-NULL path would load a fine-tuned digits.safetensors instead. */
    char err[512];
    digits_ctx *ctx = NULL;
    if (digits_create(&ctx, NULL, err, sizeof err) != DIGITS_OK) {
        fprintf(stderr, "classify: %s\n", err);
        return 1;
    }
    if (argc > 2)
        digits_set_num_threads(ctx, atoi(argv[2]));

    /* The batch dim B is dynamic within digits_dim_min(0)..digits_dim_max(0): run in chunks of that. */
    const int64_t max_batch = digits_dim_max(0);
    float *logits = malloc((size_t)n * CLASSES * sizeof(float));
    for (int64_t start = 0; start < n; start += max_batch) {
        const int64_t b = n - start < max_batch ? n - start : max_batch;
        int rc = digits_run(ctx, b, images + start * PIXELS, logits + start * CLASSES);
        if (rc != DIGITS_OK) {
            fprintf(stderr, "classify: run failed: %s (%s)\n", digits_status_string(rc), digits_last_error(ctx));
            return 1;
        }
    }

    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *row = logits + i * CLASSES;
        int best = 0;
        for (int c = 1; c < CLASSES; c++)
            if (row[c] > row[best])
                best = c;
        correct += best == labels[i];
        printf("%lld %lld %d", (long long)i, (long long)labels[i], best);
        for (int c = 0; c < CLASSES; c++)
            printf(" %.9g", (double)row[c]);
        printf("\n");
    }
    printf("accuracy %lld/%lld = %.4f\n", (long long)correct, (long long)n, (double)correct / (double)n);

    digits_destroy(ctx);
    free(logits);
    free(images);
    free(labels);
    return 0;
}

/* c-demo: next-visit phenotype prediction from C through libckd_edge_c.
 *
 * Usage: c-demo BUNDLE_DIR [TEXT_FILE]
 * Reads one visit text (CKD-EHR layout, UTF-8) from TEXT_FILE, or stdin when absent, and prints
 * one line per label: "<index>\t<probability>\t<decision>\t<name>", then "truncated\t<0|1>".
 * Exit status: 0 on success, 2 on a usage or I/O error, 3 when the library reports an error
 * (its code and message go to stderr).
 *
 * Build (see README.md): cc -I ../../edge-runtime/capi/include main.c \
 *   $TARGET_DIR/libckd_edge_c.a -lpthread -ldl -lm -o c-demo
 */
#include <stdio.h>
#include <stdlib.h>

#include "ckd_edge.h"

static unsigned char *read_all(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    if (buf == NULL) return NULL;
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        unsigned char *bigger = realloc(buf, cap * 2);
        if (bigger == NULL) {
            free(buf);
            return NULL;
        }
        buf = bigger;
        cap *= 2;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s BUNDLE_DIR [TEXT_FILE]\n", argv[0]);
        return 2;
    }
    FILE *in = stdin;
    if (argc == 3 && (in = fopen(argv[2], "rb")) == NULL) {
        perror(argv[2]);
        return 2;
    }
    size_t len = 0;
    unsigned char *text = read_all(in, &len);
    if (in != stdin) fclose(in);
    if (text == NULL) {
        fprintf(stderr, "could not read the input text\n");
        return 2;
    }

    CkdEngine *engine = ckd_engine_open(argv[1]);
    if (engine == NULL) {
        fprintf(stderr, "ckd_engine_open: %s\n", ckd_last_error());
        free(text);
        return 3;
    }
    float probs[CKD_NUM_LABELS];
    uint8_t positive[CKD_NUM_LABELS];
    bool truncated = false;
    int32_t rc = ckd_predict_text(engine, text, len, probs, CKD_NUM_LABELS, positive, CKD_NUM_LABELS, &truncated);
    free(text);
    if (rc != CKD_OK) {
        fprintf(stderr, "ckd_predict_text: error %d: %s\n", (int)rc, ckd_last_error());
        ckd_engine_free(engine);
        return 3;
    }
    for (size_t i = 0; i < CKD_NUM_LABELS; i++) {
        printf("%zu\t%.9g\t%u\t%s\n", i, (double)probs[i], (unsigned)positive[i], ckd_label_name(i));
    }
    printf("truncated\t%d\n", truncated ? 1 : 0);
    ckd_engine_free(engine);
    return 0;
}

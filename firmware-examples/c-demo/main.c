/* c-demo: next-visit phenotype prediction from C through libckd_edge_c.
 *
 * Usage: c-demo BUNDLE_DIR [TEXT_FILE]
 * Reads one visit text (CKD-EHR layout, UTF-8) from TEXT_FILE, or stdin when absent, and prints
 * one line per label: "<index>\t<probability>\t<decision>\t<name>", then "truncated\t<0|1>".
 * Then the explanation (ckd_explain_text, occlusion): "concepts\t<N>" and, for the most
 * probable label, its 3 concepts of largest effect, "concept\t<start>\t<end>\t<effect>" (byte
 * span in the text; probability with the concept minus without it); "concepts\tnone" when the
 * text is not in the CKD-EHR layout.
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

/* Prints the explanation of the most probable label `top` (see the header comment). The first
 * call, with empty buffers, only counts the concepts (CKD_ERR_BUFFER, n set); the second fills
 * buffers of that size. Returns 0, or 3 on a library error other than a text outside the layout. */
static int explain(const CkdEngine *engine, const unsigned char *text, size_t len, size_t top) {
    float no_effect;
    uint32_t no_span;
    size_t n = 0;
    int32_t rc = ckd_explain_text(engine, text, len, &no_effect, 0, &no_span, 0, NULL, 0, NULL, 0, &n);
    if (rc == CKD_ERR_INPUT) {
        printf("concepts\tnone\n");
        return 0;
    }
    if (rc != CKD_ERR_BUFFER && rc != CKD_OK) {
        fprintf(stderr, "ckd_explain_text: error %d: %s\n", (int)rc, ckd_last_error());
        return 3;
    }
    printf("concepts\t%zu\n", n);
    if (n == 0) return 0;
    float *effects = malloc(n * CKD_NUM_LABELS * sizeof(float));
    uint32_t *spans = malloc(2 * n * sizeof(uint32_t));
    if (effects == NULL || spans == NULL) {
        free(effects);
        free(spans);
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    rc = ckd_explain_text(engine, text, len, effects, n * CKD_NUM_LABELS, spans, 2 * n, NULL, 0, NULL, 0, &n);
    if (rc != CKD_OK) {
        fprintf(stderr, "ckd_explain_text: error %d: %s\n", (int)rc, ckd_last_error());
        free(effects);
        free(spans);
        return 3;
    }
    /* The 3 largest effects on `top`, largest first; ties keep text order. */
    size_t shown[3];
    size_t k = 0;
    for (; k < 3 && k < n; k++) {
        size_t best = n;
        for (size_t c = 0; c < n; c++) {
            int taken = 0;
            for (size_t j = 0; j < k; j++) taken |= shown[j] == c;
            if (taken) continue;
            if (best == n || effects[c * CKD_NUM_LABELS + top] > effects[best * CKD_NUM_LABELS + top]) best = c;
        }
        shown[k] = best;
        printf("concept\t%u\t%u\t%.9g\n", spans[2 * best], spans[2 * best + 1],
               (double)effects[best * CKD_NUM_LABELS + top]);
    }
    free(effects);
    free(spans);
    return 0;
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
    if (rc != CKD_OK) {
        fprintf(stderr, "ckd_predict_text: error %d: %s\n", (int)rc, ckd_last_error());
        free(text);
        ckd_engine_free(engine);
        return 3;
    }
    size_t top = 0;
    for (size_t i = 0; i < CKD_NUM_LABELS; i++) {
        printf("%zu\t%.9g\t%u\t%s\n", i, (double)probs[i], (unsigned)positive[i], ckd_label_name(i));
        if (probs[i] > probs[top]) top = i;
    }
    printf("truncated\t%d\n", truncated ? 1 : 0);
    rc = explain(engine, text, len, top);
    free(text);
    ckd_engine_free(engine);
    return rc;
}

/* soak: the C library of edge-runtime/capi from several threads at once (issue 17), run by
 * scripts/soak.sh.
 *
 * Usage: soak BUNDLE REQUESTS_PER_THREAD [THREADS [SEED]]     (defaults: 4 threads, seed 17)
 *
 * One engine is opened and shared by THREADS threads (the header's contract: ckd_predict_text
 * takes a const engine and may be called from several threads at once). Each thread makes
 * REQUESTS_PER_THREAD calls; one in ten is corrupt, the kinds in turn:
 *   random     random bytes with at least one byte that is not UTF-8   -> CKD_ERR_UTF8
 *   truncated  a visit text cut inside a multi-byte UTF-8 character    -> CKD_ERR_UTF8
 *   blank      an empty or whitespace-only text                        -> CKD_ERR_INPUT
 *   buffer     a probability buffer one element short                  -> CKD_ERR_BUFFER
 *   null       a NULL text pointer                                     -> CKD_ERR_NULL
 * (the wire protocol's CRC and oversize frames have no counterpart here: the C API takes plain
 * text, and a text of any length is answered, cut to the bundle's maximum length).
 * The valid calls take texts from a pool of 64 visits in the CKD-EHR layout (one long enough to
 * be truncated), whose answers were computed once, on one thread, before the threads start.
 *
 * Checks (each a failure, exit status 1): every call returns exactly once (a count per request);
 * every valid call returns CKD_OK with probabilities, decisions and the truncation flag equal
 * to the bit to the single-threaded reference; every corrupt call returns its error code, sets
 * a non-empty ckd_last_error and leaves the output buffers unchanged; the resident memory after
 * warm-up (the first tenth of each thread's calls) grows by less than 2 MiB (2048 KiB): it is
 * read at checkpoints where every thread is between calls (after each tenth of the calls, the
 * first being the baseline) and at the end, the same state each time. The largest reading
 * while calls are in flight (every 20 ms) is printed too, not checked: 4 predictions at once
 * hold their working buffers, which the baseline, taken between calls, does not.
 *
 * Prints latency percentiles of the calls (all threads together) and memory figures, and a last
 * line "soak-c: key=value ..." for scripts.
 *
 * Build: cc -std=c11 -O2 -pthread -I edge-runtime/capi/include firmware-examples/c-demo/soak.c \
 *   $TARGET_DIR/libckd_edge_c.a -lpthread -ldl -lm -o soak
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define HAVE_MALLINFO2 1
#endif

#include "ckd_edge.h"

#define POOL 64
#define TEXT_CAP 16384
#define CORRUPT_EVERY 10
#define KINDS 5
#define MAX_GROWTH_KIB 2048

static const char *KIND_NAMES[KINDS] = {"random", "truncated", "blank", "buffer", "null"};

static const char *DIAGNOSES[] = {
    "Heart failure", "Acute kidney failure", "Unspecified septicemia", "Septic shock",
    "Diabetes mellitus", "Essential hypertension", "Cardiac dysrhythmias", "Acute respiratory failure",
    "Pneumonia, organism unspecified", "Other disorders of urethra and urinary tract",
    "Chronic kidney disease (ckd)", "Disorders of fluid, electrolyte, and acid-base balance",
    "Other and unspecified anemias", "Coronary atherosclerosis", "Other postprocedural states",
    "Pneumonitis due to solids and liquids"};
static const char *DRUGS[] = {
    "Furosemide", "Heparin", "Vancomycin", "Insulin", "Metoprolol Tartrate", "Sodium Chloride 0.9%  Flush",
    "Albumin, Human", "Pantoprazole", "Acetaminophen", "Potassium Chloride", "Docusate Sodium",
    "Magnesium Sulfate", "Propofol", "Warfarin", "Aspirin", "Pneumococcal Vac Polyvalent"};
static const char *PROCEDURES[] = {"Hemodialysis", "Cont inv mec ven <96 hrs", "Insert endotracheal tube",
                                   "Venous cath NEC", "Packed cell transfusion", "Extracorporeal circulat"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static size_t below(uint64_t *s, size_t n) { return (size_t)(((unsigned __int128)splitmix(s) * n) >> 64); }

/* Appends a list of `count` random items of `items` (or "None"). */
static void push_list(char *buf, size_t *len, const char **items, size_t n_items, size_t count, uint64_t *rng) {
    if (count == 0) {
        *len += (size_t)snprintf(buf + *len, TEXT_CAP - *len, "None");
        return;
    }
    for (size_t i = 0; i < count && *len < TEXT_CAP - 256; i++) {
        *len += (size_t)snprintf(buf + *len, TEXT_CAP - *len, "%s%s", i ? ", " : "", items[below(rng, n_items)]);
    }
}

static char *pool[POOL];
static size_t pool_len[POOL];
static float ref_probs[POOL][CKD_NUM_LABELS];
static uint8_t ref_pos[POOL][CKD_NUM_LABELS];
static bool ref_trunc[POOL];

static void make_pool(uint64_t *rng) {
    for (size_t k = 0; k < POOL; k++) {
        char *buf = malloc(TEXT_CAP);
        size_t len = 0;
        /* Visit 0: nothing; visit 1: far longer than any bundle's maximum length; then short and
           busy visits in turn. */
        int busy = k % 2;
        size_t dx = k == 0 ? 0 : k == 1 ? 120 : below(rng, busy ? 16 : 4);
        size_t rx = k == 0 ? 0 : k == 1 ? 200 : below(rng, busy ? 30 : 6);
        size_t px = k == 0 ? 0 : k == 1 ? 40 : below(rng, busy ? 6 : 3);
        len += (size_t)snprintf(buf + len, TEXT_CAP - len, "The patient-acquired disease is ");
        push_list(buf, &len, DIAGNOSES, COUNT(DIAGNOSES), dx, rng);
        len += (size_t)snprintf(buf + len, TEXT_CAP - len, ". The patient had used the following medication: ");
        push_list(buf, &len, DRUGS, COUNT(DRUGS), rx, rng);
        len += (size_t)snprintf(buf + len, TEXT_CAP - len, ". The surgical operation performed by the patient: ");
        push_list(buf, &len, PROCEDURES, COUNT(PROCEDURES), px, rng);
        len += (size_t)snprintf(buf + len, TEXT_CAP - len, ". None.");
        pool[k] = buf;
        pool_len[k] = len;
    }
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

/* n zero bytes whose pages are resident now. A malloc + memset(0) is not enough: the compiler
 * may turn it into calloc, whose fresh pages from mmap stay untouched until the first write,
 * which would then count as growth during the run (4 x 100,000 calls: about 4 MiB). Exits on
 * allocation failure. */
static void *resident_zeroed(size_t n) {
    volatile unsigned char *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "soak-c: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    long page = sysconf(_SC_PAGESIZE);
    size_t step = page > 0 ? (size_t)page : 4096;
    for (size_t i = 0; i < n; i += step) p[i] = 0;
    return (void *)p;
}

/* Bytes the program holds from malloc (all arenas, mmapped blocks included), KiB; -1 when the
   C library cannot say. Printed beside the resident memory: it tells held memory from memory
   the allocator keeps for reuse. */
static long heap_in_use_kib(void) {
#ifdef HAVE_MALLINFO2
    struct mallinfo2 m = mallinfo2();
    return (long)((m.uordblks + m.hblkhd) / 1024);
#else
    return -1;
#endif
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (f == NULL) return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

struct job {
    int thread;
    uint64_t rng;
    size_t n, warm;
    const CkdEngine *engine;
    uint64_t *lat_ns;     /* per request */
    uint8_t *corrupt;     /* per request: 0 valid, 1 + kind */
    uint8_t *answered;    /* per request: times returned */
    uint64_t kind_count[KINDS];
    uint64_t ok, errors;
    char failure[512];
};

/* Checkpoints: every thread waits at `arrived` after each tenth of its calls (the first ones
   end the warm-up), main reads the resident memory, then all pass `resume`. */
#define CHECKPOINTS 9
static pthread_barrier_t arrived, resume;
static atomic_int stop;
static atomic_long inflight_peak;

/* Keeps the first failure of a thread. */
__attribute__((format(printf, 3, 4))) static void fail(struct job *j, size_t i, const char *fmt, ...) {
    if (j->failure[0] != 0) return;
    int n = snprintf(j->failure, sizeof j->failure, "thread %d, request %zu: ", j->thread, i);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->failure + n, sizeof j->failure - (size_t)n, fmt, ap);
    va_end(ap);
}

static void *worker(void *arg) {
    struct job *j = arg;
    unsigned char *buf = malloc(TEXT_CAP + 1);
    for (size_t i = 0; i < j->n; i++) {
        if (i > 0 && i % j->warm == 0 && i / j->warm <= CHECKPOINTS) {
            pthread_barrier_wait(&arrived);
            pthread_barrier_wait(&resume);
        }
        float probs[CKD_NUM_LABELS];
        uint8_t pos[CKD_NUM_LABELS];
        bool trunc = true;
        for (size_t l = 0; l < CKD_NUM_LABELS; l++) {
            probs[l] = -7.0f;
            pos[l] = 0xAA;
        }
        size_t k = below(&j->rng, POOL);
        int corrupt = (i + 1) % CORRUPT_EVERY == 0;
        int kind = (int)(((i + 1) / CORRUPT_EVERY) % KINDS);
        const unsigned char *text = (const unsigned char *)pool[k];
        size_t len = pool_len[k], probs_len = CKD_NUM_LABELS;
        int want = CKD_OK;
        if (corrupt) {
            switch (kind) {
            case 0: /* random bytes, one of them never valid in UTF-8 */
                len = 1 + below(&j->rng, 300);
                for (size_t b = 0; b < len; b++) buf[b] = (unsigned char)splitmix(&j->rng);
                buf[below(&j->rng, len)] = 0xFF;
                text = buf;
                want = CKD_ERR_UTF8;
                break;
            case 1: /* cut inside a two-byte character: its lead byte only */
                len = 1 + below(&j->rng, pool_len[k]);
                memcpy(buf, pool[k], len - 1);
                buf[len - 1] = 0xC3;
                text = buf;
                want = CKD_ERR_UTF8;
                break;
            case 2: /* empty or whitespace only */
                len = below(&j->rng, 17);
                for (size_t b = 0; b < len; b++) buf[b] = (unsigned char)" \t\r\n"[below(&j->rng, 4)];
                text = buf;
                want = CKD_ERR_INPUT;
                break;
            case 3:
                probs_len = CKD_NUM_LABELS - 1;
                want = CKD_ERR_BUFFER;
                break;
            default:
                text = NULL;
                want = CKD_ERR_NULL;
                break;
            }
            j->corrupt[i] = (uint8_t)(1 + kind);
            j->kind_count[kind]++;
        }
        uint64_t t0 = now_ns();
        int rc = ckd_predict_text(j->engine, text, len, probs, probs_len, pos, CKD_NUM_LABELS, &trunc);
        uint64_t dt = now_ns() - t0;
        j->lat_ns[i] = dt;
        j->answered[i]++;
        if (rc != want) {
            fail(j, i, "%s call returned %d, expected %d", corrupt ? KIND_NAMES[kind] : "valid", rc, want);
            continue;
        }
        if (rc == CKD_OK) {
            j->ok++;
            if (memcmp(probs, ref_probs[k], sizeof probs) != 0 || memcmp(pos, ref_pos[k], sizeof pos) != 0 ||
                trunc != ref_trunc[k])
                fail(j, i, "answer differs from the single-threaded reference (pool text %zu)", k);
        } else {
            j->errors++;
            const char *msg = ckd_last_error();
            if (msg == NULL || msg[0] == 0) fail(j, i, "%s: error %d without a message", KIND_NAMES[kind], rc);
            bool same = trunc;
            for (size_t l = 0; l < CKD_NUM_LABELS; l++) same = same && probs[l] == -7.0f && pos[l] == 0xAA;
            if (!same) fail(j, i, "%s: error %d changed the output buffers", KIND_NAMES[kind], rc);
        }
    }
    free(buf);
    return NULL;
}

/* Largest resident memory while calls are in flight (printed, not checked). */
static void *sampler(void *arg) {
    (void)arg;
    struct timespec tick = {0, 20 * 1000 * 1000};
    while (!atomic_load(&stop)) {
        long r = rss_kib();
        if (r > atomic_load(&inflight_peak)) atomic_store(&inflight_peak, r);
        nanosleep(&tick, NULL);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const uint64_t *sorted, size_t n, double p) {
    if (n == 0) return 0;
    size_t i = (size_t)((double)n * p + 0.999999);
    if (i < 1) i = 1;
    if (i > n) i = n;
    return sorted[i - 1] / 1000.0;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s BUNDLE REQUESTS_PER_THREAD [THREADS [SEED]]\n", argv[0]);
        return 2;
    }
    /* Recommended by the header for long-running programs (lower resident memory). */
    ckd_use_mmap_for_large_allocations();
    size_t n = (size_t)strtoull(argv[2], NULL, 10);
    int threads = argc > 3 ? atoi(argv[3]) : 4;
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 17;
    if (n < 10 || threads < 1 || threads > 64) {
        fprintf(stderr, "soak-c: need at least 10 requests per thread and 1..64 threads\n");
        return 2;
    }
    uint64_t t_start = now_ns();
    CkdEngine *engine = ckd_engine_open(argv[1]);
    if (engine == NULL) {
        fprintf(stderr, "soak-c: ckd_engine_open: %s\n", ckd_last_error());
        return 2;
    }
    /* Loaded with the low mmap threshold; predictions reuse what they free. */
    ckd_reuse_freed_memory();
    uint64_t rng = seed;
    make_pool(&rng);
    size_t truncated = 0;
    for (size_t k = 0; k < POOL; k++) {
        int rc = ckd_predict_text(engine, (const uint8_t *)pool[k], pool_len[k], ref_probs[k], CKD_NUM_LABELS,
                                  ref_pos[k], CKD_NUM_LABELS, &ref_trunc[k]);
        if (rc != CKD_OK) {
            fprintf(stderr, "soak-c: reference for pool text %zu: error %d: %s\n", k, rc, ckd_last_error());
            return 2;
        }
        truncated += ref_trunc[k];
    }
    printf("soak-c: pool of %d texts (%zu truncated to the bundle's maximum length), %d threads x %zu calls\n",
           POOL, truncated, threads, n);
    long rss_open = rss_kib();

    struct job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    for (int t = 0; t < threads; t++) {
        struct job *j = &jobs[t];
        j->thread = t;
        j->rng = seed * 1000003ULL + (uint64_t)t + 1;
        j->n = n;
        j->warm = n / 10;
        j->engine = engine;
        /* Allocated and made resident before the baseline, so they are not counted as growth. */
        j->lat_ns = resident_zeroed(n * sizeof *j->lat_ns);
        j->corrupt = resident_zeroed(n);
        j->answered = resident_zeroed(n);
    }
    pthread_barrier_init(&arrived, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&resume, NULL, (unsigned)threads + 1);
    pthread_t sampler_tid;
    pthread_create(&sampler_tid, NULL, sampler, NULL);
    for (int t = 0; t < threads; t++) pthread_create(&tid[t], NULL, worker, &jobs[t]);
    long rss_warm = 0, rss_peak = 0, checkpoint[CHECKPOINTS + 1] = {0}, in_use[CHECKPOINTS + 1] = {0};
    for (int c = 1; c <= CHECKPOINTS; c++) {
        pthread_barrier_wait(&arrived);
        long r = checkpoint[c - 1] = rss_kib();
        in_use[c - 1] = heap_in_use_kib();
        if (c == 1) rss_warm = r;
        if (r > rss_peak) rss_peak = r;
        pthread_barrier_wait(&resume);
    }
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    long rss_end = checkpoint[CHECKPOINTS] = rss_kib();
    in_use[CHECKPOINTS] = heap_in_use_kib();
    if (rss_end > rss_peak) rss_peak = rss_end;
    atomic_store(&stop, 1);
    pthread_join(sampler_tid, NULL);
    double wall = (double)(now_ns() - t_start) / 1e9;

    /* Accounting: every request answered exactly once. */
    int failures = 0;
    uint64_t ok = 0, errors = 0, kinds[KINDS] = {0}, lost = 0, twice = 0;
    size_t n_valid = 0, n_corrupt = 0;
    for (int t = 0; t < threads; t++) {
        struct job *j = &jobs[t];
        ok += j->ok;
        errors += j->errors;
        for (int k = 0; k < KINDS; k++) kinds[k] += j->kind_count[k];
        for (size_t i = 0; i < n; i++) {
            lost += j->answered[i] == 0;
            twice += j->answered[i] > 1;
            if (j->corrupt[i]) n_corrupt++;
            else n_valid++;
        }
        if (j->failure[0]) {
            printf("soak-c: FAILED: %s\n", j->failure);
            failures++;
        }
    }
    uint64_t corrupt = 0;
    for (int k = 0; k < KINDS; k++) corrupt += kinds[k];
    if (lost || twice) {
        printf("soak-c: FAILED: %llu requests not answered, %llu answered more than once\n",
               (unsigned long long)lost, (unsigned long long)twice);
        failures++;
    }
    if (failures == 0 && errors != corrupt) {
        printf("soak-c: FAILED: %llu error answers for %llu corrupt calls\n", (unsigned long long)errors,
               (unsigned long long)corrupt);
        failures++;
    }
    long growth = rss_end - rss_warm, peak_growth = rss_peak - rss_warm;
    if (peak_growth >= MAX_GROWTH_KIB) {
        printf("soak-c: FAILED: resident memory grew by %ld KiB after warm-up (limit %d KiB)\n", peak_growth,
               MAX_GROWTH_KIB);
        failures++;
    }

    uint64_t *lv = malloc((n_valid + 1) * sizeof *lv), *lc = malloc((n_corrupt + 1) * sizeof *lc);
    size_t iv = 0, ic = 0;
    for (int t = 0; t < threads; t++) {
        for (size_t i = 0; i < n; i++) {
            if (jobs[t].corrupt[i]) lc[ic++] = jobs[t].lat_ns[i];
            else lv[iv++] = jobs[t].lat_ns[i];
        }
    }
    qsort(lv, iv, sizeof *lv, cmp_u64);
    qsort(lc, ic, sizeof *lc, cmp_u64);
    printf("soak-c: %zu calls, %llu predictions, %llu error answers (%llu random, %llu truncated, %llu blank, "
           "%llu short buffer, %llu NULL)\n",
           iv + ic, (unsigned long long)ok, (unsigned long long)errors, (unsigned long long)kinds[0],
           (unsigned long long)kinds[1], (unsigned long long)kinds[2], (unsigned long long)kinds[3],
           (unsigned long long)kinds[4]);
    printf("soak-c: latency per call (%d threads at once) valid p50 %.0f us, p99 %.0f us, max %.0f us; "
           "corrupt p50 %.1f us, p99 %.1f us\n",
           threads, pct_us(lv, iv, 0.5), pct_us(lv, iv, 0.99), pct_us(lv, iv, 1.0), pct_us(lc, ic, 0.5),
           pct_us(lc, ic, 0.99));
    printf("soak-c: VmRSS %ld KiB after opening, %ld KiB after warm-up (%zu calls per thread), %ld KiB at the end "
           "(growth %ld KiB, largest checkpoint %ld KiB above warm-up; largest while calls were in flight %ld KiB)\n",
           rss_open, rss_warm, n / 10, rss_end, growth, peak_growth, atomic_load(&inflight_peak));
    printf("soak-c: VmRSS at the checkpoints (KiB):");
    for (int c = 0; c <= CHECKPOINTS; c++) printf(" %ld", checkpoint[c]);
    printf("; held from malloc:");
    for (int c = 0; c <= CHECKPOINTS; c++) printf(" %ld", in_use[c]);
    printf("\n");
    printf("soak-c: requests=%zu predictions=%llu errors=%llu corrupt=%llu p50_us=%.0f p99_us=%.0f max_us=%.0f "
           "rss_warm_kib=%ld rss_end_kib=%ld growth_kib=%ld peak_growth_kib=%ld wall_s=%.1f failures=%d\n",
           iv + ic, (unsigned long long)ok, (unsigned long long)errors, (unsigned long long)corrupt,
           pct_us(lv, iv, 0.5), pct_us(lv, iv, 0.99), pct_us(lv, iv, 1.0), rss_warm, rss_end, growth, peak_growth,
           wall, failures);
    ckd_engine_free(engine);
    return failures ? 1 : 0;
}

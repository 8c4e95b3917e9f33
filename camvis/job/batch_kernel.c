/* One pass from the pyramid's blocks to a normalized batch, for BatchSource on the CPU.
 *
 * torch's ops build a batch in several passes (gather uint8 rows into a temporary, widen,
 * normalize, then gather and copy the depth) because index_select cannot change the dtype;
 * this kernel reads each window row once and writes its normalized floats once, walking
 * a sample's output rows in order and prefetching the source rows ahead of them.
 * camvis/job/native.py compiles it on first use for the host CPU; camvis/job/batches.py keeps the torch
 * path for other devices and as the fallback.
 *
 * The pyramid is read where it lies: level l of image i is the block rgb[l * n_images + i], a C-order
 * uint8 (3, height[l], width[l]) image, and of view v depth[l * n_views + v], float32 (height, width):
 * the store's memory-mapped chunk files (camvis.data.store_map) or blocks decoded into memory, never
 * a padded copy. The window of a centre (h, w) starts at row level_centre(h, factor) - P / 2, column
 * level_centre(w, factor) - P / 2 (batches.level_centre: h / f, or camvis2's round(h / f) half to
 * even); outside the level RGB reads 0 and log-depth -1. Both are normalized as (x - mean) / std in
 * float32 (compiled without contraction, so the result equals torch's bit for bit).
 *
 * A batch much larger than the caches is written with streaming stores where the CPU has
 * AVX2 (and the rows are 32-byte aligned): it would be evicted before it is read anyway,
 * and streaming skips reading each output line in before writing it (paper settings on
 * 2 cores: 17-26 ms per batch with, 27-30 ms without; benchmarks/bench_batches.py).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

enum { FACTOR, HEIGHT, WIDTH, N_GEOMETRY };
enum { AHEAD = 8, MAX_THREADS = 256 };  /* rows prefetched ahead (into the next window too) */

typedef struct {
    const uint8_t *const *rgb;  /* (n_levels, n_images) block pointers */
    const float *const *depth;  /* (n_levels, n_views) block pointers */
    const int64_t *geometry;    /* (N_GEOMETRY, n_levels) */
    const int64_t *center_h, *center_w, *image, *view, *idx;
    const float *mean, *std;    /* (n_levels * 4): R, G, B, D of each level */
    float *out;                 /* (n, n_levels * 4, patch, patch), contiguous */
    int64_t first, last, n_levels, n_images, n_views, patch;
    int stream;                 /* write with streaming stores (AVX2 rows only) */
    int round_half_even;        /* crop centre: 0 h / f (exact), 1 round(h / f) ties to even (camvis2) */
} Work;

/* Level-f coordinate of full-resolution h >= 0 (batches.level_centre): the block h / f, or
 * camvis2's int(round(h / f)), ties to even. camvis2's float64 h / f is a tie exactly when the
 * true quotient is (any other lies 1 / (2f) or more from k + 1/2, far beyond float64's error
 * for image-sized h), so the integer remainder decides the same way. */
static int64_t level_centre(int64_t h, int64_t f, int round_half_even) {
    const int64_t q = h / f, r2 = 2 * (h - q * f);
    if (!round_half_even) return q;
    return q + (r2 > f || (r2 == f && (q & 1)));
}

static void rgb_row(const uint8_t *restrict row, float *restrict line, int64_t p, float mean, float std,
                    int stream) {
#ifdef __AVX2__
    if (stream) {
        const __m256 m = _mm256_set1_ps(mean), s = _mm256_set1_ps(std);
        for (int64_t i = 0; i < p; i += 8) {
            __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + i))));
            _mm256_stream_ps(line + i, _mm256_div_ps(_mm256_sub_ps(x, m), s));
        }
        return;
    }
#endif
    (void)stream;
    for (int64_t i = 0; i < p; i++) line[i] = ((float)row[i] - mean) / std;
}

static void depth_row(const float *restrict row, float *restrict line, int64_t p, float mean, float std,
                      int stream) {
#ifdef __AVX2__
    if (stream) {
        const __m256 m = _mm256_set1_ps(mean), s = _mm256_set1_ps(std);
        for (int64_t i = 0; i < p; i += 8)
            _mm256_stream_ps(line + i, _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(row + i), m), s));
        return;
    }
#endif
    (void)stream;
    for (int64_t i = 0; i < p; i++) line[i] = (row[i] - mean) / std;
}

static void copy_row(const float *restrict row, float *restrict line, int64_t p, int stream) {
#ifdef __AVX2__
    if (stream) {
        for (int64_t i = 0; i < p; i += 8) _mm256_stream_ps(line + i, _mm256_loadu_ps(row + i));
        return;
    }
#endif
    (void)stream;
    memcpy(line, row, (size_t)p * sizeof(float));
}

/* One output channel of a sample: its block, where its window starts and how to normalize it. */
typedef struct {
    const char *block;  /* the channel's (height, width) plane */
    int64_t height, width, top, left;  /* the window's first row and column in the plane (may be < 0) */
    int64_t item;       /* bytes per value: 1 (uint8 RGB) or 4 (float depth) */
    float mean, std, fill;  /* fill: the normalized value outside the plane */
} Window;

/* Inlined: as a call GCC finds it free of side effects and drops it (prefetches included). */
static inline __attribute__((always_inline)) void prefetch_row(const Window *v, int64_t k, int64_t p) {
    const int64_t y = v->top + k;
    if (y < 0 || y >= v->height) return;
    const int64_t x0 = v->left < 0 ? 0 : v->left, x1 = v->left + p > v->width ? v->width : v->left + p;
    if (x1 <= x0) return;
    const char *row = v->block + (y * v->width + x0) * v->item;
    const int64_t bytes = (x1 - x0) * v->item;
    for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(row + i);
    __builtin_prefetch(row + bytes - 1);
}

/* The sample's 4L windows in output-channel order: R, G, B, D of each level. */
static void sample_windows(const Work *w, int64_t j, Window *win) {
    const int64_t n_levels = w->n_levels, p = w->patch, *g = w->geometry;
    for (int64_t l = 0; l < n_levels; l++, win += 4) {
        const int64_t f = g[FACTOR * n_levels + l], height = g[HEIGHT * n_levels + l],
                      width = g[WIDTH * n_levels + l];
        const int64_t top = level_centre(w->center_h[j], f, w->round_half_even) - p / 2,
                      left = level_centre(w->center_w[j], f, w->round_half_even) - p / 2;
        const uint8_t *rgb = w->rgb[l * w->n_images + w->image[j]];
        for (int64_t c = 0; c < 3; c++) {
            const float mean = w->mean[4 * l + c], std = w->std[4 * l + c];
            win[c] = (Window){(const char *)(rgb + c * height * width), height, width, top, left, 1,
                              mean, std, (0.0f - mean) / std};
        }
        const float mean = w->mean[4 * l + 3], std = w->std[4 * l + 3];
        win[3] = (Window){(const char *)w->depth[l * w->n_views + w->view[j]], height, width, top, left,
                          (int64_t)sizeof(float), mean, std, (-1.0f - mean) / std};
    }
}

static void fill_row(float *restrict line, int64_t p, float value, int stream) {
#ifdef __AVX2__
    if (stream) {
        const __m256 v = _mm256_set1_ps(value);
        for (int64_t i = 0; i < p; i += 8) _mm256_stream_ps(line + i, v);
        return;
    }
#endif
    (void)stream;
    for (int64_t i = 0; i < p; i++) line[i] = value;
}

/* Row k of a window that is partly or wholly outside its plane (most rows of a patch on the
 * smallest levels): a row wholly outside is the fill value; a clipped one is built in `tmp`
 * (fill, the inside columns normalized, fill) and then written. */
static void edge_row(const Window *v, int64_t k, int64_t p, float *restrict tmp, float *restrict line,
                     int stream) {
    const int64_t y = v->top + k;
    const int64_t x0 = v->left < 0 ? 0 : v->left, x1 = v->left + p > v->width ? v->width : v->left + p;
    if (y < 0 || y >= v->height || x1 <= x0) {
        fill_row(line, p, v->fill, stream);
        return;
    }
    const int64_t a = x0 - v->left, b = x1 - v->left, offset = y * v->width + x0;
    const float mean = v->mean, std = v->std;
    for (int64_t i = 0; i < a; i++) tmp[i] = v->fill;
    if (v->item == 1) {
        const uint8_t *restrict row = (const uint8_t *)v->block + offset;
        for (int64_t i = 0; i < b - a; i++) tmp[a + i] = ((float)row[i] - mean) / std;
    } else {
        const float *restrict row = (const float *)v->block + offset;
        for (int64_t i = 0; i < b - a; i++) tmp[a + i] = (row[i] - mean) / std;
    }
    for (int64_t i = b; i < p; i++) tmp[i] = v->fill;
    copy_row(tmp, line, p, stream);
}

static void *run(void *arg) {
    const Work *w = arg;
    const int64_t p = w->patch, n_windows = 4 * w->n_levels, rows = n_windows * p;
    Window win[n_windows];
    float tmp[p];
    for (int64_t b = w->first; b < w->last; b++) {
        sample_windows(w, w->idx[b], win);
        float *sample = w->out + b * rows * p;
        /* Output row r is row r % P of window r / P; prefetching runs on into the next window. */
        for (int64_t r = 0; r < rows; r++) {
            if (r + AHEAD < rows) prefetch_row(&win[(r + AHEAD) / p], (r + AHEAD) % p, p);
            const Window *v = &win[r / p];
            const int64_t y = v->top + r % p;
            float *line = sample + r * p;
            if (y < 0 || y >= v->height || v->left < 0 || v->left + p > v->width) {
                edge_row(v, r % p, p, tmp, line, w->stream);
                continue;
            }
            const char *src = v->block + (y * v->width + v->left) * v->item;
            if (v->item == 1) rgb_row((const uint8_t *)src, line, p, v->mean, v->std, w->stream);
            else depth_row((const float *)src, line, p, v->mean, v->std, w->stream);
        }
    }
#ifdef __AVX2__
    if (w->stream) _mm_sfence();  /* streamed lines are visible before the caller reads them */
#endif
    return NULL;
}

/* Fills out[0..n) from the patches idx[0..n), split over `threads` threads by sample;
 * streams when the batch has at least stream_min_bytes; round_half_even picks the crop-centre
 * rule (0 exact, 1 camvis2). Returns whether it streamed.
 * The caller guarantees idx in range and every block pointer valid for its level's shape. */
int camvis_batch(const uint8_t *const *rgb, const float *const *depth, const int64_t *geometry,
                 const int64_t *center_h, const int64_t *center_w, const int64_t *image,
                 const int64_t *view, const int64_t *idx, int64_t n, const float *mean,
                 const float *std, float *out, int64_t n_levels, int64_t n_images, int64_t n_views,
                 int64_t patch, int64_t threads, int64_t stream_min_bytes, int64_t round_half_even) {
    Work work[MAX_THREADS];
    pthread_t thread[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    if (threads > n) threads = n;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
#ifdef __AVX2__
    const int stream = patch % 8 == 0 && (uintptr_t)out % 32 == 0
                       && n * n_levels * 4 * patch * patch * (int64_t)sizeof(float) >= stream_min_bytes;
#else
    const int stream = 0;
#endif
    for (int64_t t = 0; t < threads; t++) {
        work[t] = (Work){rgb, depth, geometry, center_h, center_w, image, view, idx, mean, std, out,
                         n * t / threads, n * (t + 1) / threads, n_levels, n_images, n_views, patch, stream,
                         round_half_even != 0};
    }
    for (int64_t t = 1; t < threads; t++) started[t] = pthread_create(&thread[t], NULL, run, &work[t]) == 0;
    run(&work[0]);
    for (int64_t t = 1; t < threads; t++) {
        if (started[t]) pthread_join(thread[t], NULL);
        else run(&work[t]);  /* no thread to be had: do its share here */
    }
    return stream;
}

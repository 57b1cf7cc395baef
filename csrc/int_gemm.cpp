// Exact int8 matrix product with int32 sums on the CPU: C (M x N) = A (M x K) * B (K x N);
// and, on it, one wavefront step of the joint autoregressive models (the end of this file).
//
// The integer hyper-decoder's convolutions (kernels/int_conv_gemm.py) need the same integers on
// every machine; integer arithmetic gives that whatever the blocking or threading. AVX2 has no
// int8 dot product that cannot saturate, so operands are widened to int16 and multiplied in
// pairs (vpmaddwd: two products summed into an int32 lane, exact for int8 inputs; with
// AVX512-VNNI, vpdpwssd also adds them in), 16 multiply-adds an instruction where a float32 FMA
// does 8. Callers keep |C| within int32 (kernels/int_conv_reference.py, check_int_conv).
//
// Layout: A is packed in blocks of MR rows, B in panels of NR columns, both as int16 pairs along
// K (k even and k + 1 side by side, a zero beyond K); one micro-kernel computes an MR x NR tile
// of C in 8 ymm accumulators (12 spilled some of AVX2's 16 registers to the stack), in passes
// of KC pairs of K and MC rows of A that stay in the L1 and L2 caches. Threads take whole
// panels of N: OpenMP's where the extension is built with it (Linux), so torch's own threads.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NIC_X86 1
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace py = pybind11;

namespace {

constexpr int MR = 4;   // rows of A per micro-kernel
constexpr int NR = 16;  // columns of B per micro-kernel: two ymm of 8 int32 lanes
constexpr int KC = 256;  // pairs of K per pass: a panel's slice of B (16 KiB) stays in L1
constexpr int MC = 256;  // rows of A per pass: their slice (256 KiB) stays in L2
constexpr int64_t THREADED = 1 << 20;  // fewer multiply-adds run on one thread: starting more
                                       // costs more

size_t packed_a_size(int m, int k) {
  return static_cast<size_t>((m + MR - 1) / MR) * ((k + 1) / 2) * MR * 2;
}

// A (M x K, row stride K) as blocks [block][k / 2][row][2] of int16, zero-padded to MR rows and
// an even K: packed once per weight by the caller, which keeps it.
void pack_a(const int8_t* a, int m, int k, int16_t* out) {
  const int kp = (k + 1) / 2;
  std::fill(out, out + packed_a_size(m, k), int16_t{0});
  for (int i = 0; i < m; ++i) {
    int16_t* dst = out + static_cast<size_t>(i / MR) * kp * MR * 2 + (i % MR) * 2;
    const int8_t* row = a + static_cast<size_t>(i) * k;
    for (int j = 0; j < k; ++j) dst[static_cast<size_t>(j / 2) * MR * 2 + j % 2] = row[j];
  }
}

// Columns n0 .. n0 + NR - 1 of B (K x N, row stride N) as [k / 2][column][2] int16.
void pack_b(const int8_t* b, int k, int n, int n0, int kp, int16_t* out) {
  const int cols = std::min(NR, n - n0);
  std::fill(out, out + static_cast<size_t>(kp) * NR * 2, int16_t{0});
  for (int j = 0; j < k; ++j) {
    const int8_t* row = b + static_cast<size_t>(j) * n + n0;
    int16_t* dst = out + static_cast<size_t>(j / 2) * NR * 2 + j % 2;
    for (int c = 0; c < cols; ++c) dst[2 * c] = row[c];
  }
}

// The valid rows and columns of an MR x NR tile into C, or added to it (a later pass over K).
void store_tile(const int32_t* tile, int32_t* c, int ldc, int rows, int cols, bool add) {
  for (int r = 0; r < rows; ++r) {
    int32_t* row = c + static_cast<size_t>(r) * ldc;
    if (add) {
      for (int j = 0; j < cols; ++j) row[j] += tile[r * NR + j];
    } else {
      std::memcpy(row, tile + r * NR, cols * sizeof(int32_t));
    }
  }
}

// One MR x NR tile of C, compiled for TARGET: MADD(acc, a, b) adds, lane by lane, A's pair
// (k, k + 1) times B's pairs into acc.
#ifdef NIC_X86
#define DEFINE_TILE(NAME, TARGET, MADD)                                                        \
  __attribute__((target(TARGET))) void NAME(const int16_t* ap, const int16_t* bp, int kp,     \
                                            int32_t* c, int ldc, int rows, int cols,          \
                                            bool add) {                                       \
    __m256i acc[MR][2];                                                                        \
    for (auto& row : acc) row[0] = row[1] = _mm256_setzero_si256();                            \
    for (int p = 0; p < kp; ++p, ap += MR * 2, bp += NR * 2) {                                 \
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));            \
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 16));       \
      for (int r = 0; r < MR; ++r) {                                                           \
        int32_t pair;                                                                          \
        std::memcpy(&pair, ap + 2 * r, sizeof pair);                                           \
        const __m256i a = _mm256_set1_epi32(pair);                                             \
        acc[r][0] = MADD(acc[r][0], a, b0);                                                    \
        acc[r][1] = MADD(acc[r][1], a, b1);                                                    \
      }                                                                                        \
    }                                                                                          \
    alignas(32) int32_t tile[MR * NR];                                                         \
    for (int r = 0; r < MR; ++r) {                                                             \
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile + r * NR), acc[r][0]);               \
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile + r * NR + 8), acc[r][1]);           \
    }                                                                                          \
    store_tile(tile, c, ldc, rows, cols, add);                                                 \
  }

#define MADD_AVX2(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
#define MADD_VNNI(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)  // one instruction
DEFINE_TILE(tile_avx2, "avx2", MADD_AVX2)
DEFINE_TILE(tile_vnni, "avx2,avx512vl,avx512vnni", MADD_VNNI)
#endif

// The same tile in portable C++ (CPUs without AVX2, and the kernel's own reference in tests).
void tile_portable(const int16_t* ap, const int16_t* bp, int kp, int32_t* c, int ldc, int rows,
                   int cols, bool add) {
  int32_t tile[MR * NR] = {};
  for (int p = 0; p < kp; ++p, ap += MR * 2, bp += NR * 2)
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NR; ++j)
        tile[r * NR + j] += ap[2 * r] * bp[2 * j] + ap[2 * r + 1] * bp[2 * j + 1];
  store_tile(tile, c, ldc, rows, cols, add);
}

using Tile = void (*)(const int16_t*, const int16_t*, int, int32_t*, int, int, int, bool);

// The fastest tile this CPU runs; NIC_INT_GEMM_AVX2 holds it to AVX2 (as on CPUs without AVX-512).
Tile simd_tile() {
#ifdef NIC_X86
  if (!__builtin_cpu_supports("avx2")) return nullptr;
  if (__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
      !std::getenv("NIC_INT_GEMM_AVX2"))
    return tile_vnni;
  return tile_avx2;
#else
  return nullptr;
#endif
}

const Tile SIMD_TILE = simd_tile();

// C (M x N, row stride ldc) = A (M x K, packed by pack_a) * B (K x N, int8, contiguous). Each
// thread packs its panels of B, then runs them in passes of KC pairs of K and MC rows of A.
void gemm(const int16_t* ap, const int8_t* b, int32_t* c, int m, int n, int k, int ldc,
          int threads, bool portable) {
  const int kp = (k + 1) / 2;
  const size_t a_block = static_cast<size_t>(kp) * MR * 2;
  const size_t b_panel = static_cast<size_t>(kp) * NR * 2;
  const int panels = (n + NR - 1) / NR;
  const Tile tile = portable || !SIMD_TILE ? tile_portable : SIMD_TILE;
  auto work = [&](int first, int last) {
    std::vector<int16_t> bp(b_panel * (last - first));
    for (int panel = first; panel < last; ++panel)
      pack_b(b, k, n, panel * NR, kp, bp.data() + b_panel * (panel - first));
    for (int p0 = 0; p0 < kp; p0 += KC)
      for (int i1 = 0; i1 < m; i1 += MC)
        for (int panel = first; panel < last; ++panel) {
          const int n0 = panel * NR, cols = std::min(NR, n - n0);
          const int16_t* b_slice = bp.data() + b_panel * (panel - first) + p0 * NR * 2;
          for (int i0 = i1; i0 < std::min(m, i1 + MC); i0 += MR)
            tile(ap + a_block * (i0 / MR) + p0 * MR * 2, b_slice, std::min(KC, kp - p0),
                 c + static_cast<size_t>(i0) * ldc + n0, ldc, std::min(MR, m - i0), cols, p0 > 0);
        }
  };
  if (static_cast<int64_t>(m) * n * k < THREADED) threads = 1;
  threads = std::max(1, std::min(threads, panels));
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int t = 0; t < threads; ++t) work(panels * t / threads, panels * (t + 1) / threads);
}


// --- One wavefront step of the joint autoregressive model (kernels/wavefront_step_reference.py) --

constexpr int FIXED = 0, LRELU_INT8 = 1;  // int_conv_reference.py's modes (else PLAIN_INT8)
constexpr int64_t LRELU_NUM = 41, LRELU_SHIFT = 12;
constexpr int TAP_ROWS[12] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2};  // CONTEXT_TAPS
constexpr int TAP_COLS[12] = {0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1};

struct StepLayer {
  const int16_t* packed;  // the weight (Co, C) as pack_a packs it
  int c, co, mode;
  const int64_t *bias, *mult, *shift;
};

// requantize() of int_conv_reference.py for one value: round((acc + bias) * mult / 2^shift),
// half up, with its integer LeakyReLU first.
int64_t requantize(int64_t acc, int64_t bias, int64_t mult, int64_t shift, int mode) {
  int64_t t = (acc + bias) * mult;
  if (mode == LRELU_INT8 && t < 0) t = (t * LRELU_NUM) >> LRELU_SHIFT;  // arithmetic: floor
  return (t + (int64_t{1} << (shift - 1))) >> shift;
}

// wavefront_step_reference for the P positions (rows, cols) of every image: taps (B, M, HP, WP)
// int8, params_acc (B, C1, H, W) int32 -> indexes int32, scales and means int64, each (B, M, P).
void wavefront_step(const int8_t* taps, int b, int m, int hp, int wp, const int64_t* rows,
                    const int64_t* cols, int p, const int32_t* params_acc, int h, int w,
                    const std::vector<StepLayer>& layers, const int64_t* thresholds, int nt,
                    int32_t* indexes, int64_t* scales, int64_t* means, int threads) {
  std::vector<int8_t> in, out;
  std::vector<int32_t> acc;
  std::vector<int64_t> fixed;
  for (int i = 0; i < b; ++i) {
    in.resize(static_cast<size_t>(12) * m * p);
    for (int c = 0; c < m; ++c)  // input channel c * 12 + tap, as the reference gathers
      for (int t = 0; t < 12; ++t) {
        const int8_t* plane = taps + (static_cast<size_t>(i) * m + c) * hp * wp;
        int8_t* dst = in.data() + (static_cast<size_t>(c) * 12 + t) * p;
        for (int q = 0; q < p; ++q)
          dst[q] = plane[(rows[q] + TAP_ROWS[t]) * wp + cols[q] + TAP_COLS[t]];
      }
    for (size_t l = 0; l < layers.size(); ++l) {
      const StepLayer& layer = layers[l];
      acc.resize(static_cast<size_t>(layer.co) * p);
      gemm(layer.packed, in.data(), acc.data(), layer.co, p, layer.c, p, threads, false);
      if (l == 1)  // the first entropy-parameter layer: plus its params half, added in int32
        for (int o = 0; o < layer.co; ++o) {
          const int32_t* plane = params_acc + (static_cast<size_t>(i) * layer.co + o) * h * w;
          for (int q = 0; q < p; ++q) {
            int32_t& a = acc[static_cast<size_t>(o) * p + q];
            a = static_cast<int32_t>(static_cast<uint32_t>(a) +
                                     static_cast<uint32_t>(plane[rows[q] * w + cols[q]]));
          }
        }
      if (layer.mode == FIXED) fixed.resize(acc.size()); else out.resize(acc.size());
      for (int o = 0; o < layer.co; ++o)
        for (int q = 0; q < p; ++q) {
          const size_t k = static_cast<size_t>(o) * p + q;
          const int64_t v = requantize(acc[k], layer.bias[o], layer.mult[o], layer.shift[o],
                                       layer.mode);
          if (layer.mode == FIXED) fixed[k] = v;
          else out[k] = static_cast<int8_t>(std::clamp<int64_t>(v, -128, 127));
        }
      if (layer.mode != FIXED) in.swap(out);
    }
    for (int c = 0; c < m; ++c)  // the last layer: M scales, then M means
      for (int q = 0; q < p; ++q) {
        const size_t k = (static_cast<size_t>(i) * m + c) * p + q;
        scales[k] = fixed[static_cast<size_t>(c) * p + q];
        means[k] = fixed[static_cast<size_t>(m + c) * p + q];
        // bucketize(right=False): how many thresholds lie strictly below the scale
        indexes[k] = static_cast<int32_t>(
            std::lower_bound(thresholds, thresholds + nt, scales[k]) - thresholds);
      }
  }
}

}  // namespace

PYBIND11_MODULE(_int_gemm, mod) {
  mod.doc() = "Exact int8 GEMM and wavefront step on the CPU (csrc/int_gemm.cpp).";
  mod.attr("simd") = SIMD_TILE != nullptr;
  mod.def("packed_a_size", &packed_a_size, py::arg("m"), py::arg("k"),
          "int16 elements of A (m x k) packed");
  mod.def(
      "pack_a",
      [](uintptr_t a, int m, int k, uintptr_t out) {
        pack_a(reinterpret_cast<const int8_t*>(a), m, k, reinterpret_cast<int16_t*>(out));
      },
      py::arg("a"), py::arg("m"), py::arg("k"), py::arg("out"),
      py::call_guard<py::gil_scoped_release>(),
      "Pack A (m x k int8, contiguous) into out (packed_a_size(m, k) int16); data addresses.");
  mod.def(
      "gemm",
      [](uintptr_t ap, uintptr_t b, uintptr_t c, int m, int n, int k, int ldc, int threads,
         bool portable) {
        gemm(reinterpret_cast<const int16_t*>(ap), reinterpret_cast<const int8_t*>(b),
             reinterpret_cast<int32_t*>(c), m, n, k, ldc, threads, portable);
      },
      py::arg("ap"), py::arg("b"), py::arg("c"), py::arg("m"), py::arg("n"), py::arg("k"),
      py::arg("ldc"), py::arg("threads"), py::arg("portable") = false,
      py::call_guard<py::gil_scoped_release>(),
      "C (m x n int32, row stride ldc) = A (m x k, packed by pack_a) * B (k x n int8, "
      "contiguous); data addresses. Up to `threads` threads split the columns (one below 2^20 "
      "multiply-adds); `portable` skips SIMD (tests).");
  mod.def(
      "wavefront_step",
      [](uintptr_t taps, int b, int m, int hp, int wp, uintptr_t rows, uintptr_t cols, int p,
         uintptr_t params_acc, int h, int w, const std::vector<py::tuple>& layer_args,
         uintptr_t thresholds, int nt, uintptr_t indexes, uintptr_t scales, uintptr_t means,
         int threads) {
        std::vector<StepLayer> layers;
        for (const py::tuple& t : layer_args)
          layers.push_back({reinterpret_cast<const int16_t*>(t[0].cast<uintptr_t>()),
                            t[1].cast<int>(), t[2].cast<int>(), t[3].cast<int>(),
                            reinterpret_cast<const int64_t*>(t[4].cast<uintptr_t>()),
                            reinterpret_cast<const int64_t*>(t[5].cast<uintptr_t>()),
                            reinterpret_cast<const int64_t*>(t[6].cast<uintptr_t>())});
        py::gil_scoped_release release;
        wavefront_step(reinterpret_cast<const int8_t*>(taps), b, m, hp, wp,
                       reinterpret_cast<const int64_t*>(rows),
                       reinterpret_cast<const int64_t*>(cols), p,
                       reinterpret_cast<const int32_t*>(params_acc), h, w, layers,
                       reinterpret_cast<const int64_t*>(thresholds), nt,
                       reinterpret_cast<int32_t*>(indexes), reinterpret_cast<int64_t*>(scales),
                       reinterpret_cast<int64_t*>(means), threads);
      },
      "wavefront_step_reference on contiguous CPU tensors (data addresses): layers as tuples "
      "(packed weight, C, Co, mode, bias, mult, shift), int64 vectors.");
}

// Fused CPU forward for block-structured sparse 2-D convolutions (SSC layers).
//
// One pass over the input: every output pixel reads its K x K window once and accumulates the
// spatial and the 1 x 1 weights of its filters together (no grouped conv + 1 x 1 conv + add).
//
// Weights are packed by ssconv.kernels.fused.pack: output channels are sorted so that channels
// with the same support (the same residue class in SSC) are neighbours, and cut into blocks of
// VB lanes. A block stores the union of its lanes' (tap, input channel) pairs as "entries",
// grouped by tap into "segments"; each entry holds VB weights (zero on lanes that lack it).
// Executed MACs = entries * VB per pixel, the effective MACs when classes fill whole blocks.
//
// Layout: input and output are NHWC (channels_last), float32. Out-of-image taps read a zero
// row, so borders need no branches. Work is split over tiles of T consecutive output pixels
// (across rows), parallel with at::parallel_for (torch.set_num_threads applies).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));

template <typename V>
static inline V load_v(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V>
static inline void store_v(float* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

struct Packed {
  const float* w;          // (E, VB)
  const int32_t* ch;       // (E,)
  const int32_t* seg_tap;  // (S,)
  const int64_t* seg_beg;  // (S + 1,)
  const int64_t* blk_seg;  // (B + 1,)
  const int32_t* out_idx;  // (B * VB,) output channel of each lane, -1 for padding lanes
  const int32_t* blk_base; // (B,) first channel when the lanes are contiguous, else -1
  const float* bias;       // (B * VB,) bias per lane (zeros when none)
  int64_t vb;
};

// acc[T][NV] over the segments of one block, for one tile; results to scratch (T x VB).
template <typename V, int NV, int T>
static inline void tile_block(const float* const* ptrs, const Packed& pk, int64_t b,
                              float* scratch) {
  constexpr int W = sizeof(V) / sizeof(float);
  const int64_t vb = pk.vb;
  V acc[T][NV];
  for (int j = 0; j < NV; ++j) {
    V bj = load_v<V>(pk.bias + b * vb + j * W);
    for (int t = 0; t < T; ++t) acc[t][j] = bj;
  }
  for (int64_t s = pk.blk_seg[b]; s < pk.blk_seg[b + 1]; ++s) {
    const float* const* p = ptrs + (int64_t)pk.seg_tap[s] * T;
    const float* pt[T];
    for (int t = 0; t < T; ++t) pt[t] = p[t];
    const int64_t e1 = pk.seg_beg[s + 1];
    for (int64_t e = pk.seg_beg[s]; e < e1; ++e) {
      const int32_t c = pk.ch[e];
      const float* w = pk.w + e * vb;
      V wv[NV];
      for (int j = 0; j < NV; ++j) wv[j] = load_v<V>(w + j * W);
      for (int t = 0; t < T; ++t) {
        const float xs = pt[t][c];
        for (int j = 0; j < NV; ++j) acc[t][j] += xs * wv[j];
      }
    }
  }
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < NV; ++j) store_v<V>(scratch + t * vb + j * W, acc[t][j]);
}

template <typename V, int NV, int T>
static void run(const torch::Tensor& x, torch::Tensor& y, const Packed& pk, int64_t nblocks,
                int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                int64_t dh, int64_t dw) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3);
  const int64_t cout = y.size(1), ho = y.size(2), wo = y.size(3);
  const int64_t ntaps = kh * kw;
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const std::vector<float> zeros(c, 0.0f);
  const int64_t npix = n * ho * wo;
  const int64_t ntiles = (npix + T - 1) / T;
  constexpr int64_t CHUNK = 8;  // tiles per work item: a block's weights are reused over them
  const int64_t nchunks = (ntiles + CHUNK - 1) / CHUNK;
  const int64_t vb = pk.vb;

  at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<const float*> ptrs(CHUNK * ntaps * T);
    std::vector<float> scratch(CHUNK * T * vb);
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t t0 = chunk * CHUNK;
      const int64_t tn = std::min(CHUNK, ntiles - t0);
      // Pointer table: for every tile, tap and pixel, the input row (or the zero row). The
      // pixel's (image, row, column) advance incrementally: one division per chunk.
      int64_t pix = t0 * T;
      int64_t ni = pix / (ho * wo), oh = (pix % (ho * wo)) / wo, ow = pix % wo;
      for (int64_t k = 0; k < tn; ++k) {
        for (int t = 0; t < T; ++t, ++pix) {
          const bool valid = pix < npix;
          for (int64_t u = 0; u < kh; ++u) {
            const int64_t ih = oh * sh - ph + u * dh;
            const bool row_ok = valid && ih >= 0 && ih < h;
            const float* row = xp + (ni * h + ih) * wd * c;
            for (int64_t v = 0; v < kw; ++v) {
              const int64_t iw = ow * sw - pw + v * dw;
              ptrs[(k * ntaps + u * kw + v) * T + t] =
                  (row_ok && iw >= 0 && iw < wd) ? row + iw * c : zeros.data();
            }
          }
          if (++ow == wo) {
            ow = 0;
            if (++oh == ho) {
              oh = 0;
              ++ni;
            }
          }
        }
      }
      for (int64_t b = 0; b < nblocks; ++b) {
        const int32_t base = pk.blk_base[b];
        const int32_t* idx = pk.out_idx + b * vb;
        int64_t lanes = 0;
        for (int64_t j = 0; j < vb; ++j) lanes += idx[j] >= 0;
        for (int64_t k = 0; k < tn; ++k) {
          float* sc = scratch.data() + k * T * vb;
          tile_block<V, NV, T>(ptrs.data() + k * ntaps * T, pk, b, sc);
          const int64_t pix0 = (t0 + k) * T;
          const int64_t tv = std::min<int64_t>(T, npix - pix0);
          for (int64_t t = 0; t < tv; ++t) {
            float* dst = yp + (pix0 + t) * cout;
            const float* src = sc + t * vb;
            if (base >= 0) {
              std::memcpy(dst + base, src, lanes * sizeof(float));
            } else {
              for (int64_t j = 0; j < vb; ++j)
                if (idx[j] >= 0) dst[idx[j]] = src[j];
            }
          }
        }
      }
    }
  });
}

torch::Tensor ssc_fused_forward(torch::Tensor x, torch::Tensor w, torch::Tensor ch,
                                torch::Tensor seg_tap, torch::Tensor seg_beg,
                                torch::Tensor blk_seg, torch::Tensor out_idx,
                                torch::Tensor blk_base, torch::Tensor bias, int64_t cin,
                                int64_t cout,
                                int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                                int64_t pw, int64_t dh, int64_t dw, int64_t vb) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "ssc_fused_forward: x must be a 4-D float32 CPU tensor");
  TORCH_CHECK(x.size(1) == cin, "ssc_fused_forward: expected ", cin,
              " input channels, got ", x.size(1));
  x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t n = x.size(0), h = x.size(2), wd = x.size(3);
  const int64_t ho = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t wo = (wd + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(ho > 0 && wo > 0, "ssc_fused_forward: input too small for the kernel");
  auto y = torch::empty({n, cout, ho, wo},
                        x.options().memory_format(at::MemoryFormat::ChannelsLast));
  Packed pk{w.data_ptr<float>(),       ch.data_ptr<int32_t>(),      seg_tap.data_ptr<int32_t>(),
            seg_beg.data_ptr<int64_t>(), blk_seg.data_ptr<int64_t>(), out_idx.data_ptr<int32_t>(),
            blk_base.data_ptr<int32_t>(), bias.data_ptr<float>(),     vb};
  const int64_t nblocks = blk_seg.numel() - 1;
  // Tiles (lanes x pixels) chosen on the layer benchmark: 16 x 6 was the fastest wherever the
  // blocks are full; 8 x 8 and 4 x 8 serve narrow residue classes.
  if (vb == 16) {
    run<vf8, 2, 6>(x, y, pk, nblocks, kh, kw, sh, sw, ph, pw, dh, dw);
  } else if (vb == 8) {
    run<vf8, 1, 8>(x, y, pk, nblocks, kh, kw, sh, sw, ph, pw, dh, dw);
  } else if (vb == 4) {
    run<vf4, 1, 8>(x, y, pk, nblocks, kh, kw, sh, sw, ph, pw, dh, dw);
  } else {
    TORCH_CHECK(false, "ssc_fused_forward: vb must be 4, 8 or 16, got ", vb);
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("ssc_fused_forward", &ssc_fused_forward,
        "Fused block-structured sparse conv2d forward (float32, CPU, NHWC)");
}

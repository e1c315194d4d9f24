// Fused CPU kernels for block-structured sparse 2-D convolutions (SSC layers): the forward and
// the weight gradient. The input gradient of a stride-1 layer is a forward call on the output
// gradient with the transposed, tap-flipped packing (see ssconv.kernels.fused).
//
// Forward: one pass over the input: every output pixel reads its K x K window once and
// accumulates the spatial and the 1 x 1 weights of its filters together (no grouped conv +
// 1 x 1 conv + add).
//
// Weights are packed by ssconv.kernels.fused.pack: output channels are sorted so that channels
// with the same support (the same residue class in SSC) are neighbours, and cut into blocks of
// VB lanes. A block stores the union of its lanes' (tap, input channel) pairs as "entries",
// grouped by tap into "segments"; each entry holds VB weights (zero on lanes that lack it).
// Executed MACs = entries * VB per pixel, the effective MACs when classes fill whole blocks.
//
// Weight gradient: for every entry e = (tap, input channel) of a block and its VB lanes,
// dW[e, lane] = sum over output pixels of x[pixel shifted by tap, channel] * dY[pixel, lane]:
// the same entries, so the same executed MACs as the forward. Pixels are cut into chunks; each
// thread accumulates its chunks into its own copy of dW, summed at the end.
//
// Layout: input and output are NHWC (channels_last), float32 (or float64, for gradcheck).
// Out-of-image taps read a zero row, so borders need no branches. Work is split over tiles of
// T consecutive output pixels (across rows), parallel with at::parallel_for
// (torch.set_num_threads applies).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if defined(SSCONV_PORTABLE) || !(defined(__GNUC__) || defined(__clang__))
// Portable build (MSVC, or SSCONV_PORTABLE=1): the vector types as plain arrays with the
// element-wise operators the kernels use; the compiler vectorizes the loops where it can.
template <typename S, int N>
struct vec {
  S v[N];
  S& operator[](int i) { return v[i]; }
  const S& operator[](int i) const { return v[i]; }
  vec& operator+=(const vec& o) {
    for (int i = 0; i < N; ++i) v[i] += o.v[i];
    return *this;
  }
  friend vec operator+(vec a, const vec& b) { return a += b; }
  friend vec operator+(vec a, S b) {
    for (int i = 0; i < N; ++i) a.v[i] += b;
    return a;
  }
  friend vec operator+(S a, const vec& b) { return b + a; }
  friend vec operator*(vec a, const vec& b) {
    for (int i = 0; i < N; ++i) a.v[i] *= b.v[i];
    return a;
  }
  friend vec operator*(vec a, S b) {
    for (int i = 0; i < N; ++i) a.v[i] *= b;
    return a;
  }
  friend vec operator*(S a, const vec& b) { return b * a; }
};
typedef vec<float, 16> vf16;
typedef vec<float, 8> vf8;
typedef vec<float, 4> vf4;
typedef vec<double, 4> vd4;
#else
typedef float vf16 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));
typedef double vd4 __attribute__((vector_size(32)));
#endif

// Built with -mavx512f (ssconv.kernels.fused, where ATen reports AVX512): 16-lane registers,
// and 32 of them, so a 16-lane block is one register and its tiles hold more pixels.
#if defined(__AVX512F__) && !defined(SSCONV_PORTABLE)
#define SSCONV_AVX512 1
#else
#define SSCONV_AVX512 0
#endif

// The instruction set the kernels were compiled for (reported by ssconv.kernels.fused).
std::string ssc_isa() {
#if defined(SSCONV_PORTABLE)
  return "portable";
#elif SSCONV_AVX512
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#else
  return "generic";
#endif
}

template <typename V, typename S>
static inline V load_v(const S* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename S>
static inline void store_v(S* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// max(v, 0) lane by lane, NaN kept (torch.relu's values): a ReLU fused into a forward's store.
template <typename V, typename S>
static inline V relu_v(V v) {
  constexpr int W = sizeof(V) / sizeof(S);
  S a[W];
  std::memcpy(a, &v, sizeof(V));
  for (int l = 0; l < W; ++l) a[l] = a[l] < S(0) ? S(0) : a[l];
  std::memcpy(&v, a, sizeof(V));
  return v;
}

template <typename S>
struct Packed {
  const S* w;              // (E, VB)
  const int32_t* ch;       // (E,)
  const int32_t* seg_tap;  // (S,)
  const int64_t* seg_beg;  // (S + 1,)
  const int64_t* blk_seg;  // (B + 1,)
  const int32_t* out_idx;  // (B * VB,) output channel of each lane, -1 for padding lanes
  const int32_t* blk_base; // (B,) first channel when the lanes are contiguous, else -1
  const S* bias;           // (B * VB,) bias per lane (zeros when none)
  int64_t vb;
};

struct Geometry {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// Pointer table for `count` consecutive output pixels starting at `pix`, stored with stride
// `T` per tap: ptrs[tap * T + t] is the input row (NHWC pixel) that tap reads for pixel t, or the
// zero row outside the image (and past the last pixel).
// The taps' rows of one output pixel (image ni, row oh, column ow) into slot t of the table.
template <typename S>
static inline void pixel_ptrs(const S* xp, const S* zeros, bool valid, int64_t ni, int64_t oh,
                              int64_t ow, int64_t t, int64_t T, int64_t c, int64_t h,
                              int64_t wd, const Geometry& g, const S** ptrs) {
  for (int64_t u = 0; u < g.kh; ++u) {
    const int64_t ih = oh * g.sh - g.ph + u * g.dh;
    const bool row_ok = valid && ih >= 0 && ih < h;
    const S* row = xp + (ni * h + ih) * wd * c;
    for (int64_t v = 0; v < g.kw; ++v) {
      const int64_t iw = ow * g.sw - g.pw + v * g.dw;
      ptrs[(u * g.kw + v) * T + t] = (row_ok && iw >= 0 && iw < wd) ? row + iw * c : zeros;
    }
  }
}

template <typename S>
static void fill_ptrs(const S* xp, const S* zeros, int64_t pix, int64_t count, int64_t T,
                      int64_t npix, int64_t c, int64_t h, int64_t wd, int64_t ho, int64_t wo,
                      const Geometry& g, const S** ptrs) {
  int64_t ni = pix / (ho * wo), oh = (pix % (ho * wo)) / wo, ow = pix % wo;
  for (int64_t t = 0; t < count; ++t, ++pix) {
    pixel_ptrs(xp, zeros, pix < npix, ni, oh, ow, t, T, c, h, wd, g, ptrs);
    if (++ow == wo) {
      ow = 0;
      if (++oh == ho) {
        oh = 0;
        ++ni;
      }
    }
  }
}

// fill_ptrs for the pixels order[first .. first + count) (past npix: the zero row).
template <typename S>
static void fill_ptrs_ordered(const S* xp, const S* zeros, const int64_t* order, int64_t first,
                              int64_t count, int64_t T, int64_t npix, int64_t c, int64_t h,
                              int64_t wd, int64_t ho, int64_t wo, const Geometry& g,
                              const S** ptrs) {
  for (int64_t t = 0; t < count; ++t) {
    const bool valid = first + t < npix;
    const int64_t pix = valid ? order[first + t] : 0;
    pixel_ptrs(xp, zeros, valid, pix / (ho * wo), (pix % (ho * wo)) / wo, pix % wo, t, T, c, h,
               wd, g, ptrs);
  }
}

// For each output position of a map, the set of taps that fall inside the input (a bitmask
// over the taps), where padding makes many taps fall outside (small maps: an 8 x 8 map reads
// 16 % zeros through a 3 x 3 window, a 4 x 4 map 31 %, a 2 x 2 map 56 %); empty where the
// kernels keep the natural order and multiply the zeros: at least 90 % of the taps inside
// (16 x 16 maps and larger, 3 x 3; docs/benchmarks.md: with the whole batch as one group,
// 8 x 8 maps gained nothing, 1.01x), or more than 64 taps.
static std::vector<uint64_t> padded_tap_sets(int64_t h, int64_t wd, int64_t ho, int64_t wo,
                                             const Geometry& g) {
  const int64_t ntaps = g.kh * g.kw;
  if (ntaps > 64) return {};
  std::vector<uint64_t> mask(ho * wo);
  int64_t inside = 0;
  for (int64_t oh = 0; oh < ho; ++oh)
    for (int64_t ow = 0; ow < wo; ++ow) {
      uint64_t m = 0;
      for (int64_t u = 0; u < g.kh; ++u) {
        const int64_t ih = oh * g.sh - g.ph + u * g.dh;
        for (int64_t v = 0; v < g.kw; ++v) {
          const int64_t iw = ow * g.sw - g.pw + v * g.dw;
          if (ih >= 0 && ih < h && iw >= 0 && iw < wd) m |= uint64_t(1) << (u * g.kw + v);
        }
      }
      mask[oh * wo + ow] = m;
      inside += __builtin_popcountll(m);
    }
  if (inside * 10 >= ho * wo * ntaps * 9) return {};
  return mask;
}

// Output pixels ordered by their set of inside taps (padded_tap_sets), in groups of `group`
// images (image after image within a set, set after set within a group). With `group` the
// tile width every set of a group fills whole tiles (a pixel position occurs once per image),
// so the tiles share their outside taps, whose segments tile_block skips, as a dense
// convolution skips the padding; and a tile's pixels come from `group` neighbouring images,
// whose rows stay in cache. Empty where the natural order is kept.
static std::vector<int64_t> border_order(int64_t n, int64_t h, int64_t wd, int64_t ho,
                                         int64_t wo, const Geometry& g, int64_t group) {
  const std::vector<uint64_t> mask = padded_tap_sets(h, wd, ho, wo, g);
  if (mask.empty()) return {};
  std::vector<uint64_t> sets;
  for (uint64_t m : mask)
    if (std::find(sets.begin(), sets.end(), m) == sets.end()) sets.push_back(m);
  std::vector<int64_t> order;
  order.reserve(n * ho * wo);
  for (int64_t n0 = 0; n0 < n; n0 += group)
    for (uint64_t m : sets)
      for (int64_t ni = n0; ni < std::min(n, n0 + group); ++ni)
        for (int64_t pos = 0; pos < ho * wo; ++pos)
          if (mask[pos] == m) order.push_back(ni * ho * wo + pos);
  return order;
}

// acc[T][NV] over the segments of one block, for one tile; results to scratch (T x VB).
// skip_zeros: the zero row, whose segments are skipped where every pixel of the tile reads it
// (null: nothing skipped).
template <typename S, typename V, int NV, int T>
static inline void tile_block(const S* const* ptrs, const Packed<S>& pk, int64_t b, S* scratch,
                              const S* skip_zeros, bool relu) {
  constexpr int W = sizeof(V) / sizeof(S);
  const int64_t vb = pk.vb;
  V acc[T][NV];
  for (int j = 0; j < NV; ++j) {
    V bj = load_v<V>(pk.bias + b * vb + j * W);
    for (int t = 0; t < T; ++t) acc[t][j] = bj;
  }
  for (int64_t s = pk.blk_seg[b]; s < pk.blk_seg[b + 1]; ++s) {
    const S* const* p = ptrs + (int64_t)pk.seg_tap[s] * T;
    const S* pt[T];
    bool outside = skip_zeros != nullptr;
    for (int t = 0; t < T; ++t) {
      pt[t] = p[t];
      outside &= p[t] == skip_zeros;
    }
    if (outside) continue;  // every pixel of the tile reads padding here: nothing to add
    const int64_t e1 = pk.seg_beg[s + 1];
    for (int64_t e = pk.seg_beg[s]; e < e1; ++e) {
      const int32_t c = pk.ch[e];
      const S* w = pk.w + e * vb;
      V wv[NV];
      for (int j = 0; j < NV; ++j) wv[j] = load_v<V>(w + j * W);
      for (int t = 0; t < T; ++t) {
        const S xs = pt[t][c];
        for (int j = 0; j < NV; ++j) acc[t][j] += xs * wv[j];
      }
    }
  }
  if (relu)
    for (int t = 0; t < T; ++t)
      for (int j = 0; j < NV; ++j) acc[t][j] = relu_v<V, S>(acc[t][j]);
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < NV; ++j) store_v<V>(scratch + t * vb + j * W, acc[t][j]);
}

template <typename S, typename V, int NV, int T>
static void run(const torch::Tensor& x, torch::Tensor& y, const Packed<S>& pk, int64_t nblocks,
                const Geometry& g, bool relu) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3);
  const int64_t cout = y.size(1), ho = y.size(2), wo = y.size(3);
  const int64_t ntaps = g.kh * g.kw;
  const S* xp = x.data_ptr<S>();
  S* yp = y.data_ptr<S>();
  const std::vector<S> zeros(c, S(0));
  const int64_t npix = n * ho * wo;
  const int64_t ntiles = (npix + T - 1) / T;
  constexpr int64_t CHUNK = 8;  // tiles per pass: a block's weights are reused over them
  const int64_t vb = pk.vb;

  const std::vector<int64_t> order = border_order(n, h, wd, ho, wo, g, T);
  const int64_t* ord = order.empty() ? nullptr : order.data();
  const S* skip = ord != nullptr ? zeros.data() : nullptr;

  // The tiles split evenly over the threads (then passes of CHUNK tiles): whole chunks as work
  // items left a thread idle for up to a chunk, a tenth of a layer with a few hundred pixels.
  at::parallel_for(0, ntiles, CHUNK, [&](int64_t b0, int64_t b1) {
    std::vector<const S*> ptrs(CHUNK * ntaps * T);
    std::vector<S> scratch(CHUNK * T * vb);
    for (int64_t t0 = b0; t0 < b1; t0 += CHUNK) {
      const int64_t tn = std::min(CHUNK, b1 - t0);
      for (int64_t k = 0; k < tn; ++k) {
        const S** tile_ptrs = ptrs.data() + k * ntaps * T;
        if (ord != nullptr)
          fill_ptrs_ordered<S>(xp, zeros.data(), ord, (t0 + k) * T, T, T, npix, c, h, wd, ho,
                               wo, g, tile_ptrs);
        else
          fill_ptrs<S>(xp, zeros.data(), (t0 + k) * T, T, T, npix, c, h, wd, ho, wo, g,
                       tile_ptrs);
      }
      for (int64_t b = 0; b < nblocks; ++b) {
        const int32_t base = pk.blk_base[b];
        const int32_t* idx = pk.out_idx + b * vb;
        int64_t lanes = 0;
        for (int64_t j = 0; j < vb; ++j) lanes += idx[j] >= 0;
        for (int64_t k = 0; k < tn; ++k) {
          S* sc = scratch.data() + k * T * vb;
          tile_block<S, V, NV, T>(ptrs.data() + k * ntaps * T, pk, b, sc, skip, relu);
          const int64_t pix0 = (t0 + k) * T;
          const int64_t tv = std::min<int64_t>(T, npix - pix0);
          for (int64_t t = 0; t < tv; ++t) {
            S* dst = yp + (ord != nullptr ? ord[pix0 + t] : pix0 + t) * cout;
            const S* src = sc + t * vb;
            if (base >= 0) {
              std::memcpy(dst + base, src, lanes * sizeof(S));
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

// dW of NE consecutive entries of one segment over one chunk of pixels, added to out; with LIST,
// over the pixels list[0 .. pn) of the chunk only (those whose tap is inside the image).
template <typename S, typename V, int NV, int NE, bool LIST>
static inline void wgrad_entries(const S* const* pt, const S* dyb, int64_t pn,
                                 const int32_t* list, const int32_t* ch, S* out, int64_t vb) {
  constexpr int W = sizeof(V) / sizeof(S);
  V acc[NE][NV];
  for (int k = 0; k < NE; ++k)
    for (int j = 0; j < NV; ++j) acc[k][j] = V{};
  int32_t cc[NE];
  for (int k = 0; k < NE; ++k) cc[k] = ch[k];
  for (int64_t i = 0; i < pn; ++i) {
    const int64_t t = LIST ? list[i] : i;
    const S* row = pt[t];
    V d[NV];
    for (int j = 0; j < NV; ++j) d[j] = load_v<V>(dyb + t * vb + j * W);
    for (int k = 0; k < NE; ++k) {
      const S xs = row[cc[k]];
      for (int j = 0; j < NV; ++j) acc[k][j] += xs * d[j];
    }
  }
  for (int k = 0; k < NE; ++k)
    for (int j = 0; j < NV; ++j) {
      S* o = out + k * vb + j * W;
      store_v<V>(o, load_v<V>(o) + acc[k][j]);
    }
}

template <typename S, typename V, int NV>
static void wgrad_run(const torch::Tensor& x, const torch::Tensor& gy, torch::Tensor& gw,
                      const Packed<S>& pk, int64_t nblocks, const Geometry& g) {
  constexpr int NE = 4;       // entries per pass over a chunk's pixels
  constexpr int64_t PCH = 64;  // pixels per chunk: its dY block and pointer table stay in L1/L2
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3);
  const int64_t cout = gy.size(1), ho = gy.size(2), wo = gy.size(3);
  const int64_t ntaps = g.kh * g.kw;
  const int64_t vb = pk.vb;
  const int64_t nentries = gw.size(0);
  const S* xp = x.data_ptr<S>();
  const S* gp = gy.data_ptr<S>();
  const std::vector<S> zeros(c, S(0));
  const int64_t npix = n * ho * wo;
  const int nthreads = at::get_num_threads();
  std::vector<S> partial((int64_t)nthreads * nentries * vb, S(0));
  // Where padding makes many taps fall outside (small maps, padded_tap_sets' rule),
  // each tap runs over the list of the chunk's pixels it reads inside the image: the padding
  // adds nothing. (Ordering the pixels by their inside taps, as the forward does, was slower
  // here: a chunk's pixels then come from many images and no longer share input rows.)
  const bool lists = !padded_tap_sets(h, wd, ho, wo, g).empty();

  at::parallel_for(0, npix, PCH, [&](int64_t q0, int64_t q1) {  // evenly, as in run()
    S* acc = partial.data() + (int64_t)at::get_thread_num() * nentries * vb;
    std::vector<const S*> ptrs(ntaps * PCH);
    std::vector<S> dyb(PCH * vb);
    std::vector<int32_t> inside(lists ? ntaps * PCH : 0);
    std::vector<int64_t> count(lists ? ntaps : 0);
    for (int64_t p0 = q0; p0 < q1; p0 += PCH) {
      const int64_t pn = std::min(PCH, q1 - p0);
      fill_ptrs<S>(xp, zeros.data(), p0, pn, PCH, npix, c, h, wd, ho, wo, g, ptrs.data());
      for (int64_t tap = 0; tap < (lists ? ntaps : 0); ++tap) {
        const S* const* pt = ptrs.data() + tap * PCH;
        int32_t* li = inside.data() + tap * PCH;
        int64_t k = 0;
        for (int64_t t = 0; t < pn; ++t)
          if (pt[t] != zeros.data()) li[k++] = (int32_t)t;
        count[tap] = k;
      }
      for (int64_t b = 0; b < nblocks; ++b) {
        const int32_t base = pk.blk_base[b];
        const int32_t* idx = pk.out_idx + b * vb;
        int64_t lanes = 0;
        for (int64_t j = 0; j < vb; ++j) lanes += idx[j] >= 0;
        for (int64_t t = 0; t < pn; ++t) {
          const S* src = gp + (p0 + t) * cout;
          S* dst = dyb.data() + t * vb;
          if (base >= 0) {
            std::memcpy(dst, src + base, lanes * sizeof(S));
            std::fill(dst + lanes, dst + vb, S(0));
          } else {
            for (int64_t j = 0; j < vb; ++j) dst[j] = idx[j] >= 0 ? src[idx[j]] : S(0);
          }
        }
        for (int64_t s = pk.blk_seg[b]; s < pk.blk_seg[b + 1]; ++s) {
          const int64_t tap = pk.seg_tap[s];
          const S* const* pt = ptrs.data() + tap * PCH;
          int64_t e = pk.seg_beg[s];
          const int64_t e1 = pk.seg_beg[s + 1];
          if (lists && count[tap] < pn) {
            const int32_t* li = inside.data() + tap * PCH;
            const int64_t k = count[tap];
            for (; e + NE <= e1 && k > 0; e += NE)
              wgrad_entries<S, V, NV, NE, true>(pt, dyb.data(), k, li, pk.ch + e, acc + e * vb,
                                                vb);
            for (; e < e1 && k > 0; ++e)
              wgrad_entries<S, V, NV, 1, true>(pt, dyb.data(), k, li, pk.ch + e, acc + e * vb,
                                               vb);
            continue;
          }
          for (; e + NE <= e1; e += NE)
            wgrad_entries<S, V, NV, NE, false>(pt, dyb.data(), pn, nullptr, pk.ch + e,
                                               acc + e * vb, vb);
          for (; e < e1; ++e)
            wgrad_entries<S, V, NV, 1, false>(pt, dyb.data(), pn, nullptr, pk.ch + e,
                                              acc + e * vb, vb);
        }
      }
    }
  });
  S* out = gw.data_ptr<S>();
  const int64_t total = nentries * vb;
  at::parallel_for(0, total, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      S sum = 0;
      for (int t = 0; t < nthreads; ++t) sum += partial[(int64_t)t * total + i];
      out[i] = sum;
    }
  });
}

template <typename S>
static Packed<S> make_packed(const torch::Tensor& w, const torch::Tensor& ch,
                             const torch::Tensor& seg_tap, const torch::Tensor& seg_beg,
                             const torch::Tensor& blk_seg, const torch::Tensor& out_idx,
                             const torch::Tensor& blk_base, const torch::Tensor* bias,
                             int64_t vb) {
  return Packed<S>{w.data_ptr<S>(),
                   ch.data_ptr<int32_t>(),
                   seg_tap.data_ptr<int32_t>(),
                   seg_beg.data_ptr<int64_t>(),
                   blk_seg.data_ptr<int64_t>(),
                   out_idx.data_ptr<int32_t>(),
                   blk_base.data_ptr<int32_t>(),
                   bias ? bias->data_ptr<S>() : nullptr,
                   vb};
}

// Checks what the kernels index with: shapes, dtypes and the ranges of the index tensors, so
// that no packed tensor can make them read or write out of bounds.
static void check_packing(const char* fn, const torch::Tensor& x, const torch::Tensor& w,
                          const torch::Tensor& ch, const torch::Tensor& seg_tap,
                          const torch::Tensor& seg_beg, const torch::Tensor& blk_seg,
                          const torch::Tensor& out_idx, const torch::Tensor& blk_base,
                          int64_t cin, int64_t cout, int64_t ntaps, int64_t vb) {
  TORCH_CHECK(vb >= 1 && vb <= 16, fn, ": vb out of range");
  auto cpu = [&](const torch::Tensor& t, torch::ScalarType st, const char* name) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == st && t.is_contiguous() &&
                    t.dim() == 1,
                fn, ": ", name, " must be a contiguous 1-D ", c10::toString(st),
                " CPU tensor");
  };
  cpu(ch, torch::kInt32, "ch");
  cpu(seg_tap, torch::kInt32, "seg_tap");
  cpu(seg_beg, torch::kInt64, "seg_beg");
  cpu(blk_seg, torch::kInt64, "blk_seg");
  cpu(out_idx, torch::kInt32, "out_idx");
  cpu(blk_base, torch::kInt32, "blk_base");
  const int64_t E = ch.numel(), S = seg_tap.numel(), B = blk_base.numel();
  TORCH_CHECK(w.dim() == 2 && w.size(0) == E && w.size(1) == vb && w.is_contiguous() &&
                  w.scalar_type() == x.scalar_type() && w.device().is_cpu(),
              fn, ": w must be a contiguous (entries, vb) CPU tensor of the input's dtype");
  TORCH_CHECK(seg_beg.numel() == S + 1 && blk_seg.numel() == B + 1 &&
                  out_idx.numel() == B * vb,
              fn, ": inconsistent packing sizes");
  const int32_t* chp = ch.data_ptr<int32_t>();
  for (int64_t e = 0; e < E; ++e)
    TORCH_CHECK(chp[e] >= 0 && chp[e] < cin, fn, ": ch out of range");
  const int32_t* tp = seg_tap.data_ptr<int32_t>();
  for (int64_t s = 0; s < S; ++s)
    TORCH_CHECK(tp[s] >= 0 && tp[s] < ntaps, fn, ": seg_tap out of range");
  const int64_t* sb = seg_beg.data_ptr<int64_t>();
  TORCH_CHECK(sb[0] == 0 && sb[S] == E, fn, ": seg_beg must run from 0 to entries");
  for (int64_t s = 0; s < S; ++s) TORCH_CHECK(sb[s] <= sb[s + 1], fn, ": seg_beg not sorted");
  const int64_t* bs = blk_seg.data_ptr<int64_t>();
  TORCH_CHECK(bs[0] == 0 && bs[B] == S, fn, ": blk_seg must run from 0 to segments");
  for (int64_t b = 0; b < B; ++b) TORCH_CHECK(bs[b] <= bs[b + 1], fn, ": blk_seg not sorted");
  const int32_t* oi = out_idx.data_ptr<int32_t>();
  for (int64_t i = 0; i < B * vb; ++i)
    TORCH_CHECK(oi[i] >= -1 && oi[i] < cout, fn, ": out_idx out of range");
  const int32_t* bb = blk_base.data_ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    if (bb[b] < 0) continue;
    int64_t lanes = 0;
    for (int64_t j = 0; j < vb; ++j) lanes += oi[b * vb + j] >= 0;
    TORCH_CHECK(bb[b] + lanes <= cout, fn, ": blk_base out of range");
    for (int64_t j = 0; j < lanes; ++j)
      TORCH_CHECK(oi[b * vb + j] == bb[b] + j, fn, ": blk_base does not match out_idx");
  }
}

static torch::Tensor prepare_input(const char* fn, torch::Tensor x, int64_t cin) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() &&
                  (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64),
              fn, ": x must be a 4-D float32 or float64 CPU tensor");
  TORCH_CHECK(x.size(1) == cin, fn, ": expected ", cin, " input channels, got ", x.size(1));
  return x.contiguous(at::MemoryFormat::ChannelsLast);
}

torch::Tensor ssc_fused_forward(torch::Tensor x, torch::Tensor w, torch::Tensor ch,
                                torch::Tensor seg_tap, torch::Tensor seg_beg,
                                torch::Tensor blk_seg, torch::Tensor out_idx,
                                torch::Tensor blk_base, torch::Tensor bias, int64_t cin,
                                int64_t cout, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t vb,
                                bool relu) {
  const char* fn = "ssc_fused_forward";
  x = prepare_input(fn, x, cin);
  TORCH_CHECK(vb == 4 || vb == 8 || vb == 16, fn, ": vb must be 4, 8 or 16, got ", vb);
  check_packing(fn, x, w, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, cin, cout, kh * kw,
                vb);
  TORCH_CHECK(bias.dim() == 1 && bias.numel() == out_idx.numel() && bias.is_contiguous() &&
                  bias.scalar_type() == x.scalar_type() && bias.device().is_cpu(),
              fn, ": bias must be a contiguous (blocks * vb,) CPU tensor of the input's dtype");
  TORCH_CHECK(sh > 0 && sw > 0 && dh > 0 && dw > 0 && ph >= 0 && pw >= 0, fn,
              ": bad stride, padding or dilation");
  const int64_t n = x.size(0), h = x.size(2), wd = x.size(3);
  const int64_t ho = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t wo = (wd + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(ho > 0 && wo > 0, fn, ": input too small for the kernel");
  auto y = torch::empty({n, cout, ho, wo},
                        x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const Geometry g{kh, kw, sh, sw, ph, pw, dh, dw};
  const int64_t nblocks = blk_seg.numel() - 1;
  // Tiles (lanes x pixels) chosen on the layer benchmark: 16 x 6 was the fastest wherever the
  // blocks are full; 8 x 8 and 4 x 8 serve narrow residue classes.
  if (x.scalar_type() == torch::kFloat32) {
    auto pk = make_packed<float>(w, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, &bias, vb);
#if SSCONV_AVX512
    if (vb == 16) run<float, vf16, 1, 6>(x, y, pk, nblocks, g, relu);
    else if (vb == 8) run<float, vf8, 1, 8>(x, y, pk, nblocks, g, relu);
    else run<float, vf4, 1, 8>(x, y, pk, nblocks, g, relu);
#else
    if (vb == 16) run<float, vf8, 2, 6>(x, y, pk, nblocks, g, relu);
    else if (vb == 8) run<float, vf8, 1, 8>(x, y, pk, nblocks, g, relu);
    else run<float, vf4, 1, 8>(x, y, pk, nblocks, g, relu);
#endif
  } else {  // float64: for gradcheck and references
    auto pk = make_packed<double>(w, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, &bias, vb);
    if (vb == 16) run<double, vd4, 4, 4>(x, y, pk, nblocks, g, relu);
    else if (vb == 8) run<double, vd4, 2, 4>(x, y, pk, nblocks, g, relu);
    else run<double, vd4, 1, 4>(x, y, pk, nblocks, g, relu);
  }
  return y;
}

torch::Tensor ssc_fused_wgrad(torch::Tensor x, torch::Tensor gy, torch::Tensor ch,
                              torch::Tensor seg_tap, torch::Tensor seg_beg, torch::Tensor blk_seg,
                              torch::Tensor out_idx, torch::Tensor blk_base, int64_t cin,
                              int64_t cout, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                              int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t vb) {
  const char* fn = "ssc_fused_wgrad";
  x = prepare_input(fn, x, cin);
  TORCH_CHECK(vb == 4 || vb == 8 || vb == 16, fn, ": vb must be 4, 8 or 16, got ", vb);
  TORCH_CHECK(gy.dim() == 4 && gy.size(0) == x.size(0) && gy.size(1) == cout &&
                  gy.scalar_type() == x.scalar_type() && gy.device().is_cpu(),
              fn, ": grad_output must be (N, ", cout, ", H_out, W_out) of the input's dtype");
  TORCH_CHECK(sh > 0 && sw > 0 && dh > 0 && dw > 0 && ph >= 0 && pw >= 0, fn,
              ": bad stride, padding or dilation");
  const int64_t h = x.size(2), wd = x.size(3);
  const int64_t ho = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t wo = (wd + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(gy.size(2) == ho && gy.size(3) == wo, fn, ": grad_output has spatial size ",
              gy.size(2), " x ", gy.size(3), ", the geometry gives ", ho, " x ", wo);
  gy = gy.contiguous(at::MemoryFormat::ChannelsLast);
  auto gw = torch::zeros({ch.numel(), vb}, x.options());
  check_packing(fn, x, gw, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, cin, cout, kh * kw,
                vb);
  const Geometry g{kh, kw, sh, sw, ph, pw, dh, dw};
  const int64_t nblocks = blk_seg.numel() - 1;
  if (x.scalar_type() == torch::kFloat32) {
    auto pk = make_packed<float>(gw, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, nullptr, vb);
#if SSCONV_AVX512
    if (vb == 16) wgrad_run<float, vf16, 1>(x, gy, gw, pk, nblocks, g);
#else
    if (vb == 16) wgrad_run<float, vf8, 2>(x, gy, gw, pk, nblocks, g);
#endif
    else if (vb == 8) wgrad_run<float, vf8, 1>(x, gy, gw, pk, nblocks, g);
    else wgrad_run<float, vf4, 1>(x, gy, gw, pk, nblocks, g);
  } else {
    auto pk = make_packed<double>(gw, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, nullptr, vb);
    if (vb == 16) wgrad_run<double, vd4, 4>(x, gy, gw, pk, nblocks, g);
    else if (vb == 8) wgrad_run<double, vd4, 2>(x, gy, gw, pk, nblocks, g);
    else wgrad_run<double, vd4, 1>(x, gy, gw, pk, nblocks, g);
  }
  return gw;
}

// ---------------------------------------------------------------------------------------------
// Pixel-vectorised kernels (NCHW) for narrow layers: the vector lanes are 8 consecutive output
// pixels of one row (16 in AVX-512 builds, on rows that 16 lanes pad no wider), so residue
// classes of one or two filters (the 16- and 32-channel layers of CIFAR ResNets) execute no
// zeros. A block holds M <= 4 output channels with the union of their
// supports (the same packing as above, with VB = M); each entry's weights are broadcast and
// every input vector is used by the block's M filters.
// Each image is copied once into a zero-padded buffer whose rows are wide enough for whole
// vectors, so neither borders nor row tails need branches. A strided layer's image is copied
// into sh * sw phase planes per channel (plane (a, b) holds the padded pixels (r, c) with
// r % sh == a and c % sw == b, at (r / sh, c / sw)): a tap then reads one plane at a fixed
// offset, so a vector's output pixels of a row are consecutive plane pixels, as at stride 1.

namespace pix {

constexpr int VW = 16;  // the widest vector (AVX-512 float32): slack after a padded image

// Whether 16-pixel vectors pad a row of wo output pixels no wider than 8-pixel ones do
// (28 -> 32, 14 -> 16, but 8 -> 16 and 7 -> 16 would execute twice the zeros).
static inline bool wide_rows(int64_t wo) {
  return (wo + 15) / 16 * 16 == (wo + 7) / 8 * 8;
}

// A padded image. Where output rows are at least a line wide (16 floats), its rows are whole
// 64-byte lines and the plane base is placed so that the centre tap's column (1 for a 3 x 3
// kernel) starts a line: every vector load of the centre column (all 1 x 1 weights, a third of
// the K x K ones) then reads one line instead of straddling two, where rows of wp = 34 floats
// had left almost none aligned. Narrower rows keep their width (rounding 10 floats up to 16
// would grow the image 1.6x for no measured gain).
template <typename S>
struct Image {
  std::vector<S> buf;
  int64_t off = 0;         // where the image starts in buf
  int64_t hp = 0, wp = 0;  // height and row width of one (phase) plane
  const S* data() const { return buf.data() + off; }
  S* data() { return buf.data() + off; }
};

constexpr int64_t LINE = 64;  // bytes

// The alignment of a padded image's rows, in elements (1: none), for rows of wop pixels.
template <typename S>
static inline int64_t row_align(int64_t wop) {
  constexpr int64_t L = LINE / sizeof(S);
  return wop >= L ? L : 1;
}

// Plane height and row width for Ho output rows of WoP (whole vectors) pixels: output row oh
// reads plane rows oh .. oh + (kh - 1) dh / sh.
template <typename S>
static inline void plane_dims(const Geometry& g, int64_t ho, int64_t wop, int64_t& hp,
                              int64_t& wp) {
  const int64_t L = row_align<S>(wop);
  hp = ho + (g.kh - 1) * g.dh / g.sh;
  wp = (wop + (g.kw - 1) * g.dw / g.sw + L - 1) / L * L;
}

// Offset of (input channel, tap) in a padded image, relative to output pixel (0, 0).
static inline int64_t tap_offset(int64_t ch, int64_t tap, const Geometry& g, int64_t hp,
                                 int64_t wp) {
  const int64_t ry = (tap / g.kw) * g.dh, rx = (tap % g.kw) * g.dw;
  const int64_t plane = (ch * g.sh + ry % g.sh) * g.sw + rx % g.sw;
  return plane * hp * wp + (ry / g.sh) * wp + rx / g.sw;
}

// x[n] (C, H, W) into a zero buffer of C * sh * sw planes (see above), shifted by the padding.
// The buffer is reused for the next image of the same call.
template <typename S>
static void pad_image(const S* x, int64_t c, int64_t h, int64_t w, int64_t ho, int64_t wop,
                      const Geometry& g, Image<S>& img) {
  const int64_t L = row_align<S>(wop);
  plane_dims<S>(g, ho, wop, img.hp, img.wp);
  const int64_t plane = img.hp * img.wp;
  // Every image of a call writes the same positions, so the zeros around them are written
  // once per buffer (a thread's first image), not once per image.
  const size_t size = c * g.sh * g.sw * plane + VW + L;
  if (img.buf.size() != size) {
    img.buf.assign(size, S(0));
    const int64_t centre = ((g.kw - 1) / 2 * g.dw / g.sw) % L;
    const int64_t at = (int64_t)(reinterpret_cast<uintptr_t>(img.buf.data()) / sizeof(S)) % L;
    img.off = ((L - centre - at) % L + L) % L;
  }
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t ih = 0; ih < h; ++ih) {
      const int64_t r = ih + g.ph, rq = r / g.sh;
      if (rq >= img.hp) continue;
      const S* src = x + (ci * h + ih) * w;
      S* rows = img.data() + (ci * g.sh + r % g.sh) * g.sw * plane + rq * img.wp;
      if (g.sw == 1) {
        const int64_t c1 = std::min<int64_t>(w, img.wp - g.pw);
        if (c1 > 0) std::memcpy(rows + g.pw, src, c1 * sizeof(S));
        continue;
      }
      // Phase b holds the padded columns b, b + sw, ...: input columns b - pw + cq * sw.
      for (int64_t b = 0; b < g.sw; ++b) {
        S* dst = rows + b * plane;
        int64_t cq = 0, iw = b - g.pw;
        for (; iw < 0; iw += g.sw) ++cq;
        for (; cq < img.wp && iw < w; ++cq, iw += g.sw) dst[cq] = src[iw];
      }
    }
}

// Offsets into a padded image, computed once per call: of each entry's input channel plus its
// segment's tap (no divisions in the inner loops).
template <typename S>
static std::vector<int64_t> entry_offsets(const Packed<S>& pk, int64_t nblocks, const Geometry& g,
                                          int64_t hp, int64_t wp) {
  const int64_t nseg = pk.blk_seg[nblocks];
  std::vector<int64_t> off(pk.seg_beg[nseg]);
  for (int64_t s = 0; s < nseg; ++s)
    for (int64_t e = pk.seg_beg[s]; e < pk.seg_beg[s + 1]; ++e)
      off[e] = tap_offset(pk.ch[e], pk.seg_tap[s], g, hp, wp);
  return off;
}

// Output rows [oh, oh + RB) of block b: RB * R vectors of pixels times M filters accumulate
// together (RB = 2 where R * M <= 4, so that short rows and one-filter blocks still keep 8
// independent accumulators in flight).
template <typename V, typename S, int R, int M, int RB>
static inline void forward_tile(const Image<S>& img, const Packed<S>& pk, const int64_t* eoff,
                                int64_t b, int64_t e_beg, int64_t e_end, int64_t oh, int64_t ow0,
                                int64_t wo, S* y_img, int64_t y_chan, bool relu) {
  constexpr int W = sizeof(V) / sizeof(S);
  const int32_t* idx = pk.out_idx + b * M;
  V acc[RB][R][M];
  for (int j = 0; j < M; ++j) {
    V bj = V{} + pk.bias[b * M + j];
    for (int q = 0; q < RB; ++q)
      for (int r = 0; r < R; ++r) acc[q][r][j] = bj;
  }
  const S* base = img.data() + oh * img.wp + ow0;
  for (int64_t e = e_beg; e < e_end; ++e) {
    const S* xr = base + eoff[e];
    const S* w = pk.w + e * M;
    V xv[RB][R];
    for (int q = 0; q < RB; ++q)
      for (int r = 0; r < R; ++r) xv[q][r] = load_v<V>(xr + q * img.wp + r * W);
    for (int j = 0; j < M; ++j) {
      const S wj = w[j];
      for (int q = 0; q < RB; ++q)
        for (int r = 0; r < R; ++r) acc[q][r][j] += wj * xv[q][r];
    }
  }
  if (relu)
    for (int j = 0; j < M; ++j)
      for (int q = 0; q < RB; ++q)
        for (int r = 0; r < R; ++r) acc[q][r][j] = relu_v<V, S>(acc[q][r][j]);
  for (int j = 0; j < M; ++j) {
    if (idx[j] < 0) continue;
    for (int q = 0; q < RB; ++q) {
      S* dst = y_img + idx[j] * y_chan + (oh + q) * wo + ow0;
      for (int r = 0; r < R; ++r) {
        const int64_t n_ok = std::min<int64_t>(W, wo - ow0 - r * W);
        if (n_ok <= 0) break;
        if (n_ok == W) {
          store_v<V>(dst + r * W, acc[q][r][j]);
        } else {
          for (int l = 0; l < n_ok; ++l) dst[r * W + l] = acc[q][r][j][l];
        }
      }
    }
  }
}

template <typename V, typename S, int R, int M>
static void forward_block(const Image<S>& img, const Packed<S>& pk, const int64_t* eoff,
                          int64_t b, int64_t ho, int64_t wo, S* y_img, int64_t y_chan,
                          bool relu) {
  constexpr int W = sizeof(V) / sizeof(S);
  // Rows per tile: at least 8 accumulators where the rows allow it (FMA latency times ports),
  // 4 rows for one-vector rows of one-filter blocks (7 x 7 and 14 x 14 images).
  constexpr int RB = R * M <= 2 ? 4 : (R * M <= 4 ? 2 : 1);
  const int64_t e_beg = pk.seg_beg[pk.blk_seg[b]], e_end = pk.seg_beg[pk.blk_seg[b + 1]];
  int64_t oh = 0;
  for (; oh + RB <= ho; oh += RB)
    for (int64_t ow0 = 0; ow0 < wo; ow0 += R * W)
      forward_tile<V, S, R, M, RB>(img, pk, eoff, b, e_beg, e_end, oh, ow0, wo, y_img, y_chan,
                                       relu);
  if (RB == 4)
    for (; oh + 2 <= ho; oh += 2)
      for (int64_t ow0 = 0; ow0 < wo; ow0 += R * W)
        forward_tile<V, S, R, M, 2>(img, pk, eoff, b, e_beg, e_end, oh, ow0, wo, y_img, y_chan,
                                       relu);
  for (; oh < ho; ++oh)
    for (int64_t ow0 = 0; ow0 < wo; ow0 += R * W)
      forward_tile<V, S, R, M, 1>(img, pk, eoff, b, e_beg, e_end, oh, ow0, wo, y_img, y_chan,
                                       relu);
}

template <typename V, typename S, int R, int M>
static void forward_run(const torch::Tensor& x, torch::Tensor& y, const Packed<S>& pk,
                        int64_t nblocks, const Geometry& g, bool relu) {
  constexpr int W = sizeof(V) / sizeof(S);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t cout = y.size(1), ho = y.size(2), wo = y.size(3);
  const int64_t wop = (wo + R * W - 1) / (R * W) * (R * W);
  const S* xp = x.data_ptr<S>();
  S* yp = y.data_ptr<S>();
  int64_t hp, wp;
  plane_dims<S>(g, ho, wop, hp, wp);
  const std::vector<int64_t> eoff = entry_offsets<S>(pk, nblocks, g, hp, wp);
  at::parallel_for(0, n, 1, [&](int64_t n0, int64_t n1) {
    Image<S> img;
    for (int64_t ni = n0; ni < n1; ++ni) {
      pad_image<S>(xp + ni * c * h * w, c, h, w, ho, wop, g, img);
      S* y_img = yp + ni * cout * ho * wo;
      for (int64_t b = 0; b < nblocks; ++b)
        forward_block<V, S, R, M>(img, pk, eoff.data(), b, ho, wo, y_img, ho * wo, relu);
    }
  });
}

// dW for the entries [e0, e0 + NE) of block b over the ng images of a group (each one's output
// gradient with rows of WoP pixels, padded where WoP > Wo), added lane by lane to out (W lanes
// per weight: the lanes are summed once per call). A group of images per call, not one, writes
// the accumulators back once per group (on 8 x 8 images one image gave 8 iterations a call);
// by itself it measured no faster, the weight gradient's gain came with the accumulators and
// the in-place gradient of wgrad_run (docs/benchmarks.md).
template <typename V, typename S, int M, int NE>
static inline void wgrad_entries(const Image<S>* imgs, const S* const* gpads, const S* zeros,
                                 int64_t ng, const Packed<S>& pk, int64_t b, const int64_t* eoff,
                                 int64_t e0, int64_t ho, int64_t wop, S* out) {
  constexpr int W = sizeof(V) / sizeof(S);
  const int32_t* idx = pk.out_idx + b * M;
  V acc[NE][M];
  for (int k = 0; k < NE; ++k)
    for (int j = 0; j < M; ++j) acc[k][j] = V{};
  for (int64_t gi = 0; gi < ng; ++gi) {
    const S* gch[M];  // padding lanes (idx < 0) read zeros: their gradient stays 0
    for (int j = 0; j < M; ++j) gch[j] = idx[j] >= 0 ? gpads[gi] + idx[j] * ho * wop : zeros;
    const S* xb[NE];
    for (int k = 0; k < NE; ++k) xb[k] = imgs[gi].data() + eoff[e0 + k];
    const int64_t wp = imgs[gi].wp;
    for (int64_t oh = 0; oh < ho; ++oh) {
      for (int64_t ow = 0; ow < wop; ow += W) {
        V gv[M];
        for (int j = 0; j < M; ++j) gv[j] = load_v<V>(gch[j] + oh * wop + ow);
        for (int k = 0; k < NE; ++k) {
          const V xv = load_v<V>(xb[k] + oh * wp + ow);
          for (int j = 0; j < M; ++j) acc[k][j] += xv * gv[j];
        }
      }
    }
  }
  for (int k = 0; k < NE; ++k)
    for (int j = 0; j < M; ++j) {
      S* dst = out + ((e0 + k) * M + j) * W;
      store_v<V>(dst, load_v<V>(dst) + acc[k][j]);
    }
}

template <typename V, typename S, int M>
static void wgrad_run(const torch::Tensor& x, const torch::Tensor& gy, torch::Tensor& gw,
                      const Packed<S>& pk, int64_t nblocks, const Geometry& g) {
  constexpr int W = sizeof(V) / sizeof(S);
#ifdef __AVX512F__
  // 32 vector registers: 16 accumulators where blocks hold 2 or 4 filters, so that each loaded
  // gradient and input vector feeds 4-8 FMAs (with 8, the compiler gave every FMA a memory
  // operand, 1.25 loads per FMA, and the loads bound the loop).
  constexpr int NE = M == 1 ? 8 : 16 / M;
#else
  constexpr int NE = 8 / M;  // 8 accumulators: enough independent FMAs to fill the pipeline
#endif
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t cout = gy.size(1), ho = gy.size(2), wo = gy.size(3);
  const int64_t wop = (wo + W - 1) / W * W;
  const int64_t nentries = gw.size(0);
  const S* xp = x.data_ptr<S>();
  const S* gp = gy.data_ptr<S>();
  const int nthreads = at::get_num_threads();
  const int64_t lanes = nentries * M * W;  // each weight's W vector lanes, summed at the end
  std::vector<S> partial((int64_t)nthreads * lanes, S(0));
  // Each entry's offset in the padded image, found once per call (no divisions per image).
  int64_t hp, wp;
  plane_dims<S>(g, ho, wop, hp, wp);
  const std::vector<int64_t> eoff = entry_offsets<S>(pk, nblocks, g, hp, wp);
  // Images per group: as many as keep a group's padded inputs and gradients within 384 KiB
  // (in L2), at most 8.
  const int64_t per_image = (c * g.sh * g.sw * hp * wp + cout * ho * wop) * (int64_t)sizeof(S);
  const int64_t group = std::max<int64_t>(1, std::min<int64_t>(8, (384 << 10) / per_image));
  at::parallel_for(0, n, 1, [&](int64_t n0, int64_t n1) {
    S* acc = partial.data() + (int64_t)at::get_thread_num() * lanes;
    std::vector<Image<S>> imgs(group);
    std::vector<std::vector<S>> gbufs(group, std::vector<S>(wop == wo ? 0 : cout * ho * wop));
    std::vector<const S*> gpads(group);
    const std::vector<S> zeros(ho * wop, S(0));
    for (int64_t g0 = n0; g0 < n1; g0 += group) {
      const int64_t ng = std::min<int64_t>(group, n1 - g0);
      for (int64_t gi = 0; gi < ng; ++gi) {
        const int64_t ni = g0 + gi;
        pad_image<S>(xp + ni * c * h * w, c, h, w, ho, wop, g, imgs[gi]);
        const S* src = gp + ni * cout * ho * wo;
        if (wop == wo) {  // rows of whole vectors: the gradient is read where it is
          gpads[gi] = src;
          continue;
        }
        S* dst = gbufs[gi].data();
        gpads[gi] = dst;
        for (int64_t co = 0; co < cout; ++co)
          for (int64_t oh = 0; oh < ho; ++oh)
            std::memcpy(dst + (co * ho + oh) * wop, src + (co * ho + oh) * wo, wo * sizeof(S));
      }
      for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t e_beg = pk.seg_beg[pk.blk_seg[b]], e_end = pk.seg_beg[pk.blk_seg[b + 1]];
        int64_t e = e_beg;
        for (; e + NE <= e_end; e += NE)
          wgrad_entries<V, S, M, NE>(imgs.data(), gpads.data(), zeros.data(), ng, pk, b,
                                     eoff.data(), e, ho, wop, acc);
        for (; e < e_end; ++e)
          wgrad_entries<V, S, M, 1>(imgs.data(), gpads.data(), zeros.data(), ng, pk, b,
                                    eoff.data(), e, ho, wop, acc);
      }
    }
  });
  S* out = gw.data_ptr<S>();
  const int64_t total = nentries * M;
  for (int64_t i = 0; i < total; ++i) {
    S sum = 0;
    for (int t = 0; t < nthreads; ++t)
      for (int l = 0; l < W; ++l) sum += partial[(int64_t)t * lanes + i * W + l];
    out[i] = sum;
  }
}

template <typename V, typename S, int M>
static void forward_dispatch_r(const torch::Tensor& x, torch::Tensor& y, const Packed<S>& pk,
                               int64_t nblocks, const Geometry& g, bool relu) {
  // Vectors per row tile: the fewest tiles per row, the least padding (28 -> 4 x 8, 14 -> 2).
  constexpr int W = sizeof(V) / sizeof(S);
  const int64_t nv = (y.size(3) + W - 1) / W;
  if (nv >= 4 || nv == 0) forward_run<V, S, 4, M>(x, y, pk, nblocks, g, relu);
  else if (nv == 3) forward_run<V, S, 3, M>(x, y, pk, nblocks, g, relu);
  else if (nv == 2) forward_run<V, S, 2, M>(x, y, pk, nblocks, g, relu);
  else forward_run<V, S, 1, M>(x, y, pk, nblocks, g, relu);
}

}  // namespace pix

static torch::Tensor pix_prepare(const char* fn, torch::Tensor x, int64_t cin, int64_t sh,
                                 int64_t sw) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() &&
                  (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64),
              fn, ": x must be a 4-D float32 or float64 CPU tensor");
  TORCH_CHECK(x.size(1) == cin, fn, ": expected ", cin, " input channels, got ", x.size(1));
  TORCH_CHECK(sh > 0 && sw > 0, fn, ": bad stride");
  return x.contiguous();
}

torch::Tensor ssc_pix_forward(torch::Tensor x, torch::Tensor w, torch::Tensor ch,
                              torch::Tensor seg_tap, torch::Tensor seg_beg, torch::Tensor blk_seg,
                              torch::Tensor out_idx, torch::Tensor blk_base, torch::Tensor bias,
                              int64_t cin, int64_t cout, int64_t kh, int64_t kw, int64_t sh,
                              int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                              int64_t vb, bool relu) {
  const char* fn = "ssc_pix_forward";
  x = pix_prepare(fn, x, cin, sh, sw);
  TORCH_CHECK(vb == 1 || vb == 2 || vb == 4, fn, ": vb must be 1, 2 or 4, got ", vb);
  check_packing(fn, x, w, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, cin, cout, kh * kw,
                vb);
  TORCH_CHECK(bias.dim() == 1 && bias.numel() == out_idx.numel() && bias.is_contiguous() &&
                  bias.scalar_type() == x.scalar_type() && bias.device().is_cpu(),
              fn, ": bias must be a contiguous (blocks * vb,) CPU tensor of the input's dtype");
  TORCH_CHECK(dh > 0 && dw > 0 && ph >= 0 && pw >= 0, fn, ": bad padding or dilation");
  const int64_t n = x.size(0), h = x.size(2), wd = x.size(3);
  const int64_t span_h = h + 2 * ph - dh * (kh - 1), span_w = wd + 2 * pw - dw * (kw - 1);
  TORCH_CHECK(span_h > 0 && span_w > 0, fn, ": input too small for the kernel");
  const int64_t ho = (span_h - 1) / sh + 1, wo = (span_w - 1) / sw + 1;
  auto y = torch::empty({n, cout, ho, wo}, x.options());
  const Geometry g{kh, kw, sh, sw, ph, pw, dh, dw};
  const int64_t nblocks = blk_seg.numel() - 1;
  if (x.scalar_type() == torch::kFloat32) {
    auto pk = make_packed<float>(w, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, &bias, vb);
#if SSCONV_AVX512
    if (pix::wide_rows(wo)) {
      if (vb == 1) pix::forward_dispatch_r<vf16, float, 1>(x, y, pk, nblocks, g, relu);
      else if (vb == 2) pix::forward_dispatch_r<vf16, float, 2>(x, y, pk, nblocks, g, relu);
      else pix::forward_dispatch_r<vf16, float, 4>(x, y, pk, nblocks, g, relu);
      return y;
    }
#endif
    if (vb == 1) pix::forward_dispatch_r<vf8, float, 1>(x, y, pk, nblocks, g, relu);
    else if (vb == 2) pix::forward_dispatch_r<vf8, float, 2>(x, y, pk, nblocks, g, relu);
    else pix::forward_dispatch_r<vf8, float, 4>(x, y, pk, nblocks, g, relu);
  } else {
    auto pk = make_packed<double>(w, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, &bias, vb);
    if (vb == 1) pix::forward_dispatch_r<vd4, double, 1>(x, y, pk, nblocks, g, relu);
    else if (vb == 2) pix::forward_dispatch_r<vd4, double, 2>(x, y, pk, nblocks, g, relu);
    else pix::forward_dispatch_r<vd4, double, 4>(x, y, pk, nblocks, g, relu);
  }
  return y;
}

torch::Tensor ssc_pix_wgrad(torch::Tensor x, torch::Tensor gy, torch::Tensor ch,
                            torch::Tensor seg_tap, torch::Tensor seg_beg, torch::Tensor blk_seg,
                            torch::Tensor out_idx, torch::Tensor blk_base, int64_t cin,
                            int64_t cout, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                            int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t vb) {
  const char* fn = "ssc_pix_wgrad";
  x = pix_prepare(fn, x, cin, sh, sw);
  TORCH_CHECK(vb == 1 || vb == 2 || vb == 4, fn, ": vb must be 1, 2 or 4, got ", vb);
  TORCH_CHECK(dh > 0 && dw > 0 && ph >= 0 && pw >= 0, fn, ": bad padding or dilation");
  const int64_t ho = (x.size(2) + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t wo = (x.size(3) + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(gy.dim() == 4 && gy.size(0) == x.size(0) && gy.size(1) == cout &&
                  gy.size(2) == ho && gy.size(3) == wo && gy.scalar_type() == x.scalar_type() &&
                  gy.device().is_cpu(),
              fn, ": grad_output must be (N, ", cout, ", ", ho, ", ", wo,
              ") of the input's dtype");
  gy = gy.contiguous();
  auto gw = torch::zeros({ch.numel(), vb}, x.options());
  check_packing(fn, x, gw, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, cin, cout, kh * kw,
                vb);
  const Geometry g{kh, kw, sh, sw, ph, pw, dh, dw};
  const int64_t nblocks = blk_seg.numel() - 1;
  if (x.scalar_type() == torch::kFloat32) {
    auto pk = make_packed<float>(gw, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, nullptr, vb);
#if SSCONV_AVX512
    if (pix::wide_rows(wo)) {
      if (vb == 1) pix::wgrad_run<vf16, float, 1>(x, gy, gw, pk, nblocks, g);
      else if (vb == 2) pix::wgrad_run<vf16, float, 2>(x, gy, gw, pk, nblocks, g);
      else pix::wgrad_run<vf16, float, 4>(x, gy, gw, pk, nblocks, g);
      return gw;
    }
#endif
    if (vb == 1) pix::wgrad_run<vf8, float, 1>(x, gy, gw, pk, nblocks, g);
    else if (vb == 2) pix::wgrad_run<vf8, float, 2>(x, gy, gw, pk, nblocks, g);
    else pix::wgrad_run<vf8, float, 4>(x, gy, gw, pk, nblocks, g);
  } else {
    auto pk = make_packed<double>(gw, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, nullptr, vb);
    if (vb == 1) pix::wgrad_run<vd4, double, 1>(x, gy, gw, pk, nblocks, g);
    else if (vb == 2) pix::wgrad_run<vd4, double, 2>(x, gy, gw, pk, nblocks, g);
    else pix::wgrad_run<vd4, double, 4>(x, gy, gw, pk, nblocks, g);
  }
  return gw;
}

// ---------------------------------------------------------------------------------------------
// Training-mode BatchNorm of NCHW float32 tensors (ssconv.layers.batchnorm). PyTorch's CPU
// kernels were as slow as a scalar-loop version of these reductions; here each channel's N
// planes of H * W contiguous values are summed with 16-lane vector accumulators (float within a
// plane, double across planes), parallel over channels, and the elementwise passes run over rows
// of planes. The pixel kernels train in NCHW, where BatchNorm was 31 % of an SSC ResNet-32 step.

namespace bn {

static inline float hsum(vf16 v) {
  float s = 0;
  for (int i = 0; i < 16; ++i) s += v[i];
  return s;
}

// sum(p[i] + shift) and sum((p[i] + shift)^2) over n values (shift = -mean for the second pass).
static inline void plane_sums(const float* p, int64_t n, float shift, float& s1, float& s2) {
  vf16 a0{}, a1{}, q0{}, q1{};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    vf16 d0 = load_v<vf16>(p + i) + shift, d1 = load_v<vf16>(p + i + 16) + shift;
    a0 += d0;
    a1 += d1;
    q0 += d0 * d0;
    q1 += d1 * d1;
  }
  for (; i + 16 <= n; i += 16) {
    vf16 d = load_v<vf16>(p + i) + shift;
    a0 += d;
    q0 += d * d;
  }
  s1 = hsum(a0 + a1);
  s2 = hsum(q0 + q1);
  for (; i < n; ++i) {
    const float d = p[i] + shift;
    s1 += d;
    s2 += d * d;
  }
}

// sum(g[i]) and sum(g[i] * (x[i] + shift)) over n values.
static inline void plane_dots(const float* g, const float* x, int64_t n, float shift, float& sa,
                              float& sb) {
  vf16 a{}, b{};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    vf16 gv = load_v<vf16>(g + i);
    a += gv;
    b += gv * (load_v<vf16>(x + i) + shift);
  }
  sa = hsum(a);
  sb = hsum(b);
  for (; i < n; ++i) {
    sa += g[i];
    sb += g[i] * (x[i] + shift);
  }
}

static void check(const char* fn, const torch::Tensor& t) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == torch::kFloat32 && t.device().is_cpu() &&
                  t.is_contiguous(),
              fn, ": expected a contiguous (NCHW) float32 CPU tensor of 4 dimensions");
}

static void check_vec(const char* fn, const torch::Tensor& v, int64_t c) {
  TORCH_CHECK(v.dim() == 1 && v.numel() == c && v.scalar_type() == torch::kFloat32 &&
                  v.device().is_cpu() && v.is_contiguous(),
              fn, ": per-channel vectors must be contiguous float32 CPU tensors of ", c,
              " values");
}

}  // namespace bn

// Per channel: the mean and the biased variance (two passes: the second around the mean).
std::vector<torch::Tensor> ssc_bn_stats(torch::Tensor x) {
  bn::check("ssc_bn_stats", x);
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  TORCH_CHECK(n * hw > 0, "ssc_bn_stats: empty input");
  auto mean = torch::empty({c}, x.options()), var = torch::empty({c}, x.options());
  const float* xp = x.data_ptr<float>();
  float* mp = mean.data_ptr<float>();
  float* vp = var.data_ptr<float>();
  const double count = (double)(n * hw);
  at::parallel_for(0, c, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      double s = 0;
      float s1, s2;
      for (int64_t ni = 0; ni < n; ++ni) {
        bn::plane_sums(xp + (ni * c + ci) * hw, hw, 0.f, s1, s2);
        s += s1;
      }
      const float m = (float)(s / count);
      double q = 0;
      for (int64_t ni = 0; ni < n; ++ni) {
        bn::plane_sums(xp + (ni * c + ci) * hw, hw, -m, s1, s2);
        q += s2;
      }
      mp[ci] = m;
      vp[ci] = (float)(q / count);
    }
  });
  return {mean, var};
}

// y = x * a[c] + b[c] (the normalisation and the affine parameters folded into a and b).
torch::Tensor ssc_bn_affine(torch::Tensor x, torch::Tensor a, torch::Tensor b) {
  bn::check("ssc_bn_affine", x);
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  bn::check_vec("ssc_bn_affine", a, c);
  bn::check_vec("ssc_bn_affine", b, c);
  auto y = torch::empty_like(x);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float* ap = a.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  at::parallel_for(0, n * c, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float av = ap[r % c], bv = bp[r % c];
      const float* p = xp + r * hw;
      float* q = yp + r * hw;
      for (int64_t i = 0; i < hw; ++i) q[i] = p[i] * av + bv;
    }
  });
  return y;
}

// Per channel: sum(dy) and sum(dy * (x - mean)).
std::vector<torch::Tensor> ssc_bn_backward_sums(torch::Tensor dy, torch::Tensor x,
                                                torch::Tensor mean) {
  bn::check("ssc_bn_backward_sums", x);
  bn::check("ssc_bn_backward_sums", dy);
  TORCH_CHECK(dy.sizes() == x.sizes(), "ssc_bn_backward_sums: dy and x differ in shape");
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  bn::check_vec("ssc_bn_backward_sums", mean, c);
  auto s1 = torch::empty({c}, x.options()), s2 = torch::empty({c}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* gp = dy.data_ptr<float>();
  const float* mp = mean.data_ptr<float>();
  float* p1 = s1.data_ptr<float>();
  float* p2 = s2.data_ptr<float>();
  at::parallel_for(0, c, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      double a = 0, b = 0;
      float fa, fb;
      for (int64_t ni = 0; ni < n; ++ni) {
        const int64_t off = (ni * c + ci) * hw;
        bn::plane_dots(gp + off, xp + off, hw, -mp[ci], fa, fb);
        a += fa;
        b += fb;
      }
      p1[ci] = (float)a;
      p2[ci] = (float)b;
    }
  });
  return {s1, s2};
}

// dx = dy * a[c] + x * b[c] + k[c].
torch::Tensor ssc_bn_backward_apply(torch::Tensor dy, torch::Tensor x, torch::Tensor a,
                                    torch::Tensor b, torch::Tensor k) {
  bn::check("ssc_bn_backward_apply", x);
  bn::check("ssc_bn_backward_apply", dy);
  TORCH_CHECK(dy.sizes() == x.sizes(), "ssc_bn_backward_apply: dy and x differ in shape");
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  bn::check_vec("ssc_bn_backward_apply", a, c);
  bn::check_vec("ssc_bn_backward_apply", b, c);
  bn::check_vec("ssc_bn_backward_apply", k, c);
  auto dx = torch::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* gp = dy.data_ptr<float>();
  float* dp = dx.data_ptr<float>();
  const float* ap = a.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  at::parallel_for(0, n * c, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float av = ap[r % c], bv = bp[r % c], kv = kp[r % c];
      const float* xr = xp + r * hw;
      const float* gr = gp + r * hw;
      float* out = dp + r * hw;
      for (int64_t i = 0; i < hw; ++i) out[i] = gr[i] * av + xr[i] * bv + kv;
    }
  });
  return dx;
}

// 2 x 2, stride-2 max pooling of NCHW float32 tensors (floor mode, no padding): PyTorch's CPU
// kernel is a scalar loop over output pixels in NCHW (25x slower than its channels_last kernel
// on VGG-19's 64-channel 32 x 32 maps), and VGG's pools train and infer in NCHW beside the
// pixel kernels. The window is scanned as PyTorch does ((0,0), (0,1), (1,0), (1,1); a value
// is taken when it is greater or NaN), so values and argmax positions equal PyTorch's, and the
// gradient goes where its goes, ties included. Training keeps the argmax (0-3) as uint8.

namespace mp {

// One output of a window: a0, a1 its top row, b0, b1 its bottom row. The max of the top pair
// and of the bottom pair, then of the two, is what PyTorch's scan in row-major order gives,
// values and argmax alike (ties go to the earlier value; a NaN wins, the later NaN of two).
static inline float window(float a0, float a1, float b0, float b1, uint8_t& q) {
  const bool ct = (a1 > a0) | (a1 != a1), cb = (b1 > b0) | (b1 != b1);
  const float mt = ct ? a1 : a0, mb = cb ? b1 : b0;
  const bool cv = (mb > mt) | (mb != mb);
  q = cv ? (uint8_t)(2 + cb) : (uint8_t)ct;
  return cv ? mb : mt;
}

#if !defined(SSCONV_PORTABLE) && (defined(__GNUC__) || defined(__clang__))
#define SSCONV_MP_VECTORS 1
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef int32_t vi4 __attribute__((vector_size(16)));
typedef uint8_t vu8x16 __attribute__((vector_size(16)));
typedef uint8_t vu8x8 __attribute__((vector_size(8)));
typedef uint8_t vu8x4 __attribute__((vector_size(4)));

// Per vector width L (16, 8, 4 floats): its integer and byte vectors, the even and odd lanes of
// two vectors, and two vectors interleaved (low and high halves).
template <int L>
struct Lanes;
template <>
struct Lanes<16> {
  typedef vf16 F;
  typedef vi16 I;
  typedef vu8x16 B;
  static F evens(F a, F b) {
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                   30);
  }
  static F odds(F a, F b) {
    return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29,
                                   31);
  }
  static F zip_lo(F a, F b) {
    return __builtin_shufflevector(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  }
  static F zip_hi(F a, F b) {
    return __builtin_shufflevector(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30,
                                   15, 31);
  }
};
template <>
struct Lanes<8> {
  typedef vf8 F;
  typedef vi8 I;
  typedef vu8x8 B;
  static F evens(F a, F b) { return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14); }
  static F odds(F a, F b) { return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15); }
  static F zip_lo(F a, F b) { return __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11); }
  static F zip_hi(F a, F b) { return __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15); }
};
template <>
struct Lanes<4> {
  typedef vf4 F;
  typedef vi4 I;
  typedef vu8x4 B;
  static F evens(F a, F b) { return __builtin_shufflevector(a, b, 0, 2, 4, 6); }
  static F odds(F a, F b) { return __builtin_shufflevector(a, b, 1, 3, 5, 7); }
  static F zip_lo(F a, F b) { return __builtin_shufflevector(a, b, 0, 4, 1, 5); }
  static F zip_hi(F a, F b) { return __builtin_shufflevector(a, b, 2, 6, 3, 7); }
};

// Outputs j .. j + L - 1 from a window row pair (a: top, b: bottom, both at window 0), and
// their argmax into k[j ..] unless k is null.
template <int L>
static inline void windows(const float* a, const float* b, float* out, uint8_t* k, int64_t j) {
  a += 2 * j;
  b += 2 * j;
  out += j;
  typedef Lanes<L> W;
  typedef typename W::F F;
  typedef typename W::I I;
  const F a0 = load_v<F>(a), a1 = load_v<F>(a + L), b0 = load_v<F>(b), b1 = load_v<F>(b + L);
  const F ae = W::evens(a0, a1), ao = W::odds(a0, a1);
  const F be = W::evens(b0, b1), bo = W::odds(b0, b1);
  const I ct = (ao > ae) | (ao != ao), cb = (bo > be) | (bo != bo);
  const F mt = ct ? ao : ae, mb = cb ? bo : be;
  const I cv = (mb > mt) | (mb != mb);
  store_v(out, cv ? mb : mt);
  if (k != nullptr) {
    const I q = cv ? 2 - cb : -ct;  // comparisons give -1 for true
    store_v(k + j, __builtin_convertvector(q, typename W::B));
  }
}

// The gradient of L outputs back to their windows' 2L + 2L input positions.
template <int L>
static inline void scatter(const float* g, const uint8_t* k, float* a, float* b) {
  typedef Lanes<L> W;
  typedef typename W::F F;
  typedef typename W::I I;
  const F gv = load_v<F>(g), z{};
  const I q = __builtin_convertvector(load_v<typename W::B>(k), I);
  const F t0 = q == 0 ? gv : z, t1 = q == 1 ? gv : z, u0 = q == 2 ? gv : z, u1 = q == 3 ? gv : z;
  store_v(a, W::zip_lo(t0, t1));
  store_v(a + L, W::zip_hi(t0, t1));
  store_v(b, W::zip_lo(u0, u1));
  store_v(b + L, W::zip_hi(u0, u1));
}
#else
#define SSCONV_MP_VECTORS 0
#endif

static void check(const char* fn, const torch::Tensor& t) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == torch::kFloat32 && t.device().is_cpu() &&
                  t.is_contiguous(),
              fn, ": expected a contiguous (NCHW) float32 CPU tensor of 4 dimensions");
}

}  // namespace mp

// y[n, c, i, j] = max of x[n, c, 2i:2i+2, 2j:2j+2]; with `with_index`, also the argmax in the
// window (0-3, row-major) as uint8 (an empty tensor otherwise).
std::vector<torch::Tensor> ssc_maxpool2x2(torch::Tensor x, bool with_index) {
  mp::check("ssc_maxpool2x2", x);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t ho = h / 2, wo = w / 2;
  TORCH_CHECK(ho > 0 && wo > 0, "ssc_maxpool2x2: input planes must be at least 2 x 2, got ", h,
              " x ", w);
  auto y = torch::empty({n, c, ho, wo}, x.options());
  auto idx = with_index ? torch::empty({n, c, ho, wo}, x.options().dtype(torch::kUInt8))
                        : torch::empty({0}, x.options().dtype(torch::kUInt8));
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  uint8_t* ip = with_index ? idx.data_ptr<uint8_t>() : nullptr;
  at::parallel_for(0, n * c, 4, [&](int64_t p0, int64_t p1) {
#if SSCONV_MP_VECTORS
    // Planes with fewer than 4 outputs a row and even rows (VGG's 4 x 4 maps): the windows'
    // top rows and bottom rows copied one after the other, so that a plane's windows are
    // read as one long row pair (a pair never crosses rows) and its outputs written in order.
    const bool flat = wo < 4 && (w & 1) == 0;
    std::vector<float> rows(flat ? 2 * ho * w : 0);
#endif
    for (int64_t plane = p0; plane < p1; ++plane) {
#if SSCONV_MP_VECTORS
      if (flat) {
        float* top = rows.data();
        float* bot = top + ho * w;
        const float* xs = xp + plane * h * w;
        for (int64_t i = 0; i < ho; ++i) {
          std::memcpy(top + i * w, xs + 2 * i * w, sizeof(float) * w);
          std::memcpy(bot + i * w, xs + (2 * i + 1) * w, sizeof(float) * w);
        }
        const int64_t cnt = ho * wo;
        float* out = yp + plane * cnt;
        uint8_t* k = ip == nullptr ? nullptr : ip + plane * cnt;
        int64_t j = 0;
        for (; j + 16 <= cnt; j += 16) mp::windows<16>(top, bot, out, k, j);
        for (; j + 4 <= cnt; j += 4) mp::windows<4>(top, bot, out, k, j);
        for (; j < cnt; ++j) {
          uint8_t q;
          out[j] = mp::window(top[2 * j], top[2 * j + 1], bot[2 * j], bot[2 * j + 1], q);
          if (k != nullptr) k[j] = q;
        }
        continue;
      }
#endif
      for (int64_t i = 0; i < ho; ++i) {
        const int64_t r = plane * ho + i;
        const float* __restrict a = xp + (plane * h + 2 * i) * w;
        const float* __restrict b = a + w;
        float* __restrict out = yp + r * wo;
        uint8_t* __restrict k = ip == nullptr ? nullptr : ip + r * wo;
        int64_t j = 0;
#if SSCONV_MP_VECTORS
        for (; j + 16 <= wo; j += 16) mp::windows<16>(a, b, out, k, j);
        for (; j + 8 <= wo; j += 8) mp::windows<8>(a, b, out, k, j);
        for (; j + 4 <= wo; j += 4) mp::windows<4>(a, b, out, k, j);
#endif
        for (; j < wo; ++j) {
          uint8_t q;
          out[j] = mp::window(a[2 * j], a[2 * j + 1], b[2 * j], b[2 * j + 1], q);
          if (k != nullptr) k[j] = q;
        }
      }
    }
  });
  return {y, idx};
}

// The input gradient of ssc_maxpool2x2: dy[n, c, i, j] goes to the argmax of its window, zero
// elsewhere (and in the last row / column of odd-sized planes, which no window reads).
torch::Tensor ssc_maxpool2x2_backward(torch::Tensor dy, torch::Tensor idx, int64_t h, int64_t w) {
  mp::check("ssc_maxpool2x2_backward", dy);
  const int64_t n = dy.size(0), c = dy.size(1), ho = dy.size(2), wo = dy.size(3);
  TORCH_CHECK(ho == h / 2 && wo == w / 2, "ssc_maxpool2x2_backward: gradient of ", ho, " x ", wo,
              " does not suit input planes of ", h, " x ", w);
  TORCH_CHECK(idx.scalar_type() == torch::kUInt8 && idx.is_contiguous() &&
                  idx.sizes() == dy.sizes(),
              "ssc_maxpool2x2_backward: the argmax must be a contiguous uint8 tensor shaped "
              "like the gradient");
  auto dx = torch::empty({n, c, h, w}, dy.options());
  const float* gp = dy.data_ptr<float>();
  const uint8_t* ip = idx.data_ptr<uint8_t>();
  float* dp = dx.data_ptr<float>();
  at::parallel_for(0, n * c, 4, [&](int64_t p0, int64_t p1) {
    for (int64_t plane = p0; plane < p1; ++plane) {
      float* base = dp + plane * h * w;
      // Positions the vector blocks do not write are zeroed first: rows of scalar tails (all
      // rows without vectors), and the last row / column of odd-sized planes.
      if (!SSCONV_MP_VECTORS || wo % 4 != 0 || (w & 1)) std::memset(base, 0, sizeof(float) * h * w);
      for (int64_t i = 0; i < ho; ++i) {
        const float* __restrict g = gp + (plane * ho + i) * wo;
        const uint8_t* __restrict k = ip + (plane * ho + i) * wo;
        float* __restrict a = base + 2 * i * w;
        float* __restrict b = a + w;
        int64_t j = 0;
#if SSCONV_MP_VECTORS
        for (; j + 16 <= wo; j += 16) mp::scatter<16>(g + j, k + j, a + 2 * j, b + 2 * j);
        for (; j + 8 <= wo; j += 8) mp::scatter<8>(g + j, k + j, a + 2 * j, b + 2 * j);
        for (; j + 4 <= wo; j += 4) mp::scatter<4>(g + j, k + j, a + 2 * j, b + 2 * j);
#endif
        for (; j < wo; ++j) a[(k[j] >> 1) * w + 2 * j + (k[j] & 1)] = g[j];
      }
      if (h & 1) std::memset(base + (h - 1) * w, 0, sizeof(float) * w);
    }
  });
  return dx;
}

// Max pooling of any window in inference (no argmax): the values do not depend on the order in
// which a window is scanned (a NaN anywhere gives NaN), so each output row takes the maximum of
// its window's input rows first, then the maximum over each window's columns of that row, read
// with the pool's stride (vector code for strides 1 and 2: ResNet's 3 x 3, stride-2 stem pool
// and VGG's pools). Padding is -inf, as PyTorch treats it; rows and columns a window reads past
// the input (padding, ceil mode) are skipped or read as -inf. ho, wo: PyTorch's output size.
torch::Tensor ssc_maxpool_infer(torch::Tensor x, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t ho,
                                int64_t wo) {
  mp::check("ssc_maxpool_infer", x);
  TORCH_CHECK(kh > 0 && kw > 0 && sh > 0 && sw > 0 && ph >= 0 && pw >= 0 && dh > 0 && dw > 0 &&
                  ho > 0 && wo > 0,
              "ssc_maxpool_infer: invalid window");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  auto y = torch::empty({n, c, ho, wo}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float ninf = -std::numeric_limits<float>::infinity();
  // The padded row: pw + w + what the last window and a vector past it read.
  const int64_t span = std::max(pw + w, sw * (wo - 1) + dw * (kw - 1) + 1) + 2 * 16 + 16;
  at::parallel_for(0, n * c, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> row(span, ninf);
    float* v = row.data();
    for (int64_t plane = p0; plane < p1; ++plane) {
      const float* xs = xp + plane * h * w;
      for (int64_t i = 0; i < ho; ++i) {
        // The window rows' maximum, element-wise, into v[pw .. pw + w).
        bool first = true;
        for (int64_t di = 0; di < kh; ++di) {
          const int64_t ih = i * sh - ph + di * dh;
          if (ih < 0 || ih >= h) continue;
          const float* r = xs + ih * w;
          float* out = v + pw;
          if (first) {
            std::memcpy(out, r, sizeof(float) * w);
            first = false;
          } else {
            for (int64_t t = 0; t < w; ++t) {
              out[t] = ((r[t] > out[t]) | (r[t] != r[t])) ? r[t] : out[t];
            }
          }
        }
        if (first) std::fill(v + pw, v + pw + w, ninf);  // no row inside the input
        // Each window's columns of v, v[j * sw + dj * dw] for dj < kw.
        float* out = yp + (plane * ho + i) * wo;
        int64_t j = 0;
#if SSCONV_MP_VECTORS
        if (sw == 1 || sw == 2) {
          typedef mp::Lanes<16> W;
          for (; j + 16 <= wo; j += 16) {
            vf16 m;
            for (int64_t dj = 0; dj < kw; ++dj) {
              const float* q = v + j * sw + dj * dw;
              const vf16 a = load_v<vf16>(q);
              const vf16 e = sw == 1 ? a : W::evens(a, load_v<vf16>(q + 16));
              if (dj == 0) {
                m = e;
              } else {
                const mp::vi16 take = (e > m) | (e != e);
                m = take ? e : m;
              }
            }
            store_v(out + j, m);
          }
        }
#endif
        for (; j < wo; ++j) {
          float m = v[j * sw];
          for (int64_t dj = 1; dj < kw; ++dj) {
            const float e = v[j * sw + dj * dw];
            m = ((e > m) | (e != e)) ? e : m;
          }
          out[j] = m;
        }
      }
    }
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // relu (optional, so that callers of builds before it keep working): a ReLU fused into the
  // store, for frozen layers whose output only a ReLU reads.
#define SSCONV_FORWARD_ARGS                                                                       \
  py::arg("x"), py::arg("w"), py::arg("ch"), py::arg("seg_tap"), py::arg("seg_beg"),             \
      py::arg("blk_seg"), py::arg("out_idx"), py::arg("blk_base"), py::arg("bias"),              \
      py::arg("cin"), py::arg("cout"), py::arg("kh"), py::arg("kw"), py::arg("sh"),              \
      py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw"), py::arg("vb"),  \
      py::arg("relu") = false
  m.def("ssc_fused_forward", &ssc_fused_forward,
        "Fused block-structured sparse conv2d forward (float32/float64, CPU, NHWC)",
        SSCONV_FORWARD_ARGS);
  m.def("ssc_fused_wgrad", &ssc_fused_wgrad,
        "Weight gradient of the fused block-structured sparse conv2d, in the packed layout");
  m.def("ssc_pix_forward", &ssc_pix_forward,
        "Pixel-vectorised block-structured sparse conv2d forward (NCHW)", SSCONV_FORWARD_ARGS);
#undef SSCONV_FORWARD_ARGS
  m.def("ssc_pix_wgrad", &ssc_pix_wgrad,
        "Weight gradient of the pixel-vectorised kernel, in the packed layout");
  m.def("isa", &ssc_isa, "The instruction set the kernels were compiled for");
  m.def("bn_stats", &ssc_bn_stats, "Per-channel mean and biased variance of an NCHW tensor");
  m.def("bn_affine", &ssc_bn_affine, "x * a[c] + b[c] over an NCHW tensor");
  m.def("bn_backward_sums", &ssc_bn_backward_sums, "Per-channel sum(dy), sum(dy * (x - mean))");
  m.def("bn_backward_apply", &ssc_bn_backward_apply, "dy * a[c] + x * b[c] + k[c]");
  m.def("maxpool2x2", &ssc_maxpool2x2, "2 x 2, stride-2 max pooling of an NCHW tensor");
  m.def("maxpool2x2_backward", &ssc_maxpool2x2_backward, "Its input gradient");
  m.def("maxpool_infer", &ssc_maxpool_infer, "Max pooling of an NCHW tensor (values only)");
}

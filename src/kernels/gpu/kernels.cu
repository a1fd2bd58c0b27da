// Our CUDA kernels (kernels::gpu), one thread per output value:
// - depthwise convolution (one k_h×k_w filter per channel) on NCHW data, with its bias and
//   activation, taps read through the cache: one launch for all channels (candle's grouped
//   convolution launches one convolution per group: its issue #3389);
// - a convolution's epilogue: bias, residual and activation in one pass;
// - max / average pooling with padding, ceil mode and both divisor rules in one pass (candle's
//   pools have no padding: the portable path pads with −∞ or zeros first).
//
// No headers, so NVRTC compiles it as is: f16 and bf16 are carried as their 16-bit patterns and
// computed in f32. On the GPU the conversions are PTX instructions; elsewhere (the C++ test
// harness, tests/gpu_kernels.rs) the same functions in plain integer code.

struct f16 { unsigned short bits; };
struct bf16 { unsigned short bits; };

#if defined(__CUDA_ARCH__)
#define FV_DEVICE __device__ __forceinline__
static FV_DEVICE float as_float(unsigned u) { return __uint_as_float(u); }
static FV_DEVICE unsigned as_bits(float f) { return __float_as_uint(f); }
static FV_DEVICE float to_f32(f16 v) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits)); return f; }
static FV_DEVICE void from_f32(float f, f16* out) { asm("cvt.rn.f16.f32 %0, %1;" : "=h"(out->bits) : "f"(f)); }
#else
#define FV_DEVICE static inline
FV_DEVICE float as_float(unsigned u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
FV_DEVICE unsigned as_bits(float f) { unsigned u; __builtin_memcpy(&u, &f, 4); return u; }
// IEEE binary16 → binary32, exact (subnormals, infinities and NaN included)
FV_DEVICE float to_f32(f16 v) {
    unsigned sign = (unsigned)(v.bits & 0x8000) << 16, exp = (v.bits >> 10) & 0x1f, man = v.bits & 0x3ff;
    if (exp == 0x1f) return as_float(sign | 0x7f800000 | (man << 13));
    if (exp == 0) return (sign ? -1.0f : 1.0f) * (float)man * 5.9604644775390625e-8f; // man × 2⁻²⁴
    return as_float(sign | ((exp + 112) << 23) | (man << 13));
}
// binary32 → binary16, round to nearest even
FV_DEVICE void from_f32(float f, f16* out) {
    unsigned u = as_bits(f), sign = (u >> 16) & 0x8000;
    unsigned a = u & 0x7fffffff;
    if (a >= 0x7f800000) { out->bits = sign | 0x7c00 | (a > 0x7f800000 ? 0x200 : 0); return; }
    if (a >= 0x477ff000) { out->bits = sign | 0x7c00; return; } // rounds to ≥ 65520: infinity
    if (a < 0x38800000) { // below 2⁻¹⁴: a subnormal half, in units of 2⁻²⁴
        float m = as_float(a) * 16777216.0f; // exact scaling by 2²⁴
        unsigned q = (unsigned)m; float rest = m - (float)q;
        if (rest > 0.5f || (rest == 0.5f && (q & 1))) q++;
        out->bits = sign | q; return;
    }
    unsigned r = a + 0xfff + ((a >> 13) & 1); // round the 13 dropped bits to nearest even
    out->bits = sign | ((r - 0x38000000) >> 13);
}
#endif

FV_DEVICE float to_f32(float v) { return v; }
FV_DEVICE void from_f32(float f, float* out) { *out = f; }
FV_DEVICE float to_f32(bf16 v) { return as_float((unsigned)v.bits << 16); }
// binary32 → bfloat16, round to nearest even (NaN kept quiet)
FV_DEVICE void from_f32(float f, bf16* out) {
    unsigned u = as_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) { out->bits = (unsigned short)((u >> 16) | 0x40); return; }
    out->bits = (unsigned short)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

// The geometry, as `DepthwiseGeometry` in gpu/mod.rs lays it out (all i32).
struct Geometry {
    int n, c, h, w, out_h, out_w, k_h, k_w, stride, dilation, pad_top, pad_left, act;
};

// `I`, the index type: 32-bit unsigned where every index fits (64-bit division costs tens of
// instructions on a GPU, several times a 32-bit one), else long long.
template <typename T, typename I>
FV_DEVICE void depthwise_at(const T* x, const T* wt, const T* bias, T* y, const Geometry& g, I i) {
    int ox = (int)(i % (I)g.out_w);
    I r = i / (I)g.out_w;
    int oy = (int)(r % (I)g.out_h);
    I plane = r / (I)g.out_h; // image × channels + channel
    int ch = (int)(plane % (I)g.c);
    const T* xp = x + (long long)plane * g.h * g.w;
    const T* wp = wt + (long long)ch * g.k_h * g.k_w;
    float acc = to_f32(bias[ch]);
    int y0 = oy * g.stride - g.pad_top, x0 = ox * g.stride - g.pad_left;
    for (int ky = 0; ky < g.k_h; ky++) {
        int iy = y0 + ky * g.dilation;
        if (iy < 0 || iy >= g.h) continue;
        for (int kx = 0; kx < g.k_w; kx++) {
            int ix = x0 + kx * g.dilation;
            if (ix < 0 || ix >= g.w) continue;
            acc += to_f32(xp[(long long)iy * g.w + ix]) * to_f32(wp[ky * g.k_w + kx]);
        }
    }
    if (g.act >= 1) acc = acc > 0.0f ? acc : 0.0f; // ReLU
    if (g.act == 2) acc = acc < 6.0f ? acc : 6.0f; // ReLU6
    from_f32(acc, &y[i]);
}

// What follows a convolution (cuDNN's, or candle's im2col + cuBLAS), in one pass instead
// of three: y = act(x + bias[channel] (+ residual)). `Epilogue` in gpu/mod.rs lays it out.
struct Epilogue {
    long long total;
    int channels, plane, act, residual;
};

// V consecutive values, loaded and stored as one access (16 bytes for 8 f16 or 4 f32 values).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
    T v[V];
};
template <typename T, int V>
FV_DEVICE Pack<T, V> load_pack(const T* p) {
#if defined(__CUDA_ARCH__)
    return *(const Pack<T, V>*)p;
#else
    Pack<T, V> out; __builtin_memcpy(&out, p, sizeof out); return out;
#endif
}
template <typename T, int V>
FV_DEVICE void store_pack(T* p, const Pack<T, V>& pack) {
#if defined(__CUDA_ARCH__)
    *(Pack<T, V>*)p = pack;
#else
    __builtin_memcpy(p, &pack, sizeof pack);
#endif
}

// The widest pack, 8, 4, 2 or 1 values, that divides a channel's plane (so that one pack has
// one channel) and to which all three pointers are aligned.
template <typename T>
FV_DEVICE int epilogue_width(const T* x, const T* res, const T* y, const Epilogue& e) {
    unsigned long long a = (unsigned long long)x | (unsigned long long)res | (unsigned long long)y;
    for (int v = 8; v > 1; v /= 2)
        if (e.plane % v == 0 && a % (v * sizeof(T)) == 0) return v;
    return 1;
}

// Pack `p` (values p·V to p·V + V − 1, all of one channel); `I` as in depthwise_at.
template <typename T, int V, typename I>
FV_DEVICE void epilogue_at(const T* x, const T* bias, const T* res, T* y, const Epilogue& e, I p) {
    I i = p * V;
    int ch = (int)((i / (I)e.plane) % (I)e.channels);
    float b = to_f32(bias[ch]);
    Pack<T, V> xv = load_pack<T, V>(x + i), rv = xv, out;
    if (e.residual) rv = load_pack<T, V>(res + i);
    for (int k = 0; k < V; k++) {
        float v = to_f32(xv.v[k]) + b;
        if (e.residual) v += to_f32(rv.v[k]);
        if (e.act >= 1) v = v > 0.0f ? v : 0.0f; // ReLU
        if (e.act == 2) v = v < 6.0f ? v : 6.0f; // ReLU6
        from_f32(v, &out.v[k]);
    }
    store_pack<T, V>(y + i, out);
}

// Max or average pooling over a square window with PyTorch's semantics: symmetric padding
// (−∞ for max, zeros for average), windows that ceil mode lets hang past the padding clipped,
// and the average divided either by the window clipped to the padded input
// (count_include_pad, PyTorch's default) or by the real input elements under it. The output
// size comes from the caller (PoolSpec). `Pool` in gpu/mod.rs lays it out.
struct Pool {
    int n, c, h, w, out_h, out_w, kernel, stride, pad, op, count_include_pad; // op: 0 max, 1 average
};

template <typename T, typename I>
FV_DEVICE void pool_at(const T* x, T* y, const Pool& p, I i) {
    int ox = (int)(i % (I)p.out_w);
    I r = i / (I)p.out_w;
    int oy = (int)(r % (I)p.out_h);
    I plane = r / (I)p.out_h;
    const T* xp = x + (long long)plane * p.h * p.w;
    int h0 = oy * p.stride - p.pad, w0 = ox * p.stride - p.pad;
    int h1 = h0 + p.kernel < p.h + p.pad ? h0 + p.kernel : p.h + p.pad; // clipped to the padded input
    int w1 = w0 + p.kernel < p.w + p.pad ? w0 + p.kernel : p.w + p.pad;
    int padded_count = (h1 - h0) * (w1 - w0);
    int hs = h0 > 0 ? h0 : 0, ws = w0 > 0 ? w0 : 0, he = h1 < p.h ? h1 : p.h, we = w1 < p.w ? w1 : p.w;
    float acc = p.op == 0 ? as_float(0xff800000u) : 0.0f; // −∞
    for (int iy = hs; iy < he; iy++)
        for (int ix = ws; ix < we; ix++) {
            float v = to_f32(xp[(long long)iy * p.w + ix]);
            if (p.op == 0) acc = v > acc || v != v ? v : acc; // NaN propagates, as in PyTorch
            else acc += v;
        }
    if (p.op == 1) acc /= (float)(p.count_include_pad ? padded_count : (he - hs) * (we - ws));
    from_f32(acc, &y[i]);
}

#if defined(__CUDA_ARCH__)
// A grid-stride loop of `body` over i < count, i of type I.
#define GRID_STRIDE(I, count, body)                                                     \
    {                                                                                   \
        I step = (I)gridDim.x * blockDim.x;                                             \
        for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (I)(count); i += step) \
            body;                                                                       \
    }
// The same in 32-bit indices where all of the `total` values' indices fit (and i + step does
// not wrap: i < 2³¹, step ≤ 2²⁰ blocks × 256 threads), else in 64-bit ones.
#define INDEXED(total, count, body)                                   \
    if ((total) < (1LL << 31)) GRID_STRIDE(unsigned, count, body)     \
    else GRID_STRIDE(long long, count, body)

#define POOL(NAME, T)                                                   \
    extern "C" __global__ void NAME(const T* x, T* y, Pool p) {         \
        long long total = (long long)p.n * p.c * p.out_h * p.out_w;     \
        INDEXED(total, total, pool_at(x, y, p, i))                         \
    }
POOL(pool_f32, float)
POOL(pool_f16, f16)
POOL(pool_bf16, bf16)

// one loop per pack width, over total / V packs
#define EPILOGUE(NAME, T)                                                                        \
    extern "C" __global__ void NAME(const T* x, const T* bias, const T* res, T* y, Epilogue e) { \
        switch (epilogue_width(x, res, y, e)) {                                                  \
        case 8: INDEXED(e.total, e.total / 8, (epilogue_at<T, 8>(x, bias, res, y, e, i))) break;      \
        case 4: INDEXED(e.total, e.total / 4, (epilogue_at<T, 4>(x, bias, res, y, e, i))) break;      \
        case 2: INDEXED(e.total, e.total / 2, (epilogue_at<T, 2>(x, bias, res, y, e, i))) break;      \
        default: INDEXED(e.total, e.total, (epilogue_at<T, 1>(x, bias, res, y, e, i)))                \
        }                                                                                        \
    }
EPILOGUE(epilogue_f32, float)
EPILOGUE(epilogue_f16, f16)
EPILOGUE(epilogue_bf16, bf16)

#define DEPTHWISE(NAME, T)                                                                     \
    extern "C" __global__ void NAME(const T* x, const T* wt, const T* bias, T* y, Geometry g) { \
        long long total = (long long)g.n * g.c * g.out_h * g.out_w;                            \
        INDEXED(total, total, depthwise_at(x, wt, bias, y, g, i))                                 \
    }
DEPTHWISE(depthwise_f32, float)
DEPTHWISE(depthwise_f16, f16)
DEPTHWISE(depthwise_bf16, bf16)
#endif

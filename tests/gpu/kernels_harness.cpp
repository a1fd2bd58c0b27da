// Runs src/kernels/gpu/kernels.cu's per-output functions (`depthwise_at`, `epilogue_at`,
// `pool_at`: the bodies of the CUDA kernels, with the 32-bit indices that the GPU uses at
// these sizes; the epilogue at every pack width that divides the plane) on the CPU, over random
// shapes, strides, paddings,
// dilations, ceil modes, activations and the three dtypes, against naive loops in double
// precision; and checks the f16/bf16 conversions against the compiler's _Float16 and
// exhaustively. Built and run by tests/gpu_kernels.rs. Prints one line per check; exits 1 on any
// mismatch.
//
// `kernels_harness abi NAME HEX`: reads the bytes of a parameter struct as Rust passes it to the
// kernel (HEX, from gpu/mod.rs's `#[repr(C)]` twin) into kernels.cu's `NAME`, and prints its
// fields by name in Rust's Debug form, then its size and alignment.
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "../../src/kernels/gpu/kernels.cu"

static int failures = 0;
#define CHECK(cond, ...)                         \
    do {                                         \
        if (!(cond)) {                           \
            if (failures++ < 10) {               \
                std::printf("MISMATCH: ");       \
                std::printf(__VA_ARGS__);        \
                std::printf("\n");               \
            }                                    \
        }                                        \
    } while (0)

template <typename T> T round_to(float f) { T t; from_f32(f, &t); return t; }

// tolerance relative to the output's magnitude and the sum of |terms|, per dtype
template <typename T> double eps();
template <> double eps<float>() { return 1e-5; }
template <> double eps<f16>() { return 2e-3; }
template <> double eps<bf16>() { return 1.6e-2; }

template <typename T>
double run_case(std::mt19937& rng, const Geometry& g) {
    std::uniform_real_distribution<float> u(-2.f, 2.f);
    size_t nx = (size_t)g.n * g.c * g.h * g.w, nw = (size_t)g.c * g.k_h * g.k_w, ny = (size_t)g.n * g.c * g.out_h * g.out_w;
    std::vector<T> x(nx), w(nw), b(g.c), y(ny);
    for (auto& v : x) v = round_to<T>(u(rng));
    for (auto& v : w) v = round_to<T>(u(rng));
    for (auto& v : b) v = round_to<T>(u(rng));
    for (size_t i = 0; i < ny; i++) depthwise_at(x.data(), w.data(), b.data(), y.data(), g, (unsigned)i);
    double worst = 0;
    for (int n = 0; n < g.n; n++)
        for (int c = 0; c < g.c; c++)
            for (int oy = 0; oy < g.out_h; oy++)
                for (int ox = 0; ox < g.out_w; ox++) {
                    double acc = to_f32(b[c]), mag = std::fabs(acc);
                    for (int ky = 0; ky < g.k_h; ky++)
                        for (int kx = 0; kx < g.k_w; kx++) {
                            int iy = oy * g.stride + ky * g.dilation - g.pad_top;
                            int ix = ox * g.stride + kx * g.dilation - g.pad_left;
                            if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue; // zero padding
                            double t = (double)to_f32(x[((size_t)(n * g.c + c) * g.h + iy) * g.w + ix]) *
                                       to_f32(w[(c * g.k_h + ky) * g.k_w + kx]);
                            acc += t;
                            mag += std::fabs(t);
                        }
                    if (g.act >= 1) acc = std::fmax(acc, 0.0);
                    if (g.act == 2) acc = std::fmin(acc, 6.0);
                    double got = to_f32(y[(((size_t)n * g.c + c) * g.out_h + oy) * g.out_w + ox]);
                    double diff = std::fabs(got - acc), tol = eps<T>() * (mag + 1.0);
                    worst = std::fmax(worst, diff / (mag + 1.0));
                    CHECK(diff <= tol, "n%d c%d (%d,%d): got %g, want %g (geometry %dx%d k%dx%d s%d d%d p%d,%d act%d)", n, c,
                          oy, ox, got, acc, g.h, g.w, g.k_h, g.k_w, g.stride, g.dilation, g.pad_top, g.pad_left, g.act);
                }
    return worst;
}

// `width` values per call of epilogue_at (a divisor of the plane, as the kernel picks)
template <typename T>
double run_epilogue(std::mt19937& rng, const Epilogue& e, int width) {
    std::uniform_real_distribution<float> u(-4.f, 4.f);
    std::vector<T> x(e.total), b(e.channels), r(e.total), y(e.total);
    for (auto& v : x) v = round_to<T>(u(rng));
    for (auto& v : b) v = round_to<T>(u(rng));
    for (auto& v : r) v = round_to<T>(u(rng));
    std::fill(y.begin(), y.end(), round_to<T>(NAN)); // a value left unwritten fails below
    for (unsigned p = 0; p < e.total / width; p++) switch (width) {
        case 8: epilogue_at<T, 8>(x.data(), b.data(), r.data(), y.data(), e, p); break;
        case 4: epilogue_at<T, 4>(x.data(), b.data(), r.data(), y.data(), e, p); break;
        case 2: epilogue_at<T, 2>(x.data(), b.data(), r.data(), y.data(), e, p); break;
        default: epilogue_at<T, 1>(x.data(), b.data(), r.data(), y.data(), e, p);
    }
    double worst = 0;
    long long images = e.total / ((long long)e.channels * e.plane);
    for (long long n = 0; n < images; n++)
        for (int c = 0; c < e.channels; c++)
            for (int p = 0; p < e.plane; p++) {
                long long i = (n * e.channels + c) * e.plane + p;
                double want = (double)to_f32(x[i]) + to_f32(b[c]) + (e.residual ? (double)to_f32(r[i]) : 0.0);
                if (e.act >= 1) want = std::fmax(want, 0.0);
                if (e.act == 2) want = std::fmin(want, 6.0);
                double got = to_f32(y[i]), diff = std::fabs(got - want), mag = std::fabs(want) + 1.0;
                worst = std::fmax(worst, diff / mag);
                CHECK(diff <= eps<T>() * mag, "epilogue n%lld c%d p%d: got %g, want %g (act %d, residual %d)", n, c, p,
                      got, want, e.act, e.residual);
            }
    return worst;
}

// PyTorch's output size of a pooling window (with ceil mode's rule that the last window must
// start inside the input or its left padding)
static int pool_out(int len, int k, int s, int p, bool ceil_mode) {
    int span = len + 2 * p - k;
    if (span < 0) return 0;
    int out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (out - 1) * s >= len + p) out--;
    return out;
}

template <typename T>
double run_pool(std::mt19937& rng, const Pool& p) {
    std::uniform_real_distribution<float> u(-3.f, 3.f);
    std::vector<T> x((size_t)p.n * p.c * p.h * p.w), y((size_t)p.n * p.c * p.out_h * p.out_w);
    for (auto& v : x) v = round_to<T>(u(rng));
    for (size_t i = 0; i < y.size(); i++) pool_at(x.data(), y.data(), p, (unsigned)i);
    double worst = 0;
    for (int pl = 0; pl < p.n * p.c; pl++)
        for (int oy = 0; oy < p.out_h; oy++)
            for (int ox = 0; ox < p.out_w; ox++) {
                // every window position, classified one by one
                double mx = -INFINITY, sum = 0;
                int in_padded = 0, in_input = 0;
                for (int ky = 0; ky < p.kernel; ky++)
                    for (int kx = 0; kx < p.kernel; kx++) {
                        int iy = oy * p.stride - p.pad + ky, ix = ox * p.stride - p.pad + kx;
                        if (iy >= -p.pad && iy < p.h + p.pad && ix >= -p.pad && ix < p.w + p.pad) in_padded++;
                        if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
                        in_input++;
                        double v = to_f32(x[((size_t)pl * p.h + iy) * p.w + ix]);
                        mx = std::fmax(mx, v);
                        sum += v;
                    }
                double want = p.op == 0 ? mx : sum / (p.count_include_pad ? in_padded : in_input);
                double got = to_f32(y[((size_t)pl * p.out_h + oy) * p.out_w + ox]);
                double diff = std::fabs(got - want), mag = std::fabs(want) + 1.0;
                worst = std::fmax(worst, diff / mag);
                CHECK(diff <= eps<T>() * mag, "pool (%d,%d): got %g, want %g (%dx%d k%d s%d p%d op%d cip%d)", oy, ox, got, want,
                      p.h, p.w, p.kernel, p.stride, p.pad, p.op, p.count_include_pad);
            }
    return worst;
}

// `hex` (two digits per byte) into `s`, when it holds exactly sizeof(S) bytes
template <typename S> bool from_hex(const char* hex, S* s) {
    size_t given = std::strlen(hex) / 2;
    if (std::strlen(hex) != 2 * sizeof(S)) {
        std::printf("%zu bytes given, sizeof %zu\n", given, sizeof(S));
        return false;
    }
    unsigned char* p = reinterpret_cast<unsigned char*>(s);
    for (size_t i = 0; i < sizeof(S); i++) {
        unsigned v;
        if (std::sscanf(hex + 2 * i, "%2x", &v) != 1) return false;
        p[i] = (unsigned char)v;
    }
    return true;
}

static int abi(const char* name, const char* hex) {
    if (!std::strcmp(name, "Geometry")) {
        Geometry g;
        if (!from_hex(hex, &g)) return 1;
        std::printf("{ n: %d, c: %d, h: %d, w: %d, out_h: %d, out_w: %d, k_h: %d, k_w: %d, stride: %d, dilation: %d, "
                    "pad_top: %d, pad_left: %d, act: %d } size %zu align %zu\n",
                    g.n, g.c, g.h, g.w, g.out_h, g.out_w, g.k_h, g.k_w, g.stride, g.dilation, g.pad_top, g.pad_left,
                    g.act, sizeof g, alignof(Geometry));
    } else if (!std::strcmp(name, "Epilogue")) {
        Epilogue e;
        if (!from_hex(hex, &e)) return 1;
        std::printf("{ total: %lld, channels: %d, plane: %d, act: %d, residual: %d } size %zu align %zu\n", e.total,
                    e.channels, e.plane, e.act, e.residual, sizeof e, alignof(Epilogue));
    } else if (!std::strcmp(name, "Pool")) {
        Pool p;
        if (!from_hex(hex, &p)) return 1;
        std::printf("{ n: %d, c: %d, h: %d, w: %d, out_h: %d, out_w: %d, kernel: %d, stride: %d, pad: %d, op: %d, "
                    "count_include_pad: %d } size %zu align %zu\n",
                    p.n, p.c, p.h, p.w, p.out_h, p.out_w, p.kernel, p.stride, p.pad, p.op, p.count_include_pad,
                    sizeof p, alignof(Pool));
    } else {
        std::printf("no struct %s\n", name);
        return 1;
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 4 && !std::strcmp(argv[1], "abi")) return abi(argv[2], argv[3]);
    // conversions: every f16 pattern survives f16 → f32 → f16, and matches _Float16
    for (unsigned h = 0; h < 65536; h++) {
        f16 v{(unsigned short)h};
        float f = to_f32(v);
        _Float16 ref;
        std::memcpy(&ref, &h, 2);
        bool nan = std::isnan((float)ref);
        CHECK(nan ? std::isnan(f) : f == (float)ref, "to_f32(f16 %04x) = %g, _Float16 says %g", h, f, (float)ref);
        if (!nan) CHECK(round_to<f16>(f).bits == h, "f16 %04x does not round-trip", h);
    }
    // f32 → f16 rounding against the compiler's, on random bit patterns and near ties
    std::mt19937 rng(20261130);
    for (int i = 0; i < 2000000; i++) {
        unsigned bits = rng();
        if (i % 2) bits = (bits & 0x8000e000u) | (((rng() % 40) + 100u) << 23) | 0x1000u; // exact ties
        float f;
        std::memcpy(&f, &bits, 4);
        if (std::isnan(f)) continue;
        _Float16 ref = (_Float16)f;
        unsigned short rb;
        std::memcpy(&rb, &ref, 2);
        CHECK(round_to<f16>(f).bits == rb, "from_f32(%a) = f16 %04x, _Float16 says %04x", f, round_to<f16>(f).bits, rb);
    }
    // bf16: every pattern round-trips; rounding is to nearest, ties to even
    for (unsigned h = 0; h < 65536; h++) {
        float f = to_f32(bf16{(unsigned short)h});
        if (!std::isnan(f)) CHECK(round_to<bf16>(f).bits == h, "bf16 %04x does not round-trip", h);
    }
    for (int i = 0; i < 1000000; i++) {
        unsigned bits = rng() & 0xbfffffffu; // finite
        float f;
        std::memcpy(&f, &bits, 4);
        bf16 r = round_to<bf16>(f);
        float lo = to_f32(bf16{(unsigned short)(bits >> 16)}), hi = to_f32(bf16{(unsigned short)((bits >> 16) + 1)});
        double dl = std::fabs((double)f - lo), dh = std::fabs((double)hi - f);
        unsigned short want = dl < dh ? (bits >> 16) : dh < dl ? (bits >> 16) + 1 : (((bits >> 16) & 1) ? (bits >> 16) + 1 : (bits >> 16));
        CHECK(r.bits == want, "bf16 rounding of %a: %04x, want %04x", f, r.bits, want);
    }
    std::printf("conversions checked, %d mismatches\n", failures);

    // the convolution, over random geometries
    double worst[3] = {0, 0, 0};
    for (int t = 0; t < 400; t++) {
        Geometry g;
        g.n = 1 + rng() % 3;
        g.c = 1 + rng() % 9;
        g.h = 1 + rng() % 15;
        g.w = 1 + rng() % 15;
        g.k_h = 1 + rng() % 5;
        g.k_w = 1 + rng() % 5;
        g.stride = 1 + rng() % 3;
        g.dilation = 1 + rng() % 2;
        g.pad_top = rng() % g.k_h;
        g.pad_left = rng() % g.k_w;
        g.act = rng() % 3;
        int span_h = (g.k_h - 1) * g.dilation + 1, span_w = (g.k_w - 1) * g.dilation + 1;
        int pad_bottom = rng() % g.k_h, pad_right = rng() % g.k_w; // the far side: any amount
        if (g.h + g.pad_top + pad_bottom < span_h || g.w + g.pad_left + pad_right < span_w) continue;
        g.out_h = (g.h + g.pad_top + pad_bottom - span_h) / g.stride + 1;
        g.out_w = (g.w + g.pad_left + pad_right - span_w) / g.stride + 1;
        worst[0] = std::fmax(worst[0], run_case<float>(rng, g));
        worst[1] = std::fmax(worst[1], run_case<f16>(rng, g));
        worst[2] = std::fmax(worst[2], run_case<bf16>(rng, g));
    }
    std::printf("depthwise: worst |diff| / (sum|terms| + 1): f32 %.2e, f16 %.2e, bf16 %.2e\n", worst[0], worst[1], worst[2]);

    double ew[3] = {0, 0, 0};
    for (int t = 0; t < 300; t++) {
        // half the planes multiples of 8, so that every pack width is taken
        int n = 1 + rng() % 3, c = 1 + rng() % 20, plane = t % 2 ? 8 * (1 + rng() % 8) : 1 + rng() % 50;
        Epilogue e{(long long)n * c * plane, c, plane, (int)(rng() % 3), (int)(rng() % 2)};
        for (int width = 1; width <= 8; width *= 2) {
            if (plane % width) continue;
            ew[0] = std::fmax(ew[0], run_epilogue<float>(rng, e, width));
            ew[1] = std::fmax(ew[1], run_epilogue<f16>(rng, e, width));
            ew[2] = std::fmax(ew[2], run_epilogue<bf16>(rng, e, width));
        }
    }
    std::printf("epilogue: worst |diff| / (|want| + 1): f32 %.2e, f16 %.2e, bf16 %.2e\n", ew[0], ew[1], ew[2]);

    double pw[3] = {0, 0, 0};
    int pools = 0;
    for (int t = 0; t < 600; t++) {
        Pool p;
        p.n = 1 + rng() % 2;
        p.c = 1 + rng() % 5;
        p.h = 1 + rng() % 14;
        p.w = 1 + rng() % 14;
        p.kernel = 1 + rng() % 5;
        p.stride = 1 + rng() % 3;
        p.pad = rng() % (p.kernel / 2 + 1);
        p.op = rng() % 2;
        p.count_include_pad = rng() % 2;
        bool ceil_mode = rng() % 2;
        p.out_h = pool_out(p.h, p.kernel, p.stride, p.pad, ceil_mode);
        p.out_w = pool_out(p.w, p.kernel, p.stride, p.pad, ceil_mode);
        if (p.out_h <= 0 || p.out_w <= 0) continue;
        pools++;
        pw[0] = std::fmax(pw[0], run_pool<float>(rng, p));
        pw[1] = std::fmax(pw[1], run_pool<f16>(rng, p));
        pw[2] = std::fmax(pw[2], run_pool<bf16>(rng, p));
    }
    std::printf("pool (%d cases): worst |diff| / (|want| + 1): f32 %.2e, f16 %.2e, bf16 %.2e\n", pools, pw[0], pw[1], pw[2]);
    std::printf("%d mismatches\n", failures);
    return failures ? 1 : 0;
}

// Runs src/kernels/gpu/depthwise.cu's per-output function (`depthwise_at`, the body of the
// CUDA kernel) on the CPU, over random shapes, strides, paddings, dilations, activations and the
// three dtypes, against a naive convolution in double precision; and checks its f16/bf16
// conversions against the compiler's _Float16 and exhaustively. Built and run by
// tests/gpu_kernels.rs. Prints one line per check; exits 1 on any mismatch.
#include <cmath>
#include <cstdio>
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
    for (size_t i = 0; i < ny; i++) depthwise_at(x.data(), w.data(), b.data(), y.data(), g, (long long)i);
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

template <typename T>
double run_epilogue(std::mt19937& rng, const Epilogue& e) {
    std::uniform_real_distribution<float> u(-4.f, 4.f);
    std::vector<T> x(e.total), b(e.channels), r(e.total), y(e.total);
    for (auto& v : x) v = round_to<T>(u(rng));
    for (auto& v : b) v = round_to<T>(u(rng));
    for (auto& v : r) v = round_to<T>(u(rng));
    for (long long i = 0; i < e.total; i++) epilogue_at(x.data(), b.data(), r.data(), y.data(), e, i);
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

int main() {
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
        int n = 1 + rng() % 3, c = 1 + rng() % 20, plane = 1 + rng() % 50;
        Epilogue e{(long long)n * c * plane, c, plane, (int)(rng() % 3), (int)(rng() % 2)};
        ew[0] = std::fmax(ew[0], run_epilogue<float>(rng, e));
        ew[1] = std::fmax(ew[1], run_epilogue<f16>(rng, e));
        ew[2] = std::fmax(ew[2], run_epilogue<bf16>(rng, e));
    }
    std::printf("epilogue: worst |diff| / (|want| + 1): f32 %.2e, f16 %.2e, bf16 %.2e\n", ew[0], ew[1], ew[2]);
    std::printf("%d mismatches\n", failures);
    return failures ? 1 : 0;
}

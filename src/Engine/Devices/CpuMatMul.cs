using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GpuLlama.Formats;

namespace GpuLlama.Devices;

/// <summary>
/// The CPU backend's inner loops: 16-bit float conversion and dot products, with Vector512 where the hardware has
/// it (AVX-512) and Vector256 otherwise. Weights stay in their stored type; rows are widened on the fly.
/// </summary>
internal static unsafe class CpuMatMul
{
    // 2^112: rescales a half's exponent (bias 15) placed in a float (bias 127), denormals included.
    private const float HalfExponentScale = 5.192296858534828e33f;

    /// <summary>IEEE half → float for n values (exact for every half, incl. denormals, inf and NaN).</summary>
    public static void F16ToF32(ushort* src, float* dst, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + 32 <= n; i += 32)
            {
                Vector512<ushort> h = Vector512.Load(src + i);
                Vector512.Store(HalfToSingle(Vector512.WidenLower(h)), dst + i);
                Vector512.Store(HalfToSingle(Vector512.WidenUpper(h)), dst + i + 16);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= n; i += 16)
            {
                Vector256<ushort> h = Vector256.Load(src + i);
                Vector256.Store(HalfToSingle(Vector256.WidenLower(h)), dst + i);
                Vector256.Store(HalfToSingle(Vector256.WidenUpper(h)), dst + i + 8);
            }
        }

        for (; i < n; i++)
        {
            dst[i] = (float)BitConverter.UInt16BitsToHalf(src[i]);
        }
    }

    /// <summary>
    /// half → float for n finite values with <see cref="DotF16x4"/>'s lane arithmetic (the decode kernels' numbers:
    /// exact for finite halves, Inf and NaN read as large finite values): two shifts and a mask per 16 values and a
    /// permute to put even and odd values back in order — half the instructions of <see cref="F16ToF32"/>, which is
    /// what the prompt GEMM's weight panels pay per converted value.
    /// </summary>
    public static void F16ToF32Finite(ushort* src, float* dst, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            Vector512<int> m = Vector512.Create(unchecked((int)0x8FFFE000));
            Vector512<float> scale = Vector512.Create(HalfExponentScale);
            Vector512<int> first = Vector512.Create(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            Vector512<int> second = first + Vector512.Create(8);
            for (; i + 32 <= n; i += 32)
            {
                Vector512<int> u = Vector512.Load((int*)(src + i));
                Vector512<float> e = ((u << 16 >> 3) & m).AsSingle() * scale;
                Vector512<float> o = ((u >> 3) & m).AsSingle() * scale;
                Vector512.Store(Avx512F.PermuteVar16x32x2(e, first, o), dst + i);
                Vector512.Store(Avx512F.PermuteVar16x32x2(e, second, o), dst + i + 16);
            }
        }
        else if (Vector256.IsHardwareAccelerated && Avx2.IsSupported)
        {
            Vector256<int> m = Vector256.Create(unchecked((int)0x8FFFE000));
            Vector256<float> scale = Vector256.Create(HalfExponentScale);
            for (; i + 16 <= n; i += 16)
            {
                F16x16ToF32(src + i, dst + i, m, scale);
            }
        }

        F16ToF32(src + i, dst + i, n - i);
    }

    /// <summary>16 finite halves → floats, <see cref="F16ToF32Finite"/>'s AVX2 step (m = 0x8FFFE000, scale = 2^112).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void F16x16ToF32(ushort* src, float* dst, Vector256<int> m, Vector256<float> scale)
    {
        Vector256<int> u = Vector256.Load((int*)src);
        Vector256<float> e = ((u << 16 >> 3) & m).AsSingle() * scale;
        Vector256<float> o = ((u >> 3) & m).AsSingle() * scale;
        Vector256<float> lo = Avx.UnpackLow(e, o), hi = Avx.UnpackHigh(e, o); // values 0-3 8-11, 4-7 12-15
        Vector256.Store(Avx.Permute2x128(lo, hi, 0x20), dst);
        Vector256.Store(Avx.Permute2x128(lo, hi, 0x31), dst + 8);
    }

    /// <summary>bfloat16 → float for n values: the upper half of a float's bits.</summary>
    public static void Bf16ToF32(ushort* src, float* dst, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + 32 <= n; i += 32)
            {
                Vector512<ushort> h = Vector512.Load(src + i);
                Vector512.Store(Vector512.ShiftLeft(Vector512.WidenLower(h), 16).AsSingle(), dst + i);
                Vector512.Store(Vector512.ShiftLeft(Vector512.WidenUpper(h), 16).AsSingle(), dst + i + 16);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= n; i += 16)
            {
                Vector256<ushort> h = Vector256.Load(src + i);
                Vector256.Store(Vector256.ShiftLeft(Vector256.WidenLower(h), 16).AsSingle(), dst + i);
                Vector256.Store(Vector256.ShiftLeft(Vector256.WidenUpper(h), 16).AsSingle(), dst + i + 8);
            }
        }

        for (; i < n; i++)
        {
            dst[i] = BitConverter.UInt32BitsToSingle((uint)src[i] << 16);
        }
    }

    /// <summary>
    /// float32 → bfloat16 with round-to-nearest-even (ggml's and torch's rounding); NaN stays NaN (quieted, as ggml
    /// does: rounding could carry a NaN's payload into the exponent and make it infinite).
    /// </summary>
    public static void F32ToBf16(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        int i = 0;
        ReadOnlySpan<uint> bits = System.Runtime.InteropServices.MemoryMarshal.Cast<float, uint>(src);
        if (System.Numerics.Vector.IsHardwareAccelerated)
        {
            var bias = new System.Numerics.Vector<uint>(0x7FFF);
            var one = new System.Numerics.Vector<uint>(1);
            var exponent = new System.Numerics.Vector<uint>(0x7F800000);
            int step = System.Numerics.Vector<uint>.Count * 2;
            for (; i + step <= src.Length; i += step)
            {
                var a = new System.Numerics.Vector<uint>(bits.Slice(i));
                var b = new System.Numerics.Vector<uint>(bits.Slice(i + System.Numerics.Vector<uint>.Count));
                if (System.Numerics.Vector.EqualsAny(a & exponent, exponent) || System.Numerics.Vector.EqualsAny(b & exponent, exponent))
                {
                    break; // an infinity or NaN: the scalar loop handles the rest
                }

                a = (a + bias + ((a >> 16) & one)) >> 16;
                b = (b + bias + ((b >> 16) & one)) >> 16;
                System.Numerics.Vector.Narrow(a, b).CopyTo(dst.Slice(i));
            }
        }

        for (; i < src.Length; i++)
        {
            uint u = bits[i];
            dst[i] = (u & 0x7FFFFFFF) > 0x7F800000 ? (ushort)((u >> 16) | 64) : (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
        }
    }

    /// <summary>Σ w[j]·x[j] for float rows.</summary>
    public static float Dot(float* w, float* x, int n)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a0 = default, a1 = default;
            for (; i + 32 <= n; i += 32)
            {
                CpuPrefetch.Ahead(w + i, 128);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Load(w + i + 16), Vector512.Load(x + i + 16), a1);
            }

            for (; i + 16 <= n; i += 16)
            {
                CpuPrefetch.Ahead(w + i);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a0);
            }

            sum = Vector512.Sum(a0 + a1);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> a0 = default, a1 = default;
            for (; i + 16 <= n; i += 16)
            {
                CpuPrefetch.Ahead(w + i);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Load(w + i), Vector256.Load(x + i), a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Load(w + i + 8), Vector256.Load(x + i + 8), a1);
            }

            sum = Vector256.Sum(a0 + a1);
        }

        for (; i < n; i++)
        {
            sum += w[i] * x[i];
        }

        return sum;
    }

    // ---- decode: weight rows against one activation vector, four rows per pass so that every x load feeds four rows ----

    /// <summary>
    /// Values per chunk of the activation layout <see cref="PrepareHalfActivations"/> writes for 16-bit weights: two
    /// vectors of floats.
    /// </summary>
    public static int HalfChunk => Vector512.IsHardwareAccelerated ? 32 : 16;

    // 2^56 twice makes 2^112, the factor between a half's exponent (bias 15) and a float's (bias 127) when the half's
    // bits are placed in a float: x is pre-scaled by 2^56 once per matvec, the sums by 2^56 at the end, so that no
    // weight needs a multiply. Both scalings are exact; products stay normal unless |w·x| < 2^-70 (where rounding a
    // denormal changes nothing visible in a float sum).
    private const float F16HalfScale = 7.2057594037927936e16f;

    /// <summary>
    /// Writes x in the order the weights come out of 32-bit lanes — each chunk of <see cref="HalfChunk"/> values as its
    /// even-indexed values, then its odd-indexed ones — scaled by 2^56 for F16 weights (see <see cref="DotF16x4"/>).
    /// Values past the last whole chunk are copied unpermuted (the kernels' scalar tails read them from x).
    /// </summary>
    public static void PrepareHalfActivations(float* x, float* xp, int n, bool f16)
    {
        float scale = f16 ? F16HalfScale : 1f;
        int i = 0;
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            Vector512<int> evenIdx = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            Vector512<int> oddIdx = evenIdx + Vector512<int>.One;
            Vector512<float> s = Vector512.Create(scale);
            for (; i + 32 <= n; i += 32)
            {
                Vector512<float> a = Vector512.Load(x + i);
                Vector512<float> b = Vector512.Load(x + i + 16);
                Vector512.Store(Avx512F.PermuteVar16x32x2(a, evenIdx, b) * s, xp + i);
                Vector512.Store(Avx512F.PermuteVar16x32x2(a, oddIdx, b) * s, xp + i + 16);
            }
        }
        else
        {
            int chunk = HalfChunk;
            int lanes = chunk / 2;
            for (; i + chunk <= n; i += chunk)
            {
                for (int l = 0; l < lanes; l++)
                {
                    xp[i + l] = x[i + 2 * l] * scale;
                    xp[i + lanes + l] = x[i + 2 * l + 1] * scale;
                }
            }
        }

        for (; i < n; i++)
        {
            xp[i] = x[i];
        }
    }

    // ---- F16 weights against F16-rounded activations: llama.cpp's numerics (its vec_dot_type for F16 is F16) ----
    //
    // With float32 x a 2-byte weight brings 4 bytes of x through the core; rounding x to 11 significant bits, as
    // llama.cpp does, halves that, which is what the F16 decode was short of (docs/performance.md). The codes are
    // F16's bits for x·2^s, with s a power of two per vector that puts max|x| at 2^14..2^15, and they decode like the
    // weights plus one vpternlogd that sets the exponent's top three bits: the float is x·2^(s+112), so products with
    // the weights (w·2^-112) need no multiply and the sum is exact up to 2^-s. Values more than 2^29 below max|x|
    // (zeros included) read as ±2^-29·max|x| — a trace below float32 rounding of any sum they enter.

    /// <summary>
    /// x rounded to F16 precision as 16-bit codes for <see cref="DotF16Codes"/>, and the same rounded values as floats
    /// (<paramref name="rounded"/>, for the scalar tails and the prompt GEMM); <paramref name="unscale"/> is 2^-s.
    /// False (nothing written) when x is all zeros or not finite: then the exact kernels serve.
    /// </summary>
    public static bool RoundToF16Codes(float* x, int n, ushort* codes, float* rounded, out float unscale)
    {
        float max = 0, poison = 0; // poison: Σ x·0, NaN when any x is infinite or NaN
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> m = Vector256<float>.Zero, p = Vector256<float>.Zero;
            for (; i + 8 <= n; i += 8)
            {
                Vector256<float> v = Vector256.Load(x + i);
                m = Vector256.Max(m, Vector256.Abs(v));
                p += v * Vector256<float>.Zero;
            }

            for (int k = 0; k < 8; k++)
            {
                max = MathF.Max(max, m.GetElement(k));
            }

            poison = Vector256.Sum(p);
        }

        for (; i < n; i++)
        {
            max = MathF.Max(max, MathF.Abs(x[i]));
            poison += x[i] * 0;
        }

        unscale = 1;
        if (!float.IsFinite(max) || float.IsNaN(poison) || max == 0 || n == 0)
        {
            return false;
        }

        int emax = (int)((BitConverter.SingleToUInt32Bits(max) >> 23) & 0xFF) - 127; // denormal max: -127, still fine
        int s = 14 - emax;
        unscale = MathF.ScaleB(1f, -s);
        float up = MathF.ScaleB(1f, s);
        i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            // the scalar loop below, 16 values a step
            Vector256<float> upv = Vector256.Create(up), unv = Vector256.Create(unscale);
            for (; i + 16 <= n; i += 16)
            {
                Vector256<uint> c0 = Code(Vector256.Load(x + i) * upv, unv, rounded + i);
                Vector256<uint> c1 = Code(Vector256.Load(x + i + 8) * upv, unv, rounded + i + 8);
                Vector256.Narrow(c0, c1).Store(codes + i);
            }
        }

        for (; i < n; i++)
        {
            uint bits = BitConverter.SingleToUInt32Bits(x[i] * up);
            uint mag = bits & 0x7FFFFFFF;
            mag += 0xFFF + ((mag >> 13) & 1);                  // round to nearest even at 10 mantissa bits
            int code = (int)(mag >> 13) - (112 << 10);          // float exponent − 112 = F16 exponent
            code = code < 0x400 ? 0 : code;                     // below F16's normal range: the floor value
            uint sign = (bits >> 16) & 0x8000;
            codes[i] = (ushort)(sign | (uint)code);
            rounded[i] = BitConverter.UInt32BitsToSingle((sign << 16) | ((uint)(code + (112 << 10)) << 13)) * unscale;
        }

        return true;
    }

    /// <summary>Eight values of <see cref="RoundToF16Codes"/>: the codes (in 32-bit lanes) and the rounded floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Code(Vector256<float> scaled, Vector256<float> unscale, float* rounded)
    {
        Vector256<uint> bits = scaled.AsUInt32();
        Vector256<uint> mag = bits & Vector256.Create(0x7FFFFFFFu);
        mag += Vector256.Create(0xFFFu) + ((mag >> 13) & Vector256<uint>.One);
        Vector256<int> code = (mag >> 13).AsInt32() - Vector256.Create(112 << 10);
        code = Vector256.ConditionalSelect(Vector256.LessThan(code, Vector256.Create(0x400)), Vector256<int>.Zero, code);
        Vector256<uint> sign = (bits >> 16) & Vector256.Create(0x8000u);
        Vector256.Store((((sign << 16) | ((code + Vector256.Create(112 << 10)).AsUInt32() << 13)).AsSingle()) * unscale, rounded);
        return sign | code.AsUInt32();
    }

    /// <summary>Σ f16(w[j])·x[j] with x as <see cref="RoundToF16Codes"/> codes (two halves per 32-bit lane, as the weights).</summary>
    public static float DotF16Codes(ushort* w, ushort* xc, float* xr, int n, float unscale)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            Vector512<int> m = Vector512.Create(unchecked((int)0x8FFFE000)), top = Vector512.Create(0x70000000);
            Vector512<float> e = default, o = default, e2 = default, o2 = default;
            for (; i + 64 <= n; i += 64)
            {
                CpuPrefetch.Ahead(w + i, 128);
                Vector512<int> u = Vector512.Load((int*)(w + i)), v = Vector512.Load((int*)(xc + i));
                e = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), Avx512F.TernaryLogic(v << 16 >> 3, m, top, 0xEA).AsSingle(), e);
                o = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), Avx512F.TernaryLogic(v >> 3, m, top, 0xEA).AsSingle(), o);
                u = Vector512.Load((int*)(w + i + 32));
                v = Vector512.Load((int*)(xc + i + 32));
                e2 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), Avx512F.TernaryLogic(v << 16 >> 3, m, top, 0xEA).AsSingle(), e2);
                o2 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), Avx512F.TernaryLogic(v >> 3, m, top, 0xEA).AsSingle(), o2);
            }

            for (; i + 32 <= n; i += 32)
            {
                CpuPrefetch.Ahead(w + i);
                Vector512<int> u = Vector512.Load((int*)(w + i)), v = Vector512.Load((int*)(xc + i));
                e = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), Avx512F.TernaryLogic(v << 16 >> 3, m, top, 0xEA).AsSingle(), e);
                o = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), Avx512F.TernaryLogic(v >> 3, m, top, 0xEA).AsSingle(), o);
            }

            sum = Vector512.Sum((e + o) + (e2 + o2)) * unscale;
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<int> m = Vector256.Create(unchecked((int)0x8FFFE000)), top = Vector256.Create(0x70000000);
            Vector256<float> e = default, o = default;
            for (; i + 16 <= n; i += 16)
            {
                CpuPrefetch.Ahead(w + i);
                Vector256<int> u = Vector256.Load((int*)(w + i)), v = Vector256.Load((int*)(xc + i));
                e = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), (((v << 16 >> 3) & m) | top).AsSingle(), e);
                o = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), (((v >> 3) & m) | top).AsSingle(), o);
            }

            sum = Vector256.Sum(e + o) * unscale;
        }

        for (; i < n; i++)
        {
            sum += (float)BitConverter.UInt16BitsToHalf(w[i]) * xr[i];
        }

        return sum;
    }

    /// <summary>
    /// <see cref="DotF16Codes"/> for four rows, each x decode feeding all four; row k's half j at
    /// w + k·rowStep + (j / 32)·chunkStep + j % 32 (row-major: chunkStep = 32; a row panel: rowStep = 32, chunkStep = 128).
    /// </summary>
    public static void DotF16Codesx4(ushort* w, long rowStep, long chunkStep, ushort* xc, float* xr, int n, float unscale, float* o)
    {
        ushort* w1 = w + rowStep, w2 = w1 + rowStep, w3 = w2 + rowStep;
        int i = 0;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            Vector512<int> m = Vector512.Create(unchecked((int)0x8FFFE000)), top = Vector512.Create(0x70000000);
            Vector512<float> e0 = default, e1 = default, e2 = default, e3 = default;
            Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
            for (; i + 32 <= n; i += 32)
            {
                long q = (i >> 5) * chunkStep + (i & 31);
                CpuPrefetch.Ahead(w + q);
                CpuPrefetch.Ahead(w1 + q);
                CpuPrefetch.Ahead(w2 + q);
                CpuPrefetch.Ahead(w3 + q);
                Vector512<int> v = Vector512.Load((int*)(xc + i));
                Vector512<float> xe = Avx512F.TernaryLogic(v << 16 >> 3, m, top, 0xEA).AsSingle();
                Vector512<float> xo = Avx512F.TernaryLogic(v >> 3, m, top, 0xEA).AsSingle();
                Vector512<int> u = Vector512.Load((int*)(w + q));
                e0 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e0);
                o0 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o0);
                u = Vector512.Load((int*)(w1 + q));
                e1 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e1);
                o1 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o1);
                u = Vector512.Load((int*)(w2 + q));
                e2 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e2);
                o2 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o2);
                u = Vector512.Load((int*)(w3 + q));
                e3 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e3);
                o3 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o3);
            }

            s0 = Vector512.Sum(e0 + o0) * unscale;
            s1 = Vector512.Sum(e1 + o1) * unscale;
            s2 = Vector512.Sum(e2 + o2) * unscale;
            s3 = Vector512.Sum(e3 + o3) * unscale;
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<int> m = Vector256.Create(unchecked((int)0x8FFFE000)), top = Vector256.Create(0x70000000);
            Vector256<float> e0 = default, e1 = default, e2 = default, e3 = default;
            Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default;
            for (; i + 16 <= n; i += 16)
            {
                long q = (i >> 5) * chunkStep + (i & 31);
                CpuPrefetch.Ahead(w + q);
                CpuPrefetch.Ahead(w1 + q);
                CpuPrefetch.Ahead(w2 + q);
                CpuPrefetch.Ahead(w3 + q);
                Vector256<int> v = Vector256.Load((int*)(xc + i));
                Vector256<float> xe = (((v << 16 >> 3) & m) | top).AsSingle();
                Vector256<float> xo = (((v >> 3) & m) | top).AsSingle();
                Vector256<int> u = Vector256.Load((int*)(w + q));
                e0 = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e0);
                o0 = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o0);
                u = Vector256.Load((int*)(w1 + q));
                e1 = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e1);
                o1 = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o1);
                u = Vector256.Load((int*)(w2 + q));
                e2 = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e2);
                o2 = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o2);
                u = Vector256.Load((int*)(w3 + q));
                e3 = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e3);
                o3 = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o3);
            }

            s0 = Vector256.Sum(e0 + o0) * unscale;
            s1 = Vector256.Sum(e1 + o1) * unscale;
            s2 = Vector256.Sum(e2 + o2) * unscale;
            s3 = Vector256.Sum(e3 + o3) * unscale;
        }

        for (; i < n; i++)
        {
            float xv = xr[i];
            s0 += (float)BitConverter.UInt16BitsToHalf(w[i]) * xv;
            s1 += (float)BitConverter.UInt16BitsToHalf(w1[i]) * xv;
            s2 += (float)BitConverter.UInt16BitsToHalf(w2[i]) * xv;
            s3 += (float)BitConverter.UInt16BitsToHalf(w3[i]) * xv;
        }

        o[0] = s0;
        o[1] = s1;
        o[2] = s2;
        o[3] = s3;
    }

    // ---- row panels: the decode layout of F32, F16 and BF16 matrices on AVX2/AVX-512 machines ----
    //
    // Four rows side by side share every activation load and decode, but as four separate streams (rows 4 or 8 KiB
    // apart, fighting over the same L1 sets) they ran slower than one row at a time. Interleaving each group of four
    // rows in 64-byte chunks — chunk c of row k at group + (4c + k)·64 bytes — makes the four rows one sequential
    // stream: on a Zen 3 core the four-row kernels then took 9-17% less time per matrix than the one-row ones
    // (docs/performance.md). The copy has the matrix's size and its row offsets for whole groups (group g starts
    // at row 4g); rows past the last whole group stay row-major.

    /// <summary>Bytes per chunk of a row in a row panel.</summary>
    public const int PanelChunkBytes = 64;

    /// <summary>Whether a matrix of this type and shape is stored as row panels on this machine.</summary>
    public static bool UsesRowPanels(DType type, long rows, long rowBytes) =>
        type is DType.F32 or DType.F16 or DType.BF16 && rows >= 4 && rowBytes % PanelChunkBytes == 0 && Vector256.IsHardwareAccelerated;

    /// <summary>Copies a row-major matrix into row panels (<paramref name="dst"/> of the same size).</summary>
    public static void InterleaveRowPanels(byte* src, byte* dst, long rows, long rowBytes)
    {
        long chunks = rowBytes / PanelChunkBytes;
        long g = 0;
        for (; g + 4 <= rows; g += 4)
        {
            byte* s = src + g * rowBytes, d = dst + g * rowBytes;
            for (long c = 0; c < chunks; c++)
            {
                for (int k = 0; k < 4; k++)
                {
                    byte* from = s + k * rowBytes + c * PanelChunkBytes, to = d + (4 * c + k) * PanelChunkBytes;
                    Vector256.Store(Vector256.Load(from), to);
                    Vector256.Store(Vector256.Load(from + 32), to + 32);
                }
            }
        }

        Buffer.MemoryCopy(src + g * rowBytes, dst + g * rowBytes, (rows - g) * rowBytes, (rows - g) * rowBytes);
    }

    /// <summary>
    /// Where row <paramref name="k"/> (0-3) of the panel at <paramref name="group"/> has its bytes from
    /// <paramref name="offset"/> (a multiple of <see cref="PanelChunkBytes"/>) on, for the next 64 bytes.
    /// </summary>
    public static byte* PanelChunk(byte* group, int k, long offset) =>
        group + (offset / PanelChunkBytes * 4 + k) * PanelChunkBytes;

    /// <summary>
    /// Values [k0, k0 + count) of row <paramref name="k"/> of the row panel at <paramref name="group"/> to float32
    /// (k0 and count whole chunks); F16 with the decode kernels' arithmetic (<see cref="F16ToF32Finite"/>).
    /// </summary>
    public static void PanelRowToF32(DType type, byte* group, int k, int k0, float* dst, int count)
    {
        int perChunk = PanelChunkBytes / type.BlockBytes(); // F32, F16, BF16: blocks of one value
        byte* chunk = PanelChunk(group, k, type.RowBytes(k0));
        for (int i = 0; i < count; i += perChunk, chunk += 4 * PanelChunkBytes)
        {
            ChunkToF32(type, chunk, dst + i);
        }
    }

    /// <summary>
    /// Values [k0, k0 + count) of all four rows of the row panel at <paramref name="group"/> to float32, row k at
    /// dst + k·<paramref name="dstStride"/>: the prompt product's weight panel, read in one pass over the chunks.
    /// </summary>
    public static void PanelToF32(DType type, byte* group, int k0, int count, float* dst, long dstStride)
    {
        int perChunk = PanelChunkBytes / type.BlockBytes();
        byte* chunk = PanelChunk(group, 0, type.RowBytes(k0));
        for (int i = 0; i < count; i += perChunk, chunk += 4 * PanelChunkBytes)
        {
            ChunkToF32(type, chunk, dst + i);
            ChunkToF32(type, chunk + PanelChunkBytes, dst + dstStride + i);
            ChunkToF32(type, chunk + 2 * PanelChunkBytes, dst + 2 * dstStride + i);
            ChunkToF32(type, chunk + 3 * PanelChunkBytes, dst + 3 * dstStride + i);
        }
    }

    /// <summary>One 64-byte chunk (16 floats, 32 halves or 32 bfloat16s) to float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ChunkToF32(DType type, byte* chunk, float* dst)
    {
        if (type == DType.F32)
        {
            Vector256.Store(Vector256.Load((float*)chunk), dst);
            Vector256.Store(Vector256.Load((float*)chunk + 8), dst + 8);
        }
        else if (type == DType.BF16)
        {
            Bf16ToF32((ushort*)chunk, dst, 32);
        }
        else if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            F16ToF32Finite((ushort*)chunk, dst, 32);
        }
        else
        {
            // F16ToF32Finite's AVX2 step, twice, without the call (a prompt's panels are converted chunk by chunk)
            Vector256<int> m = Vector256.Create(unchecked((int)0x8FFFE000));
            Vector256<float> scale = Vector256.Create(HalfExponentScale);
            F16x16ToF32((ushort*)chunk, dst, m, scale);
            F16x16ToF32((ushort*)chunk + 16, dst + 16, m, scale);
        }
    }

    /// <summary>
    /// o[k] = Σ w_k[j]·x[j] for four float rows: row k's value j at w + k·rowStep + (j / 16)·chunkStep + j % 16 —
    /// rows <paramref name="rowStep"/> apart for row-major weights (chunkStep = 16), or a <see cref="InterleaveRowPanels"/>
    /// panel (rowStep = 16, chunkStep = 64).
    /// </summary>
    public static void DotF32x4(float* w, long rowStep, long chunkStep, float* x, int n, float* o)
    {
        float* w1 = w + rowStep, w2 = w1 + rowStep, w3 = w2 + rowStep;
        int i = 0;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i + 16 <= n; i += 16)
            {
                long q = (i >> 4) * chunkStep + (i & 15);
                CpuPrefetch.Ahead(w + q);
                CpuPrefetch.Ahead(w1 + q);
                CpuPrefetch.Ahead(w2 + q);
                CpuPrefetch.Ahead(w3 + q);
                Vector512<float> xv = Vector512.Load(x + i);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w + q), xv, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Load(w1 + q), xv, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.Load(w2 + q), xv, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.Load(w3 + q), xv, a3);
            }

            s0 = Vector512.Sum(a0);
            s1 = Vector512.Sum(a1);
            s2 = Vector512.Sum(a2);
            s3 = Vector512.Sum(a3);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i + 8 <= n; i += 8)
            {
                long q = (i >> 4) * chunkStep + (i & 15);
                CpuPrefetch.Ahead(w + q);
                CpuPrefetch.Ahead(w1 + q);
                CpuPrefetch.Ahead(w2 + q);
                CpuPrefetch.Ahead(w3 + q);
                Vector256<float> xv = Vector256.Load(x + i);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Load(w + q), xv, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Load(w1 + q), xv, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Load(w2 + q), xv, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Load(w3 + q), xv, a3);
            }

            s0 = Vector256.Sum(a0);
            s1 = Vector256.Sum(a1);
            s2 = Vector256.Sum(a2);
            s3 = Vector256.Sum(a3);
        }

        for (; i < n; i++)
        {
            s0 += w[i] * x[i];
            s1 += w1[i] * x[i];
            s2 += w2[i] * x[i];
            s3 += w3[i] * x[i];
        }

        o[0] = s0;
        o[1] = s1;
        o[2] = s2;
        o[3] = s3;
    }

    /// <summary>
    /// o[k] = Σ f16(w_k[j])·x[j] for four F16 rows, with xp = <see cref="PrepareHalfActivations"/>(x, f16: true).
    /// A 32-bit lane holds two halves: the odd one is <c>(lane &gt;&gt; 3) &amp; 0x8FFFE000</c> (arithmetic shift:
    /// the sign lands in bit 31, the exponent and mantissa in a float's places) and the even one the same after a
    /// shift left by 16 — exact for finite halves, denormals included, up to the factor 2^112 that the scaling of x
    /// and of the sums carries. Four integer ops and two FMAs per 32 weights: .NET 10 exposes no F16C conversion, and
    /// the classic widen-and-fix-up sequence costs twice that, which made the F16 matvec compute-bound.
    /// Infinite and NaN weights are not represented (they read as large finite values).
    /// </summary>
    public static void DotF16x4(ushort* w, long rowStep, long chunkStep, float* xp, float* x, int n, float* o)
    {
        ushort* w1 = w + rowStep, w2 = w1 + rowStep, w3 = w2 + rowStep;
        int i = 0;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<int> m = Vector512.Create(unchecked((int)0x8FFFE000));
            Vector512<float> e0 = default, e1 = default, e2 = default, e3 = default;
            Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
            for (; i + 32 <= n; i += 32)
            {
                long q = (i >> 5) * chunkStep + (i & 31);
                CpuPrefetch.Ahead(w + q);
                CpuPrefetch.Ahead(w1 + q);
                CpuPrefetch.Ahead(w2 + q);
                CpuPrefetch.Ahead(w3 + q);
                Vector512<float> xe = Vector512.Load(xp + i);
                Vector512<float> xo = Vector512.Load(xp + i + 16);
                Vector512<int> u = Vector512.Load((int*)(w + q));
                e0 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e0);
                o0 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o0);
                u = Vector512.Load((int*)(w1 + q));
                e1 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e1);
                o1 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o1);
                u = Vector512.Load((int*)(w2 + q));
                e2 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e2);
                o2 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o2);
                u = Vector512.Load((int*)(w3 + q));
                e3 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e3);
                o3 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o3);
            }

            s0 = Vector512.Sum(e0 + o0) * F16HalfScale;
            s1 = Vector512.Sum(e1 + o1) * F16HalfScale;
            s2 = Vector512.Sum(e2 + o2) * F16HalfScale;
            s3 = Vector512.Sum(e3 + o3) * F16HalfScale;
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<int> m = Vector256.Create(unchecked((int)0x8FFFE000));
            Vector256<float> e0 = default, e1 = default, e2 = default, e3 = default;
            Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default;
            for (; i + 16 <= n; i += 16)
            {
                long q = (i >> 5) * chunkStep + (i & 31);
                CpuPrefetch.Ahead(w + q);
                CpuPrefetch.Ahead(w1 + q);
                CpuPrefetch.Ahead(w2 + q);
                CpuPrefetch.Ahead(w3 + q);
                Vector256<float> xe = Vector256.Load(xp + i);
                Vector256<float> xo = Vector256.Load(xp + i + 8);
                Vector256<int> u = Vector256.Load((int*)(w + q));
                e0 = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e0);
                o0 = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o0);
                u = Vector256.Load((int*)(w1 + q));
                e1 = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e1);
                o1 = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o1);
                u = Vector256.Load((int*)(w2 + q));
                e2 = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e2);
                o2 = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o2);
                u = Vector256.Load((int*)(w3 + q));
                e3 = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), xe, e3);
                o3 = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), xo, o3);
            }

            s0 = Vector256.Sum(e0 + o0) * F16HalfScale;
            s1 = Vector256.Sum(e1 + o1) * F16HalfScale;
            s2 = Vector256.Sum(e2 + o2) * F16HalfScale;
            s3 = Vector256.Sum(e3 + o3) * F16HalfScale;
        }

        for (; i < n; i++)
        {
            float xv = x[i];
            s0 += (float)BitConverter.UInt16BitsToHalf(w[i]) * xv;
            s1 += (float)BitConverter.UInt16BitsToHalf(w1[i]) * xv;
            s2 += (float)BitConverter.UInt16BitsToHalf(w2[i]) * xv;
            s3 += (float)BitConverter.UInt16BitsToHalf(w3[i]) * xv;
        }

        o[0] = s0;
        o[1] = s1;
        o[2] = s2;
        o[3] = s3;
    }

    /// <summary>
    /// o[k] = Σ bf16(w_k[j])·x[j] for four BF16 rows, with xp = <see cref="PrepareHalfActivations"/>(x, f16: false):
    /// a 32-bit lane holding two bfloat16s is the odd one as a float once its low half is masked off, and the even one
    /// once shifted left by 16 (exact for every value).
    /// </summary>
    public static void DotBf16x4(ushort* w, long rowStep, long chunkStep, float* xp, float* x, int n, float* o)
    {
        ushort* w1 = w + rowStep, w2 = w1 + rowStep, w3 = w2 + rowStep;
        int i = 0;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<uint> m = Vector512.Create(0xFFFF0000u);
            Vector512<float> e0 = default, e1 = default, e2 = default, e3 = default;
            Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
            for (; i + 32 <= n; i += 32)
            {
                long q = (i >> 5) * chunkStep + (i & 31);
                CpuPrefetch.Ahead(w + q);
                CpuPrefetch.Ahead(w1 + q);
                CpuPrefetch.Ahead(w2 + q);
                CpuPrefetch.Ahead(w3 + q);
                Vector512<float> xe = Vector512.Load(xp + i);
                Vector512<float> xo = Vector512.Load(xp + i + 16);
                Vector512<uint> u = Vector512.Load((uint*)(w + q));
                e0 = Vector512.FusedMultiplyAdd((u << 16).AsSingle(), xe, e0);
                o0 = Vector512.FusedMultiplyAdd((u & m).AsSingle(), xo, o0);
                u = Vector512.Load((uint*)(w1 + q));
                e1 = Vector512.FusedMultiplyAdd((u << 16).AsSingle(), xe, e1);
                o1 = Vector512.FusedMultiplyAdd((u & m).AsSingle(), xo, o1);
                u = Vector512.Load((uint*)(w2 + q));
                e2 = Vector512.FusedMultiplyAdd((u << 16).AsSingle(), xe, e2);
                o2 = Vector512.FusedMultiplyAdd((u & m).AsSingle(), xo, o2);
                u = Vector512.Load((uint*)(w3 + q));
                e3 = Vector512.FusedMultiplyAdd((u << 16).AsSingle(), xe, e3);
                o3 = Vector512.FusedMultiplyAdd((u & m).AsSingle(), xo, o3);
            }

            s0 = Vector512.Sum(e0 + o0);
            s1 = Vector512.Sum(e1 + o1);
            s2 = Vector512.Sum(e2 + o2);
            s3 = Vector512.Sum(e3 + o3);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<uint> m = Vector256.Create(0xFFFF0000u);
            Vector256<float> e0 = default, e1 = default, e2 = default, e3 = default;
            Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default;
            for (; i + 16 <= n; i += 16)
            {
                long q = (i >> 5) * chunkStep + (i & 31);
                CpuPrefetch.Ahead(w + q);
                CpuPrefetch.Ahead(w1 + q);
                CpuPrefetch.Ahead(w2 + q);
                CpuPrefetch.Ahead(w3 + q);
                Vector256<float> xe = Vector256.Load(xp + i);
                Vector256<float> xo = Vector256.Load(xp + i + 8);
                Vector256<uint> u = Vector256.Load((uint*)(w + q));
                e0 = Vector256.FusedMultiplyAdd((u << 16).AsSingle(), xe, e0);
                o0 = Vector256.FusedMultiplyAdd((u & m).AsSingle(), xo, o0);
                u = Vector256.Load((uint*)(w1 + q));
                e1 = Vector256.FusedMultiplyAdd((u << 16).AsSingle(), xe, e1);
                o1 = Vector256.FusedMultiplyAdd((u & m).AsSingle(), xo, o1);
                u = Vector256.Load((uint*)(w2 + q));
                e2 = Vector256.FusedMultiplyAdd((u << 16).AsSingle(), xe, e2);
                o2 = Vector256.FusedMultiplyAdd((u & m).AsSingle(), xo, o2);
                u = Vector256.Load((uint*)(w3 + q));
                e3 = Vector256.FusedMultiplyAdd((u << 16).AsSingle(), xe, e3);
                o3 = Vector256.FusedMultiplyAdd((u & m).AsSingle(), xo, o3);
            }

            s0 = Vector256.Sum(e0 + o0);
            s1 = Vector256.Sum(e1 + o1);
            s2 = Vector256.Sum(e2 + o2);
            s3 = Vector256.Sum(e3 + o3);
        }

        for (; i < n; i++)
        {
            float xv = x[i];
            s0 += BitConverter.UInt32BitsToSingle((uint)w[i] << 16) * xv;
            s1 += BitConverter.UInt32BitsToSingle((uint)w1[i] << 16) * xv;
            s2 += BitConverter.UInt32BitsToSingle((uint)w2[i] << 16) * xv;
            s3 += BitConverter.UInt32BitsToSingle((uint)w3[i] << 16) * xv;
        }

        o[0] = s0;
        o[1] = s1;
        o[2] = s2;
        o[3] = s3;
    }

    /// <summary>
    /// One F16 row with <see cref="DotF16x4"/>'s arithmetic. Rows that fit the L1 cache with their x (up to 4096
    /// columns) stream faster one at a time than four side by side: rows of 2048 or 4096 halves lie 4 KiB apart, so
    /// four of them fight over the same L1 sets, and one stream is what the hardware prefetcher follows best.
    /// </summary>
    public static float DotF16(ushort* w, float* xp, float* x, int n)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<int> m = Vector512.Create(unchecked((int)0x8FFFE000));
            Vector512<float> e = default, o = default, e2 = default, o2 = default;
            for (; i + 64 <= n; i += 64)
            {
                CpuPrefetch.Ahead(w + i, 128);
                Vector512<int> u = Vector512.Load((int*)(w + i));
                e = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), Vector512.Load(xp + i), e);
                o = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), Vector512.Load(xp + i + 16), o);
                u = Vector512.Load((int*)(w + i + 32));
                e2 = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), Vector512.Load(xp + i + 32), e2);
                o2 = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), Vector512.Load(xp + i + 48), o2);
            }

            for (; i + 32 <= n; i += 32)
            {
                CpuPrefetch.Ahead(w + i);
                Vector512<int> u = Vector512.Load((int*)(w + i));
                e = Vector512.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), Vector512.Load(xp + i), e);
                o = Vector512.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), Vector512.Load(xp + i + 16), o);
            }

            sum = Vector512.Sum((e + o) + (e2 + o2)) * F16HalfScale;
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<int> m = Vector256.Create(unchecked((int)0x8FFFE000));
            Vector256<float> e = default, o = default;
            for (; i + 16 <= n; i += 16)
            {
                CpuPrefetch.Ahead(w + i);
                Vector256<int> u = Vector256.Load((int*)(w + i));
                e = Vector256.FusedMultiplyAdd(((u << 16 >> 3) & m).AsSingle(), Vector256.Load(xp + i), e);
                o = Vector256.FusedMultiplyAdd(((u >> 3) & m).AsSingle(), Vector256.Load(xp + i + 8), o);
            }

            sum = Vector256.Sum(e + o) * F16HalfScale;
        }

        for (; i < n; i++)
        {
            sum += (float)BitConverter.UInt16BitsToHalf(w[i]) * x[i];
        }

        return sum;
    }

    /// <summary>One BF16 row with <see cref="DotBf16x4"/>'s arithmetic (see <see cref="DotF16"/> for when).</summary>
    public static float DotBf16(ushort* w, float* xp, float* x, int n)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<uint> m = Vector512.Create(0xFFFF0000u);
            Vector512<float> e = default, o = default, e2 = default, o2 = default;
            for (; i + 64 <= n; i += 64)
            {
                CpuPrefetch.Ahead(w + i, 128);
                Vector512<uint> u = Vector512.Load((uint*)(w + i));
                e = Vector512.FusedMultiplyAdd((u << 16).AsSingle(), Vector512.Load(xp + i), e);
                o = Vector512.FusedMultiplyAdd((u & m).AsSingle(), Vector512.Load(xp + i + 16), o);
                u = Vector512.Load((uint*)(w + i + 32));
                e2 = Vector512.FusedMultiplyAdd((u << 16).AsSingle(), Vector512.Load(xp + i + 32), e2);
                o2 = Vector512.FusedMultiplyAdd((u & m).AsSingle(), Vector512.Load(xp + i + 48), o2);
            }

            for (; i + 32 <= n; i += 32)
            {
                CpuPrefetch.Ahead(w + i);
                Vector512<uint> u = Vector512.Load((uint*)(w + i));
                e = Vector512.FusedMultiplyAdd((u << 16).AsSingle(), Vector512.Load(xp + i), e);
                o = Vector512.FusedMultiplyAdd((u & m).AsSingle(), Vector512.Load(xp + i + 16), o);
            }

            sum = Vector512.Sum((e + o) + (e2 + o2));
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<uint> m = Vector256.Create(0xFFFF0000u);
            Vector256<float> e = default, o = default;
            for (; i + 16 <= n; i += 16)
            {
                CpuPrefetch.Ahead(w + i);
                Vector256<uint> u = Vector256.Load((uint*)(w + i));
                e = Vector256.FusedMultiplyAdd((u << 16).AsSingle(), Vector256.Load(xp + i), e);
                o = Vector256.FusedMultiplyAdd((u & m).AsSingle(), Vector256.Load(xp + i + 8), o);
            }

            sum = Vector256.Sum(e + o);
        }

        for (; i < n; i++)
        {
            sum += BitConverter.UInt32BitsToSingle((uint)w[i] << 16) * x[i];
        }

        return sum;
    }

    /// <summary>
    /// results[k] = Σ w[j]·x[k*n + j] for k &lt; 4: one weight row against four activation rows, so each weight
    /// load feeds four FMAs (the prompt-processing micro-kernel: compute-bound, not bandwidth-bound).
    /// </summary>
    public static void Dot4(float* w, float* x, int n, out float r0, out float r1, out float r2, out float r3)
    {
        float* x0 = x, x1 = x + n, x2 = x + 2 * n, x3 = x + 3 * n;
        int i = 0;
        r0 = r1 = r2 = r3 = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i + 16 <= n; i += 16)
            {
                Vector512<float> wv = Vector512.Load(w + i);
                a0 = Vector512.FusedMultiplyAdd(wv, Vector512.Load(x0 + i), a0);
                a1 = Vector512.FusedMultiplyAdd(wv, Vector512.Load(x1 + i), a1);
                a2 = Vector512.FusedMultiplyAdd(wv, Vector512.Load(x2 + i), a2);
                a3 = Vector512.FusedMultiplyAdd(wv, Vector512.Load(x3 + i), a3);
            }

            r0 = Vector512.Sum(a0);
            r1 = Vector512.Sum(a1);
            r2 = Vector512.Sum(a2);
            r3 = Vector512.Sum(a3);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i + 8 <= n; i += 8)
            {
                Vector256<float> wv = Vector256.Load(w + i);
                a0 = Vector256.FusedMultiplyAdd(wv, Vector256.Load(x0 + i), a0);
                a1 = Vector256.FusedMultiplyAdd(wv, Vector256.Load(x1 + i), a1);
                a2 = Vector256.FusedMultiplyAdd(wv, Vector256.Load(x2 + i), a2);
                a3 = Vector256.FusedMultiplyAdd(wv, Vector256.Load(x3 + i), a3);
            }

            r0 = Vector256.Sum(a0);
            r1 = Vector256.Sum(a1);
            r2 = Vector256.Sum(a2);
            r3 = Vector256.Sum(a3);
        }

        for (; i < n; i++)
        {
            float wv = w[i];
            r0 += wv * x0[i];
            r1 += wv * x1[i];
            r2 += wv * x2[i];
            r3 += wv * x3[i];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> HalfToSingle(Vector512<uint> h)
    {
        Vector512<uint> magnitude = h & Vector512.Create(0x7fffu);
        Vector512<uint> sign = (h & Vector512.Create(0x8000u)) << 16;
        Vector512<float> scaled = (magnitude << 13).AsSingle() * Vector512.Create(HalfExponentScale);
        Vector512<uint> special = (magnitude << 13) | Vector512.Create(0x7f800000u); // inf and NaN keep their payload
        Vector512<uint> isSpecial = Vector512.GreaterThanOrEqual(magnitude, Vector512.Create(0x7c00u));
        return (Vector512.ConditionalSelect(isSpecial, special, scaled.AsUInt32()) | sign).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> HalfToSingle(Vector256<uint> h)
    {
        Vector256<uint> magnitude = h & Vector256.Create(0x7fffu);
        Vector256<uint> sign = (h & Vector256.Create(0x8000u)) << 16;
        Vector256<float> scaled = (magnitude << 13).AsSingle() * Vector256.Create(HalfExponentScale);
        Vector256<uint> special = (magnitude << 13) | Vector256.Create(0x7f800000u);
        Vector256<uint> isSpecial = Vector256.GreaterThanOrEqual(magnitude, Vector256.Create(0x7c00u));
        return (Vector256.ConditionalSelect(isSpecial, special, scaled.AsUInt32()) | sign).AsSingle();
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Load(w + i + 16), Vector512.Load(x + i + 16), a1);
            }

            for (; i + 16 <= n; i += 16)
            {
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a0);
            }

            sum = Vector512.Sum(a0 + a1);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> a0 = default, a1 = default;
            for (; i + 16 <= n; i += 16)
            {
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

    /// <summary>Σ f16(w[j])·x[j], converting in registers (the decode path: weights stream from memory once).</summary>
    public static float DotF16(ushort* w, float* x, int n)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a0 = default, a1 = default;
            for (; i + 32 <= n; i += 32)
            {
                Vector512<ushort> h = Vector512.Load(w + i);
                a0 = Vector512.FusedMultiplyAdd(HalfToSingle(Vector512.WidenLower(h)), Vector512.Load(x + i), a0);
                a1 = Vector512.FusedMultiplyAdd(HalfToSingle(Vector512.WidenUpper(h)), Vector512.Load(x + i + 16), a1);
            }

            sum = Vector512.Sum(a0 + a1);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> a0 = default, a1 = default;
            for (; i + 16 <= n; i += 16)
            {
                Vector256<ushort> h = Vector256.Load(w + i);
                a0 = Vector256.FusedMultiplyAdd(HalfToSingle(Vector256.WidenLower(h)), Vector256.Load(x + i), a0);
                a1 = Vector256.FusedMultiplyAdd(HalfToSingle(Vector256.WidenUpper(h)), Vector256.Load(x + i + 8), a1);
            }

            sum = Vector256.Sum(a0 + a1);
        }

        for (; i < n; i++)
        {
            sum += (float)BitConverter.UInt16BitsToHalf(w[i]) * x[i];
        }

        return sum;
    }

    /// <summary>Σ bf16(w[j])·x[j], converting in registers.</summary>
    public static float DotBf16(ushort* w, float* x, int n)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a0 = default, a1 = default;
            for (; i + 32 <= n; i += 32)
            {
                Vector512<ushort> h = Vector512.Load(w + i);
                a0 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(Vector512.WidenLower(h), 16).AsSingle(), Vector512.Load(x + i), a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(Vector512.WidenUpper(h), 16).AsSingle(), Vector512.Load(x + i + 16), a1);
            }

            sum = Vector512.Sum(a0 + a1);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> a0 = default, a1 = default;
            for (; i + 16 <= n; i += 16)
            {
                Vector256<ushort> h = Vector256.Load(w + i);
                a0 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(Vector256.WidenLower(h), 16).AsSingle(), Vector256.Load(x + i), a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(Vector256.WidenUpper(h), 16).AsSingle(), Vector256.Load(x + i + 8), a1);
            }

            sum = Vector256.Sum(a0 + a1);
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
    private static Vector512<float> HalfToSingle(Vector512<uint> h)
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

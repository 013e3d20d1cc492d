using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace GpuLlama.Kernels;

/// <summary>16 bytes of weights: one vector load (ld.global.v4.b32), 8 F16/BF16 values or 4 F32 values.</summary>
public struct U4
{
    public uint X;
    public uint Y;
    public uint Z;
    public uint W;
}

/// <summary>Four activations read with one 16-byte load.</summary>
public struct F4
{
    public float X;
    public float Y;
    public float Z;
    public float W;
}

/// <summary>
/// Weight-type codes passed to kernels (ggml type ids, as <see cref="GpuLlama.Formats.DType"/>): kernels take an
/// int because enums from another assembly are not worth a marshalling surprise.
/// </summary>
internal static class WeightCode
{
    public const int F32 = 0;
    public const int F16 = 1;
    public const int BF16 = 30;
}

/// <summary>
/// Helpers inlined into every kernel: 16-bit float decoding, ggml's activation rounding, and deterministic warp and
/// group reductions (fixed order, no atomics, so a run reproduces bit for bit — GroupExtensions.AllReduce uses shared
/// memory atomics on PTX and is order-nondeterministic).
/// </summary>
internal static class KernelMath
{
    /// <summary>Largest group any kernel is launched with; shared scratch for per-warp partials is sized by it.</summary>
    public const int MaxGroupSize = 1024;

    /// <summary>Enough per-warp slots for a 1024-thread group of 32-lane warps, or of the emulator's smaller warps.</summary>
    public const int MaxWarps = 256;

    public static float Bf16(uint bits) => Interop.IntAsFloat(bits << 16);

    public static float Bf16High(uint word) => Interop.IntAsFloat(word & 0xFFFF0000u);

    // ILGPU.Half from raw bits (Interop.IntAsFloat(ushort) reinterprets; Half's ushort conversion operator is numeric)
    public static float F16(uint bits) => (float)Interop.IntAsFloat((ushort)(bits & 0xFFFFu));

    public static float F16High(uint word) => (float)Interop.IntAsFloat((ushort)(word >> 16));

    /// <summary>x rounded to nearest-even BF16, kept as float: ggml's GGML_FP32_TO_BF16 on the vec_dot_type path.</summary>
    public static float RoundBf16(float v)
    {
        uint u = Interop.FloatAsInt(v);
        u += 0x7FFFu + ((u >> 16) & 1u);
        return Interop.IntAsFloat(u & 0xFFFF0000u);
    }

    /// <summary>
    /// x rounded to nearest-even F16, kept as float: ggml's GGML_FP32_TO_FP16. On CUDA ILGPU's Half conversion is the
    /// hardware cvt.rn.f16.f32 (the accelerator-type test is a constant predicate there, so ptxas drops the other path);
    /// elsewhere exact integer rounding, because ILGPU's software float→Half on the CPU accelerator is not round-to-nearest.
    /// </summary>
    public static float RoundF16(float v)
    {
        if (Accelerator.CurrentType == AcceleratorType.Cuda)
        {
            return (float)(ILGPU.Half)v;
        }

        uint u = Interop.FloatAsInt(v);
        uint sign = u & 0x80000000u;
        uint a = u & 0x7FFFFFFFu;
        if (a >= 0x7F800000u)
        {
            return v; // inf, NaN
        }

        int e = (int)(a >> 23) - 127;
        if (e >= -14)
        {
            // normal half: keep 10 mantissa bits, ties to even; a carry into the exponent is the right answer
            a += 0xFFFu + ((a >> 13) & 1u);
            a &= 0xFFFFE000u;
            return Interop.IntAsFloat(sign | (a > 0x477FE000u ? 0x7F800000u : a));
        }

        if (e < -25)
        {
            return Interop.IntAsFloat(sign);
        }

        // subnormal half: a multiple of 2^-24; round the 24-bit significand right by (-1 - e) bits, ties to even
        int shift = -1 - e;
        uint m = (a & 0x7FFFFFu) | 0x800000u;
        m += (1u << (shift - 1)) - 1u + ((m >> shift) & 1u);
        float r2 = (m >> shift) * 5.9604644775390625E-8f;
        return sign != 0 ? -r2 : r2;
    }

    /// <summary>Activation as a 16-bit weight type sees it (identity for F32).</summary>
    public static float RoundX(float v, int type) => type == WeightCode.BF16 ? RoundBf16(v) : type == WeightCode.F16 ? RoundF16(v) : v;

    /// <summary>Element <paramref name="i"/> of a weight of any plain type, addressed as 32-bit words.</summary>
    public static float LoadWeight(ArrayView<uint> w, int type, long i)
    {
        if (type == WeightCode.F32)
        {
            return Interop.IntAsFloat(w[i]);
        }

        uint word = w[i >> 1];
        uint bits = (i & 1) == 0 ? word & 0xFFFFu : word >> 16;
        return type == WeightCode.BF16 ? Bf16(bits) : F16(bits);
    }

    /// <summary>Butterfly sum: every lane ends with the same, bitwise identical total.</summary>
    public static float WarpSum(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
        {
            v += Warp.ShuffleXor(v, offset);
        }

        return v;
    }

    public static float WarpMax(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
        {
            v = XMath.Max(v, Warp.ShuffleXor(v, offset));
        }

        return v;
    }

    /// <summary>
    /// Sum over the group, returned to every thread. Warp partials go to <paramref name="scratch"/> and every thread
    /// adds them in warp order, so the result is deterministic and uniform. Contains two barriers: call it from
    /// every thread of the group.
    /// </summary>
    public static float GroupSum(float v, ArrayView<float> scratch)
    {
        v = WarpSum(v);
        Group.Barrier();
        if (Warp.LaneIdx == 0)
        {
            scratch[Group.IdxX / Warp.WarpSize] = v;
        }

        Group.Barrier();
        int warps = Group.DimX / Warp.WarpSize;
        float total = 0;
        for (int i = 0; i < warps; i++)
        {
            total += scratch[i];
        }

        return total;
    }

    public static float GroupMax(float v, ArrayView<float> scratch)
    {
        v = WarpMax(v);
        Group.Barrier();
        if (Warp.LaneIdx == 0)
        {
            scratch[Group.IdxX / Warp.WarpSize] = v;
        }

        Group.Barrier();
        int warps = Group.DimX / Warp.WarpSize;
        float total = float.NegativeInfinity;
        for (int i = 0; i < warps; i++)
        {
            total = XMath.Max(total, scratch[i]);
        }

        return total;
    }
}

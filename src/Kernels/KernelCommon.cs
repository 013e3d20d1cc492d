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

/// <summary>8 bytes: four 16-bit values, one 8-byte load (ld.global.v2.b32).</summary>
public struct U2
{
    public uint X;
    public uint Y;
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
    public const int Q4_0 = 2;
    public const int Q8_0 = 8;
    public const int BF16 = 30;
}

/// <summary>
/// Helpers inlined into every kernel: 16-bit float decoding and deterministic warp and
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

    /// <summary>
    /// float32 → IEEE half bits, rounded to nearest even in integer arithmetic (ILGPU's Half conversion truncates on the
    /// CPU accelerator, while PTX rounds: this gives every backend the CPU device's rounding). Overflow → ±inf, NaN stays
    /// NaN; halves below 2^-14 are rounded by a float add with 0.5, which lands the value in the low mantissa bits.
    /// </summary>
    public static uint ToF16(float value)
    {
        uint x = Interop.FloatAsInt(value);
        uint sign = (x >> 16) & 0x8000u;
        uint f = x & 0x7FFFFFFFu;
        uint h;
        if (f >= 0x47800000u)
        {
            h = f > 0x7F800000u ? 0x7E00u : 0x7C00u;
        }
        else if (f < 0x38800000u)
        {
            h = Interop.FloatAsInt(Interop.IntAsFloat(f) + 0.5f) - 0x3F000000u;
        }
        else
        {
            uint odd = (f >> 13) & 1u;
            h = (f + 0xC8000FFFu + odd) >> 13; // rebias the exponent (15 - 127) and round half to even
        }

        return sign | h;
    }

    /// <summary>float32 → bfloat16 bits, rounded to nearest even; NaN stays NaN (as ggml and the CPU device round).</summary>
    public static uint ToBf16(float value)
    {
        uint x = Interop.FloatAsInt(value);
        return (x & 0x7FFFFFFFu) > 0x7F800000u ? (x >> 16) | 64u : (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
    }

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

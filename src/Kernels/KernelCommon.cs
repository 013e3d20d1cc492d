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

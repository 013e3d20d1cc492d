using ILGPU;
using ILGPU.Algorithms;

namespace GpuLlama.Kernels;

internal static class ElementwiseKernels
{
    /// <summary>gate = silu(gate) * up (llama.cpp's ggml_swiglu).</summary>
    public static void SwiGlu(Index1D i, ArrayView<float> gate, ArrayView<float> up)
    {
        float g = gate[i];
        gate[i] = g / (1.0f + XMath.Exp(-g)) * up[i];
    }

    /// <summary>
    /// dst = src rounded to a 16-bit weight type (ggml's vec_dot_type conversion), once per batched matmul instead of
    /// once per weight row inside the tiled kernel.
    /// </summary>
    public static void RoundActivations(Index1D i, ArrayView<float> dst, ArrayView<float> src, int type)
    {
        dst[i] = KernelMath.RoundX(src[i], type);
    }

    public static void Add(Index1D i, ArrayView<float> dst, ArrayView<float> src)
    {
        dst[i] += src[i];
    }

    /// <summary>x[r, c] = table[tokens[r], c] as float, for a table of any plain type addressed as 32-bit words.</summary>
    public static void Embed(Index1D i, ArrayView<float> x, ArrayView<uint> table, ArrayView<int> tokens, int tableType, int dim)
    {
        int r = i / dim;
        int c = i - r * dim;
        x[i] = KernelMath.LoadWeight(table, tableType, (long)tokens[r] * dim + c);
    }

    /// <summary>
    /// Index of the maximum of x[offset..offset+count) in one group: each thread scans a strided slice in increasing
    /// order (strict &gt; keeps the lowest index), then warps and the group combine with ties going to the lower
    /// index, so the answer matches a sequential scan exactly. NaNs never win; all-NaN gives 0 as the CPU does.
    /// </summary>
    public static void Argmax(ArrayView<float> x, ArrayView<int> result, int offset, int count)
    {
        ArrayView<float> values = SharedMemory.Allocate<float>(KernelMath.MaxWarps);
        ArrayView<int> indices = SharedMemory.Allocate<int>(KernelMath.MaxWarps);
        float best = float.NegativeInfinity;
        int bestIndex = int.MaxValue;
        for (int i = Group.IdxX; i < count; i += Group.DimX)
        {
            float v = x[offset + i];
            if (v > best || (v == best && i < bestIndex))
            {
                best = v;
                bestIndex = i;
            }
        }

        for (int o = Warp.WarpSize / 2; o > 0; o >>= 1)
        {
            float ov = Warp.ShuffleXor(best, o);
            int oi = Warp.ShuffleXor(bestIndex, o);
            if (ov > best || (ov == best && oi < bestIndex))
            {
                best = ov;
                bestIndex = oi;
            }
        }

        if (Warp.LaneIdx == 0)
        {
            values[Group.IdxX / Warp.WarpSize] = best;
            indices[Group.IdxX / Warp.WarpSize] = bestIndex;
        }

        Group.Barrier();
        if (Group.IdxX == 0)
        {
            int warps = Group.DimX / Warp.WarpSize;
            for (int w = 1; w < warps; w++)
            {
                if (values[w] > best || (values[w] == best && indices[w] < bestIndex))
                {
                    best = values[w];
                    bestIndex = indices[w];
                }
            }

            result[0] = bestIndex == int.MaxValue ? 0 : bestIndex;
        }
    }
}

using ILGPU;
using ILGPU.Algorithms;

namespace GpuLlama.Kernels;

internal static class NormKernels
{
    /// <summary>
    /// llama.cpp's rms_norm followed by the weight multiply: one group per row. The sum of squares is accumulated in
    /// float per thread and combined in a fixed order (KernelMath.GroupSum), so results do not vary run to run.
    /// </summary>
    public static void RmsNorm(ArrayView<float> dst, ArrayView<float> x, ArrayView<uint> weight, int weightType, int dim, float eps)
    {
        ArrayView<float> scratch = SharedMemory.Allocate<float>(KernelMath.MaxWarps);
        long row = (long)Grid.IdxX * dim;
        float sum = 0;
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
        {
            float v = x[row + i];
            sum += v * v;
        }

        sum = KernelMath.GroupSum(sum, scratch);
        float scale = 1.0f / XMath.Sqrt(sum / dim + eps);
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
        {
            dst[row + i] = x[row + i] * scale * KernelMath.LoadWeight(weight, weightType, i);
        }
    }
}

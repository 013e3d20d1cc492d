using GpuLlama.Formats;

namespace GpuLlama.Devices;

/// <summary>Fused dequantize-and-dot kernels for block-quantized weight rows on the CPU.</summary>
public static unsafe class CpuQuantDot
{
    /// <summary>Σ dequant(row)[j] · x[j] for j &lt; cols, for a block-quantized row of <paramref name="type"/>.</summary>
    public static float DotRow(DType type, byte* row, float* x, int cols)
    {
        throw new NotSupportedException($"{type} compute is not implemented yet");
    }
}

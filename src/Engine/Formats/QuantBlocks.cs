namespace GpuLlama.Formats;

/// <summary>Block-quantized formats (ggml-common.h): layouts and the scalar reference dequantization.</summary>
public static class QuantBlocks
{
    /// <summary>Converts one row of any supported dtype to float32 (the reference path; also used by Embed).</summary>
    public static void DequantizeRow(DType type, ReadOnlySpan<byte> row, Span<float> dst)
    {
        throw new NotSupportedException($"dequantization of {type} is not implemented yet");
    }
}

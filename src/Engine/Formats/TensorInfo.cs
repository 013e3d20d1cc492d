namespace GpuLlama.Formats;

/// <summary>
/// One named tensor in a weight source. <see cref="Shape"/> is row-major, outermost first — the reverse of
/// GGUF's <c>ne</c> order (ggml lists the fastest-moving dimension first). A matrix is [Rows, Cols] and each
/// row is contiguous in the file. <see cref="File"/> indexes the source's mapped files (shards);
/// <see cref="Offset"/> is the absolute byte offset in that file.
/// </summary>
public sealed record TensorInfo(string Name, DType Type, long[] Shape, int File, long Offset, long ByteLength)
{
    /// <summary>Innermost dimension (elements per row).</summary>
    public long Cols => Shape.Length == 0 ? 1 : Shape[^1];

    /// <summary>Product of all dimensions but the innermost (1 for a vector).</summary>
    public long Rows
    {
        get
        {
            long r = 1;
            for (int i = 0; i < Shape.Length - 1; i++)
            {
                r *= Shape[i];
            }
            return r;
        }
    }

    public long Elements => Rows * Cols;

    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

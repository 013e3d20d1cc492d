namespace GpuLlama.Formats;

/// <summary>
/// A tensor's bytes as they lie in the memory map: a raw pointer, because one tensor can exceed the 2 GiB a
/// span can address (Llama 3's F32 token_embd is 2.1 GB). Valid while the owning <see cref="IWeightSource"/> lives.
/// </summary>
public readonly unsafe struct WeightView
{
    public WeightView(TensorInfo info, byte* pointer, bool fileMapped = false)
    {
        Info = info;
        Pointer = pointer;
        FileMapped = fileMapped;
    }

    /// <summary>Whether the bytes are pages of a read-only file map (<see cref="MappedFile"/>), which a device that
    /// keeps its own copy may release (<see cref="MappedFile.Release"/>).</summary>
    public bool FileMapped { get; }

    public TensorInfo Info { get; }

    public byte* Pointer { get; }

    public DType Type => Info.Type;

    public long Rows => Info.Rows;

    public long Cols => Info.Cols;

    public long ByteLength => Info.ByteLength;

    public long RowBytes => Info.Type.RowBytes(Info.Cols);

    /// <summary>Bytes of row <paramref name="row"/> (a row is always below 2 GiB).</summary>
    public ReadOnlySpan<byte> Row(long row) => new(Pointer + row * RowBytes, checked((int)RowBytes));

    /// <summary>The whole tensor as a span, for tensors below 2 GiB (norm vectors, tests).</summary>
    public ReadOnlySpan<byte> AsSpan() => new(Pointer, checked((int)ByteLength));
}

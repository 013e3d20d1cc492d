using System.Buffers.Binary;
using System.Text;
using GpuLlama.Formats;

namespace GpuLlama.Tests.Formats;

/// <summary>
/// A complete, valid one-layer GGUF model made with <see cref="GgufWriter"/> (dim 64, 4 heads / 2 KV heads,
/// FFN 96, vocab 32) with tensors in F32, F16, BF16 and Q8_0, plus helpers to find and patch each field of the
/// written bytes, so corruption tests can break exactly one thing.
/// </summary>
public sealed class GgufTestModel
{
    public const int Dim = 64;
    public const int Heads = 4;
    public const int KvHeads = 2;
    public const int Hidden = 96;
    public const int Vocab = 32;
    public const int Context = 64;

    public List<KeyValuePair<string, object>> Metadata { get; } =
    [
        new("general.architecture", "llama"),
        new("general.name", "gguf-test"),
        new("llama.block_count", 1u),
        new("llama.context_length", (uint)Context),
        new("llama.embedding_length", (uint)Dim),
        new("llama.feed_forward_length", (uint)Hidden),
        new("llama.attention.head_count", (uint)Heads),
        new("llama.attention.head_count_kv", (uint)KvHeads),
        new("llama.rope.freq_base", 10000f),
        new("llama.attention.layer_norm_rms_epsilon", 1e-5f),
        new("tokenizer.ggml.model", "llama"),
        new("tokenizer.ggml.tokens", Enumerable.Range(0, Vocab).Select(i => $"t{i}").ToArray()),
        new("tokenizer.ggml.scores", Enumerable.Range(0, Vocab).Select(i => -(float)i).ToArray()),
        new("tokenizer.ggml.bos_token_id", 1u),
        new("tokenizer.ggml.eos_token_id", 2u),
    ];

    public List<(string Name, DType Type, long[] Shape)> Tensors { get; } =
    [
        ("token_embd.weight", DType.F16, [Vocab, Dim]),
        ("blk.0.attn_norm.weight", DType.F32, [Dim]),
        ("blk.0.attn_q.weight", DType.Q8_0, [Dim, Dim]),
        ("blk.0.attn_k.weight", DType.BF16, [KvHeads * 16, Dim]),
        ("blk.0.attn_v.weight", DType.F32, [KvHeads * 16, Dim]),
        ("blk.0.attn_output.weight", DType.F16, [Dim, Dim]),
        ("blk.0.ffn_norm.weight", DType.F32, [Dim]),
        ("blk.0.ffn_gate.weight", DType.F16, [Hidden, Dim]),
        ("blk.0.ffn_up.weight", DType.BF16, [Hidden, Dim]),
        ("blk.0.ffn_down.weight", DType.Q8_0, [Dim, Hidden]),
        ("output_norm.weight", DType.F32, [Dim]),
        ("output.weight", DType.F32, [Vocab, Dim]),
    ];

    public int Alignment { get; init; } = Gguf.DefaultAlignment;

    public GgufLayout Layout { get; private set; } = null!;

    public void Set(string key, object value)
    {
        int i = Metadata.FindIndex(kv => kv.Key == key);
        if (i >= 0)
        {
            Metadata[i] = new(key, value);
        }
        else
        {
            Metadata.Add(new(key, value));
        }
    }

    /// <summary>Deterministic bytes of a tensor (random bits; the reader never interprets them).</summary>
    public static byte[] Data(string name, DType type, long[] shape)
    {
        long rows = shape.Length == 1 ? 1 : shape[0];
        var bytes = new byte[rows * type.RowBytes(shape[^1])];
        new Random(name.Length * 7919 + (int)type).NextBytes(bytes);
        return bytes;
    }

    public byte[] Build()
    {
        var writer = new GgufWriter(Alignment);
        foreach ((string key, object value) in Metadata)
        {
            writer.AddMetadata(key, value);
        }

        foreach ((string name, DType type, long[] shape) in Tensors)
        {
            writer.AddTensor(name, type, shape, Data(name, type, shape));
        }

        using var stream = new MemoryStream();
        Layout = writer.Write(stream);
        return stream.ToArray();
    }

    /// <summary>Index of the key in the file: the writer puts general.alignment first when it is not the default.</summary>
    public int KeyIndex(string key)
    {
        int shift = Alignment == Gguf.DefaultAlignment ? 0 : 1;
        return key == Gguf.AlignmentKey && shift == 1 ? 0 : Metadata.FindIndex(kv => kv.Key == key) + shift;
    }

    public int TensorIndex(string name) => Tensors.FindIndex(t => t.Name == name);

    /// <summary>Offset of the value (after the type tag) of <paramref name="key"/>.</summary>
    public long ValueOffset(string key) => Layout.KeyValueOffsets[KeyIndex(key)] + 8 + Encoding.UTF8.GetByteCount(key) + 4;

    /// <summary>Offset of the type tag of <paramref name="key"/>.</summary>
    public long TypeOffset(string key) => ValueOffset(key) - 4;

    public long NameOffset(string tensor) => Layout.TensorInfoOffsets[TensorIndex(tensor)] + 8;

    public long DimsCountOffset(string tensor) => NameOffset(tensor) + Encoding.UTF8.GetByteCount(tensor);

    public long DimOffset(string tensor, int ggmlDim) => DimsCountOffset(tensor) + 4 + 8 * ggmlDim;

    public long TypeIdOffset(string tensor) => DimOffset(tensor, Tensors[TensorIndex(tensor)].Shape.Length);

    public long DataOffsetField(string tensor) => TypeIdOffset(tensor) + 4;

    public static void PutU32(byte[] file, long at, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan((int)at), value);

    public static void PutU64(byte[] file, long at, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan((int)at), value);

    public static ulong GetU64(byte[] file, long at) => BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan((int)at));
}

/// <summary>A temporary file deleted on dispose.</summary>
internal sealed class TempFile : IDisposable
{
    public TempFile(string extension = ".gguf")
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"gpullama-{Guid.NewGuid():N}{extension}");
    }

    public TempFile(byte[] contents, string extension = ".gguf")
        : this(extension)
    {
        File.WriteAllBytes(Path, contents);
    }

    public string Path { get; }

    public void Dispose()
    {
        if (File.Exists(Path))
        {
            File.Delete(Path);
        }
    }
}

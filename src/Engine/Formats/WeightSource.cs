using System.Buffers.Binary;

namespace GpuLlama.Formats;

/// <summary>The model formats <see cref="WeightSource.Open"/> understands.</summary>
public enum ModelFormat
{
    /// <summary>A GGUF file (llama.cpp).</summary>
    Gguf,

    /// <summary>A Hugging Face directory: config.json + model.safetensors or shards.</summary>
    Safetensors,

    /// <summary>A llama2.c checkpoint (.bin: 7-int header, then float32 weights).</summary>
    Llama2c,

    /// <summary>"synthetic:NAME[:dtype]": seeded random weights of a preset shape.</summary>
    Synthetic,
}

/// <summary>
/// Opens whatever the user points at: a GGUF file, a Hugging Face directory (or one of its .safetensors or
/// index files), a llama2.c checkpoint, or "synthetic:NAME". The format is sniffed from the path and the
/// first bytes, never from the extension alone where the bytes can tell.
/// </summary>
public static class WeightSource
{
    public const string SyntheticPrefix = "synthetic:";

    private const string Accepted = "expected a GGUF file, a Hugging Face model directory (or its .safetensors file), a llama2.c checkpoint (.bin) or synthetic:NAME";

    public static IWeightSource Open(string path) => Detect(path) switch
    {
        ModelFormat.Gguf => GgufSource.Open(path),
        ModelFormat.Safetensors => SafetensorsSource.Open(path), // a directory, or a file inside one
        ModelFormat.Llama2c => Llama2cSource.Open(path),
        _ => SyntheticSource.Create(path),
    };

    /// <summary>
    /// The format of <paramref name="path"/> (for `gpullama info` and for <see cref="Open"/>); throws naming the
    /// path when it is missing or not a model.
    /// </summary>
    public static ModelFormat Detect(string path)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            GpuLlamaException.Throw($"no model path given ({Accepted})");
        }

        if (path.StartsWith(SyntheticPrefix, StringComparison.OrdinalIgnoreCase))
        {
            return ModelFormat.Synthetic;
        }

        if (Directory.Exists(path))
        {
            return ModelFormat.Safetensors;
        }

        if (!File.Exists(path))
        {
            GpuLlamaException.ThrowFile(path, "file not found");
        }

        Span<byte> header = stackalloc byte[32];
        long length;
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
            length = stream.Length;
            header = header[..stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false)];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GpuLlamaException($"{path}: cannot read file ({e.Message})", e);
        }

        uint magic = header.Length >= 4 ? BinaryPrimitives.ReadUInt32LittleEndian(header) : 0;
        if (magic == Gguf.Magic)
        {
            return ModelFormat.Gguf;
        }

        // llama.cpp's pre-GGUF formats (ggml, ggmf, ggjt), read as little-endian uint32 like llama.cpp did
        if (magic is 0x67676d6c or 0x67676d66 or 0x67676a74)
        {
            GpuLlamaException.ThrowFile(path, "is a legacy GGML/GGJT file, which llama.cpp replaced with GGUF in 2023; convert it to GGUF");
        }

        // PyTorch checkpoints (pytorch_model.bin, consolidated.00.pth) are zip archives of pickles
        if (magic == 0x04034b50)
        {
            GpuLlamaException.ThrowFile(path, "is a PyTorch (zip/pickle) checkpoint; use the model's .safetensors files or a GGUF conversion");
        }

        string name = System.IO.Path.GetFileName(path);
        if (name.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".safetensors.index.json", StringComparison.OrdinalIgnoreCase)
            || name.Equals("config.json", StringComparison.OrdinalIgnoreCase))
        {
            return ModelFormat.Safetensors;
        }

        if (name.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || IsPlausibleLlama2c(header, length))
        {
            return ModelFormat.Llama2c;
        }

        GpuLlamaException.ThrowFile(path, $"unrecognized model format ({Accepted})");
        return default;
    }

    /// <summary>
    /// True when the first bytes read as a llama2.c header whose weights fit in the file: the legacy header
    /// (run.c Config: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative = separate output head),
    /// seq_len as int32), or export.py's versioned header (magic "ak42").
    /// </summary>
    internal static bool IsPlausibleLlama2c(ReadOnlySpan<byte> header, long length)
    {
        if (header.Length < 28)
        {
            return false;
        }

        if (BinaryPrimitives.ReadUInt32LittleEndian(header) == Llama2cSource.Magic)
        {
            return true;
        }

        Span<int> h = stackalloc int[7];
        for (int i = 0; i < 7; i++)
        {
            h[i] = BinaryPrimitives.ReadInt32LittleEndian(header[(4 * i)..]);
        }

        (int dim, int hidden, int layers, int heads, int kvHeads, int vocab, int seq) = (h[0], h[1], h[2], h[3], h[4], Math.Abs(h[5]), h[6]);
        bool sane = dim is > 0 and <= 1 << 16 && hidden is > 0 and <= 1 << 18 && layers is > 0 and <= 1024
            && heads is > 0 and <= 1024 && dim % heads == 0 && kvHeads > 0 && kvHeads <= heads && heads % kvHeads == 0
            && vocab is > 0 and <= 1 << 22 && seq is > 0 and <= 1 << 24;
        if (!sane)
        {
            return false;
        }

        long kvDim = (long)dim / heads * kvHeads;
        long floats = (long)vocab * dim + dim
            + layers * (2L * dim + 2L * dim * dim + 2L * dim * kvDim + 3L * dim * hidden);
        return length >= 28 + 4 * floats;
    }
}

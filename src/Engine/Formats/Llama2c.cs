using System.Buffers.Binary;
using System.Runtime.InteropServices;
using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>The seven int32 hyper-parameters every llama2.c checkpoint starts with (run.c <c>Config</c>).</summary>
public readonly record struct Llama2cHeader(int Dim, int HiddenDim, int Layers, int Heads, int KvHeads, int VocabSize, int SeqLen)
{
    public override string ToString() =>
        $"dim={Dim}, hidden_dim={HiddenDim}, n_layers={Layers}, n_heads={Heads}, n_kv_heads={KvHeads}, vocab_size={VocabSize}, seq_len={SeqLen}";
}

/// <summary>
/// A llama2.c checkpoint (Karpathy's <c>run.c</c> / <c>export.py</c>) as an <see cref="IWeightSource"/>. Two
/// layouts: the legacy "version 0" file (a 7 × int32 header, a negative vocab_size meaning an unshared
/// classifier, then float32 arrays in run.c <c>memory_map_weights</c> order) and the "version 1" file
/// (magic "ak42", a 256-byte header, float32 arrays in export.py <c>version1_export</c> order). Each array holds
/// all layers back to back, so every layer's slice becomes its own canonical tensor pointing into the map.
/// run.c's matmul computes W (d,n) · x with W row-major, so weights are already [out, in]. llama2.c rotates
/// adjacent pairs in RoPE, hence <see cref="RopeStyle.Interleaved"/>.
/// </summary>
public sealed unsafe class Llama2cSource : IWeightSource
{
    /// <summary>"ak42" as the little-endian uint32 export.py writes.</summary>
    public const uint Magic = 0x616b3432;

    /// <summary>Version 1's header size; weights start here.</summary>
    public const int Version1HeaderBytes = 256;

    /// <summary>Names of the legacy RoPE tables, which are skipped (run.c recomputes them too).</summary>
    internal const string FreqCisReal = "llama2c.freq_cis_real";

    internal const string FreqCisImag = "llama2c.freq_cis_imag";

    private readonly MappedFile _file;
    private readonly Dictionary<string, TensorInfo> _tensors;

    private Llama2cSource(MappedFile file, ModelConfig config, Dictionary<string, TensorInfo> tensors, Dictionary<string, object> metadata)
    {
        _file = file;
        Config = config;
        _tensors = tensors;
        Metadata = metadata;
    }

    public string Path => _file.Path;

    public string Format => "llama2c";

    public ModelConfig Config { get; }

    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    public IReadOnlyDictionary<string, object> Metadata { get; }

    /// <summary>Opens and validates a checkpoint: header ranges, then the exact file size the header implies.</summary>
    public static Llama2cSource Open(string path)
    {
        MappedFile file = MappedFile.Open(path);
        try
        {
            (int version, Llama2cHeader header, bool shared, long dataStart) = ReadHeader(file);
            ModelConfig config = ToConfig(path, header, shared);

            var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            long offset = dataStart;
            foreach ((string name, long[] shape) in Layout(version, config))
            {
                long elements = 1;
                foreach (long d in shape)
                {
                    elements *= d; // header ranges were checked: no product here comes near overflow
                }

                if (name is not (FreqCisReal or FreqCisImag))
                {
                    tensors.Add(name, new TensorInfo(name, DType.F32, shape, 0, offset, elements * sizeof(float)));
                }

                offset += elements * sizeof(float);
            }

            if (file.Length != offset)
            {
                string what = file.Length < offset ? "truncated" : "longer than the header implies";
                GpuLlamaException.ThrowFile(path, $"file is {file.Length} bytes, expected {offset} from the header ({header}); the file is {what}");
            }

            var metadata = new Dictionary<string, object>(StringComparer.Ordinal)
            {
                ["llama2c.path"] = path,
                ["llama2c.version"] = (long)version,
                ["llama2c.shared_classifier"] = shared,
            };
            return new Llama2cSource(file, config, tensors, metadata);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public WeightView View(TensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(_file.Pointer is null && _file.Length > 0, this);
        if (!_tensors.TryGetValue(tensor.Name, out TensorInfo? own) || own.Offset != tensor.Offset || own.ByteLength != tensor.ByteLength)
        {
            GpuLlamaException.ThrowFile(Path, $"tensor '{tensor.Name}' is not part of this file");
        }

        return new WeightView(own, _file.At(own.Offset, own.ByteLength, $"tensor '{own.Name}'"), fileMapped: true);
    }

    public void Dispose() => _file.Dispose();

    /// <summary>
    /// The arrays of a checkpoint in file order, one entry per layer slice, with row-major shapes. Version 0 is
    /// run.c <c>memory_map_weights</c>; version 1 is export.py <c>version1_export</c>. The classifier is last
    /// and only present when not shared with the embedding.
    /// </summary>
    internal static List<(string Name, long[] Shape)> Layout(int version, ModelConfig c)
    {
        var list = new List<(string, long[])>();
        void PerLayer(Func<int, string> name, long[] shape)
        {
            for (int l = 0; l < c.Layers; l++)
            {
                list.Add((name(l), shape));
            }
        }

        long dim = c.Dim, q = c.QDim, kv = c.KvDim, hidden = c.HiddenDim, vocab = c.VocabSize;
        if (version == 0)
        {
            list.Add((TensorNames.TokenEmbedding, [vocab, dim]));
            PerLayer(TensorNames.AttnNorm, [dim]);
        }
        else
        {
            PerLayer(TensorNames.AttnNorm, [dim]);
            PerLayer(TensorNames.FfnNorm, [dim]);
            list.Add((TensorNames.OutputNorm, [dim]));
            list.Add((TensorNames.TokenEmbedding, [vocab, dim]));
        }

        PerLayer(TensorNames.Wq, [q, dim]);
        PerLayer(TensorNames.Wk, [kv, dim]);
        PerLayer(TensorNames.Wv, [kv, dim]);
        PerLayer(TensorNames.Wo, [dim, q]);
        if (version == 0)
        {
            PerLayer(TensorNames.FfnNorm, [dim]);
        }

        PerLayer(TensorNames.FfnGate, [hidden, dim]); // w1
        PerLayer(TensorNames.FfnDown, [dim, hidden]); // w2
        PerLayer(TensorNames.FfnUp, [hidden, dim]);   // w3
        if (version == 0)
        {
            list.Add((TensorNames.OutputNorm, [dim]));

            // what used to be freq_cis_real / freq_cis_imag: [seq_len, head_size / 2] each
            list.Add((FreqCisReal, [c.ContextLength, c.HeadDim / 2]));
            list.Add((FreqCisImag, [c.ContextLength, c.HeadDim / 2]));
        }

        if (!c.TiedEmbeddings)
        {
            list.Add((TensorNames.Output, [vocab, dim]));
        }

        return list;
    }

    private static (int Version, Llama2cHeader Header, bool Shared, long DataStart) ReadHeader(MappedFile file)
    {
        const int legacyBytes = 7 * sizeof(int);
        if (file.Length < legacyBytes)
        {
            GpuLlamaException.ThrowFile(file.Path, $"file is {file.Length} bytes, too short for a llama2.c header ({legacyBytes} bytes)");
        }

        ReadOnlySpan<byte> start = file.Span(0, legacyBytes, "header");
        if (BinaryPrimitives.ReadUInt32LittleEndian(start) != Magic)
        {
            Llama2cHeader legacy = Parse(start);

            // run.c: a positive vocab_size means the classifier shares the embedding table.
            bool shared = legacy.VocabSize > 0;
            if (legacy.VocabSize == int.MinValue)
            {
                GpuLlamaException.ThrowFile(file.Path, $"header vocab_size {legacy.VocabSize} is out of range ({legacy})");
            }

            return (0, legacy with { VocabSize = Math.Abs(legacy.VocabSize) }, shared, legacyBytes);
        }

        if (file.Length < Version1HeaderBytes)
        {
            GpuLlamaException.ThrowFile(file.Path, $"file is {file.Length} bytes, too short for a llama2.c version 1 header ({Version1HeaderBytes} bytes)");
        }

        ReadOnlySpan<byte> h = file.Span(0, Version1HeaderBytes, "header");
        int version = BinaryPrimitives.ReadInt32LittleEndian(h[4..]);
        if (version != 1)
        {
            string why = version == 2
                ? "version 2 (Q8_0-quantized) llama2.c checkpoints are not supported; export with export.py --version 0 or 1, or convert to GGUF"
                : $"llama2.c checkpoint version {version} is unknown (supported: legacy and version 1)";
            GpuLlamaException.ThrowFile(file.Path, why);
        }

        Llama2cHeader header = Parse(h.Slice(8, legacyBytes));
        byte sharedFlag = h[8 + legacyBytes];
        if (sharedFlag > 1)
        {
            GpuLlamaException.ThrowFile(file.Path, $"header shared_classifier flag is {sharedFlag}, expected 0 or 1");
        }

        return (version, header, sharedFlag == 1, Version1HeaderBytes);
    }

    private static Llama2cHeader Parse(ReadOnlySpan<byte> h) => new(
        BinaryPrimitives.ReadInt32LittleEndian(h),
        BinaryPrimitives.ReadInt32LittleEndian(h[4..]),
        BinaryPrimitives.ReadInt32LittleEndian(h[8..]),
        BinaryPrimitives.ReadInt32LittleEndian(h[12..]),
        BinaryPrimitives.ReadInt32LittleEndian(h[16..]),
        BinaryPrimitives.ReadInt32LittleEndian(h[20..]),
        BinaryPrimitives.ReadInt32LittleEndian(h[24..]));

    /// <summary>Checks every header field's range before any size arithmetic, then builds the config run.c implies.</summary>
    private static ModelConfig ToConfig(string path, Llama2cHeader h, bool shared)
    {
        void Range(string field, int value, int max)
        {
            if (value < 1 || value > max)
            {
                GpuLlamaException.ThrowFile(path, $"header {field} {value} is out of range (1..{max}); not a llama2.c checkpoint or corrupt ({h})");
            }
        }

        Range("dim", h.Dim, 1 << 16);
        Range("hidden_dim", h.HiddenDim, 1 << 18);
        Range("n_layers", h.Layers, 1024);
        Range("n_heads", h.Heads, 1024);
        Range("n_kv_heads", h.KvHeads, h.Heads);
        Range("vocab_size", h.VocabSize, 1 << 22);
        Range("seq_len", h.SeqLen, 1 << 24);
        if (h.Dim % h.Heads != 0 || h.Dim / h.Heads % 2 != 0)
        {
            GpuLlamaException.ThrowFile(path, $"header dim {h.Dim} does not split into {h.Heads} heads of even size ({h})");
        }

        if (h.Heads % h.KvHeads != 0)
        {
            GpuLlamaException.ThrowFile(path, $"header n_heads {h.Heads} is not a multiple of n_kv_heads {h.KvHeads} ({h})");
        }

        // run.c hard-codes these: rmsnorm eps 1e-5, RoPE base 10000, BOS 1 / EOS 2 (sentencepiece llama ids).
        var config = new ModelConfig
        {
            Architecture = "llama",
            Name = System.IO.Path.GetFileNameWithoutExtension(path),
            Dim = h.Dim,
            Layers = h.Layers,
            Heads = h.Heads,
            KvHeads = h.KvHeads,
            HeadDim = h.Dim / h.Heads,
            HiddenDim = h.HiddenDim,
            VocabSize = h.VocabSize,
            RmsEps = 1e-5f,
            RopeTheta = 10000.0,
            RopeStyle = RopeStyle.Interleaved,
            ContextLength = h.SeqLen,
            TiedEmbeddings = shared,
            BosId = 1,
            EosIds = [2],
        };
        config.Validate(path);
        return config;
    }
}

/// <summary>Writes llama2.c checkpoints (legacy version 0 or version 1), for tests and for running a model under run.c.</summary>
public static class Llama2cWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> (canonical names, float32, row-major) in the order of <paramref name="version"/>.
    /// The classifier is shared when <see cref="ModelConfig.TiedEmbeddings"/> is set. The legacy file also gets the
    /// RoPE tables export.py writes (cos/sin of position × θ_i, [seq_len, head_size/2]).
    /// </summary>
    public static void Write(string path, ModelConfig config, IReadOnlyDictionary<string, float[]> tensors, int version = 0)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        if (version is not (0 or 1))
        {
            throw new ArgumentOutOfRangeException(nameof(version), version, "llama2.c float32 checkpoints are version 0 or 1");
        }

        // What a llama2.c file cannot say: run.c assumes all of these.
        if (config.HeadDim * config.Heads != config.Dim || config.RopeStyle != RopeStyle.Interleaved || config.RopeTheta != 10000.0
            || config.RopeScaling is not null || config.RopeFreqFactors is not null || config.RmsEps != 1e-5f)
        {
            throw new ArgumentException("a llama2.c checkpoint needs head_dim = dim / heads, interleaved RoPE with θ 10000 and no scaling, and rms eps 1e-5", nameof(config));
        }

        int vocabField = config.TiedEmbeddings || version == 1 ? config.VocabSize : -config.VocabSize;
        string temp = path + ".partial";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> header = stackalloc byte[version == 0 ? 28 : Llama2cSource.Version1HeaderBytes];
                header.Clear();
                Span<byte> fields = header;
                if (version == 1)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(header, Llama2cSource.Magic);
                    BinaryPrimitives.WriteInt32LittleEndian(header[4..], 1);
                    header[36] = config.TiedEmbeddings ? (byte)1 : (byte)0;
                    fields = header.Slice(8, 28);
                }

                int[] values = [config.Dim, config.HiddenDim, config.Layers, config.Heads, config.KvHeads, vocabField, config.ContextLength];
                for (int i = 0; i < values.Length; i++)
                {
                    BinaryPrimitives.WriteInt32LittleEndian(fields[(4 * i)..], values[i]);
                }

                stream.Write(header);
                foreach ((string name, long[] shape) in Llama2cSource.Layout(version, config))
                {
                    float[] data = name switch
                    {
                        Llama2cSource.FreqCisReal => RopeTable(config, Math.Cos),
                        Llama2cSource.FreqCisImag => RopeTable(config, Math.Sin),
                        _ => tensors.TryGetValue(name, out float[]? t) ? t : throw new ArgumentException($"tensor '{name}' is missing", nameof(tensors)),
                    };

                    long elements = shape.Aggregate(1L, (a, d) => a * d);
                    if (data.LongLength != elements)
                    {
                        throw new ArgumentException($"tensor '{name}' has {data.LongLength} values, expected {elements} for [{string.Join(", ", shape)}]", nameof(tensors));
                    }

                    stream.Write(MemoryMarshal.AsBytes(data.AsSpan()));
                }
            }

            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            File.Delete(temp);
            throw new GpuLlamaException($"{path}: cannot write file ({e.Message})", e);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>model.py <c>precompute_freqs_cis</c>: f(pos · θ_i), θ_i = 10000^(-2i/head_size).</summary>
    private static float[] RopeTable(ModelConfig c, Func<double, double> f)
    {
        int half = c.HeadDim / 2;
        double[] inv = c.RopeInverseFrequencies();
        var table = new float[(long)c.ContextLength * half];
        for (int pos = 0; pos < c.ContextLength; pos++)
        {
            for (int i = 0; i < half; i++)
            {
                table[(long)pos * half + i] = (float)f(pos * inv[i]);
            }
        }

        return table;
    }
}

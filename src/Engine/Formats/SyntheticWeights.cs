using System.Numerics;
using System.Runtime.InteropServices;
using System.Text;
using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>
/// A named model shape for synthetic weights. The presets copy real models' hyper-parameters so that
/// benchmarks on synthetic weights measure what the real model would cost.
/// </summary>
public sealed record SyntheticPreset(
    string Name,
    string LooksLike,
    int Dim,
    int Layers,
    int Heads,
    int KvHeads,
    int HiddenDim,
    int VocabSize,
    int ContextLength,
    double RopeTheta = 10000.0,
    Llama3RopeScaling? RopeScaling = null)
{
    /// <summary>The presets, smallest first.</summary>
    public static IReadOnlyList<SyntheticPreset> All { get; } =
    [
        new("tiny", "stories15M", 288, 6, 6, 6, 768, 4096, 1024),
        new("llama-110m", "stories110M", 768, 12, 12, 12, 2048, 32000, 1024),
        new("tinyllama-1.1b", "TinyLlama-1.1B", 2048, 22, 32, 4, 5632, 32000, 2048),
        new("llama2-7b", "Llama-2-7B", 4096, 32, 32, 32, 11008, 32000, 4096),
        new("llama3-8b", "Llama-3-8B", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.0, new Llama3RopeScaling(8.0, 1.0, 4.0, 8192)),
    ];

    public int HeadDim => Dim / Heads;

    /// <summary>Parameter count (untied output head).</summary>
    public long Parameters
    {
        get
        {
            long kvDim = (long)KvHeads * HeadDim;
            long perLayer = 2L * Dim + 2L * Dim * Dim + 2L * Dim * kvDim + 3L * Dim * HiddenDim;
            return 2L * VocabSize * Dim + Dim + Layers * perLayer;
        }
    }

    public ModelConfig ToConfig() => new()
    {
        Architecture = "llama",
        Name = Name,
        Dim = Dim,
        Layers = Layers,
        Heads = Heads,
        KvHeads = KvHeads,
        HeadDim = HeadDim,
        HiddenDim = HiddenDim,
        VocabSize = VocabSize,
        RmsEps = 1e-5f,
        RopeTheta = RopeTheta,
        RopeScaling = RopeScaling,
        RopeStyle = RopeStyle.Interleaved,
        ContextLength = ContextLength,
        TiedEmbeddings = false,
        BosId = SyntheticVocabulary.Bos,
        EosIds = [SyntheticVocabulary.Eos],
    };

    /// <summary>One line per preset for --help.</summary>
    public static string Help()
    {
        var sb = new StringBuilder();
        foreach (SyntheticPreset p in All)
        {
            sb.AppendLine($"  {p.Name,-15} {FormatCount(p.Parameters),6} params, like {p.LooksLike}: dim {p.Dim}, {p.Layers} layers, " +
                $"{p.Heads}/{p.KvHeads} heads, FFN {p.HiddenDim}, vocab {p.VocabSize}, context {p.ContextLength}");
        }

        return sb.ToString();
    }

    private static string FormatCount(long n) => n >= 1_000_000_000 ? $"{n / 1e9:0.0}B" : $"{n / 1e6:0}M";
}

/// <summary>
/// A deterministic SentencePiece-style vocabulary in GGUF <c>tokenizer.ggml.*</c> form, so the synthetic models
/// can be tokenized and decoded: &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, the 256 byte-fallback tokens, then pronounceable
/// pieces ("▁ka", "ro", "▁karo"…) built from a syllable table, each reachable by merging two shorter ones.
/// </summary>
public static class SyntheticVocabulary
{
    public const int Unk = 0;
    public const int Bos = 1;
    public const int Eos = 2;

    /// <summary>llama.cpp's llama_token_type values.</summary>
    public const int TypeNormal = 1;
    public const int TypeUnknown = 2;
    public const int TypeControl = 3;
    public const int TypeByte = 6;

    private static readonly string[] s_consonants = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z", "ch", "sh", "th"];
    private static readonly string[] s_vowels = ["a", "e", "i", "o", "u"];

    public static (string[] Tokens, float[] Scores, int[] Types) Build(int size)
    {
        if (size < 3 + 256)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "a vocabulary needs at least 259 entries (3 control + 256 byte tokens)");
        }

        var tokens = new List<string>(size) { "<unk>", "<s>", "</s>" };
        var types = new List<int>(size) { TypeUnknown, TypeControl, TypeControl };
        for (int b = 0; b < 256; b++)
        {
            tokens.Add($"<0x{b:X2}>");
            types.Add(TypeByte);
        }

        int special = tokens.Count;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string piece in Pieces())
        {
            if (tokens.Count == size)
            {
                break;
            }

            if (seen.Add(piece))
            {
                tokens.Add(piece);
                types.Add(TypeNormal);
            }
        }

        // SentencePiece scores: log-probability-like, descending, so shorter (earlier) pieces merge first
        var scores = new float[size];
        for (int i = special; i < size; i++)
        {
            scores[i] = -(i - special);
        }

        return (tokens.ToArray(), scores, types.ToArray());
    }

    /// <summary>Pieces shortest first: "▁", letters, clusters, then words of 1, 2, 3… syllables, each bare and with "▁".</summary>
    private static IEnumerable<string> Pieces()
    {
        yield return "▁";
        foreach (char c in "abcdefghiklmnoprstuvwyz")
        {
            yield return c.ToString();
        }

        foreach (string c in s_consonants.Where(c => c.Length > 1))
        {
            yield return c;
        }

        string[] syllables = [.. s_vowels, .. s_consonants.SelectMany(c => s_vowels.Select(v => c + v))];
        IEnumerable<string> words = syllables;
        while (true)
        {
            foreach (string w in words)
            {
                yield return w;
                yield return "▁" + w;
            }

            IEnumerable<string> previous = words;
            words = previous.SelectMany(w => syllables.Select(s => w + s));
        }
    }
}

/// <summary>
/// Seeded random weights with the shape of a real model (<see cref="SyntheticPreset"/>), in host memory:
/// benchmarks and tests without model files. Values are a counter-based hash of (seed, tensor, element index),
/// so the bytes do not depend on thread count or chunking, and the same seed gives the same model in every
/// dtype (up to rounding). Scales keep activations in range: matrices uniform with std 1/sqrt(cols), so each
/// matmul preserves the RMS of its normalized input; norms 1 ± 0.1; the output head std 2/sqrt(dim) so logits
/// have std ≈ 2 (peaked, not flat); embeddings std 1, the size of each layer's update, so token identity
/// survives through the layers.
/// </summary>
public sealed unsafe class SyntheticSource : IWeightSource
{
    public const ulong DefaultSeed = 0x5EED;

    /// <summary>Elements per work item of the parallel fill (rounded to whole rows).</summary>
    private const long ItemElements = 1 << 20;

    /// <summary>Elements converted per step through the thread-local float scratch (whole rows, at least one).</summary>
    private const int BlockElements = 1 << 14;

    private readonly Dictionary<string, TensorInfo> _tensors = new(StringComparer.Ordinal);
    private readonly Dictionary<string, nint> _memory = new(StringComparer.Ordinal);
    private bool _disposed;

    private SyntheticSource(SyntheticPreset preset, DType type, ulong seed)
    {
        Preset = preset;
        DType = type;
        Seed = seed;
        Config = preset.ToConfig();
        Config.Validate(Path);

        (string[] tokens, float[] scores, int[] types) = SyntheticVocabulary.Build(preset.VocabSize);
        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach ((string key, object value) in GgufConfig.Write(Config, type))
        {
            metadata[key] = value;
        }

        metadata["tokenizer.ggml.model"] = "llama";
        metadata["tokenizer.ggml.pre"] = "default";
        metadata["tokenizer.ggml.tokens"] = tokens;
        metadata["tokenizer.ggml.scores"] = scores;
        metadata["tokenizer.ggml.token_type"] = types;
        metadata["tokenizer.ggml.unknown_token_id"] = (uint)SyntheticVocabulary.Unk;
        metadata["tokenizer.ggml.add_bos_token"] = true;
        metadata["tokenizer.ggml.add_eos_token"] = false;
        Metadata = metadata;
    }

    ~SyntheticSource() => Free();

    public string Path => "synthetic:" + Preset.Name;

    public string Format => "synthetic";

    public ModelConfig Config { get; }

    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    public IReadOnlyDictionary<string, object> Metadata { get; }

    public SyntheticPreset Preset { get; }

    /// <summary>The dtype of the embedding and the matrices (norm vectors are always F32, as GGUF converters store them).</summary>
    public DType DType { get; }

    public ulong Seed { get; }

    /// <summary>Host bytes held by the weights.</summary>
    public long TotalBytes => _tensors.Values.Sum(t => t.ByteLength);

    /// <summary>The dtypes weights can be generated in.</summary>
    /// <remarks>Quantized types go through <see cref="BlockQuantizer"/> (norm vectors stay F32, as in llama.cpp's files).</remarks>
    public static IReadOnlyList<DType> SupportedTypes { get; } =
        [DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q4_K, DType.Q5_K, DType.Q6_K, DType.IQ4_NL, DType.IQ4_XS];

    /// <summary>Creates a model from "NAME" or "NAME:dtype" (an optional "synthetic:" prefix is allowed); F16 by default.</summary>
    public static SyntheticSource Create(string spec, ulong seed = DefaultSeed)
    {
        (SyntheticPreset preset, DType type) = Parse(spec);
        return Create(preset, type, seed);
    }

    public static SyntheticSource Create(SyntheticPreset preset, DType type, ulong seed = DefaultSeed)
    {
        if (!SupportedTypes.Contains(type))
        {
            GpuLlamaException.ThrowFile("synthetic:" + preset.Name, $"synthetic weights cannot be made in {DTypeInfo.DisplayName(type)} (supported: {TypeList()})");
        }

        if (type.IsQuantized())
        {
            ModelConfig config = preset.ToConfig();
            foreach ((string name, long[] shape) in TensorNames.Required(config))
            {
                if (shape.Length > 1 && shape[^1] % type.BlockSize() != 0)
                {
                    GpuLlamaException.ThrowFile("synthetic:" + preset.Name, $"{type} needs rows of a multiple of {type.BlockSize()} values; {name} has {shape[^1]}");
                }
            }
        }

        var source = new SyntheticSource(preset, type, seed);
        try
        {
            source.Generate();
            return source;
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    /// <summary>Parses "NAME" or "NAME:dtype" (dtype one of <see cref="SupportedTypes"/>, any case), with an optional "synthetic:" prefix.</summary>
    public static (SyntheticPreset Preset, DType Type) Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        string text = spec.StartsWith("synthetic:", StringComparison.OrdinalIgnoreCase) ? spec["synthetic:".Length..] : spec;
        string[] parts = text.Split(':');
        SyntheticPreset? preset = SyntheticPreset.All.FirstOrDefault(p => string.Equals(p.Name, parts[0], StringComparison.OrdinalIgnoreCase));
        if (preset is null || parts.Length > 2)
        {
            GpuLlamaException.Throw($"synthetic model '{spec}': unknown preset '{parts[0]}' (expected NAME or NAME:dtype with NAME one of {string.Join(", ", SyntheticPreset.All.Select(p => p.Name))})");
        }

        DType type = DType.F16;
        if (parts.Length == 2)
        {
            DType? parsed = SupportedTypes.Cast<DType?>().FirstOrDefault(t => string.Equals(t.ToString(), parts[1], StringComparison.OrdinalIgnoreCase));
            type = parsed ?? throw new GpuLlamaException($"synthetic model '{spec}': unsupported dtype '{parts[1]}' (expected one of {TypeList()})");
        }

        return (preset, type);
    }

    public WeightView View(TensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_memory.TryGetValue(tensor.Name, out nint p))
        {
            GpuLlamaException.ThrowFile(Path, $"tensor '{tensor.Name}' is not part of this model");
        }

        return new WeightView(_tensors[tensor.Name], (byte*)p);
    }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    private void Free()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (nint p in _memory.Values)
        {
            HostMemory.Free((void*)p);
        }

        _memory.Clear();
    }

    private static string TypeList() => string.Join(", ", SupportedTypes.Select(t => t.ToString().ToLowerInvariant()));

    /// <summary>How each tensor is drawn: uniform on [mean - halfWidth, mean + halfWidth).</summary>
    private readonly record struct Plan(string Name, DType Type, long[] Shape, float Mean, float HalfWidth, uint Key1, uint Key2);

    private void Generate()
    {
        ModelConfig c = Config;
        float sqrt3 = MathF.Sqrt(3f); // a uniform on [-a, a) has std a / sqrt(3)
        var plans = new List<Plan>();
        int index = 0;
        foreach ((string name, long[] shape) in TensorNames.Required(c))
        {
            bool vector = shape.Length == 1;
            float std = name == TensorNames.TokenEmbedding ? 1f
                : name == TensorNames.Output ? 2f / MathF.Sqrt(shape[^1])
                : 1f / MathF.Sqrt(shape[^1]);
            ulong k = SplitMix64(Seed + (ulong)++index * 0x9E3779B97F4A7C15UL);
            plans.Add(vector
                ? new Plan(name, DType.F32, shape, 1f, 0.1f, (uint)k, (uint)(k >> 32))
                : new Plan(name, DType, shape, 0f, std * sqrt3, (uint)k, (uint)(k >> 32)));
        }

        // Work items and conversion steps are whole rows, so a row-wise encoder (a quantizer) can slot into Encode.
        var items = new List<(int Plan, long FirstRow, long Rows)>();
        long maxCols = 0, offset = 0;
        for (int i = 0; i < plans.Count; i++)
        {
            Plan p = plans[i];
            long cols = p.Shape[^1];
            long rows = p.Shape.Aggregate(1L, (a, b) => a * b) / cols;
            long bytes = p.Type.RowBytes(cols) * rows;
            void* memory;
            try
            {
                memory = HostMemory.Allocate(bytes);
            }
            catch (OutOfMemoryException e)
            {
                long total = plans.Sum(q => q.Type.RowBytes(q.Shape[^1]) * (q.Shape.Aggregate(1L, (a, b) => a * b) / q.Shape[^1]));
                throw new GpuLlamaException($"{Path}: the {DType} weights need {total / 1e9:0.0} GB of host memory and allocating {p.Name} ({bytes / 1e6:0} MB) failed", e);
            }

            _memory[p.Name] = (nint)memory;
            // Offset: where the tensor would start if the model were one file, so (File, Offset) identifies it as in a real source
            _tensors[p.Name] = new TensorInfo(p.Name, p.Type, p.Shape, 0, offset, bytes);
            offset += bytes;
            long rowsPerItem = Math.Max(1, ItemElements / cols);
            for (long r = 0; r < rows; r += rowsPerItem)
            {
                items.Add((i, r, Math.Min(rowsPerItem, rows - r)));
            }

            maxCols = Math.Max(maxCols, cols);
        }

        int scratchLength = (int)Math.Max(BlockElements, maxCols);
        Parallel.For(0, items.Count, () => new float[scratchLength], (i, _, scratch) =>
        {
            (int planIndex, long firstRow, long rowCount) = items[i];
            Plan p = plans[planIndex];
            int cols = (int)p.Shape[^1];
            long rowBytes = p.Type.RowBytes(cols);
            byte* dst = (byte*)_memory[p.Name];
            int rowsPerStep = Math.Max(1, scratch.Length / cols);
            for (long r = firstRow; r < firstRow + rowCount; r += rowsPerStep)
            {
                int n = (int)Math.Min(rowsPerStep, firstRow + rowCount - r);
                var output = new Span<byte>(dst + r * rowBytes, checked((int)(n * rowBytes)));
                if (p.Type == DType.F32)
                {
                    Fill(MemoryMarshal.Cast<byte, float>(output), (uint)(r * cols), p);
                }
                else
                {
                    Span<float> values = scratch.AsSpan(0, n * cols);
                    Fill(values, (uint)(r * cols), p);
                    Encode(p.Type, values, output);
                }
            }

            return scratch;
        }, _ => { });
    }

    /// <summary>float32 rows → the stored dtype; the one place a new <see cref="SupportedTypes"/> entry needs code.</summary>
    private static void Encode(DType type, ReadOnlySpan<float> values, Span<byte> output)
    {
        switch (type)
        {
            case DType.F16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(output));
                break;
            case DType.BF16:
                Devices.CpuMatMul.F32ToBf16(values, MemoryMarshal.Cast<byte, ushort>(output));
                break;
            default:
                BlockQuantizer.QuantizeRow(type, values, output);
                break;
        }
    }

    /// <summary>
    /// dst[i] = mean + halfWidth * u(first + i), u in [-1, 1) from a two-round 32-bit integer hash
    /// (Wellons' lowbias32) of the element index keyed per tensor. Element indices are 32-bit; every preset
    /// tensor has fewer than 2^32 elements.
    /// </summary>
    private static void Fill(Span<float> dst, uint first, in Plan p)
    {
        float scale = p.HalfWidth / 2147483648f;
        int i = 0;
        if (Vector.IsHardwareAccelerated && dst.Length >= Vector<uint>.Count)
        {
            Span<uint> lanes = stackalloc uint[Vector<uint>.Count];
            for (int l = 0; l < lanes.Length; l++)
            {
                lanes[l] = (uint)l;
            }

            var iota = new Vector<uint>(lanes);
            var k1 = new Vector<uint>(p.Key1);
            var k2 = new Vector<uint>(p.Key2);
            var vScale = new Vector<float>(scale);
            var vMean = new Vector<float>(p.Mean);
            Span<Vector<float>> out_ = MemoryMarshal.Cast<float, Vector<float>>(dst);
            for (int v = 0; v < out_.Length; v++, i += Vector<uint>.Count)
            {
                Vector<uint> h = Hash(Hash((new Vector<uint>(first + (uint)i) + iota) ^ k1) + k2);
                out_[v] = Vector.ConvertToSingle(Vector.AsVectorInt32(h)) * vScale + vMean;
            }
        }

        for (; i < dst.Length; i++)
        {
            uint h = Hash(Hash((first + (uint)i) ^ p.Key1) + p.Key2);
            dst[i] = (int)h * scale + p.Mean;
        }
    }

    private static Vector<uint> Hash(Vector<uint> x)
    {
        x ^= x >> 16;
        x *= 0x7feb352du;
        x ^= x >> 15;
        x *= 0x846ca68bu;
        x ^= x >> 16;
        return x;
    }

    private static uint Hash(uint x)
    {
        x ^= x >> 16;
        x *= 0x7feb352du;
        x ^= x >> 15;
        x *= 0x846ca68bu;
        x ^= x >> 16;
        return x;
    }

    private static ulong SplitMix64(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

}

/// <summary>
/// Large host allocations for weights: 64-byte aligned (a cache line, and enough for any SIMD load), and on
/// Linux 2 MiB aligned and advised as transparent huge pages when big. First-touch page faults, not the
/// random numbers, dominate filling gigabytes (on a VM, ~10 s for 2 GB in 4 KiB pages); huge pages cut the
/// fault count 512-fold.
/// </summary>
internal static unsafe partial class HostMemory
{
    private const long HugePage = 2 << 20;

    /// <summary>madvise advice MADV_HUGEPAGE (linux/mman.h).</summary>
    private const int MadvHugePage = 14;

    public static void* Allocate(long bytes)
    {
        bool huge = OperatingSystem.IsLinux() && bytes >= HugePage;
        void* p = NativeMemory.AlignedAlloc((nuint)bytes, huge ? (nuint)HugePage : 64);
        if (huge)
        {
            // advisory: when the kernel has THP off, the call fails and the memory works in small pages
            _ = Madvise(p, (nuint)Gguf.Align(bytes, HugePage), MadvHugePage);
        }

        return p;
    }

    public static void Free(void* p) => NativeMemory.AlignedFree(p);

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);
}

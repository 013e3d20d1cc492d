namespace GpuLlama.Model;

/// <summary>
/// How Q/K rows are laid out for rotary embeddings. llama.cpp's converter (and llama2.c's export) permute the
/// Q/K weight rows so that RoPE rotates adjacent pairs (2i, 2i+1); Hugging Face checkpoints are not permuted and
/// rotate the two halves (i, i + headDim/2), as transformers' <c>rotate_half</c> does. Rather than permuting HF
/// weights at load (which would force a copy of wq/wk), the config carries the style and the RoPE op honours it,
/// so every format stays zero-copy and gives the same numbers.
/// </summary>
public enum RopeStyle
{
    /// <summary>GGUF and llama2.c: rotate (x[2i], x[2i+1]) — ggml's "normal" mode.</summary>
    Interleaved,

    /// <summary>Hugging Face: rotate (x[i], x[i + headDim/2]) — ggml's "neox" mode.</summary>
    Halves,
}

/// <summary>Llama 3 frequency scaling (config.json <c>rope_scaling</c> with <c>rope_type: llama3</c>).</summary>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions);

/// <summary>Hyper-parameters of a Llama-family model, whatever file they came from.</summary>
public sealed record ModelConfig
{
    public string Architecture { get; init; } = "llama";

    public string Name { get; init; } = "";

    /// <summary>Model width (hidden_size, llama.embedding_length, llama2.c dim).</summary>
    public int Dim { get; init; }

    public int Layers { get; init; }

    public int Heads { get; init; }

    public int KvHeads { get; init; }

    public int HeadDim { get; init; }

    /// <summary>FFN width (intermediate_size).</summary>
    public int HiddenDim { get; init; }

    public int VocabSize { get; init; }

    public float RmsEps { get; init; } = 1e-5f;

    public double RopeTheta { get; init; } = 10000.0;

    public RopeStyle RopeStyle { get; init; } = RopeStyle.Interleaved;

    /// <summary>Llama 3 scaling from config.json; null when absent.</summary>
    public Llama3RopeScaling? RopeScaling { get; init; }

    /// <summary>
    /// Per-frequency divisors (GGUF <c>rope_freqs.weight</c>, how llama.cpp's converter stores Llama 3 scaling);
    /// HeadDim/2 values, null when absent.
    /// </summary>
    public float[]? RopeFreqFactors { get; init; }

    /// <summary>Trained context length (max_position_embeddings, llama.context_length, llama2.c seq_len).</summary>
    public int ContextLength { get; init; }

    /// <summary>True when the output head shares the token embedding table.</summary>
    public bool TiedEmbeddings { get; init; }

    public int BosId { get; init; } = 1;

    public IReadOnlyList<int> EosIds { get; init; } = [2];

    public int QDim => Heads * HeadDim;

    public int KvDim => KvHeads * HeadDim;

    /// <summary>Query heads per KV head (GQA group size).</summary>
    public int KvMul => Heads / KvHeads;

    /// <summary>
    /// Inverse frequencies θ_i = base^(-2i/d), i &lt; HeadDim/2, with Llama 3 scaling or GGUF freq factors
    /// applied, in double precision. This is the single place the RoPE frequency math lives.
    /// </summary>
    public double[] RopeInverseFrequencies()
    {
        int half = HeadDim / 2;
        var inv = new double[half];
        for (int i = 0; i < half; i++)
        {
            inv[i] = Math.Pow(RopeTheta, -2.0 * i / HeadDim);
        }

        if (RopeFreqFactors is { } factors)
        {
            // llama.cpp ggml_rope_ext: theta_i / freq_factors[i]
            for (int i = 0; i < half; i++)
            {
                inv[i] /= factors[i];
            }
        }
        else if (RopeScaling is { } s)
        {
            // transformers _compute_llama3_parameters
            double lowWavelen = s.OriginalMaxPositions / s.LowFreqFactor;
            double highWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
            for (int i = 0; i < half; i++)
            {
                double wavelen = 2 * Math.PI / inv[i];
                if (wavelen > lowWavelen)
                {
                    inv[i] /= s.Factor;
                }
                else if (wavelen >= highWavelen)
                {
                    double smooth = (s.OriginalMaxPositions / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    inv[i] = (1 - smooth) * inv[i] / s.Factor + smooth * inv[i];
                }
            }
        }

        return inv;
    }

    /// <summary>Checks that the numbers describe a model this engine can run; throws naming <paramref name="path"/>.</summary>
    public void Validate(string path)
    {
        static void Require(bool ok, string path, string what)
        {
            if (!ok)
            {
                GpuLlamaException.ThrowFile(path, what);
            }
        }

        Require(Dim > 0 && Dim <= 1 << 16, path, $"hidden size {Dim} is out of range (1..65536)");
        Require(Layers > 0 && Layers <= 1024, path, $"layer count {Layers} is out of range (1..1024)");
        Require(Heads > 0 && Heads <= 1024, path, $"head count {Heads} is out of range (1..1024)");
        Require(KvHeads > 0 && KvHeads <= Heads, path, $"KV head count {KvHeads} must be in 1..{Heads}");
        Require(Heads % KvHeads == 0, path, $"head count {Heads} is not a multiple of the KV head count {KvHeads}");
        Require(HeadDim > 0 && HeadDim % 2 == 0 && HeadDim <= 1024, path, $"head dimension {HeadDim} must be even and at most 1024");
        Require(HiddenDim > 0 && HiddenDim <= 1 << 18, path, $"FFN size {HiddenDim} is out of range");
        Require(VocabSize > 0 && VocabSize <= 1 << 22, path, $"vocabulary size {VocabSize} is out of range");
        Require(ContextLength > 0, path, $"context length {ContextLength} must be positive");
        Require(RmsEps > 0 && RmsEps < 1, path, $"rms_norm_eps {RmsEps} is out of range");
        Require(RopeTheta > 0, path, $"rope_theta {RopeTheta} must be positive");
        Require(RopeFreqFactors is null || RopeFreqFactors.Length == HeadDim / 2, path,
            $"rope_freqs has {RopeFreqFactors?.Length} values, expected {HeadDim / 2}");
    }
}

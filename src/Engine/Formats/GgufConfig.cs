using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>
/// ModelConfig ↔ GGUF metadata. Reading follows llama.cpp's <c>llama_model::load_hparams</c> for LLM_ARCH_LLAMA
/// (key names from llama-arch.cpp); writing produces the keys llama.cpp needs to load the model.
/// </summary>
public static class GgufConfig
{
    /// <summary>
    /// The config of a GGUF model. <paramref name="readF32"/> returns the values of an F32 tensor (used for
    /// <c>rope_freqs.weight</c>). Throws naming <paramref name="path"/> and the key on any problem.
    /// </summary>
    public static ModelConfig Read(
        string path,
        IReadOnlyDictionary<string, object> metadata,
        IReadOnlyList<TensorInfo> tensors,
        Func<TensorInfo, float[]> readF32)
    {
        var md = new Keys(path, metadata);
        string arch = md.String(Gguf.ArchitectureKey) ?? throw Error(path, $"key '{Gguf.ArchitectureKey}' is missing");
        if (arch != "llama")
        {
            throw Error(path, $"key '{Gguf.ArchitectureKey}' is {Gguf.Quote(arch)}; only 'llama' models are supported");
        }

        if (md.Int($"{arch}.expert_count") is > 0)
        {
            throw Error(path, $"key '{arch}.expert_count' is set: mixture-of-experts models are not supported");
        }

        // Llama 3.x scaling arrives as rope_freqs.weight; linear or YaRN scaling would change every angle, so
        // running without it would give wrong numbers silently (llama.cpp: LLM_KV_ROPE_SCALING_TYPE).
        string? scaling = md.String($"{arch}.rope.scaling.type");
        if (scaling is not null and not "none")
        {
            throw Error(path, $"key '{arch}.rope.scaling.type' is {Gguf.Quote(scaling)}; RoPE scaling of that type is not supported");
        }

        if (md.Float($"{arch}.rope.scale_linear") is { } linear && linear != 1.0)
        {
            throw Error(path, $"key '{arch}.rope.scale_linear' is {linear}; linear RoPE scaling is not supported");
        }

        int dim = md.Int($"{arch}.embedding_length") ?? throw Missing(path, $"{arch}.embedding_length");
        int heads = md.Int($"{arch}.attention.head_count") ?? throw Missing(path, $"{arch}.attention.head_count");
        int kvHeads = md.Int($"{arch}.attention.head_count_kv") ?? heads;
        if (heads <= 0 || dim <= 0)
        {
            throw Error(path, $"key '{arch}.attention.head_count' is {heads} and '{arch}.embedding_length' is {dim}; both must be positive");
        }

        // attention.key_length is the head size when it differs from n_embd / n_head; rope.dimension_count is
        // the rotated part of it, which for Llama is all of it.
        int? ropeDims = md.Int($"{arch}.rope.dimension_count");
        int headDim = md.Int($"{arch}.attention.key_length") ?? ropeDims ?? dim / heads;
        if (ropeDims is { } r && r != headDim)
        {
            throw Error(path, $"key '{arch}.rope.dimension_count' is {r} but the head size is {headDim}; partial rotary embeddings are not supported");
        }

        TensorInfo? embedding = tensors.FirstOrDefault(t => t.Name == TensorNames.TokenEmbedding);
        int vocab = md.Int($"{arch}.vocab_size")
            ?? (metadata.TryGetValue("tokenizer.ggml.tokens", out object? tokens) && tokens is string[] list ? list.Length : (int?)null)
            ?? (embedding is { Shape.Length: 2 } ? (int)Math.Min(embedding.Shape[0], int.MaxValue) : (int?)null)
            ?? throw Error(path, $"the vocabulary size is unknown: no key '{arch}.vocab_size', no 'tokenizer.ggml.tokens' and no {TensorNames.TokenEmbedding}");

        int bos = md.Int("tokenizer.ggml.bos_token_id") ?? 1;
        int eos = md.Int("tokenizer.ggml.eos_token_id") ?? 2;
        var eosIds = new List<int> { eos };
        if (md.Int("tokenizer.ggml.eot_token_id") is { } eot && eot != eos)
        {
            eosIds.Add(eot);
        }

        foreach ((string key, int id) in new[] { ("bos", bos), ("eos", eos), ("eot", eosIds[^1]) })
        {
            if (id < 0 || id >= vocab)
            {
                throw Error(path, $"key 'tokenizer.ggml.{key}_token_id' is {id}, outside the vocabulary (size {vocab})");
            }
        }

        float[]? freqFactors = null;
        if (tensors.FirstOrDefault(t => t.Name == TensorNames.RopeFreqs) is { } freqs)
        {
            if (freqs.Type != DType.F32 || freqs.Elements != headDim / 2)
            {
                throw Error(path, $"tensor '{TensorNames.RopeFreqs}' is {freqs.Type} {freqs.ShapeText}, expected F32 [{headDim / 2}]");
            }

            freqFactors = readF32(freqs);
        }

        var config = new ModelConfig
        {
            Architecture = arch,
            Name = md.String("general.name") ?? System.IO.Path.GetFileNameWithoutExtension(path),
            Dim = dim,
            Layers = md.Int($"{arch}.block_count") ?? throw Missing(path, $"{arch}.block_count"),
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            HiddenDim = md.Int($"{arch}.feed_forward_length") ?? throw Missing(path, $"{arch}.feed_forward_length"),
            VocabSize = vocab,
            RmsEps = (float)(md.Float($"{arch}.attention.layer_norm_rms_epsilon") ?? 1e-5),
            RopeTheta = md.Float($"{arch}.rope.freq_base") ?? 10000.0,
            RopeStyle = RopeStyle.Interleaved, // convert_hf_to_gguf.py permutes Q/K rows for ggml's adjacent-pair RoPE
            RopeFreqFactors = freqFactors,
            ContextLength = md.Int($"{arch}.context_length") ?? throw Missing(path, $"{arch}.context_length"),
            TiedEmbeddings = !tensors.Any(t => t.Name == TensorNames.Output),
            BosId = bos,
            EosIds = eosIds,
        };
        config.Validate(path);
        return config;
    }

    /// <summary>
    /// The <c>general.*</c> and <c>llama.*</c> keys (plus BOS/EOS ids) llama.cpp needs to load a model with this config,
    /// in the order convert_hf_to_gguf.py writes them.
    /// </summary>
    public static List<KeyValuePair<string, object>> Write(ModelConfig c, DType fileType)
    {
        const string a = "llama";
        var kv = new List<KeyValuePair<string, object>>
        {
            new(Gguf.ArchitectureKey, a),
            new("general.name", c.Name),
            new($"{a}.block_count", (uint)c.Layers),
            new($"{a}.context_length", (uint)c.ContextLength),
            new($"{a}.embedding_length", (uint)c.Dim),
            new($"{a}.feed_forward_length", (uint)c.HiddenDim),
            new($"{a}.attention.head_count", (uint)c.Heads),
            new($"{a}.attention.head_count_kv", (uint)c.KvHeads),
            new($"{a}.rope.freq_base", (float)c.RopeTheta),
            new($"{a}.attention.layer_norm_rms_epsilon", c.RmsEps),
        };
        if (c.HeadDim != c.Dim / c.Heads)
        {
            kv.Add(new($"{a}.attention.key_length", (uint)c.HeadDim));
            kv.Add(new($"{a}.attention.value_length", (uint)c.HeadDim));
        }

        kv.Add(new($"{a}.vocab_size", (uint)c.VocabSize));
        kv.Add(new($"{a}.rope.dimension_count", (uint)c.HeadDim));
        kv.Add(new("general.file_type", Gguf.FileType(fileType)));
        if (fileType.IsQuantized())
        {
            kv.Add(new("general.quantization_version", 2u)); // GGML_QNT_VERSION
        }

        kv.Add(new("tokenizer.ggml.bos_token_id", (uint)c.BosId));
        kv.Add(new("tokenizer.ggml.eos_token_id", (uint)c.EosIds[0]));
        if (c.EosIds.Count > 1)
        {
            kv.Add(new("tokenizer.ggml.eot_token_id", (uint)c.EosIds[1]));
        }

        return kv;
    }

    private static GpuLlamaException Error(string path, string message) => new($"{path}: {message}");

    private static GpuLlamaException Missing(string path, string key) => Error(path, $"key '{key}' is missing");

    /// <summary>Typed access to metadata values with one-line errors naming the key.</summary>
    private readonly struct Keys(string path, IReadOnlyDictionary<string, object> metadata)
    {
        public string? String(string key) => metadata.TryGetValue(key, out object? v)
            ? v as string ?? throw WrongType(key, v, "string")
            : null;

        /// <summary>
        /// Any integer type (converters differ: uint32 usually, int32 or uint64 sometimes). A per-layer array
        /// (llama.cpp <c>get_key_or_arr</c>) is accepted when all its values agree.
        /// </summary>
        public int? Int(string key)
        {
            if (!metadata.TryGetValue(key, out object? v))
            {
                return null;
            }

            if (v is Array array and not string[] and not object[] and not float[] and not double[] and not bool[])
            {
                if (array.Length == 0)
                {
                    throw Error(path, $"key '{key}' is an empty array, expected an integer");
                }

                long first = ToLong(key, array.GetValue(0)!);
                foreach (object item in array)
                {
                    if (ToLong(key, item) != first)
                    {
                        throw Error(path, $"key '{key}' has different values per layer; models with varying layer shapes are not supported");
                    }
                }

                return Narrow(key, first);
            }

            return Narrow(key, ToLong(key, v));
        }

        public double? Float(string key) => metadata.TryGetValue(key, out object? v)
            ? v switch
            {
                float f => f,
                double d => d,
                _ when Gguf.TypeOf(v) is GgufType.String or GgufType.Array or GgufType.Bool or null => throw WrongType(key, v, "float32"),
                _ => ToLong(key, v),
            }
            : null;

        private long ToLong(string key, object v) => v switch
        {
            byte b => b,
            sbyte b => b,
            ushort s => s,
            short s => s,
            uint u => u,
            int i => i,
            ulong u => u > long.MaxValue ? long.MaxValue : (long)u,
            long l => l,
            _ => throw WrongType(key, v, "an integer"),
        };

        private int Narrow(string key, long value)
        {
            if (value is < int.MinValue or > int.MaxValue)
            {
                throw Error(path, $"key '{key}' is {value}, out of range");
            }

            return (int)value;
        }

        private GpuLlamaException WrongType(string key, object v, string expected)
        {
            string got = Gguf.TypeOf(v) is { } t ? Gguf.Name(t) : v.GetType().Name;
            return Error(path, $"key '{key}' has type {got}, expected {expected}");
        }
    }
}

using System.Globalization;
using System.Text.Json;
using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>
/// Hugging Face <c>config.json</c> (transformers' <c>LlamaConfig</c>, also <c>MistralConfig</c> without sliding
/// windows) ↔ <see cref="ModelConfig"/>, plus the directory's JSON files as flat metadata
/// ("config.hidden_size", "tokenizer_config.added_tokens_decoder.1.content", …).
/// </summary>
public static class HfConfig
{
    public const string ConfigFileName = "config.json";

    public const string GenerationConfigFileName = "generation_config.json";

    public const string TokenizerConfigFileName = "tokenizer_config.json";

    private static readonly string[] s_architectures = ["LlamaForCausalLM", "MistralForCausalLM"];

    private static readonly string[] s_modelTypes = ["llama", "mistral"];

    /// <summary>Reads <c>config.json</c> (required), <c>generation_config.json</c> and <c>tokenizer_config.json</c> (optional).</summary>
    public static (ModelConfig Config, Dictionary<string, object> Metadata) Read(string directory)
    {
        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        string configPath = Path.Combine(directory, ConfigFileName);
        if (!File.Exists(configPath))
        {
            GpuLlamaException.ThrowFile(configPath, "file not found (a Hugging Face model directory needs config.json)");
        }

        ModelConfig config;
        using (JsonDocument doc = ParseJsonFile(configPath))
        {
            config = Parse(configPath, doc.RootElement, Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory))));
            Flatten("config", doc.RootElement, metadata);
        }

        string generationPath = Path.Combine(directory, GenerationConfigFileName);
        if (File.Exists(generationPath))
        {
            using JsonDocument doc = ParseJsonFile(generationPath);
            RequireObject(generationPath, doc.RootElement);

            // generate() uses generation_config's token ids over config.json's.
            int? bos = OptionalInt(generationPath, doc.RootElement, "bos_token_id");
            IReadOnlyList<int>? eos = OptionalIds(generationPath, doc.RootElement, "eos_token_id");
            config = config with { BosId = bos ?? config.BosId, EosIds = eos ?? config.EosIds };
            Flatten("generation_config", doc.RootElement, metadata);
        }

        string tokenizerPath = Path.Combine(directory, TokenizerConfigFileName);
        if (File.Exists(tokenizerPath))
        {
            using JsonDocument doc = ParseJsonFile(tokenizerPath);
            RequireObject(tokenizerPath, doc.RootElement);
            Flatten("tokenizer_config", doc.RootElement, metadata);
        }

        CheckTokenIds(configPath, config);
        return (config, metadata);
    }

    /// <summary>A config.json object → config; errors name <paramref name="path"/> and the key.</summary>
    public static ModelConfig Parse(string path, JsonElement root, string name = "")
    {
        RequireObject(path, root);
        CheckArchitecture(path, root);

        int dim = RequiredInt(path, root, "hidden_size");
        int layers = RequiredInt(path, root, "num_hidden_layers");
        int heads = RequiredInt(path, root, "num_attention_heads");
        int hidden = RequiredInt(path, root, "intermediate_size");
        int vocab = RequiredInt(path, root, "vocab_size");
        int kvHeads = OptionalInt(path, root, "num_key_value_heads") ?? heads;
        if (heads <= 0)
        {
            GpuLlamaException.ThrowFile(path, $"num_attention_heads {heads} must be positive");
        }

        int? headDim = OptionalInt(path, root, "head_dim");
        if (headDim is null && dim % heads != 0)
        {
            GpuLlamaException.ThrowFile(path, $"hidden_size {dim} is not a multiple of num_attention_heads {heads} and there is no head_dim");
        }

        // transformers LlamaConfig defaults for keys older configs leave out.
        int context = OptionalInt(path, root, "max_position_embeddings") ?? 2048;
        double eps = OptionalDouble(path, root, "rms_norm_eps") ?? 1e-6;
        double theta = OptionalDouble(path, root, "rope_theta") ?? 10000.0;
        bool tied = OptionalBool(path, root, "tie_word_embeddings") ?? false;
        int bos = OptionalInt(path, root, "bos_token_id") ?? 1;
        IReadOnlyList<int> eos = OptionalIds(path, root, "eos_token_id") ?? [2];

        CheckUnsupported(path, root, context);

        var config = new ModelConfig
        {
            Architecture = "llama",
            Name = name,
            Dim = dim,
            Layers = layers,
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim ?? dim / heads,
            HiddenDim = hidden,
            VocabSize = vocab,
            RmsEps = (float)eps,
            RopeTheta = theta,
            RopeStyle = RopeStyle.Halves,
            RopeScaling = ReadRopeScaling(path, root),
            ContextLength = context,
            TiedEmbeddings = tied,
            BosId = bos,
            EosIds = eos,
        };
        config.Validate(path);
        return config;
    }

    /// <summary>The config.json transformers would write for <paramref name="c"/> (LlamaForCausalLM).</summary>
    public static Dictionary<string, object?> ToJson(ModelConfig c, DType dtype)
    {
        if (c.RopeFreqFactors is not null && c.RopeScaling is null)
        {
            throw new ArgumentException("per-frequency RoPE factors without Llama 3 scaling parameters have no config.json form", nameof(c));
        }

        var json = new Dictionary<string, object?>
        {
            ["architectures"] = new[] { "LlamaForCausalLM" },
            ["model_type"] = "llama",
            ["attention_bias"] = false,
            ["bos_token_id"] = c.BosId,
            ["eos_token_id"] = c.EosIds.Count == 1 ? c.EosIds[0] : c.EosIds.ToArray(),
            ["head_dim"] = c.HeadDim,
            ["hidden_act"] = "silu",
            ["hidden_size"] = c.Dim,
            ["intermediate_size"] = c.HiddenDim,
            ["max_position_embeddings"] = c.ContextLength,
            ["mlp_bias"] = false,
            ["num_attention_heads"] = c.Heads,
            ["num_hidden_layers"] = c.Layers,
            ["num_key_value_heads"] = c.KvHeads,
            ["rms_norm_eps"] = (double)(decimal)c.RmsEps, // 1e-05, not float noise 9.99999974738e-06
            ["rope_scaling"] = c.RopeScaling is { } s
                ? new Dictionary<string, object>
                {
                    ["rope_type"] = "llama3",
                    ["factor"] = s.Factor,
                    ["low_freq_factor"] = s.LowFreqFactor,
                    ["high_freq_factor"] = s.HighFreqFactor,
                    ["original_max_position_embeddings"] = s.OriginalMaxPositions,
                }
                : null,
            ["rope_theta"] = c.RopeTheta,
            ["tie_word_embeddings"] = c.TiedEmbeddings,
            ["torch_dtype"] = dtype switch { DType.F16 => "float16", DType.BF16 => "bfloat16", _ => "float32" },
            ["vocab_size"] = c.VocabSize,
        };
        return json;
    }

    /// <summary>Parses a JSON file; a syntax error is one line naming the file.</summary>
    public static JsonDocument ParseJsonFile(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GpuLlamaException($"{path}: cannot read file ({e.Message})", e);
        }

        try
        {
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new GpuLlamaException($"{path}: not valid JSON ({e.Message})", e);
        }
    }

    /// <summary>"string \"128\"", "number 1.5", "null" … for type errors.</summary>
    internal static string Describe(JsonElement e)
    {
        static string Clip(string s) => (s.Length > 40 ? s[..40] + "…" : s).ReplaceLineEndings(" ");
        string raw = Clip(e.GetRawText());

        return e.ValueKind switch
        {
            JsonValueKind.Null => "null",
            JsonValueKind.True or JsonValueKind.False => raw,
            JsonValueKind.String => $"string \"{Clip(e.GetString()!)}\"",
            _ => $"{e.ValueKind.ToString().ToLowerInvariant()} {raw}",
        };
    }

    /// <summary>
    /// JSON → metadata entries: objects flatten into dotted keys, scalars become string/long/double/bool, arrays
    /// become typed arrays (string[], long[], double[], bool[], or object[] when mixed); nulls are left out.
    /// </summary>
    internal static void Flatten(string prefix, JsonElement e, Dictionary<string, object> into)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            foreach (JsonProperty p in e.EnumerateObject())
            {
                Flatten($"{prefix}.{p.Name}", p.Value, into);
            }

            return;
        }

        if (ToClr(e) is { } value)
        {
            into[prefix] = value;
        }
    }

    private static object? ToClr(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                return e.GetString()!;
            case JsonValueKind.Number:
                return e.TryGetInt64(out long l) ? l : (object)e.GetDouble();
            case JsonValueKind.True:
                return true;
            case JsonValueKind.False:
                return false;
            case JsonValueKind.Object:
                var map = new Dictionary<string, object>(StringComparer.Ordinal);
                foreach (JsonProperty p in e.EnumerateObject())
                {
                    if (ToClr(p.Value) is { } v)
                    {
                        map[p.Name] = v;
                    }
                }

                return map;
            case JsonValueKind.Array:
                object[] items = e.EnumerateArray().Select(ToClr).Where(x => x is not null).ToArray()!;
                if (items.Length > 0 && items.All(x => x is string))
                {
                    return items.Cast<string>().ToArray();
                }

                if (items.Length > 0 && items.All(x => x is long))
                {
                    return items.Cast<long>().ToArray();
                }

                if (items.Length > 0 && items.All(x => x is long or double))
                {
                    return items.Select(x => Convert.ToDouble(x, CultureInfo.InvariantCulture)).ToArray();
                }

                if (items.Length > 0 && items.All(x => x is bool))
                {
                    return items.Cast<bool>().ToArray();
                }

                return items;
            default:
                return null;
        }
    }

    private static void RequireObject(string path, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            GpuLlamaException.ThrowFile(path, $"expected a JSON object, got {Describe(root)}");
        }
    }

    private static void CheckArchitecture(string path, JsonElement root)
    {
        string? modelType = null;
        if (root.TryGetProperty("model_type", out JsonElement mt) && mt.ValueKind != JsonValueKind.Null)
        {
            if (mt.ValueKind != JsonValueKind.String)
            {
                GpuLlamaException.ThrowFile(path, $"model_type must be a string, got {Describe(mt)}");
            }

            modelType = mt.GetString()!;
            if (!s_modelTypes.Contains(modelType))
            {
                GpuLlamaException.ThrowFile(path, $"model_type '{modelType}' is not supported (expected {string.Join(" or ", s_modelTypes)})");
            }
        }

        bool hasArchitectures = false;
        if (root.TryGetProperty("architectures", out JsonElement arch) && arch.ValueKind != JsonValueKind.Null)
        {
            if (arch.ValueKind != JsonValueKind.Array || arch.EnumerateArray().Any(a => a.ValueKind != JsonValueKind.String))
            {
                GpuLlamaException.ThrowFile(path, $"architectures must be an array of strings, got {Describe(arch)}");
            }

            string[] names = arch.EnumerateArray().Select(a => a.GetString()!).ToArray();
            if (names.Length > 0 && !names.Any(s_architectures.Contains))
            {
                GpuLlamaException.ThrowFile(path, $"architectures [{string.Join(", ", names)}] are not supported (expected {string.Join(" or ", s_architectures)})");
            }

            hasArchitectures = names.Length > 0;
        }

        if (modelType is null && !hasArchitectures)
        {
            GpuLlamaException.ThrowFile(path, "has neither model_type nor architectures; expected model_type \"llama\"");
        }
    }

    /// <summary>Settings that change the math in ways this engine does not implement: refuse rather than compute wrong logits.</summary>
    private static void CheckUnsupported(string path, JsonElement root, int context)
    {
        if (root.TryGetProperty("hidden_act", out JsonElement act) && act.ValueKind == JsonValueKind.String && act.GetString() != "silu")
        {
            GpuLlamaException.ThrowFile(path, $"hidden_act '{act.GetString()}' is not supported (expected silu)");
        }

        foreach (string key in (string[])["attention_bias", "mlp_bias"])
        {
            if (OptionalBool(path, root, key) == true)
            {
                GpuLlamaException.ThrowFile(path, $"{key} true is not supported (Llama has no bias tensors)");
            }
        }

        // Mistral 7B v0.1 attends over a 4096-token window; later Mistrals set sliding_window null.
        if (OptionalInt(path, root, "sliding_window") is int window && window < context)
        {
            GpuLlamaException.ThrowFile(path, $"sliding_window {window} (below max_position_embeddings {context}) is not supported");
        }
    }

    private static Llama3RopeScaling? ReadRopeScaling(string path, JsonElement root)
    {
        if (!root.TryGetProperty("rope_scaling", out JsonElement s) || s.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (s.ValueKind != JsonValueKind.Object)
        {
            GpuLlamaException.ThrowFile(path, $"rope_scaling must be an object or null, got {Describe(s)}");
        }

        // transformers renamed "type" to "rope_type" and still reads both.
        string? type = OptionalString(path, s, "rope_type", "rope_scaling.") ?? OptionalString(path, s, "type", "rope_scaling.");
        switch (type)
        {
            case "default" or null:
                return null;
            case "llama3":
                double factor = RequiredDouble(path, s, "factor", "rope_scaling.");
                double low = RequiredDouble(path, s, "low_freq_factor", "rope_scaling.");
                double high = RequiredDouble(path, s, "high_freq_factor", "rope_scaling.");
                int original = RequiredInt(path, s, "original_max_position_embeddings", "rope_scaling.");
                if (!(factor > 0) || !(low > 0) || !(high > low) || original <= 0)
                {
                    GpuLlamaException.ThrowFile(path,
                        $"rope_scaling llama3 values are invalid (factor {factor}, low_freq_factor {low}, high_freq_factor {high}, original_max_position_embeddings {original}); need positive values and high > low");
                }

                return new Llama3RopeScaling(factor, low, high, original);
            case "linear" or "dynamic" or "yarn" or "longrope":
                GpuLlamaException.ThrowFile(path, $"rope_scaling type '{type}' is not supported (only llama3)");
                return null;
            default:
                GpuLlamaException.ThrowFile(path, $"rope_scaling type '{type}' is unknown (supported: llama3)");
                return null;
        }
    }

    private static void CheckTokenIds(string path, ModelConfig c)
    {
        if (c.BosId < 0 || c.BosId >= c.VocabSize)
        {
            GpuLlamaException.ThrowFile(path, $"bos_token_id {c.BosId} is outside the vocabulary (0..{c.VocabSize - 1})");
        }

        foreach (int eos in c.EosIds)
        {
            if (eos < 0 || eos >= c.VocabSize)
            {
                GpuLlamaException.ThrowFile(path, $"eos_token_id {eos} is outside the vocabulary (0..{c.VocabSize - 1})");
            }
        }
    }

    private static int RequiredInt(string path, JsonElement o, string key, string prefix = "") =>
        OptionalInt(path, o, key, prefix) ?? throw new GpuLlamaException($"{path}: {prefix}{key} is missing");

    private static double RequiredDouble(string path, JsonElement o, string key, string prefix = "") =>
        OptionalDouble(path, o, key, prefix) ?? throw new GpuLlamaException($"{path}: {prefix}{key} is missing");

    private static int? OptionalInt(string path, JsonElement o, string key, string prefix = "")
    {
        if (!o.TryGetProperty(key, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int value))
        {
            return value;
        }

        GpuLlamaException.ThrowFile(path, $"{prefix}{key} must be a 32-bit integer, got {Describe(v)}");
        return null;
    }

    private static double? OptionalDouble(string path, JsonElement o, string key, string prefix = "")
    {
        if (!o.TryGetProperty(key, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (v.ValueKind != JsonValueKind.Number)
        {
            GpuLlamaException.ThrowFile(path, $"{prefix}{key} must be a number, got {Describe(v)}");
        }

        return v.GetDouble();
    }

    private static bool? OptionalBool(string path, JsonElement o, string key)
    {
        if (!o.TryGetProperty(key, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
        {
            GpuLlamaException.ThrowFile(path, $"{key} must be true or false, got {Describe(v)}");
        }

        return v.GetBoolean();
    }

    private static string? OptionalString(string path, JsonElement o, string key, string prefix = "")
    {
        if (!o.TryGetProperty(key, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (v.ValueKind != JsonValueKind.String)
        {
            GpuLlamaException.ThrowFile(path, $"{prefix}{key} must be a string, got {Describe(v)}");
        }

        return v.GetString();
    }

    /// <summary>eos_token_id: one id or a list of ids (Llama 3 Instruct lists three).</summary>
    private static IReadOnlyList<int>? OptionalIds(string path, JsonElement o, string key)
    {
        if (!o.TryGetProperty(key, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int one))
        {
            return [one];
        }

        if (v.ValueKind == JsonValueKind.Array && v.GetArrayLength() > 0
            && v.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out _)))
        {
            return v.EnumerateArray().Select(x => x.GetInt32()).ToArray();
        }

        GpuLlamaException.ThrowFile(path, $"{key} must be an integer or a non-empty list of integers, got {Describe(v)}");
        return null;
    }
}

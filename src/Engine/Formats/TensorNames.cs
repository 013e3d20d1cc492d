using System.Text.RegularExpressions;
using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>
/// The one naming table. Every format maps its tensor names to the canonical GGUF names (llama.cpp
/// llama-arch.cpp), and the expected shape of each follows from the config. "Tensor not found" errors print
/// both names so a user can grep either file.
/// </summary>
public static partial class TensorNames
{
    public const string TokenEmbedding = "token_embd.weight";
    public const string OutputNorm = "output_norm.weight";
    public const string Output = "output.weight";
    public const string RopeFreqs = "rope_freqs.weight";

    public static string AttnNorm(int layer) => $"blk.{layer}.attn_norm.weight";

    public static string Wq(int layer) => $"blk.{layer}.attn_q.weight";

    public static string Wk(int layer) => $"blk.{layer}.attn_k.weight";

    public static string Wv(int layer) => $"blk.{layer}.attn_v.weight";

    public static string Wo(int layer) => $"blk.{layer}.attn_output.weight";

    public static string FfnNorm(int layer) => $"blk.{layer}.ffn_norm.weight";

    /// <summary>w1 in llama2.c, gate_proj in HF.</summary>
    public static string FfnGate(int layer) => $"blk.{layer}.ffn_gate.weight";

    /// <summary>w3 in llama2.c, up_proj in HF.</summary>
    public static string FfnUp(int layer) => $"blk.{layer}.ffn_up.weight";

    /// <summary>w2 in llama2.c, down_proj in HF.</summary>
    public static string FfnDown(int layer) => $"blk.{layer}.ffn_down.weight";

    /// <summary>A layer's nine tensors in <see cref="LayerWeights"/>' order (norms included).</summary>
    public static string[] LayerTensors(int layer) =>
        [AttnNorm(layer), Wq(layer), Wk(layer), Wv(layer), Wo(layer), FfnNorm(layer), FfnGate(layer), FfnUp(layer), FfnDown(layer)];

    private static readonly (string Hf, string Gguf)[] s_layerSuffixes =
    [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ];

    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)$")]
    private static partial Regex HfLayerRegex();

    [GeneratedRegex(@"^blk\.(\d+)\.(.+)$")]
    private static partial Regex GgufLayerRegex();

    /// <summary>Canonical name of a Hugging Face tensor name, or null for tensors the engine does not use (e.g. rotary inv_freq).</summary>
    public static string? FromHuggingFace(string hf)
    {
        switch (hf)
        {
            case "model.embed_tokens.weight": return TokenEmbedding;
            case "model.norm.weight": return OutputNorm;
            case "lm_head.weight": return Output;
        }

        Match m = HfLayerRegex().Match(hf);
        if (m.Success)
        {
            foreach ((string h, string g) in s_layerSuffixes)
            {
                if (m.Groups[2].Value == h)
                {
                    return $"blk.{m.Groups[1].Value}.{g}";
                }
            }
        }

        return null;
    }

    /// <summary>The Hugging Face name of a canonical name (for messages).</summary>
    public static string ToHuggingFace(string canonical)
    {
        switch (canonical)
        {
            case TokenEmbedding: return "model.embed_tokens.weight";
            case OutputNorm: return "model.norm.weight";
            case Output: return "lm_head.weight";
        }

        Match m = GgufLayerRegex().Match(canonical);
        if (m.Success)
        {
            foreach ((string h, string g) in s_layerSuffixes)
            {
                if (m.Groups[2].Value == g)
                {
                    return $"model.layers.{m.Groups[1].Value}.{h}";
                }
            }
        }

        return canonical;
    }

    /// <summary>"blk.3.attn_q.weight (HF: model.layers.3.self_attn.q_proj.weight)".</summary>
    public static string Describe(string canonical)
    {
        string hf = ToHuggingFace(canonical);
        return hf == canonical ? canonical : $"{canonical} (HF: {hf})";
    }

    /// <summary>
    /// Every tensor a Llama model needs, with its row-major shape. The output head is absent when tied.
    /// rope_freqs is optional and not listed.
    /// </summary>
    public static IEnumerable<(string Name, long[] Shape)> Required(ModelConfig c)
    {
        yield return (TokenEmbedding, [c.VocabSize, c.Dim]);
        for (int l = 0; l < c.Layers; l++)
        {
            yield return (AttnNorm(l), [c.Dim]);
            yield return (Wq(l), [c.QDim, c.Dim]);
            yield return (Wk(l), [c.KvDim, c.Dim]);
            yield return (Wv(l), [c.KvDim, c.Dim]);
            yield return (Wo(l), [c.Dim, c.QDim]);
            yield return (FfnNorm(l), [c.Dim]);
            yield return (FfnGate(l), [c.HiddenDim, c.Dim]);
            yield return (FfnUp(l), [c.HiddenDim, c.Dim]);
            yield return (FfnDown(l), [c.Dim, c.HiddenDim]);
        }

        yield return (OutputNorm, [c.Dim]);
        if (!c.TiedEmbeddings)
        {
            yield return (Output, [c.VocabSize, c.Dim]);
        }
    }

    /// <summary>
    /// Problems with a source's tensors against the config: missing tensors and wrong shapes, each named.
    /// Empty when the model is complete. Used by loading (first problem → error) and by `gpullama info`.
    /// </summary>
    public static List<string> Verify(ModelConfig c, IReadOnlyDictionary<string, TensorInfo> tensors)
    {
        var problems = new List<string>();
        foreach ((string name, long[] shape) in Required(c))
        {
            if (!tensors.TryGetValue(name, out TensorInfo? t))
            {
                problems.Add($"tensor {Describe(name)} is missing");
            }
            else if (!t.Shape.AsSpan().SequenceEqual(shape))
            {
                // a 1-D vector stored as [1, n] is the same thing
                if (!(shape.Length == 1 && t.Elements == shape[0] && t.Cols == shape[0]))
                {
                    problems.Add($"tensor {Describe(name)} has shape {t.ShapeText}, expected [{string.Join(", ", shape)}] from the config");
                }
            }
        }

        return problems;
    }
}

using System.CommandLine;
using System.Text.Json.Nodes;
using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>
/// gpullama info: hyper-parameters, parameter count, tensors by dtype, memory per layer, and a check that every
/// tensor the architecture needs is present with the right shape. Reads only headers (nothing is uploaded).
/// </summary>
public static class InfoCommand
{
    public static Command Create()
    {
        var path = new Argument<string>("MODEL") { Description = "A GGUF file, a Hugging Face directory, a llama2.c .bin, or synthetic:PRESET[:dtype]." };
        var json = new Option<bool>("--json") { Description = "Print the same as one JSON object." };
        var command = new Command("info", "Describe a model file and verify it.") { path, json };
        command.SetAction(r =>
        {
            string p = r.GetValue(path)!;
            using IWeightSource source = WeightSource.Open(p);
            ModelInfo info = ModelInfo.Of(source);
            Console.Out.Write(r.GetValue(json) ? info.ToJson().ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n" : info.ToText());
            return info.Problems.Count == 0 ? 0 : 1;
        });
        return command;
    }
}

/// <summary>What `gpullama info` reports, computed from a weight source's headers.</summary>
public sealed record ModelInfo(
    string Path,
    string Format,
    ModelConfig Config,
    long Parameters,
    long TotalBytes,
    IReadOnlyList<(DType Type, int Count, long Elements, long Bytes)> ByType,
    IReadOnlyList<long> LayerBytes,
    long EmbeddingBytes,
    long OutputBytes,
    IReadOnlyList<string> Problems)
{
    public static ModelInfo Of(IWeightSource source)
    {
        ModelConfig c = source.Config;
        IEnumerable<TensorInfo> tensors = source.Tensors.Values;
        var byType = tensors.GroupBy(t => t.Type).OrderBy(g => g.Key)
            .Select(g => (g.Key, g.Count(), g.Sum(t => t.Elements), g.Sum(t => t.ByteLength))).ToList();
        var layers = new long[c.Layers];
        foreach (TensorInfo t in tensors)
        {
            if (t.Name.StartsWith("blk.", StringComparison.Ordinal))
            {
                int dot = t.Name.IndexOf('.', 4);
                if (int.TryParse(t.Name.AsSpan(4, dot - 4), out int l) && l < c.Layers)
                {
                    layers[l] += t.ByteLength;
                }
            }
        }

        long embd = source.Tensors.TryGetValue(TensorNames.TokenEmbedding, out TensorInfo? e) ? e.ByteLength : 0;
        long output = (source.Tensors.TryGetValue(TensorNames.Output, out TensorInfo? o) ? o.ByteLength : 0)
            + (source.Tensors.TryGetValue(TensorNames.OutputNorm, out TensorInfo? n) ? n.ByteLength : 0);
        return new ModelInfo(source.Path, source.Format, c, tensors.Sum(t => t.Elements), tensors.Sum(t => t.ByteLength),
            byType, layers, embd, output, TensorNames.Verify(c, source.Tensors));
    }

    public string ToText()
    {
        var s = new System.Text.StringBuilder();
        ModelConfig c = Config;
        s.AppendLine($"model:        {Path} ({Format})");
        s.AppendLine($"architecture: {c.Architecture}{(string.IsNullOrEmpty(c.Name) ? "" : $", name '{c.Name}'")}");
        s.AppendLine($"parameters:   {Parameters:N0} ({Parameters / 1e9:F2} B), {Bytes(TotalBytes)}, {8.0 * TotalBytes / Math.Max(1, Parameters):F2} bits per weight");
        s.AppendLine($"dim {c.Dim}, layers {c.Layers}, heads {c.Heads}, kv heads {c.KvHeads}, head dim {c.HeadDim}, ffn {c.HiddenDim}, vocab {c.VocabSize}");
        s.AppendLine($"context {c.ContextLength}, rms eps {c.RmsEps:G3}, rope theta {c.RopeTheta:G}, rope style {c.RopeStyle}" +
            (c.RopeScaling is { } rs ? $", llama3 scaling x{rs.Factor:G}" : "") + (c.RopeFreqFactors is not null ? ", rope_freqs factors" : "") +
            $", {(c.TiedEmbeddings ? "tied" : "untied")} output head, bos {c.BosId}, eos {string.Join("/", c.EosIds)}");
        s.AppendLine("tensors by type:");
        foreach ((DType t, int count, long elements, long bytes) in ByType)
        {
            s.AppendLine($"  {DTypeInfo.DisplayName(t),-6} {count,5} tensors {elements,15:N0} weights {Bytes(bytes),11} {t.BitsPerWeight(),6:F2} bpw");
        }

        s.AppendLine($"memory: token embedding {Bytes(EmbeddingBytes)}, output (norm + head) {Bytes(OutputBytes)}");
        if (LayerBytes.Count > 0)
        {
            bool uniform = LayerBytes.All(b => b == LayerBytes[0]);
            s.AppendLine(uniform
                ? $"memory per layer: {Bytes(LayerBytes[0])} x {LayerBytes.Count}"
                : "memory per layer: " + string.Join(", ", LayerBytes.Select((b, i) => $"{i}: {Bytes(b)}")));
        }

        if (Problems.Count == 0)
        {
            s.AppendLine($"verify: ok, every tensor the architecture needs is present with the right shape");
        }
        else
        {
            s.AppendLine($"verify: {Problems.Count} problem(s):");
            foreach (string p in Problems)
            {
                s.AppendLine($"  {p}");
            }
        }

        return s.ToString();
    }

    public JsonObject ToJson() => new()
    {
        ["path"] = Path,
        ["format"] = Format,
        ["architecture"] = Config.Architecture,
        ["name"] = Config.Name,
        ["parameters"] = Parameters,
        ["bytes"] = TotalBytes,
        ["dim"] = Config.Dim,
        ["layers"] = Config.Layers,
        ["heads"] = Config.Heads,
        ["kv_heads"] = Config.KvHeads,
        ["head_dim"] = Config.HeadDim,
        ["ffn"] = Config.HiddenDim,
        ["vocab"] = Config.VocabSize,
        ["context"] = Config.ContextLength,
        ["rope_theta"] = Config.RopeTheta,
        ["tied_embeddings"] = Config.TiedEmbeddings,
        ["types"] = new JsonArray([.. ByType.Select(t => (JsonNode)new JsonObject
        {
            ["type"] = DTypeInfo.DisplayName(t.Type),
            ["tensors"] = t.Count,
            ["weights"] = t.Elements,
            ["bytes"] = t.Bytes,
            ["bits_per_weight"] = t.Type.BitsPerWeight(),
        })]),
        ["layer_bytes"] = new JsonArray([.. LayerBytes.Select(b => (JsonNode)b)]),
        ["embedding_bytes"] = EmbeddingBytes,
        ["output_bytes"] = OutputBytes,
        ["problems"] = new JsonArray([.. Problems.Select(p => (JsonNode)p)]),
    };

    public static string Bytes(long b) => b >= 1L << 30 ? $"{b / (double)(1L << 30):F2} GiB" : b >= 1 << 20 ? $"{b / (double)(1 << 20):F2} MiB" : $"{b / 1024.0:F1} KiB";
}

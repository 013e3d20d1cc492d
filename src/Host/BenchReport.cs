using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace GpuLlama.Host;

/// <summary>
/// One row of `gpullama bench`: llama-bench's fields (same names in JSON/CSV) plus ours — bytes streamed per token,
/// the bandwidth that implies, and how close that is to the measured memory-bandwidth roofline.
/// </summary>
public sealed record BenchResult
{
    public required string ModelFilename { get; init; }
    public required string ModelType { get; init; }
    public long ModelSize { get; init; }
    public long ModelNParams { get; init; }
    public required string Backend { get; init; }
    public required string Devices { get; init; }
    public required string Dtype { get; init; }
    public int NGpuLayers { get; init; }
    public int NThreads { get; init; }
    public int NBatch { get; init; }

    /// <summary>Whether the CPU's layers stayed on the CPU for prompt batches (llama-bench's no_op_offload).</summary>
    public bool NoOpOffload { get; init; }

    /// <summary>KV cache types (llama-bench's type_k/type_v): "f16", "bf16", "f32".</summary>
    public string TypeK { get; init; } = "f16";
    public string TypeV { get; init; } = "f16";
    public int NPrompt { get; init; }
    public int NGen { get; init; }

    /// <summary>Tokens already in the context when the test ran (llama-bench's n_depth).</summary>
    public int NDepth { get; init; }
    public required string TestTime { get; init; }
    public required IReadOnlyList<long> SamplesNs { get; init; }

    /// <summary>Bytes read per generated token: weights, and the KV cache attended to (tg rows only).</summary>
    public long BytesPerToken { get; init; }

    /// <summary>Tokens/s the measured bandwidth allows (tg rows only).</summary>
    public double RooflineTokensPerSecond { get; init; }

    public double RooflineGBps { get; init; }

    public string Test => (NPrompt > 0 && NGen > 0 ? $"pp{NPrompt}+tg{NGen}" : NPrompt > 0 ? $"pp{NPrompt}" : $"tg{NGen}") + (NDepth > 0 ? $" @ d{NDepth}" : "");

    /// <summary>A tg row: generation alone, the rows with bandwidth columns.</summary>
    public bool IsGeneration => NGen > 0 && NPrompt == 0;

    public IReadOnlyList<double> SamplesTs => [.. SamplesNs.Select(ns => (NPrompt + NGen) / (ns / 1e9))];

    public double AvgNs => SamplesNs.Count == 0 ? 0 : SamplesNs.Average();

    public double StddevNs => Stats.StdDev(SamplesNs.Select(x => (double)x).ToList());

    public double AvgTs => Stats.Mean(SamplesTs);

    public double StddevTs => Stats.StdDev(SamplesTs);

    public double GBps => BytesPerToken * AvgTs / 1e9;

    public double RooflinePercent => RooflineTokensPerSecond > 0 ? 100 * AvgTs / RooflineTokensPerSecond : 0;
}

/// <summary>llama-bench's statistics: per-repetition tokens/s, then mean and sample standard deviation.</summary>
public static class Stats
{
    public static double Mean(IReadOnlyList<double> v) => v.Count == 0 ? 0 : v.Average();

    public static double StdDev(IReadOnlyList<double> v)
    {
        if (v.Count <= 1)
        {
            return 0;
        }

        double mean = Mean(v);
        return Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Count - 1));
    }
}

/// <summary>The table a person reads (llama-bench's markdown) and the JSON/CSV a script reads.</summary>
public static class BenchReport
{
    private static readonly CultureInfo s_inv = CultureInfo.InvariantCulture;

    public static string Markdown(IReadOnlyList<BenchResult> rows)
    {
        // as llama-bench, the n_batch, type_k, type_v and nopo columns appear when a row sets them away from the default
        bool nBatch = rows.Any(r => r.NBatch != 512), typeK = rows.Any(r => r.TypeK != "f16"), typeV = rows.Any(r => r.TypeV != "f16"), nopo = rows.Any(r => r.NoOpOffload);
        string[] headers =
        [
            "model", "size", "params", "backend", "ngl", "threads", .. nBatch ? ["n_batch"] : Array.Empty<string>(), .. typeK ? ["type_k"] : Array.Empty<string>(),
            .. typeV ? ["type_v"] : Array.Empty<string>(), .. nopo ? ["nopo"] : Array.Empty<string>(), "test", "t/s", "B/tok", "GB/s", "% roofline",
        ];
        var cells = rows.Select(r => (string[])
        [
            r.ModelType,
            Size(r.ModelSize),
            Params(r.ModelNParams),
            r.Backend,
            r.NGpuLayers.ToString(s_inv),
            r.NThreads.ToString(s_inv),
            .. nBatch ? [r.NBatch.ToString(s_inv)] : Array.Empty<string>(),
            .. typeK ? [r.TypeK] : Array.Empty<string>(),
            .. typeV ? [r.TypeV] : Array.Empty<string>(),
            .. nopo ? [r.NoOpOffload ? "1" : "0"] : Array.Empty<string>(),
            r.Test,
            $"{r.AvgTs.ToString("F2", s_inv)} ± {r.StddevTs.ToString("F2", s_inv)}",
            r.IsGeneration ? Size(r.BytesPerToken) : "",
            r.IsGeneration ? r.GBps.ToString("F1", s_inv) : "",
            r.IsGeneration && r.RooflineTokensPerSecond > 0 ? r.RooflinePercent.ToString("F1", s_inv) : "",
        ]).ToList();
        int[] widths = [.. headers.Select((h, i) => Math.Max(h.Length, cells.Count == 0 ? 0 : cells.Max(c => c[i].Length)))];
        bool[] right =
        [
            false, true, true, false, true, true, .. nBatch ? [true] : Array.Empty<bool>(), .. typeK ? [false] : Array.Empty<bool>(),
            .. typeV ? [false] : Array.Empty<bool>(), .. nopo ? [true] : Array.Empty<bool>(), true, true, true, true, true,
        ];
        var s = new StringBuilder();
        s.AppendLine("| " + string.Join(" | ", headers.Select((h, i) => right[i] ? h.PadLeft(widths[i]) : h.PadRight(widths[i]))) + " |");
        s.AppendLine("| " + string.Join(" | ", widths.Select((w, i) => right[i] ? new string('-', w - 1) + ":" : new string('-', w))) + " |");
        foreach (string[] c in cells)
        {
            s.AppendLine("| " + string.Join(" | ", c.Select((x, i) => right[i] ? x.PadLeft(widths[i]) : x.PadRight(widths[i]))) + " |");
        }

        return s.ToString();
    }

    public static JsonArray Json(IReadOnlyList<BenchResult> rows) => new([.. rows.Select(r => (JsonNode)new JsonObject
    {
        ["build_commit"] = BuildCommit,
        ["model_filename"] = r.ModelFilename,
        ["model_type"] = r.ModelType,
        ["model_size"] = r.ModelSize,
        ["model_n_params"] = r.ModelNParams,
        ["backends"] = r.Backend,
        ["devices"] = r.Devices,
        ["dtype"] = r.Dtype,
        ["n_batch"] = r.NBatch,
        ["n_threads"] = r.NThreads,
        ["type_k"] = r.TypeK,
        ["type_v"] = r.TypeV,
        ["n_gpu_layers"] = r.NGpuLayers,
        ["n_prompt"] = r.NPrompt,
        ["n_gen"] = r.NGen,
        ["n_depth"] = r.NDepth,
        ["test_time"] = r.TestTime,
        ["avg_ns"] = (long)r.AvgNs,
        ["stddev_ns"] = (long)r.StddevNs,
        ["avg_ts"] = r.AvgTs,
        ["stddev_ts"] = r.StddevTs,
        ["samples_ns"] = new JsonArray([.. r.SamplesNs.Select(x => (JsonNode)x)]),
        ["samples_ts"] = new JsonArray([.. r.SamplesTs.Select(x => (JsonNode)x)]),
        ["bytes_per_token"] = r.BytesPerToken,
        ["gb_per_s"] = r.IsGeneration ? r.GBps : null,
        ["roofline_gb_per_s"] = r.RooflineGBps > 0 ? r.RooflineGBps : null,
        ["roofline_pct"] = r.IsGeneration && r.RooflineTokensPerSecond > 0 ? r.RooflinePercent : null,
        ["no_op_offload"] = r.NoOpOffload ? 1 : 0,
    })]);

    public static string Csv(IReadOnlyList<BenchResult> rows)
    {
        var s = new StringBuilder();
        s.AppendLine("build_commit,model_filename,model_type,model_size,model_n_params,backends,devices,dtype,n_batch,n_threads,n_gpu_layers,n_prompt,n_gen,test_time,avg_ns,stddev_ns,avg_ts,stddev_ts,bytes_per_token,gb_per_s,roofline_gb_per_s,roofline_pct,no_op_offload,type_k,type_v,n_depth");
        foreach (BenchResult r in rows)
        {
            string[] f =
            [
                BuildCommit, r.ModelFilename, r.ModelType, r.ModelSize.ToString(s_inv), r.ModelNParams.ToString(s_inv), r.Backend, r.Devices, r.Dtype,
                r.NBatch.ToString(s_inv), r.NThreads.ToString(s_inv), r.NGpuLayers.ToString(s_inv), r.NPrompt.ToString(s_inv), r.NGen.ToString(s_inv),
                r.TestTime, ((long)r.AvgNs).ToString(s_inv), ((long)r.StddevNs).ToString(s_inv), r.AvgTs.ToString("F6", s_inv), r.StddevTs.ToString("F6", s_inv),
                r.BytesPerToken.ToString(s_inv), r.IsGeneration ? r.GBps.ToString("F3", s_inv) : "", r.RooflineGBps > 0 ? r.RooflineGBps.ToString("F3", s_inv) : "",
                r.IsGeneration && r.RooflineTokensPerSecond > 0 ? r.RooflinePercent.ToString("F2", s_inv) : "",
                r.NoOpOffload ? "1" : "0", r.TypeK, r.TypeV, r.NDepth.ToString(s_inv),
            ];
            s.AppendLine(string.Join(",", f.Select(Quote)));
        }

        return s.ToString();
    }

    /// <summary>tok/s (pp and tg) against the number of GPU layers, as an SVG chart.</summary>
    public static void WriteSweepChart(IReadOnlyList<BenchResult> rows, string path)
    {
        var model = new OxyPlot.PlotModel { Title = $"{string.Join(", ", rows.Select(r => r.ModelType).Distinct())}: tokens/s vs GPU layers" };
        model.Axes.Add(new OxyPlot.Axes.LinearAxis { Position = OxyPlot.Axes.AxisPosition.Bottom, Title = "GPU layers (--gpu-layers)", Minimum = 0 });
        model.Axes.Add(new OxyPlot.Axes.LogarithmicAxis { Position = OxyPlot.Axes.AxisPosition.Left, Title = "tokens/s" });
        model.Legends.Add(new OxyPlot.Legends.Legend { LegendPosition = OxyPlot.Legends.LegendPosition.TopLeft });
        // one line per test, and per model, thread count, cache types and prompt offload setting where the rows have several
        bool models = rows.Select(r => r.ModelType).Distinct().Count() > 1, threads = rows.Select(r => r.NThreads).Distinct().Count() > 1;
        bool caches = rows.Select(r => (r.TypeK, r.TypeV)).Distinct().Count() > 1;
        string Line(BenchResult r) => (models ? r.ModelType + " " : "") + r.Test + (threads ? $" t{r.NThreads}" : "") + (caches ? $" kv {r.TypeK}/{r.TypeV}" : "") +
                                      (r.NoOpOffload ? " nopo" : "");
        foreach (IGrouping<string, BenchResult> test in rows.GroupBy(Line))
        {
            var series = new OxyPlot.Series.LineSeries { Title = test.Key, MarkerType = OxyPlot.MarkerType.Circle };
            foreach (BenchResult r in test.OrderBy(r => r.NGpuLayers))
            {
                series.Points.Add(new OxyPlot.DataPoint(r.NGpuLayers, r.AvgTs));
            }

            model.Series.Add(series);
        }

        try
        {
            using FileStream stream = File.Create(path);
            new OxyPlot.SvgExporter { Width = 800, Height = 500 }.Export(model, stream);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GpuLlamaException($"--chart {path}: cannot write ({e.Message})");
        }
    }

    public static string Size(long bytes) => bytes >= 1L << 30
        ? $"{(bytes / (double)(1L << 30)).ToString("F2", s_inv)} GiB"
        : $"{(bytes / (double)(1 << 20)).ToString("F2", s_inv)} MiB";

    public static string Params(long n) => n >= 1_000_000_000 ? $"{(n / 1e9).ToString("F2", s_inv)} B" : $"{(n / 1e6).ToString("F2", s_inv)} M";

    private static string BuildCommit => typeof(BenchReport).Assembly.GetName().Version?.ToString() ?? "unknown";

    private static string Quote(string v) => v.Contains(',') || v.Contains('"') ? "\"" + v.Replace("\"", "\"\"") + "\"" : v;
}

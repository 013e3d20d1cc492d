using System.Text.Json;
using GpuLlama.Host;
using Xunit;

namespace GpuLlama.Tests.Cli;

/// <summary>
/// `gpullama bench`'s statistics (llama-bench's: per-repetition tokens/s, mean, sample standard deviation) and its
/// three output formats, on hand-made results whose every number is known.
/// </summary>
public sealed class BenchReportTests
{
    // pp8: 8 tokens in 0.1 s and 0.2 s → 80 and 40 t/s. tg4: 4 tokens in 2 s and 1 s → 2 and 4 t/s.
    private static BenchResult Pp(string file = "model.gguf") => Row(file, prompt: 8, gen: 0, [100_000_000, 200_000_000]);

    private static BenchResult Tg() => Row("model.gguf", prompt: 0, gen: 4, [2_000_000_000, 1_000_000_000]) with
    {
        BytesPerToken = 1_000_000_000,
        RooflineTokensPerSecond = 6,
        RooflineGBps = 6,
    };

    private static BenchResult Row(string file, int prompt, int gen, long[] samples) => new()
    {
        ModelFilename = file,
        ModelType = "tiny F16",
        ModelSize = 3L << 30,
        ModelNParams = 1_100_048_384,
        Backend = "CPU",
        Devices = "cpu",
        Dtype = "F16",
        NThreads = 2,
        NBatch = 512,
        NPrompt = prompt,
        NGen = gen,
        TestTime = "2026-11-23T00:00:00Z",
        SamplesNs = samples,
    };

    [Fact]
    public void StatsAreTheMeanAndTheSampleStandardDeviation()
    {
        Assert.Equal(2.5, Stats.Mean([1, 2, 3, 4]));
        Assert.Equal(Math.Sqrt(5.0 / 3), Stats.StdDev([1, 2, 3, 4]), 12); // n - 1, as llama-bench's stdev
        Assert.Equal(0, Stats.StdDev([7]));
        Assert.Equal(0, Stats.StdDev([]));
        Assert.Equal(0, Stats.Mean([]));
    }

    [Fact]
    public void TokensPerSecondIsAveragedOverRepetitionsLikeLlamaBench()
    {
        BenchResult tg = Tg();
        Assert.Equal("tg4", tg.Test);
        Assert.Equal("pp8", Pp().Test);
        Assert.Equal([2.0, 4.0], tg.SamplesTs);
        // the mean of per-repetition t/s (3), not tokens over the mean time (8 / 3 s = 2.67)
        Assert.Equal(3.0, tg.AvgTs, 12);
        Assert.Equal(Math.Sqrt(2), tg.StddevTs, 12);
        Assert.Equal(1.5e9, tg.AvgNs);
        Assert.Equal(Math.Sqrt(0.5) * 1e9, tg.StddevNs, 3);
        Assert.Equal(3.0, tg.GBps, 12);            // 1 GB/token at 3 t/s
        Assert.Equal(50.0, tg.RooflinePercent, 12); // 3 of the 6 t/s the bandwidth allows
        Assert.Equal(60.0, Pp().AvgTs, 12);
        Assert.Equal(0, Pp().RooflinePercent);
    }

    [Fact]
    public void MarkdownIsLlamaBenchsTableWithBandwidthColumnsForTg()
    {
        string[] lines = BenchReport.Markdown([Pp(), Tg()]).TrimEnd('\n').Split('\n');
        Assert.Equal(4, lines.Length);
        Assert.All(lines, l => Assert.Equal(lines[0].Length, l.Length)); // aligned
        Assert.Equal(["model", "size", "params", "backend", "ngl", "threads", "test", "t/s", "B/tok", "GB/s", "% roofline"], Cells(lines[0]));
        Assert.Equal(["-", "-:", "-:", "-", "-:", "-:", "-:", "-:", "-:", "-:", "-:"], Cells(lines[1]).Select(c => c[^1] == ':' ? "-:" : "-"));
        Assert.Equal(["tiny F16", "3.00 GiB", "1.10 B", "CPU", "0", "2", "pp8", "60.00 ± 28.28", "", "", ""], Cells(lines[2]));
        Assert.Equal(["tiny F16", "3.00 GiB", "1.10 B", "CPU", "0", "2", "tg4", "3.00 ± 1.41", "953.67 MiB", "3.0", "50.0"], Cells(lines[3]));

        static string[] Cells(string line) => [.. line.Trim().Trim('|').Split('|').Select(c => c.Trim())];
    }

    [Fact]
    public void TheNBatchColumnAppearsWhenABatchSizeIsNotTheDefault()
    {
        string[] lines = BenchReport.Markdown([Pp(), Pp() with { NBatch = 64 }]).TrimEnd('\n').Split('\n');
        Assert.Equal("n_batch", lines[0].Trim().Trim('|').Split('|').Select(c => c.Trim()).ElementAt(6));
        Assert.Equal(["512", "64"], lines[2..].Select(l => l.Trim().Trim('|').Split('|').Select(c => c.Trim()).ElementAt(6)));
        Assert.DoesNotContain("n_batch", BenchReport.Markdown([Pp()]));
    }

    [Fact]
    public void TheNopoColumnAppearsWhenARowKeepsTheCpuLayersOnTheCpu()
    {
        string[] lines = BenchReport.Markdown([Pp(), Pp() with { NoOpOffload = true }]).TrimEnd('\n').Split('\n');
        Assert.Equal(["model", "size", "params", "backend", "ngl", "threads", "nopo", "test", "t/s", "B/tok", "GB/s", "% roofline"], Cells(lines[0]));
        Assert.Equal("0", Cells(lines[2])[6]);
        Assert.Equal("1", Cells(lines[3])[6]);
        Assert.Equal("pp8", Cells(lines[3])[7]);
        JsonElement[] rows = [.. JsonDocument.Parse(BenchReport.Json([Pp(), Pp() with { NoOpOffload = true }]).ToJsonString()).RootElement.EnumerateArray()];
        Assert.Equal([0, 1], rows.Select(r => r.GetProperty("no_op_offload").GetInt32()));
        string[] csv = BenchReport.Csv([Pp() with { NoOpOffload = true }]).TrimEnd('\n').Split('\n');
        Assert.Equal("1", Record(csv[0].Split(','), csv[1])["no_op_offload"]);

        static string[] Cells(string line) => [.. line.Trim().Trim('|').Split('|').Select(c => c.Trim())];
    }

    [Fact]
    public void TheSweepChartHasALinePerTestAndOffloadSetting()
    {
        var rows = new List<BenchResult>();
        foreach (int ngl in new[] { 0, 1, 2 })
        {
            rows.Add(Pp() with { NGpuLayers = ngl });
            rows.Add(Pp() with { NGpuLayers = ngl, NoOpOffload = true });
            rows.Add(Tg() with { NGpuLayers = ngl });
        }

        string path = Path.Combine(Path.GetTempPath(), $"gpullama-sweep-{Guid.NewGuid():N}.svg");
        try
        {
            BenchReport.WriteSweepChart(rows, path);
            string svg = File.ReadAllText(path);
            Assert.StartsWith("<?xml", svg);
            foreach (string series in new[] { ">pp8<", ">pp8 nopo<", ">tg4<" })
            {
                Assert.Contains(series, svg);
            }

            Assert.Contains("GPU layers (--gpu-layers)", svg);

            // two models and two thread counts: each combination its own line
            BenchReport.WriteSweepChart([.. rows.Take(3), .. rows.Take(3).Select(r => r with { ModelType = "tiny BF16", NThreads = 1 })], path);
            svg = File.ReadAllText(path);
            foreach (string series in new[] { ">tiny F16 pp8 t2<", ">tiny BF16 pp8 t1 nopo<" })
            {
                Assert.Contains(series, svg);
            }
        }
        finally
        {
            File.Delete(path);
        }

        var e = Assert.Throws<GpuLlama.GpuLlamaException>(() => BenchReport.WriteSweepChart(rows, "/nonexistent-dir/chart.svg"));
        Assert.Contains("--chart /nonexistent-dir/chart.svg", e.Message);
    }

    [Fact]
    public void APromptThenGenerateRowIsLlamaBenchsPgTestWithoutBandwidthColumns()
    {
        // pp16+tg4: 20 tokens in 0.5 s and 0.25 s → 40 and 80 t/s
        BenchResult pg = Row("model.gguf", prompt: 16, gen: 4, [500_000_000, 250_000_000]);
        Assert.Equal("pp16+tg4", pg.Test);
        Assert.False(pg.IsGeneration);
        Assert.Equal(60.0, pg.AvgTs, 12);
        string[] cells = BenchReport.Markdown([pg]).TrimEnd('\n').Split('\n')[2].Trim().Trim('|').Split('|').Select(c => c.Trim()).ToArray();
        Assert.Equal(["pp16+tg4", "60.00 ± 28.28", "", "", ""], cells[6..]);
        JsonElement row = JsonDocument.Parse(BenchReport.Json([pg]).ToJsonString()).RootElement[0];
        Assert.Equal(16, row.GetProperty("n_prompt").GetInt32());
        Assert.Equal(4, row.GetProperty("n_gen").GetInt32());
        Assert.Equal(JsonValueKind.Null, row.GetProperty("gb_per_s").ValueKind);
    }

    [Fact]
    public void SizesAndParameterCountsReadLikeLlamaBench()
    {
        Assert.Equal("1.00 GiB", BenchReport.Size(1L << 30));
        Assert.Equal("255.82 MiB", BenchReport.Size(268_250_112));
        Assert.Equal("8.03 B", BenchReport.Params(8_030_261_248));
        Assert.Equal("134.11 M", BenchReport.Params(134_105_856));
    }

    [Fact]
    public void JsonHasLlamaBenchsFieldsAndOurs()
    {
        JsonElement[] rows = [.. JsonDocument.Parse(BenchReport.Json([Pp(), Tg()]).ToJsonString()).RootElement.EnumerateArray()];
        Assert.Equal(2, rows.Length);
        JsonElement pp = rows[0], tg = rows[1];

        // what llama-bench -o json writes, under the same names (bench/compare-llama-bench.sh reads these)
        Assert.Equal(8, pp.GetProperty("n_prompt").GetInt32());
        Assert.Equal(0, pp.GetProperty("n_gen").GetInt32());
        Assert.Equal(0, tg.GetProperty("n_prompt").GetInt32());
        Assert.Equal(4, tg.GetProperty("n_gen").GetInt32());
        Assert.Equal(3.0, tg.GetProperty("avg_ts").GetDouble(), 12);
        Assert.Equal(Math.Sqrt(2), tg.GetProperty("stddev_ts").GetDouble(), 12);
        Assert.Equal(1_500_000_000, tg.GetProperty("avg_ns").GetInt64());
        Assert.Equal(707_106_781, tg.GetProperty("stddev_ns").GetInt64());
        Assert.Equal([2_000_000_000L, 1_000_000_000L], tg.GetProperty("samples_ns").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal([2.0, 4.0], tg.GetProperty("samples_ts").EnumerateArray().Select(e => e.GetDouble()));
        foreach (string field in new[] { "build_commit", "model_filename", "model_type", "model_size", "model_n_params", "backends", "n_batch", "n_threads", "type_k", "type_v", "n_gpu_layers", "test_time" })
        {
            Assert.True(tg.TryGetProperty(field, out _), field);
        }

        Assert.Equal(3L << 30, tg.GetProperty("model_size").GetInt64());

        // ours: bandwidth for tg, null for pp
        Assert.Equal(1_000_000_000, tg.GetProperty("bytes_per_token").GetInt64());
        Assert.Equal(3.0, tg.GetProperty("gb_per_s").GetDouble(), 12);
        Assert.Equal(6.0, tg.GetProperty("roofline_gb_per_s").GetDouble(), 12);
        Assert.Equal(50.0, tg.GetProperty("roofline_pct").GetDouble(), 12);
        Assert.Equal(JsonValueKind.Null, pp.GetProperty("gb_per_s").ValueKind);
        Assert.Equal(JsonValueKind.Null, pp.GetProperty("roofline_pct").ValueKind);
        Assert.Equal(JsonValueKind.Null, pp.GetProperty("roofline_gb_per_s").ValueKind);
    }

    [Fact]
    public void CsvHasOneHeaderAndQuotesFieldsWithCommas()
    {
        string[] lines = BenchReport.Csv([Pp("a,\"b\".gguf"), Tg()]).TrimEnd('\n').Split('\n');
        Assert.Equal(3, lines.Length);
        string[] header = lines[0].Split(',');
        Dictionary<string, string> pp = Record(header, lines[1]);
        Dictionary<string, string> tg = Record(header, lines[2]);
        Assert.Equal("a,\"b\".gguf", pp["model_filename"]);
        Assert.Equal("8", pp["n_prompt"]);
        Assert.Equal("60.000000", pp["avg_ts"]);
        Assert.Equal("28.284271", pp["stddev_ts"]);
        Assert.Equal("", pp["gb_per_s"]);
        Assert.Equal("", pp["roofline_pct"]);
        Assert.Equal("4", tg["n_gen"]);
        Assert.Equal("1500000000", tg["avg_ns"]);
        Assert.Equal("3.000000", tg["avg_ts"]);
        Assert.Equal("1.414214", tg["stddev_ts"]);
        Assert.Equal("3.000", tg["gb_per_s"]);
        Assert.Equal("6.000", tg["roofline_gb_per_s"]);
        Assert.Equal("50.00", tg["roofline_pct"]);
    }

    /// <summary>One CSV line (RFC 4180 quoting) as header → value; fails unless the field counts match.</summary>
    private static Dictionary<string, string> Record(string[] header, string line)
    {
        var fields = new List<string>();
        var field = new System.Text.StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quoted && c == '"' && i + 1 < line.Length && line[i + 1] == '"')
            {
                field.Append('"');
                i++;
            }
            else if (c == '"')
            {
                quoted = !quoted;
            }
            else if (c == ',' && !quoted)
            {
                fields.Add(field.ToString());
                field.Clear();
            }
            else
            {
                field.Append(c);
            }
        }

        fields.Add(field.ToString());
        Assert.Equal(header.Length, fields.Count);
        return header.Zip(fields).ToDictionary(p => p.First, p => p.Second);
    }
}

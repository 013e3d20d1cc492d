using System.Diagnostics;
using Xunit;

namespace GpuLlama.Tests.Cli;

/// <summary>A fact that runs a shell script: skipped, naming what is missing, where bash or python3 is not on PATH.</summary>
public sealed class ScriptFactAttribute : FactAttribute
{
    public ScriptFactAttribute()
    {
        string[] missing = [.. new[] { "bash", "python3" }.Where(t => CompareScriptTests.Which(t) is null)];
        if (missing.Length > 0)
        {
            Skip = $"{string.Join(" and ", missing)} not on PATH";
        }
    }
}

/// <summary>
/// bench/compare-llama-bench.sh against stand-ins for llama-bench and gpullama that log their arguments and print
/// canned JSON: the order of the runs, the arguments both get, the pooled statistics, the table and the errors.
/// (The script against the real llama-bench is a manual step; see bench/README.md.)
/// </summary>
public sealed class CompareScriptTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("gpullama-compare-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Script => Path.Combine(RepoRoot(), "bench", "compare-llama-bench.sh");

    internal static string? Which(string tool) => (Environment.GetEnvironmentVariable("PATH") ?? "")
        .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
        .Select(d => Path.Combine(d, tool))
        .FirstOrDefault(File.Exists);

    private static string RepoRoot()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "GpuLlama.sln")))
        {
            dir = Path.GetDirectoryName(dir);
        }

        return dir ?? throw new InvalidOperationException("repository root not found above " + AppContext.BaseDirectory);
    }

    /// <summary>A stand-in tool: logs "NAME ARGS" to calls.log and prints NAME.K.json on its K-th call.</summary>
    private string Fake(string name, int exitCode = 0)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, $$"""
            #!/usr/bin/env bash
            d=$(dirname "$0")
            echo "{{name}} $*" >> "$d/calls.log"
            k=$(( $(cat "$d/{{name}}.count" 2>/dev/null || echo 0) + 1 ))
            echo $k > "$d/{{name}}.count"
            echo "{{name}}: some progress on stderr" >&2
            cat "$d/{{name}}.$k.json" 2>/dev/null
            exit {{exitCode}}
            """.Replace("\r\n", "\n"));
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    /// <summary>Canned -o json output: a pp8 and a tg4 row, each from its per-repetition tokens/s.</summary>
    private void Output(string name, int call, double[] pp, double[] tg)
    {
        static string Row(int p, int g, double[] ts)
        {
            double mean = ts.Average();
            double sd = Math.Sqrt(ts.Sum(x => (x - mean) * (x - mean)) / (ts.Length - 1));
            string samples = string.Join(", ", ts.Select(x => x.ToString("R", System.Globalization.CultureInfo.InvariantCulture)));
            return $$"""{"build_commit": "b{{p}}", "n_prompt": {{p}}, "n_gen": {{g}}, "avg_ts": {{mean:R}}, "stddev_ts": {{sd:R}}, "samples_ts": [{{samples}}]}""";
        }

        File.WriteAllText(Path.Combine(_dir, $"{name}.{call}.json"), $"[{Row(8, 0, pp)},\n{Row(0, 4, tg)}]\n");
    }

    /// <summary>Runs the script with LLAMA_BENCH, GPULLAMA and <paramref name="env"/> set (null: unset) and nothing else inherited of ours.</summary>
    private (int Code, string Out, string Err) Compare(string? llamaBench, string? gpullama, Dictionary<string, string>? env, params string[] args)
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        start.ArgumentList.Add(Script);
        foreach (string a in args)
        {
            start.ArgumentList.Add(a);
        }

        foreach (string name in new[] { "LLAMA_BENCH", "GPULLAMA", "LLAMA_BENCH_ARGS", "GPULLAMA_ARGS" })
        {
            start.Environment.Remove(name);
        }

        if (llamaBench is not null)
        {
            start.Environment["LLAMA_BENCH"] = llamaBench;
        }

        if (gpullama is not null)
        {
            start.Environment["GPULLAMA"] = gpullama;
        }

        foreach ((string k, string v) in env ?? [])
        {
            start.Environment[k] = v;
        }

        using Process p = Process.Start(start)!;
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(60_000), "the script did not finish in 60 s");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    private string Model()
    {
        string model = Path.Combine(_dir, "model.gguf");
        File.WriteAllText(model, "not read by the stand-ins");
        return model;
    }

    [ScriptFact]
    public void RunsBothToolsInTurnWithTheSameArgumentsAndPoolsTheRounds()
    {
        string model = Model();
        // llama.cpp: pp8 rounds of mean 100 and 110 (sd 10 each) pool to 105 ± 10; tg4: 20 and 20 → 20 ± 0.
        Output("llama-bench", 1, [100 - 10 / Math.Sqrt(2), 100 + 10 / Math.Sqrt(2)], [20, 20]);
        Output("llama-bench", 2, [110 - 10 / Math.Sqrt(2), 110 + 10 / Math.Sqrt(2)], [20, 20]);
        // gpullama: pp8 50 and 60 (sd 0) pool to 55 ± sqrt(100/3); tg4: 10 and 30 → 20 ± sqrt(400/3)
        Output("gpullama", 1, [50, 50], [10, 10]);
        Output("gpullama", 2, [60, 60], [30, 30]);

        var r = Compare(Fake("llama-bench"), Fake("gpullama"), null, model, "-p", "8", "-n", "4", "-r", "2", "-t", "3");
        Assert.True(r.Code == 0, r.Err);

        string common = "-p 8 -n 4 -r 2 -t 3 -ngl 0 -o json";
        Assert.Equal(
            [$"llama-bench -m {model} {common}", $"gpullama bench {model} {common}", $"llama-bench -m {model} {common}", $"gpullama bench {model} {common}"],
            File.ReadAllLines(Path.Combine(_dir, "calls.log")));

        string[] table = [.. r.Out.Split('\n').Where(l => l.StartsWith('|'))];
        Assert.Equal(4, table.Length);
        Assert.Equal(["test", "llama.cpp t/s", "gpullama t/s", "gpullama / llama.cpp", "per-round ratio"], Cells(table[0]));
        Assert.Equal(["pp8", "105.00 ± 10.00", "55.00 ± 5.77", "0.524", "0.500–0.545"], Cells(table[2]));
        Assert.Equal(["tg4", "20.00 ± 0.00", "20.00 ± 11.55", "1.000", "0.500–1.500"], Cells(table[3]));
        Assert.Contains("2 rounds x 2 repetitions", r.Out);

        static string[] Cells(string line) => [.. line.Trim().Trim('|').Split('|').Select(c => c.Trim())];
    }

    [ScriptFact]
    public void ExtraArgumentsGoToOneToolOnly()
    {
        string model = Model();
        Output("llama-bench", 1, [100, 100], [20, 20]);
        Output("gpullama", 1, [50, 50], [10, 10]);
        var env = new Dictionary<string, string> { ["LLAMA_BENCH_ARGS"] = "-fa off --poll 0", ["GPULLAMA_ARGS"] = "--devices cuda:0" };
        var r = Compare(Fake("llama-bench"), Fake("gpullama"), env, model, "-p", "8", "-n", "4", "-r", "2", "-t", "1", "-ngl", "99", "--rounds", "1");
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal(
            [$"llama-bench -m {model} -p 8 -n 4 -r 2 -t 1 -ngl 99 -o json -fa off --poll 0", $"gpullama bench {model} -p 8 -n 4 -r 2 -t 1 -ngl 99 -o json --devices cuda:0"],
            File.ReadAllLines(Path.Combine(_dir, "calls.log")));
    }

    [ScriptFact]
    public void MissingLlamaBenchIsOneClearLine()
    {
        string model = Model();
        var unset = Compare(null, Fake("gpullama"), null, model);
        Assert.NotEqual(0, unset.Code);
        Assert.Equal("compare-llama-bench.sh: error: LLAMA_BENCH is not set: point it at llama.cpp's llama-bench binary (e.g. LLAMA_BENCH=~/llama.cpp/build/bin/llama-bench)", unset.Err.TrimEnd('\n'));
        Assert.Equal("", unset.Out);

        string absent = Path.Combine(_dir, "no-such-llama-bench");
        var missing = Compare(absent, Fake("gpullama"), null, model);
        Assert.NotEqual(0, missing.Code);
        Assert.Equal($"compare-llama-bench.sh: error: LLAMA_BENCH={absent}: no such file", missing.Err.TrimEnd('\n'));
    }

    [ScriptFact]
    public void AFailingToolStopsTheComparison()
    {
        string model = Model();
        Output("llama-bench", 1, [100, 100], [20, 20]);
        var r = Compare(Fake("llama-bench"), Fake("gpullama", exitCode: 3), null, model, "--rounds", "2");
        Assert.NotEqual(0, r.Code);
        Assert.Equal("compare-llama-bench.sh: error: gpullama failed; see the lines above", r.Err.TrimEnd('\n').Split('\n')[^1]);
        Assert.Contains("gpullama: some progress on stderr", r.Err);
        Assert.Equal(2, File.ReadAllLines(Path.Combine(_dir, "calls.log")).Length); // stopped after round 1's gpullama
    }
}

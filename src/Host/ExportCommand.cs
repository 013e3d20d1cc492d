using System.CommandLine;
using GpuLlama.Formats;

namespace GpuLlama.Host;

/// <summary>
/// gpullama export: writes any model this engine reads (a synthetic preset included) as a GGUF file that llama.cpp
/// reads too — how a TinyLlama- or Llama-3-8B-shaped model is benchmarked side by side without a download.
/// </summary>
public static class ExportCommand
{
    public static Command Create()
    {
        var source = new Argument<string>("MODEL") { Description = "A model file or directory, or synthetic:PRESET[:dtype] (dtype one of " + string.Join(", ", SyntheticSource.SupportedTypes.Select(t => t.ToString().ToLowerInvariant())) + ")." };
        var output = new Argument<string>("OUTPUT") { Description = "The GGUF file to write." };
        var command = new Command("export", "Write a model as a GGUF file (tensors keep their type).") { source, output };
        command.SetAction(r =>
        {
            string p = r.GetValue(source)!;
            string o = r.GetValue(output)!;
            using IWeightSource src = WeightSource.Open(p);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            GgufExport.ExportGguf(src, o);
            Console.Error.WriteLine($"wrote {o} ({new FileInfo(o).Length / (double)(1 << 20):F1} MiB) in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }
}

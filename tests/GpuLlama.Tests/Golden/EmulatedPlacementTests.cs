using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Kernels;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Golden;

/// <summary>
/// The GPU path without a GPU: the fixtures run with --gpu-layers 0, 1, n/2, n, n+1 on ILGPU's CPU accelerator
/// ("emulated") must give the CPU path's greedy tokens and logits within 1e-4 (F32) / 1e-3 (F16, BF16, quantized)
/// of max|logit|; and layer splits over two and three emulated devices (with a CPU layer between two of them, as a
/// placement file allows) must give the same.
/// </summary>
[Collection("emulated")]
public sealed class EmulatedPlacementTests
{
    // ILGPU's CPU accelerator runs one OS thread per GPU thread, so a forward pass takes seconds: the F32 file goes
    // through every placement of the acceptance criteria, the other formats through one layer and all layers.
    public static TheoryData<string, double, string> Models => new()
    {
        { "tiny-llama-a/tiny-llama-a-f32.gguf", 1e-4, "0,1,n/2,n,n+1" },
        { "tiny-llama-a/tiny-llama-a-f16.gguf", 1e-3, "n+1" },
        { "tiny-llama-a/tiny-llama-a-bf16.gguf", 1e-3, "1" },
        { "tiny-llama-a", 1e-3, "n/2" },                              // HF directory: BF16, RopeStyle.Halves
        { "stories260K/stories260K.bin", 1e-4, "n+1" },               // llama2.c, GQA, tied head
    };

    private const int Steps = 3;

    private static (float[] Logits, int[] Greedy) Cpu(IWeightSource source, int[] prompt)
    {
        using var cpu = new CpuDevice(2);
        return GoldenRun.Run(source, DevicePlacement.All(cpu, source.Config.Layers), prompt, Steps);
    }

    // a short prompt still exercises the batched (prefill) kernels; the CPU path is checked on the full prompt elsewhere
    private static int[] Prompt(IWeightSource s) => Golden.Load("tiny-llama-a", "f32").PromptIds[..8];

    [FixtureTheory("tiny-llama-a/golden.json")]
    [MemberData(nameof(Models))]
    public void GpuLayersMatchTheCpuPath(string model, double bound, string placements)
    {
        using IWeightSource source = WeightSource.Open(Fixtures.Get(model));
        int[] prompt = Prompt(source);
        (float[] refLogits, int[] refGreedy) = Cpu(source, prompt);
        int n = source.Config.Layers;
        var provider = new IlgpuDeviceProvider();
        foreach (int gpuLayers in placements.Split(',').Select(p => p switch { "n/2" => n / 2, "n" => n, "n+1" => n + 1, _ => int.Parse(p) }))
        {
            using var cpu = new CpuDevice(2);
            using IDevice gpu = provider.Create("emulated:0");
            LayerPlan plan = LayerPlacement.FromGpuLayers(n, gpuLayers, [new DeviceInfo("emulated:0", DeviceKind.Emulated, 1L << 32, 1L << 32, false)], null, SplitMode.Layer, 0);
            (float[] logits, int[] greedy) = GoldenRun.Run(source, Resolve(plan, cpu, gpu), prompt, Steps);
            double error = Golden.RelativeError(logits, refLogits);
            Assert.True(error <= bound, $"{model} --gpu-layers {gpuLayers}: max|Δ|/max|ref| = {error:E2} > {bound:E0}");
            Assert.Equal(refGreedy, greedy);
        }
    }

    [FixtureTheory("tiny-llama-a/golden.json")]
    [InlineData("1,1,2")]
    public void LayerSplitsOverSeveralDevicesMatchTheCpuPath(string split)
    {
        using IWeightSource source = WeightSource.Open(Fixtures.Get("tiny-llama-a/tiny-llama-a-f32.gguf"));
        int[] prompt = Prompt(source);
        (float[] refLogits, int[] refGreedy) = Cpu(source, prompt);
        float[] proportions = [.. split.Split(',').Select(float.Parse)];
        var provider = new IlgpuDeviceProvider();
        var gpus = Enumerable.Range(0, proportions.Length).Select(i => provider.Create($"emulated:{i}")).ToList();
        try
        {
            using var cpu = new CpuDevice(2);
            var infos = gpus.Select(g => new DeviceInfo(g.Name, DeviceKind.Emulated, 1L << 32, 1L << 32, false)).ToList();
            LayerPlan plan = LayerPlacement.FromGpuLayers(source.Config.Layers, 99, infos, proportions, SplitMode.Layer, 0);
            Assert.Equal(proportions.Count(p => p > 0), plan.DeviceNames().Count - 1);
            (float[] logits, int[] greedy) = GoldenRun.Run(source, Resolve(plan, cpu, [.. gpus]), prompt, Steps);
            Assert.True(Golden.RelativeError(logits, refLogits) <= 1e-4, $"split {split}: {Golden.RelativeError(logits, refLogits):E2}");
            Assert.Equal(refGreedy, greedy);
        }
        finally
        {
            gpus.ForEach(g => g.Dispose());
        }
    }

    [FixtureFact("tiny-llama-a/golden.json")]
    public void PlacementFileWithACpuLayerBetweenTwoDevices()
    {
        using IWeightSource source = WeightSource.Open(Fixtures.Get("tiny-llama-a/tiny-llama-a-f16.gguf"));
        int[] prompt = Prompt(source);
        (float[] refLogits, int[] refGreedy) = Cpu(source, prompt);
        LayerPlan plan = PlacementFile.Parse("""{"devices": ["emulated:0", "emulated:1"], "layers": {"0": "emulated:0", "1-2": "cpu", "3": "emulated:1"}, "output": "emulated:0"}""",
            "placement.json", source.Config.Layers, ["emulated:0", "emulated:1"]);
        var provider = new IlgpuDeviceProvider();
        using IDevice a = provider.Create("emulated:0");
        using IDevice b = provider.Create("emulated:1");
        using var cpu = new CpuDevice(2);
        (float[] logits, int[] greedy) = GoldenRun.Run(source, Resolve(plan, cpu, a, b), prompt, Steps);
        Assert.True(Golden.RelativeError(logits, refLogits) <= 1e-3);
        Assert.Equal(refGreedy, greedy);
    }

    private static DevicePlacement Resolve(LayerPlan plan, CpuDevice cpu, params IDevice[] gpus)
    {
        IDevice Of(string name) => name == "cpu" ? cpu : gpus.First(g => g.Name == name);
        return new DevicePlacement(Of(plan.Input), [.. plan.Layers.Select(Of)], Of(plan.Output));
    }
}

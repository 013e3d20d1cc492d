using GpuLlama.Devices;
using Xunit;

namespace GpuLlama.Tests.Placement;

/// <summary>
/// --gpu-layers semantics, checked by hand against llama.cpp's llama_model::load_tensors: i_gpu_start =
/// max(n_layer - ngl, 0), act_gpu_layers = min(ngl, n_layer + 1), the output is layer n_layer, and the device of
/// an offloaded layer is upper_bound(cumulative splits, (il - i_gpu_start) / act_gpu_layers).
/// </summary>
public sealed class LayerPlacementTests
{
    private static DeviceInfo Gpu(string name, long freeMiB) => new(name, DeviceKind.Cuda, freeMiB << 20, freeMiB << 20, true);

    private static string Layout(LayerPlan p) => string.Join(" ", p.Layers.Select(Short)) + " | " + Short(p.Output);

    private static string Short(string d) => d == "cpu" ? "c" : d[^1..];

    [Theory]
    [InlineData(4, 0, "c c c c | c")]
    [InlineData(4, 1, "c c c 0 | c")]   // the last repeating layer first; the output needs ngl > n_layer
    [InlineData(4, 2, "c c 0 0 | c")]
    [InlineData(4, 4, "0 0 0 0 | c")]   // ngl = n_layer: every layer, output stays on the CPU
    [InlineData(4, 5, "0 0 0 0 | 0")]   // ngl = n_layer + 1: the output too
    [InlineData(4, 99, "0 0 0 0 | 0")]
    public void OneGpu(int layers, int ngl, string expected)
    {
        LayerPlan plan = LayerPlacement.FromGpuLayers(layers, ngl, [Gpu("cuda:0", 1000)], null, SplitMode.Layer, 0);
        Assert.Equal(expected, Layout(plan));
        Assert.Equal("cpu", plan.Input);
        Assert.Equal(Math.Min(ngl, layers + 1), plan.OffloadedCount);
    }

    [Theory]
    // 8 layers + output = 9 offloaded; split 1:1 → cumulative [0.5, 1]: fractions 0/9..4/9 < 0.5 → dev 0, 5/9.. → dev 1
    [InlineData(8, 99, "1,1", "0 0 0 0 0 1 1 1 | 1")]
    // 3:1 → [0.75, 1]: fractions < 0.75 are 0..6/9 → 7 on dev 0
    [InlineData(8, 99, "3,1", "0 0 0 0 0 0 0 1 | 1")]
    // 4 offloaded of 8 (no output): fractions 0, .25, .5, .75 with [0.5, 1] → 0 0 1 1
    [InlineData(8, 4, "1,1", "c c c c 0 0 1 1 | c")]
    // a zero share gets nothing
    [InlineData(8, 99, "0,1", "1 1 1 1 1 1 1 1 | 1")]
    public void TwoGpusByTensorSplit(int layers, int ngl, string split, string expected)
    {
        float[] s = [.. split.Split(',').Select(float.Parse)];
        LayerPlan plan = LayerPlacement.FromGpuLayers(layers, ngl, [Gpu("cuda:0", 1000), Gpu("cuda:1", 1000)], s, SplitMode.Layer, 0);
        Assert.Equal(expected, Layout(plan));
    }

    [Fact]
    public void DefaultSplitFollowsFreeMemory()
    {
        // 3000 MiB vs 1000 MiB free → 3:1, as llama.cpp does with ggml_backend_dev_memory
        LayerPlan plan = LayerPlacement.FromGpuLayers(8, 99, [Gpu("cuda:0", 3000), Gpu("cuda:1", 1000)], null, SplitMode.Layer, 0);
        Assert.Equal("0 0 0 0 0 0 0 1 | 1", Layout(plan));
    }

    [Fact]
    public void SplitModeNoneUsesTheMainGpuOnly()
    {
        LayerPlan plan = LayerPlacement.FromGpuLayers(4, 99, [Gpu("cuda:0", 1000), Gpu("cuda:1", 1000)], [1, 1], SplitMode.None, 1);
        Assert.Equal("1 1 1 1 | 1", Layout(plan));
        Assert.Throws<GpuLlamaException>(() => LayerPlacement.FromGpuLayers(4, 99, [Gpu("cuda:0", 1000)], null, SplitMode.None, 3));
    }

    [Fact]
    public void ThreeGpusUnevenSplit()
    {
        LayerPlan plan = LayerPlacement.FromGpuLayers(10, 99, [Gpu("cuda:0", 1), Gpu("cuda:1", 1), Gpu("cuda:2", 1)], [2, 1, 1], SplitMode.Layer, 0);
        // 11 offloaded, cumulative [0.5, 0.75, 1]: i/11 < .5 → i ≤ 5; < .75 → i ≤ 8; rest dev 2 (incl. output)
        Assert.Equal("0 0 0 0 0 0 1 1 1 2 | 2", Layout(plan));
    }

    [Fact]
    public void DescribeAndSummaryLookLikeLlamaCpp()
    {
        LayerPlan plan = LayerPlacement.FromGpuLayers(32, 24, [Gpu("cuda:0", 1000)], null, SplitMode.Layer, 0);
        Assert.Equal("layers 0-7 cpu, 8-31 cuda:0; output cpu", LayerPlacement.Describe(plan));
        Assert.StartsWith("offloaded 24/33 layers to GPU", LayerPlacement.Summary(plan, 32));
        LayerPlan all = LayerPlacement.FromGpuLayers(32, 33, [Gpu("cuda:0", 1000)], null, SplitMode.Layer, 0);
        Assert.StartsWith("offloaded 33/33 layers to GPU", LayerPlacement.Summary(all, 32));
    }

    [Fact]
    public void BadInputIsOneClearError()
    {
        Assert.Contains("--gpu-layers -1", Assert.Throws<GpuLlamaException>(() => LayerPlacement.FromGpuLayers(4, -1, [Gpu("cuda:0", 1)], null, SplitMode.Layer, 0)).Message);
        Assert.Contains("--tensor-split", Assert.Throws<GpuLlamaException>(() => LayerPlacement.FromGpuLayers(4, 4, [Gpu("cuda:0", 1)], [1, 1, 1], SplitMode.Layer, 0)).Message);
        Assert.Contains("zero", Assert.Throws<GpuLlamaException>(() => LayerPlacement.FromGpuLayers(4, 4, [Gpu("cuda:0", 1)], [0], SplitMode.Layer, 0)).Message);
    }
}

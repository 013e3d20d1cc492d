using GpuLlama.Devices;
using Xunit;

namespace GpuLlama.Tests.Placement;

public sealed class PlacementFileTests
{
    private static readonly string[] s_available = ["cuda:0", "cuda:1", "emulated:0"];

    [Fact]
    public void RangesMapEveryLayer()
    {
        LayerPlan p = PlacementFile.Parse("""{"devices": ["cuda:0","cuda:1"], "layers": {"0-9": "cpu", "10-21": "cuda:0", "22-31": "cuda:1"}, "output": "cuda:1"}""", "p.json", 32, s_available);
        Assert.Equal("cpu", p.Input);
        Assert.Equal("cuda:1", p.Output);
        Assert.All(p.Layers.Take(10), d => Assert.Equal("cpu", d));
        Assert.All(p.Layers.Skip(10).Take(12), d => Assert.Equal("cuda:0", d));
        Assert.All(p.Layers.Skip(22), d => Assert.Equal("cuda:1", d));
    }

    [Fact]
    public void ACpuLayerBetweenTwoDevicesAndDefaultOutput()
    {
        LayerPlan p = PlacementFile.Parse("""{"layers": {"0": "cuda:0", "1": "cpu", "2-3": "cuda:1"}}""", "p.json", 4, s_available);
        Assert.Equal(["cuda:0", "cpu", "cuda:1", "cuda:1"], p.Layers);
        Assert.Equal("cuda:1", p.Output);
    }

    [Theory]
    [InlineData("""{"layers": {"0-2": "cpu"}}""", "layers 3 are not assigned")]
    [InlineData("""{"layers": {"0-3": "cpu", "2": "cuda:0"}}""", "layer 2 is assigned twice")]
    [InlineData("""{"layers": {"0-3": "cuda:7"}}""", "unknown device 'cuda:7'")]
    [InlineData("""{"devices": ["cuda:0"], "layers": {"0-3": "cuda:1"}}""", "not in \"devices\"")]
    [InlineData("""{"layers": {"0-4": "cpu"}}""", "outside the model's layers 0-3")]
    [InlineData("""{"layers": {"3-1": "cpu"}}""", "is not of the form")]
    [InlineData("""{"layers": {"a-b": "cpu"}}""", "is not of the form")]
    [InlineData("""{"layers": {"0-3": "cpu"}, "output": "opencl:9"}""", "unknown device 'opencl:9'")]
    [InlineData("""{"layers": [1,2]}""", "missing \"layers\"")]
    [InlineData("""{"layers": {"0-3": "cpu" """, "invalid JSON")]
    public void BadFilesGiveOneLineNamingTheFile(string json, string expected)
    {
        var e = Assert.Throws<GpuLlamaException>(() => PlacementFile.Parse(json, "place.json", 4, s_available));
        Assert.Contains("place.json", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}

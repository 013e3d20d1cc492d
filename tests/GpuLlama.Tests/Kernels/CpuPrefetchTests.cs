using GpuLlama.Devices;
using Xunit;

namespace GpuLlama.Tests.Kernels;

/// <summary>
/// How the decode's prefetch distance is chosen: 4096 bytes on Intel, none elsewhere, GPULLAMA_PREFETCH's value when
/// it is a multiple of 64 in [0, 65536], and a one-line error naming the variable when it is not.
/// </summary>
public sealed class CpuPrefetchTests
{
    [Theory]
    [InlineData(null, true, 4096)]
    [InlineData(null, false, 0)]
    [InlineData("", true, 4096)]
    [InlineData("0", true, 0)]
    [InlineData("2048", false, 2048)]
    [InlineData("65536", true, 65536)]
    [InlineData("100", true, 4096)]      // not a multiple of 64: the default (Validate reports it)
    [InlineData("65600", false, 0)]      // too far
    [InlineData("-64", true, 4096)]
    [InlineData("4k", false, 0)]
    public void ChoosesTheDistance(string? text, bool intel, int expected) =>
        Assert.Equal(expected, CpuPrefetch.Choose(text, intel));

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("0")]
    [InlineData("8192")]
    public void AcceptsValidSettings(string? text) => Assert.Null(CpuPrefetch.Validate(text));

    [Theory]
    [InlineData("100")]
    [InlineData("-64")]
    [InlineData("4k")]
    [InlineData("131072")]
    [InlineData(" 64")]
    public void RejectsInvalidSettingsInOneLine(string text)
    {
        string? error = CpuPrefetch.Validate(text);
        Assert.NotNull(error);
        Assert.StartsWith($"GPULLAMA_PREFETCH '{text}'", error);
        Assert.DoesNotContain('\n', error);
    }

    [Fact]
    public void TheProcessDistanceFollowsTheVendorOrTheOverride()
    {
        string? text = Environment.GetEnvironmentVariable(CpuPrefetch.EnvironmentVariable);
        Assert.Equal(CpuPrefetch.Choose(text, CpuPrefetch.IsIntel()), CpuPrefetch.Distance);
        using var cpu = new CpuDevice(1);
        Assert.Equal(CpuPrefetch.Distance > 0, cpu.Description.Contains("prefetch", StringComparison.Ordinal));
    }
}

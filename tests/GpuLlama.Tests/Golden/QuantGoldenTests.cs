using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Golden;

/// <summary>
/// Quantized GGUFs computed in place on the CPU. Our kernels keep activations in float32 and dequantize blocks
/// exactly, so they reproduce the *dequantized-F32 reference* of golden.json (the same weights expanded to F32
/// and run by llama.cpp), within 2e-3 and with the same greedy tokens — not llama.cpp's own quantized run, which
/// rounds activations to 8 bits inside its dot products and moves the logits by 0.2–0.4.
/// </summary>
public sealed class QuantGoldenTests
{
    public static TheoryData<string, string, string> Cases => new()
    {
        { "tiny-llama-a", "tiny-llama-a-q8_0.gguf", "q8_0" },
        { "tiny-llama-a", "tiny-llama-a-Q4_0.gguf", "Q4_0" },
        { "tiny-llama-a", "tiny-llama-a-Q4_K_M.gguf", "Q4_K_M" },   // falls back to Q5_0 + Q8_0 (rows of 128)
        { "tiny-llama-a", "tiny-llama-a-Q6_K.gguf", "Q6_K" },       // falls back to Q8_0
        { "tiny-llama-kq", "tiny-llama-kq-Q4_K_M.gguf", "Q4_K_M" }, // real Q4_K + Q6_K tensors
        { "tiny-llama-kq", "tiny-llama-kq-Q6_K.gguf", "Q6_K" },
    };

    [FixtureTheory("tiny-llama-kq/golden.json")]
    [MemberData(nameof(Cases))]
    public void QuantizedLogitsMatchTheDequantizedReference(string fixture, string file, string variant)
    {
        Golden golden = Golden.Load(fixture, variant, dequantReference: true);
        using IWeightSource source = WeightSource.Open(Fixtures.Get(fixture, file));
        using var cpu = new CpuDevice(2);
        (float[] logits, int[] greedy) = GoldenRun.Run(source, DevicePlacement.All(cpu, source.Config.Layers), golden.PromptIds, golden.Greedy.Length);
        double error = Golden.RelativeError(logits, golden.LastLogits);
        Assert.True(error <= 2e-3, $"{file}: max|Δ|/max|ref| = {error:E2} > 2e-3");
        Assert.Equal(golden.Greedy, greedy);
    }
}

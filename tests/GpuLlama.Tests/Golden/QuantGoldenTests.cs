using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Golden;

/// <summary>
/// Quantized GGUFs computed in place on the CPU, two ways. By default the CPU backend does what llama.cpp's does —
/// activations rounded to 8 bits (Q8_0 / Q8_K blocks, bit for bit as llama.cpp rounds them) and integer dot products
/// — so it reproduces *llama.cpp's own quantized run* (golden.json's variant logits and all its greedy tokens), up to
/// the order of float additions. With exactQuantDots the activations stay float32 and the blocks are dequantized
/// exactly (what the GPU backend computes), which reproduces the *dequantized-F32 reference* instead: the same
/// weights expanded to F32 and run by llama.cpp (the two differ by 0.2–0.4 in the logits here).
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

    /// <summary>
    /// (file, bound on max|Δ|/max|ref| against llama.cpp's quantized run, leading greedy tokens that must agree).
    /// Q8_0 and the K-quants come out within ~2e-7 of llama.cpp with all 32 tokens: the 8-bit activations are the same
    /// bits, so only the order of float additions differs. The Q5_0 file (tiny-llama-a's "Q4_K_M") does too with the
    /// AVX-512 prompt GEMM (7e-8), but the AVX2 fallback's different summation order gives 7.5e-3: this tiny random
    /// model turns a 1-ulp difference of an activation into a different 8-bit rounding downstream, so a bound tighter
    /// than the would test luck, not arithmetic. Q4_0 cannot be held close to this golden either:
    /// llama.cpp repacks Q4_0 weights into 8-row interleaved blocks on AVX2 machines, and its repacked GEMM and its
    /// ggml_vec_dot_q4_0_q8_0 (repacking disabled) differ from each other by 1.6e-2 on this fixture, for the same
    /// reason. We match the second within 8e-8 (both measured with llama.cpp c392e509 on the development machine). On
    /// AVX2 machines this prompt (16-31 tokens) runs on the block-scaled outer kernel, llama.cpp's own formula, and
    /// comes within 7.9e-8 of this golden too; on AVX-512 machines it is shorter than a 32-token tile and takes the
    /// dot tiles (1.6e-2). For these two files the test keeps the bound: 3e-2 and the first 16 tokens.
    /// </summary>
    public static TheoryData<string, string, string, double, int> LlamaCppCases => new()
    {
        { "tiny-llama-a", "tiny-llama-a-q8_0.gguf", "q8_0", 1e-5, 32 },
        { "tiny-llama-a", "tiny-llama-a-Q4_0.gguf", "Q4_0", 3e-2, 16 },
        { "tiny-llama-a", "tiny-llama-a-Q4_K_M.gguf", "Q4_K_M", 3e-2, 16 }, // Q5_0 + Q8_0: see below
        { "tiny-llama-a", "tiny-llama-a-Q6_K.gguf", "Q6_K", 1e-5, 32 },
        { "tiny-llama-kq", "tiny-llama-kq-Q4_K_M.gguf", "Q4_K_M", 1e-5, 32 },
        { "tiny-llama-kq", "tiny-llama-kq-Q6_K.gguf", "Q6_K", 1e-5, 32 },
    };

    [FixtureTheory("tiny-llama-kq/golden.json")]
    [MemberData(nameof(LlamaCppCases))]
    public void QuantizedLogitsMatchLlamaCppsQuantizedRun(string fixture, string file, string variant, double bound, int tokens)
    {
        // Without AVX2 there are no integer kernels and the CPU computes exactly: then the exact reference applies.
        using var cpu = new CpuDevice(2);
        Assert.Equal(!CpuQ8Dot.IsSupported, cpu.ExactQuantDots);
        if (cpu.ExactQuantDots)
        {
            (bound, tokens) = (2e-3, 32);
        }

        Golden golden = Golden.Load(fixture, variant, dequantReference: cpu.ExactQuantDots);
        using IWeightSource source = WeightSource.Open(Fixtures.Get(fixture, file));
        (float[] logits, int[] greedy) = GoldenRun.Run(source, DevicePlacement.All(cpu, source.Config.Layers), golden.PromptIds, golden.Greedy.Length);
        double error = Golden.RelativeError(logits, golden.LastLogits);
        Assert.True(error <= bound, $"{file}: max|Δ|/max|ref| = {error:E2} > {bound:E0}");
        Assert.Equal(golden.Greedy[..tokens], greedy[..tokens]);
    }

    [FixtureTheory("tiny-llama-kq/golden.json")]
    [MemberData(nameof(Cases))]
    public void ExactQuantDotsMatchTheDequantizedReference(string fixture, string file, string variant)
    {
        Golden golden = Golden.Load(fixture, variant, dequantReference: true);
        using IWeightSource source = WeightSource.Open(Fixtures.Get(fixture, file));
        using var cpu = new CpuDevice(2, exactQuantDots: true);
        (float[] logits, int[] greedy) = GoldenRun.Run(source, DevicePlacement.All(cpu, source.Config.Layers), golden.PromptIds, golden.Greedy.Length);
        double error = Golden.RelativeError(logits, golden.LastLogits);
        Assert.True(error <= 2e-3, $"{file}: max|Δ|/max|ref| = {error:E2} > 2e-3");
        Assert.Equal(golden.Greedy, greedy);
    }
}

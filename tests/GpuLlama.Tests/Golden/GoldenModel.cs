using System.Text.Json;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.Tests.Golden;

/// <summary>llama.cpp's reference outputs for a fixture model (golden.json + golden/*.bin).</summary>
public sealed record Golden(int[] PromptIds, float[] LastLogits, int[] Greedy)
{
    /// <summary>Reads variant <paramref name="variant"/> of fixture <paramref name="fixture"/>; <paramref name="dequantReference"/> picks its dequantized-F32 run.</summary>
    public static Golden Load(string fixture, string variant, bool dequantReference = false)
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Get(fixture, "golden.json")));
        JsonElement root = doc.RootElement;
        int[] prompt = [.. root.GetProperty("prompt").GetProperty("ids").EnumerateArray().Select(e => e.GetInt32())];
        JsonElement v = root.GetProperty("variants").GetProperty(variant);
        if (dequantReference)
        {
            v = v.GetProperty("dequant_f32_reference");
        }

        string bin = v.GetProperty("last_logits_bin").GetString()!;
        byte[] bytes = File.ReadAllBytes(Fixtures.Get(fixture, bin));
        float[] logits = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, logits, 0, bytes.Length);
        int[] greedy = [.. v.GetProperty("greedy").EnumerateArray().Select(e => e.GetInt32())];
        return new Golden(prompt, logits, greedy);
    }

    /// <summary>max|a − ref| / max|ref|, the error measure of the acceptance criteria.</summary>
    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> reference)
    {
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs(actual[i] - reference[i]));
            maxRef = Math.Max(maxRef, Math.Abs(reference[i]));
        }

        return maxDiff / maxRef;
    }
}

/// <summary>Runs a model file through the forward pass on a given placement: last-prompt logits and greedy tokens.</summary>
public static class GoldenRun
{
    public static (float[] Logits, int[] Greedy) Run(IWeightSource source, DevicePlacement placement, int[] prompt, int steps, int context = 64)
    {
        using ModelWeights weights = ModelWeights.Upload(source, placement);
        // the goldens were made with float32 KV caches (llama.cpp -ctk f32 -ctv f32; llama2.c has no other)
        using var t = new Transformer(source.Config, weights, placement, Math.Min(context, source.Config.ContextLength),
            cacheTypeK: KvCacheType.F32, cacheTypeV: KvCacheType.F32);
        t.Forward(prompt, 0);
        float[] logits = t.LogitsLast().ToArray();
        var greedy = new int[steps];
        int position = prompt.Length;
        for (int i = 0; i < steps; i++)
        {
            greedy[i] = t.ArgmaxLast();
            if (i + 1 < steps)
            {
                t.Forward([greedy[i]], position++);
            }
        }

        return (logits, greedy);
    }
}

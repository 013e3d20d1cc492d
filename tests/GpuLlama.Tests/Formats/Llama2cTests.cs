using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;
using GpuLlama.Formats;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Formats;

public class Llama2cTests
{
    private const string Stories = "stories260K/stories260K.bin";

    private static string StoriesPath => Fixtures.Get("stories260K", "stories260K.bin");

    [FixtureFact(Stories)]
    public void Stories260K_ConfigMatchesGolden()
    {
        using Llama2cSource source = Llama2cSource.Open(StoriesPath);
        using JsonDocument golden = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Get("stories260K", "golden.json")));
        JsonElement model = golden.RootElement.GetProperty("model");
        JsonElement h = model.GetProperty("header");
        ModelConfig c = source.Config;
        Assert.Equal(h.GetProperty("dim").GetInt32(), c.Dim);
        Assert.Equal(h.GetProperty("hidden_dim").GetInt32(), c.HiddenDim);
        Assert.Equal(h.GetProperty("n_layers").GetInt32(), c.Layers);
        Assert.Equal(h.GetProperty("n_heads").GetInt32(), c.Heads);
        Assert.Equal(h.GetProperty("n_kv_heads").GetInt32(), c.KvHeads);
        Assert.Equal(h.GetProperty("vocab_size").GetInt32(), c.VocabSize);
        Assert.Equal(h.GetProperty("seq_len").GetInt32(), c.ContextLength);
        Assert.Equal(model.GetProperty("shared_classifier").GetBoolean(), c.TiedEmbeddings);
        Assert.Equal(8, c.HeadDim);
        Assert.Equal(RopeStyle.Interleaved, c.RopeStyle);
        Assert.Equal(1e-5f, c.RmsEps);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.Equal(1, c.BosId);
        Assert.Equal([2], c.EosIds);
        Assert.Equal("llama2c", source.Format);
        Assert.Equal(StoriesPath, source.Metadata["llama2c.path"]);
        Assert.Equal(0L, source.Metadata["llama2c.version"]);

        Assert.Empty(TensorNames.Verify(c, source.Tensors));
        Assert.Equal(2 + 5 * 9, source.Tensors.Count);
        Assert.All(source.Tensors.Values, t => Assert.Equal(DType.F32, t.Type));
    }

    [FixtureFact("stories260K/stories260K.gguf")]
    public void Stories260K_EveryTensorEqualsLlamaCppsConversion()
    {
        // llama.cpp's convert-llama2c-to-ggml read the same file independently: same shapes, same bytes.
        using Llama2cSource source = Llama2cSource.Open(StoriesPath);
        using GgufSource gguf = GgufSource.Open(Fixtures.Get("stories260K", "stories260K.gguf"));
        foreach (TensorInfo t in source.Tensors.Values)
        {
            TensorInfo g = gguf.Tensors[t.Name];
            Assert.Equal(g.Shape, t.Shape);
            Assert.True(gguf.View(g).AsSpan().SequenceEqual(source.View(t).AsSpan()), t.Name);
        }

        // its output.weight is a copy of the shared embedding
        Assert.True(gguf.View(gguf.Tensors[TensorNames.Output]).AsSpan().SequenceEqual(source.View(source.Tensors[TensorNames.TokenEmbedding]).AsSpan()));
    }

    [FixtureFact(Stories)]
    public void Writer_LegacySharedReproducesTheOriginalFile()
    {
        using var dir = new ScratchDirectory();
        string path = dir.File("copy.bin");
        ModelConfig config;
        using (Llama2cSource source = Llama2cSource.Open(StoriesPath))
        {
            config = source.Config;
            Llama2cWriter.Write(path, config, ReadAll(source));
        }

        byte[] original = File.ReadAllBytes(StoriesPath);
        byte[] copy = File.ReadAllBytes(path);
        Assert.Equal(original.Length, copy.Length);

        // Everything but the legacy RoPE tables is bit-identical; the tables are cos/sin recomputed in double.
        long tables = 2L * config.ContextLength * config.HeadDim / 2 * sizeof(float);
        long tablesStart = original.Length - tables;
        Assert.True(original.AsSpan(0, (int)tablesStart).SequenceEqual(copy.AsSpan(0, (int)tablesStart)));
        float[] a = MemoryMarshal.Cast<byte, float>(original.AsSpan((int)tablesStart)).ToArray();
        float[] b = MemoryMarshal.Cast<byte, float>(copy.AsSpan((int)tablesStart)).ToArray();
        for (int i = 0; i < a.Length; i++)
        {
            Assert.True(Math.Abs(a[i] - b[i]) < 1e-3, $"RoPE table value {i}: {a[i]} vs {b[i]}");
        }
    }

    [FixtureTheory(Stories)]
    [InlineData(0, true)]
    [InlineData(0, false)]
    [InlineData(1, true)]
    [InlineData(1, false)]
    public void Writer_RoundTripsBothVersionsWithSharedAndUnsharedClassifier(int version, bool shared)
    {
        using var dir = new ScratchDirectory();
        string path = dir.File("model.bin");
        using Llama2cSource source = Llama2cSource.Open(StoriesPath);
        Dictionary<string, float[]> tensors = ReadAll(source);
        ModelConfig config = source.Config with { TiedEmbeddings = shared };
        if (!shared)
        {
            // a classifier different from the embedding, so a mixed-up offset cannot pass
            tensors[TensorNames.Output] = tensors[TensorNames.TokenEmbedding].Select(v => -2 * v).ToArray();
        }

        Llama2cWriter.Write(path, config, tensors, version);
        using Llama2cSource copy = Llama2cSource.Open(path);
        SafetensorsTests.AssertSameConfig(config with { Name = "" }, copy.Config with { Name = "" });
        Assert.Equal((long)version, copy.Metadata["llama2c.version"]);
        Assert.Equal(shared, copy.Metadata["llama2c.shared_classifier"]);
        Assert.Equal(tensors.Keys.Order(), copy.Tensors.Keys.Order());
        foreach ((string name, float[] values) in tensors)
        {
            Assert.Equal(values, MemoryMarshal.Cast<byte, float>(copy.View(copy.Tensors[name]).AsSpan()).ToArray());
        }

        long expected = (version == 0 ? 28 : 256) + 4L * (tensors.Values.Sum(t => (long)t.Length) + (version == 0 ? 512 * 8 : 0));
        Assert.Equal(expected, new FileInfo(path).Length);
    }

    [FixtureTheory(Stories)]
    [InlineData(10)]
    [InlineData(28)]
    [InlineData(1000)]
    [InlineData(528_270)]
    [InlineData(1_056_539)]
    [InlineData(1_056_544)]
    public void WrongLengthIsOneClearError(int length)
    {
        using var dir = new ScratchDirectory();
        string path = dir.File("cut.bin");
        byte[] original = File.ReadAllBytes(StoriesPath);
        byte[] bytes = new byte[length];
        original.AsSpan(0, Math.Min(length, original.Length)).CopyTo(bytes);
        File.WriteAllBytes(path, bytes);

        var e = Assert.Throws<GpuLlamaException>(() => Llama2cSource.Open(path));
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains($"file is {length} bytes", e.Message);
        if (length >= 28)
        {
            Assert.Contains("expected 1056540", e.Message);
            Assert.Contains(length < original.Length ? "truncated" : "longer than the header implies", e.Message);
        }
        else
        {
            Assert.Contains("too short", e.Message);
        }
    }

    [Theory]
    [InlineData(0, int.MaxValue, "dim 2147483647 is out of range")]
    [InlineData(0, 0, "dim 0 is out of range")]
    [InlineData(1, -5, "hidden_dim -5 is out of range")]
    [InlineData(2, -1, "n_layers -1 is out of range")]
    [InlineData(2, 1 << 30, "n_layers 1073741824 is out of range")]
    [InlineData(3, 0, "n_heads 0 is out of range")]
    [InlineData(3, 7, "dim 64 does not split into 7 heads")]
    [InlineData(3, 64, "dim 64 does not split into 64 heads of even size")]
    [InlineData(4, 16, "n_kv_heads 16 is out of range (1..8)")]
    [InlineData(4, 3, "n_heads 8 is not a multiple of n_kv_heads 3")]
    [InlineData(5, int.MinValue, "vocab_size -2147483648 is out of range")]
    [InlineData(5, 0, "vocab_size 0 is out of range")]
    [InlineData(5, int.MaxValue, "vocab_size 2147483647 is out of range")]
    [InlineData(6, int.MaxValue, "seq_len 2147483647 is out of range")]
    [InlineData(6, -512, "seq_len -512 is out of range")]
    public void AbsurdHeaderIsRejectedBeforeAnySizeArithmetic(int field, int value, string expected)
    {
        using var dir = new ScratchDirectory();
        string path = dir.File("bad.bin");
        int[] header = [64, 172, 5, 8, 4, 512, 512];
        header[field] = value;
        byte[] bytes = new byte[28 + 4096];
        for (int i = 0; i < 7; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4 * i), header[i]);
        }

        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<GpuLlamaException>(() => Llama2cSource.Open(path));
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData(2, "version 2 (Q8_0-quantized)")]
    [InlineData(9, "version 9 is unknown")]
    [InlineData(1, "shared_classifier flag is 7")]
    public void Version1HeaderProblemsAreNamed(int version, string expected)
    {
        using var dir = new ScratchDirectory();
        string path = dir.File("v.bin");
        byte[] bytes = new byte[256 + 64];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, Llama2cSource.Magic);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), version);
        int[] header = [64, 172, 5, 8, 4, 512, 512];
        for (int i = 0; i < 7; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8 + 4 * i), header[i]);
        }

        bytes[36] = 7;
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<GpuLlamaException>(() => Llama2cSource.Open(path));
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    private static Dictionary<string, float[]> ReadAll(IWeightSource source) =>
        source.Tensors.Values.ToDictionary(t => t.Name, t => MemoryMarshal.Cast<byte, float>(source.View(t).AsSpan()).ToArray());
}

using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Formats;

public sealed class WeightSourceTests
{
    [Fact]
    public void GgufIsRecognizedByItsMagicWhateverTheName()
    {
        using var file = new TempFile(new GgufTestModel().Build(), ".model");
        Assert.Equal(ModelFormat.Gguf, WeightSource.Detect(file.Path));
        using IWeightSource source = WeightSource.Open(file.Path);
        Assert.IsType<GgufSource>(source);
        Assert.Equal(GgufTestModel.Dim, source.Config.Dim);
    }

    [Fact]
    public void SyntheticSpecsOpenSyntheticModels()
    {
        Assert.Equal(ModelFormat.Synthetic, WeightSource.Detect("synthetic:tiny:f32"));
        using IWeightSource source = WeightSource.Open("synthetic:tiny:f32");
        Assert.Equal("synthetic", source.Format);
        Assert.Equal(288, source.Config.Dim);
    }

    [Fact]
    public void DirectoriesAndTheirFilesAreHuggingFace()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"gpullama-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            Assert.Equal(ModelFormat.Safetensors, WeightSource.Detect(dir));
            foreach (string name in new[] { "model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json", "config.json" })
            {
                string file = Path.Combine(dir, name);
                File.WriteAllBytes(file, [8, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'}']);
                Assert.Equal(ModelFormat.Safetensors, WeightSource.Detect(file));
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [FixtureFact("stories260K/stories260K.bin")]
    public void Llama2cCheckpointsAreRecognizedByHeaderEvenWithoutExtension()
    {
        string bin = Fixtures.Get("stories260K", "stories260K.bin");
        Assert.Equal(ModelFormat.Llama2c, WeightSource.Detect(bin));
        using var renamed = new TempFile(File.ReadAllBytes(bin), ".ckpt");
        Assert.Equal(ModelFormat.Llama2c, WeightSource.Detect(renamed.Path));

        // the same header with the weights cut off is not a plausible checkpoint
        using var cut = new TempFile(File.ReadAllBytes(bin)[..1000], ".ckpt");
        AssertError(cut.Path, "unrecognized model format");
    }

    [FixtureFact("tiny-llama-a/model.safetensors")]
    public void OpensEachFormatOfTheSameModel()
    {
        using IWeightSource hf = WeightSource.Open(Fixtures.Get("tiny-llama-a"));
        using IWeightSource hfFile = WeightSource.Open(Fixtures.Get("tiny-llama-a", "model.safetensors"));
        using IWeightSource gguf = WeightSource.Open(Fixtures.Get("tiny-llama-a", "tiny-llama-a-bf16.gguf"));
        Assert.IsType<SafetensorsSource>(hf);
        Assert.IsType<SafetensorsSource>(hfFile);
        Assert.IsType<GgufSource>(gguf);
        Assert.Equal(gguf.Config with { Name = "", RopeStyle = default, EosIds = [] }, hf.Config with { Name = "", RopeStyle = default, EosIds = [] });
        Assert.Equal(gguf.Config.EosIds, hf.Config.EosIds);
        Assert.Equal(Model.RopeStyle.Halves, hf.Config.RopeStyle);

        // the converter copies bf16 tensors unchanged, except that it permutes Q/K rows
        foreach (string name in new[] { TensorNames.TokenEmbedding, TensorNames.Wv(1), TensorNames.FfnDown(3) })
        {
            TensorInfo a = hf.Tensors[name], b = gguf.Tensors[name];
            Assert.Equal((DType.BF16, DType.BF16), (a.Type, b.Type));
            Assert.True(hf.View(a).AsSpan().SequenceEqual(gguf.View(b).AsSpan()), name);
        }
    }

    [FixtureFact("tiny-llama-a/model.safetensors")]
    public void ExportingTheHfDirectoryReproducesLlamaCppsConversion()
    {
        // our export of the bf16 HF checkpoint must hold exactly the tensors convert_hf_to_gguf.py wrote: Q/K rows
        // permuted for adjacent-pair RoPE, norms widened to F32, everything else copied
        using IWeightSource hf = WeightSource.Open(Fixtures.Get("tiny-llama-a"));
        using var file = new TempFile();
        GgufExport.ExportGguf(hf, file.Path);
        using GgufSource ours = GgufSource.Open(file.Path);
        using GgufSource theirs = GgufSource.Open(Fixtures.Get("tiny-llama-a", "tiny-llama-a-bf16.gguf"));

        Assert.Equal(theirs.Tensors.Keys.Order(), ours.Tensors.Keys.Order());
        foreach (TensorInfo t in theirs.TensorList)
        {
            TensorInfo o = ours.Tensors[t.Name];
            Assert.Equal((t.Type, t.ShapeText), (o.Type, o.ShapeText));
            Assert.True(theirs.View(t).AsSpan().SequenceEqual(ours.View(o).AsSpan()), t.Name);
        }

        Assert.Equal(theirs.Config with { Name = "", EosIds = [] }, ours.Config with { Name = "", EosIds = [] });
    }

    [FixtureFact("stories260K/stories260K.bin")]
    public void Llama2cAndItsGgufConversionHoldTheSameWeights()
    {
        using IWeightSource bin = WeightSource.Open(Fixtures.Get("stories260K", "stories260K.bin"));
        using IWeightSource gguf = WeightSource.Open(Fixtures.Get("stories260K", "stories260K.gguf"));
        Assert.IsType<Llama2cSource>(bin);
        Assert.Equal((bin.Config.Dim, bin.Config.Layers, bin.Config.Heads, bin.Config.KvHeads, bin.Config.HiddenDim, bin.Config.VocabSize),
            (gguf.Config.Dim, gguf.Config.Layers, gguf.Config.Heads, gguf.Config.KvHeads, gguf.Config.HiddenDim, gguf.Config.VocabSize));
        foreach (string name in new[] { TensorNames.TokenEmbedding, TensorNames.Wq(0), TensorNames.Wk(4), TensorNames.FfnUp(2), TensorNames.OutputNorm })
        {
            Assert.True(bin.View(bin.Tensors[name]).AsSpan().SequenceEqual(gguf.View(gguf.Tensors[name]).AsSpan()), name);
        }
    }

    [Fact]
    public void Llama2cHeaderPlausibility()
    {
        // stories15M: dim 288, hidden 768, 6 layers, 6 heads, 6 KV heads, vocab 32000, seq 256
        byte[] header = Header(288, 768, 6, 6, 6, 32000, 256);
        long floats = 32000L * 288 + 288 + 6 * (2L * 288 + 4L * 288 * 288 + 3L * 288 * 768);
        Assert.True(WeightSource.IsPlausibleLlama2c(header, 28 + 4 * floats));
        Assert.False(WeightSource.IsPlausibleLlama2c(header, 28 + 4 * floats - 1));
        Assert.True(WeightSource.IsPlausibleLlama2c(Header(288, 768, 6, 6, 6, -32000, 256), 28 + 4 * floats));
        Assert.False(WeightSource.IsPlausibleLlama2c(Header(288, 768, 6, 7, 7, 32000, 256), long.MaxValue)); // dim not a multiple of heads
        Assert.False(WeightSource.IsPlausibleLlama2c(Header(288, 768, 6, 6, 4, 32000, 256), long.MaxValue)); // heads not a multiple of KV heads
        Assert.False(WeightSource.IsPlausibleLlama2c(Header(0, 768, 6, 6, 6, 32000, 256), long.MaxValue));
        Assert.False(WeightSource.IsPlausibleLlama2c(header[..27], long.MaxValue));
        Assert.True(WeightSource.IsPlausibleLlama2c([.. "24ka"u8, .. new byte[24]], 28)); // export.py v1+ magic "ak42"
    }

    private static byte[] Header(params int[] values)
    {
        var bytes = new byte[28];
        Buffer.BlockCopy(values, 0, bytes, 0, 28);
        return bytes;
    }

    [Fact]
    public void DotBinIsLlama2cEvenWhenItsHeaderIsWrong()
    {
        // the llama2.c reader then names the bad header field; the sniffer must not call it "unrecognized"
        using var file = new TempFile(new byte[40], ".bin");
        Assert.Equal(ModelFormat.Llama2c, WeightSource.Detect(file.Path));
    }

    [Fact]
    public void MissingPathIsFileNotFound()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gpullama-missing-{Guid.NewGuid():N}.gguf");
        AssertError(path, "file not found");
    }

    [Theory]
    [InlineData("hello, this is not a model", "unrecognized model format")]
    [InlineData("", "unrecognized model format")]
    [InlineData("lmggxxxxxxxx", "legacy GGML")]
    [InlineData("tjggxxxxxxxx", "legacy GGML")]
    [InlineData("PK\u0003\u0004xxxxxxxxxx", "PyTorch")]
    public void OtherFilesGetAnErrorSayingWhatIsAccepted(string contents, string expected)
    {
        using var file = new TempFile(System.Text.Encoding.Latin1.GetBytes(contents), ".dat");
        string message = AssertError(file.Path, expected);
        if (expected == "unrecognized model format")
        {
            Assert.Contains("GGUF", message);
            Assert.Contains("safetensors", message);
            Assert.Contains("llama2.c", message);
            Assert.Contains("synthetic:NAME", message);
        }
    }

    [Fact]
    public void EmptyPathIsAnError()
    {
        var e = Assert.Throws<GpuLlamaException>(() => WeightSource.Detect(" "));
        Assert.Contains("no model path", e.Message);
    }

    private static string AssertError(string path, string expected)
    {
        var e = Assert.Throws<GpuLlamaException>(() => WeightSource.Open(path));
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }
}

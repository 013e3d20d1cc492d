using System.Text;
using System.Text.Json;
using GpuLlama.Formats;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Formats;

public sealed class GgufTests
{
    [Fact]
    public void MetadataRoundTripsEveryValueType()
    {
        var values = new Dictionary<string, object>
        {
            ["t.u8"] = (byte)200,
            ["t.i8"] = (sbyte)-100,
            ["t.u16"] = (ushort)60000,
            ["t.i16"] = (short)-30000,
            ["t.u32"] = 4_000_000_000u,
            ["t.i32"] = -2_000_000_000,
            ["t.u64"] = ulong.MaxValue - 5,
            ["t.i64"] = long.MinValue + 7,
            ["t.f32"] = 3.25f,
            ["t.f64"] = -1e300,
            ["t.bool.true"] = true,
            ["t.bool.false"] = false,
            ["t.string"] = "héllo ▁wörld",
            ["t.string.empty"] = "",
            ["t.a.u8"] = new byte[] { 0, 1, 255 },
            ["t.a.i8"] = new sbyte[] { -128, 0, 127 },
            ["t.a.u16"] = new ushort[] { 1, 65535 },
            ["t.a.i16"] = new short[] { -32768, 32767 },
            ["t.a.u32"] = new uint[] { 0, uint.MaxValue },
            ["t.a.i32"] = new[] { int.MinValue, -1, int.MaxValue },
            ["t.a.u64"] = new ulong[] { ulong.MaxValue },
            ["t.a.i64"] = new long[] { long.MinValue, long.MaxValue },
            ["t.a.f32"] = new[] { 1.5f, float.NegativeInfinity, -0f },
            ["t.a.f64"] = new[] { Math.PI, double.Epsilon },
            ["t.a.bool"] = new[] { true, false, true },
            ["t.a.string"] = new[] { "a", "", "<0x0A>", "▁the" },
            ["t.a.empty"] = Array.Empty<int>(),
            ["t.a.nested"] = new object[] { new[] { 1, 2 }, new[] { "x" }, new object[] { new[] { 1.0 } }, Array.Empty<float>() },
        };

        var writer = new GgufWriter();
        foreach ((string key, object value) in values)
        {
            writer.AddMetadata(key, value);
        }

        using var file = new TempFile();
        writer.Write(file.Path);
        IReadOnlyDictionary<string, object> read = GgufSource.ReadMetadata(file.Path);

        Assert.Equal(values.Count, read.Count);
        foreach ((string key, object expected) in values)
        {
            AssertSameValue(key, expected, read[key]);
        }
    }

    private static void AssertSameValue(string key, object expected, object actual)
    {
        Assert.True(expected.GetType() == actual.GetType(), $"{key}: expected {expected.GetType()}, got {actual.GetType()}");
        if (expected is object[] nested)
        {
            var got = (object[])actual;
            Assert.Equal(nested.Length, got.Length);
            for (int i = 0; i < nested.Length; i++)
            {
                AssertSameValue($"{key}[{i}]", nested[i], got[i]);
            }
        }
        else if (expected is Array a)
        {
            Assert.Equal(a.Cast<object>(), ((Array)actual).Cast<object>());
        }
        else
        {
            Assert.Equal(expected, actual);
        }
    }

    [Fact]
    public void ModelRoundTripsTensorsOfEveryStoredType()
    {
        var model = new GgufTestModel();
        using var file = new TempFile(model.Build());
        using GgufSource source = GgufSource.Open(file.Path);

        Assert.Equal("gguf", source.Format);
        Assert.Equal(3u, source.Version);
        Assert.Equal(model.Tensors.Count, source.Tensors.Count);
        Assert.Equal(model.Tensors.Select(t => t.Name), source.TensorList.Select(t => t.Name));
        foreach ((string name, DType type, long[] shape) in model.Tensors)
        {
            TensorInfo t = source.Tensors[name];
            Assert.Equal(type, t.Type);
            Assert.Equal(shape, t.Shape);
            Assert.Equal(0, t.Offset % Gguf.DefaultAlignment);
            Assert.Equal(GgufTestModel.Data(name, type, shape), source.View(t).AsSpan().ToArray());
        }

        // row-major: a Q8_0 row of 96 columns is 3 blocks of 34 bytes
        WeightView down = source.View(source.Tensors["blk.0.ffn_down.weight"]);
        Assert.Equal(3 * 34, down.RowBytes);
        Assert.Equal(GgufTestModel.Dim, down.Rows);

        ModelConfig c = source.Config;
        Assert.Equal((GgufTestModel.Dim, 1, GgufTestModel.Heads, GgufTestModel.KvHeads, 16, GgufTestModel.Hidden, GgufTestModel.Vocab, GgufTestModel.Context),
            (c.Dim, c.Layers, c.Heads, c.KvHeads, c.HeadDim, c.HiddenDim, c.VocabSize, c.ContextLength));
        Assert.Equal("gguf-test", c.Name);
        Assert.Equal(RopeStyle.Interleaved, c.RopeStyle);
        Assert.False(c.TiedEmbeddings);
        Assert.Equal(1e-5f, c.RmsEps);
        Assert.Equal(1, c.BosId);
        Assert.Equal([2], c.EosIds);
    }

    [Fact]
    public void OptionalKeysTakeLlamaCppDefaults()
    {
        var model = new GgufTestModel();
        model.Metadata.RemoveAll(kv => kv.Key is "llama.attention.head_count_kv" or "llama.rope.freq_base" or "tokenizer.ggml.bos_token_id");
        model.Tensors.RemoveAll(t => t.Name == "output.weight");
        model.Tensors[model.TensorIndex("blk.0.attn_k.weight")] = ("blk.0.attn_k.weight", DType.BF16, [GgufTestModel.Dim, GgufTestModel.Dim]);
        model.Tensors[model.TensorIndex("blk.0.attn_v.weight")] = ("blk.0.attn_v.weight", DType.F32, [GgufTestModel.Dim, GgufTestModel.Dim]);
        model.Set("tokenizer.ggml.eot_token_id", 7u);
        using var file = new TempFile(model.Build());
        using GgufSource source = GgufSource.Open(file.Path);

        Assert.Equal(GgufTestModel.Heads, source.Config.KvHeads);
        Assert.Equal(10000.0, source.Config.RopeTheta);
        Assert.True(source.Config.TiedEmbeddings);
        Assert.Equal(1, source.Config.BosId);
        Assert.Equal([2, 7], source.Config.EosIds);
    }

    [Fact]
    public void VersionTwoReadsLikeVersionThree()
    {
        var model = new GgufTestModel();
        byte[] bytes = model.Build();
        GgufTestModel.PutU32(bytes, 4, 2);
        using var file = new TempFile(bytes);
        using GgufSource source = GgufSource.Open(file.Path);
        Assert.Equal(2u, source.Version);
        Assert.Equal(model.Tensors.Count, source.Tensors.Count);
    }

    [Fact]
    public void CustomAlignmentIsWrittenAndHonoured()
    {
        var model = new GgufTestModel { Alignment = 256 };
        using var file = new TempFile(model.Build());
        using GgufSource source = GgufSource.Open(file.Path);
        Assert.Equal(256, source.Alignment);
        Assert.Equal(256u, source.Metadata[Gguf.AlignmentKey]);
        Assert.All(source.TensorList, t => Assert.Equal(0, t.Offset % 256));
        Assert.Equal(0, source.DataOffset % 256);
    }

    [Fact]
    public void RopeFreqsTensorBecomesFrequencyFactors()
    {
        var model = new GgufTestModel();
        float[] factors = Enumerable.Range(0, 8).Select(i => 1f + i).ToArray();
        var writer = new GgufWriter();
        foreach ((string key, object value) in model.Metadata)
        {
            writer.AddMetadata(key, value);
        }

        byte[] bytes = new byte[factors.Length * 4];
        Buffer.BlockCopy(factors, 0, bytes, 0, bytes.Length);
        writer.AddTensor(TensorNames.RopeFreqs, DType.F32, [8], bytes);
        foreach ((string name, DType type, long[] shape) in model.Tensors)
        {
            writer.AddTensor(name, type, shape, stream => stream.Write(GgufTestModel.Data(name, type, shape)));
        }

        using var file = new TempFile();
        writer.Write(file.Path);
        using GgufSource source = GgufSource.Open(file.Path);
        Assert.Equal(factors, source.Config.RopeFreqFactors);
        double[] inv = source.Config.RopeInverseFrequencies();
        Assert.Equal(Math.Pow(10000, -2.0 * 3 / 16) / 4, inv[3], 12);
    }

    [Fact]
    public void WriterRejectsWhatItCannotStore()
    {
        var w = new GgufWriter();
        w.AddMetadata("a.key", 1u);
        Assert.Throws<ArgumentException>(() => w.AddMetadata("a.key", 2u));
        Assert.Throws<ArgumentException>(() => w.AddMetadata("b.key", new DateTime(2000, 1, 1)));
        Assert.Throws<ArgumentException>(() => w.AddMetadata("c.key", new object[] { 1 }));
        Assert.Throws<ArgumentException>(() => w.AddMetadata(Gguf.AlignmentKey, 64u));
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", DType.Q8_0, [2, 33], new byte[2 * 34]));
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", DType.F32, [2, 3], new byte[23]));
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", (DType)99, [4], new byte[16]));
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", DType.F32, [1, 1, 1, 1, 4], new byte[16]));
        Assert.Throws<ArgumentException>(() => w.AddTensor(new string('x', 64), DType.F32, [4], new byte[16]));
        w.AddTensor("t", DType.F32, [4], new byte[16]);
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", DType.F32, [4], new byte[16]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new GgufWriter(48));

        var bad = new GgufWriter();
        bad.AddTensor("short", DType.F32, [4], s => s.Write(new byte[15]));
        Assert.Throws<InvalidOperationException>(() => bad.Write(new MemoryStream()));
    }

    [Fact]
    public void WrittenFileHasGgufLayout()
    {
        var model = new GgufTestModel();
        byte[] bytes = model.Build();
        GgufLayout layout = model.Layout;
        Assert.Equal("GGUF"u8.ToArray(), bytes[..4]);
        Assert.Equal(3u, BitConverter.ToUInt32(bytes, 4));
        Assert.Equal((ulong)model.Tensors.Count, BitConverter.ToUInt64(bytes, 8));
        Assert.Equal((ulong)model.Metadata.Count, BitConverter.ToUInt64(bytes, 16));
        Assert.Equal(24, layout.KeyValueOffsets[0]);
        Assert.Equal(0, layout.DataOffset % 32);
        Assert.Equal(bytes.Length, layout.Length);
        Assert.Equal(0, bytes.Length % 32); // the last tensor is padded too, as gguf-py does
        Assert.All(layout.TensorDataOffsets, o => Assert.Equal(0, o % 32));
    }

    // ---- corrupt files: exactly one GpuLlamaException, one line, naming the file and the key or tensor ----

    public sealed record Corruption(string Name, Action<GgufTestModel>? Edit, Action<GgufTestModel, byte[]>? Patch, string[] Expected, Func<GgufTestModel, byte[], byte[]>? Cut = null)
    {
        public override string ToString() => Name;
    }

    public static TheoryData<Corruption> Corruptions()
    {
        const string q = "blk.0.attn_q.weight";
        const string v = "blk.0.attn_v.weight";
        var data = new TheoryData<Corruption>
        {
            new("bad magic", null, (m, b) => "GGML"u8.CopyTo(b), ["not a GGUF file"]),
            new("version 1", null, (m, b) => GgufTestModel.PutU32(b, 4, 1), ["version 1"]),
            new("future version", null, (m, b) => GgufTestModel.PutU32(b, 4, 4), ["version 4"]),
            new("big endian", null, (m, b) => GgufTestModel.PutU32(b, 4, 0x03000000), ["big-endian"]),
            new("absurd tensor count", null, (m, b) => GgufTestModel.PutU64(b, 8, 1UL << 40), ["tensor count"]),
            new("absurd metadata count", null, (m, b) => GgufTestModel.PutU64(b, 16, ulong.MaxValue), ["metadata count"]),
            new("config key of wrong type", m => m.Set("llama.block_count", "4"), null, ["llama.block_count", "string"]),
            new("float key of wrong type", m => m.Set("llama.rope.freq_base", "1e4"), null, ["llama.rope.freq_base"]),
            new("missing config key", m => m.Metadata.RemoveAll(kv => kv.Key == "llama.feed_forward_length"), null, ["llama.feed_forward_length", "missing"]),
            new("not llama", m => m.Set("general.architecture", "qwen2"), null, ["general.architecture", "qwen2"]),
            new("token id outside vocabulary", m => m.Set("tokenizer.ggml.eos_token_id", 4294967295u), null, ["tokenizer.ggml.eos_token_id"]),
            new("per-layer values differ", m => m.Set("llama.feed_forward_length", new uint[] { 96, 128 }), null, ["llama.feed_forward_length", "per layer"]),
            new("unsupported rope scaling", m => m.Set("llama.rope.scaling.type", "yarn"), null, ["llama.rope.scaling.type", "yarn"]),
            new("unsupported linear rope scale", m => m.Set("llama.rope.scale_linear", 4f), null, ["llama.rope.scale_linear"]),
            new("invalid config", m => m.Set("llama.attention.head_count_kv", 3u), null, ["head count"]),
            new("duplicate key", null, (m, b) => Encoding.ASCII.GetBytes("tokenizer.ggml.bos_token_id").CopyTo(b, m.Layout.KeyValueOffsets[m.KeyIndex("tokenizer.ggml.eos_token_id")] + 8),
                ["tokenizer.ggml.bos_token_id", "twice"]),
            new("unknown value type", null, (m, b) => GgufTestModel.PutU32(b, m.TypeOffset("general.name"), 13), ["general.name", "unknown value type 13"]),
            new("unknown array element type", null, (m, b) => GgufTestModel.PutU32(b, m.ValueOffset("tokenizer.ggml.scores"), 77), ["tokenizer.ggml.scores", "77"]),
            new("bool not 0 or 1", null, (m, b) => b[m.ValueOffset("t.flag")] = 2, ["t.flag", "bool"]),
            new("string length absurd", null, (m, b) => GgufTestModel.PutU64(b, m.ValueOffset("general.name"), 1UL << 40), ["general.name", "length"]),
            new("string length past end", null, (m, b) => GgufTestModel.PutU64(b, m.ValueOffset("general.name"), (ulong)b.Length), ["general.name", "truncated"]),
            new("array length absurd", null, (m, b) => GgufTestModel.PutU64(b, m.ValueOffset("tokenizer.ggml.tokens") + 4, 1UL << 50), ["tokenizer.ggml.tokens"]),
            new("array length past end", null, (m, b) => GgufTestModel.PutU64(b, m.ValueOffset("tokenizer.ggml.scores") + 4, (ulong)b.Length / 4), ["tokenizer.ggml.scores"]),
            new("alignment not a power of two", m => { }, (m, b) => GgufTestModel.PutU32(b, m.ValueOffset(Gguf.AlignmentKey), 48), [Gguf.AlignmentKey, "power of two"]),
            new("alignment of wrong type", m => { }, (m, b) => GgufTestModel.PutU32(b, m.TypeOffset(Gguf.AlignmentKey), (uint)GgufType.Int32), [Gguf.AlignmentKey, "uint32"]),
            new("duplicate tensor", null, (m, b) => Encoding.ASCII.GetBytes("blk.0.ffn_gate.weight").CopyTo(b, m.NameOffset("blk.0.ffn_norm.weight")),
                ["blk.0.ffn_gate.weight", "twice"]),
            new("empty tensor name", null, (m, b) => GgufTestModel.PutU64(b, m.NameOffset(q) - 8, 0), ["tensor #2", "empty name"]),
            new("tensor name too long", null, (m, b) => GgufTestModel.PutU64(b, m.NameOffset(q) - 8, 500), ["tensor #2"]),
            new("n_dims > 4", null, (m, b) => GgufTestModel.PutU32(b, m.DimsCountOffset(q), 5), [q, "5 dimensions"]),
            new("n_dims 0", null, (m, b) => GgufTestModel.PutU32(b, m.DimsCountOffset(q), 0), [q, "0 dimensions"]),
            new("zero dimension", null, (m, b) => GgufTestModel.PutU64(b, m.DimOffset(v, 1), 0), [v, "zero dimension"]),
            new("oversize dims", null, (m, b) => GgufTestModel.PutU64(b, m.DimOffset(v, 1), 1UL << 40), [v, "past the end"]),
            new("dims product overflow", null, (m, b) =>
            {
                GgufTestModel.PutU64(b, m.DimOffset(v, 0), 1UL << 33);
                GgufTestModel.PutU64(b, m.DimOffset(v, 1), 1UL << 33);
            }, [v, "overflow"]),
            new("bytes overflow", null, (m, b) =>
            {
                GgufTestModel.PutU64(b, m.DimOffset(v, 0), 1UL << 31);
                GgufTestModel.PutU64(b, m.DimOffset(v, 1), 1UL << 31);
            }, [v, "overflow"]),
            new("dimension above int64", null, (m, b) => GgufTestModel.PutU64(b, m.DimOffset(v, 1), ulong.MaxValue), [v, "overflow"]),
            new("unknown dtype", null, (m, b) => GgufTestModel.PutU32(b, m.TypeIdOffset(q), 99), [q, "unknown type id 99"]),
            new("removed dtype Q4_2", null, (m, b) => GgufTestModel.PutU32(b, m.TypeIdOffset(q), 4), [q, "unknown type id 4"]),
            new("an IQ type this engine does not read", null, (m, b) => GgufTestModel.PutU32(b, m.TypeIdOffset(q), 21), [q, "is IQ3_S (ggml type 21)", "llama-quantize", "IQ4_XS"]),
            new("columns not a block multiple", null, (m, b) => GgufTestModel.PutU32(b, m.TypeIdOffset(v), (uint)DType.Q4_K), [v, "block size 256"]),
            new("offset past the end", null, (m, b) => GgufTestModel.PutU64(b, m.DataOffsetField("output.weight"), 1UL << 40), ["output.weight", "past the end"]),
            new("data past the end", null, (m, b) => GgufTestModel.PutU64(b, m.DataOffsetField("output.weight"), (ulong)(b.Length - m.Layout.DataOffset - 32)), ["output.weight", "past the end"]),
            new("misaligned offset", null, (m, b) => GgufTestModel.PutU64(b, m.DataOffsetField(v), GgufTestModel.GetU64(b, m.DataOffsetField(v)) + 4), [v, "alignment 32"]),
            new("overlapping tensors", null, (m, b) => GgufTestModel.PutU64(b, m.DataOffsetField(v), GgufTestModel.GetU64(b, m.DataOffsetField(v)) - 32), [v, "overlap"]),
            new("shape vs config mismatch", m => m.Tensors[m.TensorIndex(v)] = (v, DType.F32, [16, GgufTestModel.Dim]), null, [v, "[16, 64]", "[32, 64]"]),
            new("tensor missing", m => m.Tensors.RemoveAll(t => t.Name == "output_norm.weight"), null, ["output_norm.weight", "missing"]),
            new("rope_freqs wrong size", m => m.Tensors.Add((TensorNames.RopeFreqs, DType.F32, [5])), null, [TensorNames.RopeFreqs, "[8]"]),
            new("empty file", null, null, ["too short"], (m, b) => []),
            new("truncated in magic", null, null, ["too short"], (m, b) => b[..3]),
        };

        // truncation at every section boundary and inside each part
        var model = WithFlag(new GgufTestModel());
        data.Add(new("truncated after magic", null, null, ["the version", "truncated"], (m, b) => b[..4]));
        data.Add(new("truncated after version", null, null, ["tensor count", "truncated"], (m, b) => b[..8]));
        data.Add(new("truncated after tensor count", null, null, ["metadata count", "truncated"], (m, b) => b[..16]));
        for (int i = 0; i < model.Metadata.Count; i++)
        {
            string key = model.Metadata[i].Key;
            int k = i;
            data.Add(new($"truncated before key {key}", null, null, [$"key #{k}", "truncated"], (m, b) => b[..(int)m.Layout.KeyValueOffsets[k]]));
            data.Add(new($"truncated in value of {key}", null, null, [key, "truncated"], (m, b) => b[..(int)m.ValueOffset(key)]));
        }

        for (int i = 0; i < model.Tensors.Count; i++)
        {
            string name = model.Tensors[i].Name;
            data.Add(new($"truncated in tensor info of {name}", null, null, [name, "truncated"], (m, b) => b[..(int)(m.DimsCountOffset(name) + 2)]));
            data.Add(new($"truncated in data of {name}", null, null, [name, "past the end"], (m, b) => b[..(int)(m.Layout.TensorDataOffsets[m.TensorIndex(name)] + 1)]));
        }

        data.Add(new("truncated at the alignment padding", null, null, ["truncated"], (m, b) => b[..(int)((m.Layout.PaddingOffset + m.Layout.DataOffset) / 2)]));
        data.Add(new("truncated at the end of the tensor table", null, null, ["truncated"], (m, b) => b[..(int)m.Layout.PaddingOffset]));
        data.Add(new("truncated at the data section", null, null, [model.Tensors[0].Name, "past the end"], (m, b) => b[..(int)m.Layout.DataOffset]));
        data.Add(new("truncated by one byte", null, null, ["output.weight", "past the end"], (m, b) => b[..^1]));
        return data;
    }

    /// <summary>Every corruption case starts from the test model plus one bool key.</summary>
    private static GgufTestModel WithFlag(GgufTestModel m)
    {
        m.Set("t.flag", true);
        return m;
    }

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void CorruptFileGivesOneLineErrorNamingFileAndCulprit(Corruption c)
    {
        var model = WithFlag(new GgufTestModel { Alignment = c.Name.StartsWith("alignment", StringComparison.Ordinal) ? 64 : Gguf.DefaultAlignment });

        c.Edit?.Invoke(model);
        byte[] bytes = model.Build();
        c.Patch?.Invoke(model, bytes);
        if (c.Cut is not null)
        {
            bytes = c.Cut(model, bytes);
        }

        using var file = new TempFile(bytes);
        var e = Assert.Throws<GpuLlamaException>(() => GgufSource.Open(file.Path).Dispose());
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith(file.Path + ": ", e.Message);
        foreach (string expected in c.Expected)
        {
            Assert.True(e.Message.Contains(expected, StringComparison.Ordinal), $"'{expected}' not in: {e.Message}");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void RandomlyDamagedFilesOpenOrFailWithGpuLlamaExceptionOnly(int seed)
    {
        var model = WithFlag(new GgufTestModel());
        byte[] pristine = model.Build();
        var random = new Random(seed);
        using var file = new TempFile();
        int failures = 0;
        for (int i = 0; i < 300; i++)
        {
            byte[] bytes = (byte[])pristine.Clone();
            int edits = random.Next(1, 5);
            for (int e = 0; e < edits; e++)
            {
                // the header and tables, where every byte is interpreted; sometimes a small or huge value
                int at = random.Next((int)model.Layout.DataOffset);
                bytes[at] = random.Next(3) switch { 0 => (byte)random.Next(256), 1 => (byte)(bytes[at] ^ 1), _ => 0xFF };
            }

            if (random.Next(4) == 0)
            {
                bytes = bytes[..random.Next(bytes.Length)];
            }

            File.WriteAllBytes(file.Path, bytes);
            try
            {
                GgufSource.Open(file.Path).Dispose();
            }
            catch (GpuLlamaException ex)
            {
                failures++;
                Assert.StartsWith(file.Path + ": ", ex.Message);
                Assert.DoesNotContain('\n', ex.Message);
            }
        }

        Assert.InRange(failures, 150, 300); // most damage is detected; some lands in tensor names or float values harmlessly
    }

    // ---- real files made by llama.cpp ----

    public static TheoryData<string> TinyLlamaVariants() => new() { "f32", "f16", "bf16", "q8_0", "Q4_0", "Q4_K_M", "Q6_K" };

    [FixtureTheory("tiny-llama-a/golden.json")]
    [MemberData(nameof(TinyLlamaVariants))]
    public void ReadsLlamaCppFilesWithGoldenConfigAndTypes(string variant)
    {
        using JsonDocument golden = JsonDocument.Parse(File.ReadAllText(Fixtures.Get("tiny-llama-a", "golden.json")));
        JsonElement cfg = golden.RootElement.GetProperty("config");
        JsonElement v = golden.RootElement.GetProperty("variants").GetProperty(variant);
        using GgufSource source = GgufSource.Open(Fixtures.Get("tiny-llama-a", v.GetProperty("file").GetString()!));

        ModelConfig c = source.Config;
        Assert.Equal(cfg.GetProperty("hidden_size").GetInt32(), c.Dim);
        Assert.Equal(cfg.GetProperty("num_hidden_layers").GetInt32(), c.Layers);
        Assert.Equal(cfg.GetProperty("num_attention_heads").GetInt32(), c.Heads);
        Assert.Equal(cfg.GetProperty("num_key_value_heads").GetInt32(), c.KvHeads);
        Assert.Equal(cfg.GetProperty("hidden_size").GetInt32() / cfg.GetProperty("num_attention_heads").GetInt32(), c.HeadDim);
        Assert.Equal(cfg.GetProperty("intermediate_size").GetInt32(), c.HiddenDim);
        Assert.Equal(cfg.GetProperty("vocab_size").GetInt32(), c.VocabSize);
        Assert.Equal(cfg.GetProperty("max_position_embeddings").GetInt32(), c.ContextLength);
        Assert.Equal(cfg.GetProperty("rms_norm_eps").GetSingle(), c.RmsEps);
        Assert.Equal(cfg.GetProperty("rope_theta").GetDouble(), c.RopeTheta);
        Assert.Equal(cfg.GetProperty("tie_word_embeddings").GetBoolean(), c.TiedEmbeddings);
        Assert.Equal(cfg.GetProperty("bos_token_id").GetInt32(), c.BosId);
        Assert.Equal([cfg.GetProperty("eos_token_id").GetInt32()], c.EosIds);
        Assert.Equal(RopeStyle.Interleaved, c.RopeStyle);
        Assert.Null(c.RopeFreqFactors);

        var types = v.GetProperty("tensor_type_by_name").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString());
        Assert.Equal(types.Keys.Order(), source.Tensors.Keys.Order());
        foreach ((string name, string? type) in types)
        {
            Assert.Equal(type, source.Tensors[name].Type.ToString());
        }

        Assert.Empty(TensorNames.Verify(c, source.Tensors));
        Assert.Equal(v.GetProperty("bytes").GetInt64(), new FileInfo(source.Path).Length);
        Assert.Equal(512, ((string[])source.Metadata["tokenizer.ggml.tokens"]).Length);
        Assert.Equal("llama", source.Metadata["tokenizer.ggml.model"]);
    }

    [FixtureFact("tiny-llama-a/tiny-llama-a-bf16.gguf")]
    public void LlamaCppF32AndBf16FilesHoldTheSameWeights()
    {
        // the F32 GGUF was converted from the bf16 checkpoint, so widening the BF16 GGUF's values must give its bytes exactly
        using GgufSource f32 = GgufSource.Open(Fixtures.Get("tiny-llama-a", "tiny-llama-a-f32.gguf"));
        using GgufSource bf16 = GgufSource.Open(Fixtures.Get("tiny-llama-a", "tiny-llama-a-bf16.gguf"));
        foreach (string name in new[] { TensorNames.TokenEmbedding, TensorNames.Wq(2), TensorNames.FfnDown(3) })
        {
            ReadOnlySpan<float> wide = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(f32.View(f32.Tensors[name]).AsSpan());
            ReadOnlySpan<ushort> narrow = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bf16.View(bf16.Tensors[name]).AsSpan());
            Assert.Equal(wide.Length, narrow.Length);
            for (int i = 0; i < wide.Length; i++)
            {
                Assert.Equal(BitConverter.SingleToUInt32Bits(wide[i]), (uint)narrow[i] << 16);
            }
        }
    }

    [FixtureTheory("tiny-llama-a/golden.json")]
    [InlineData("tiny-llama-a-f16.gguf")]
    [InlineData("tiny-llama-a-Q4_K_M.gguf")]
    public void ExportOfLlamaCppFileKeepsEveryKeyAndTensor(string name)
    {
        using GgufSource original = GgufSource.Open(Fixtures.Get("tiny-llama-a", name));
        using var file = new TempFile();
        GgufLayout layout = GgufExport.ExportGguf(original, file.Path);
        using GgufSource copy = GgufSource.Open(file.Path);

        Assert.Equal(new FileInfo(original.Path).Length - original.DataOffset, layout.Length - layout.DataOffset); // same tensors, same padding
        Assert.Equal(original.Config with { RopeFreqFactors = null, EosIds = [] }, copy.Config with { RopeFreqFactors = null, EosIds = [] });
        Assert.Equal(original.Config.EosIds, copy.Config.EosIds);
        foreach ((string key, object value) in original.Metadata)
        {
            if (key != "general.file_type")
            {
                AssertSameValue(key, value, copy.Metadata[key]);
            }
        }

        Assert.Equal(original.Tensors.Count, copy.Tensors.Count);
        foreach (TensorInfo t in original.TensorList)
        {
            TensorInfo c = copy.Tensors[t.Name];
            Assert.Equal((t.Type, t.ByteLength), (c.Type, c.ByteLength));
            Assert.Equal(t.Shape, c.Shape);
            Assert.True(original.View(t).AsSpan().SequenceEqual(copy.View(c).AsSpan()), t.Name);
        }
    }

    [FixtureFact("stories260K/stories260K.gguf")]
    public void ReadsStories260K()
    {
        using JsonDocument golden = JsonDocument.Parse(File.ReadAllText(Fixtures.Get("stories260K", "golden.json")));
        JsonElement h = golden.RootElement.GetProperty("model").GetProperty("header");
        using GgufSource source = GgufSource.Open(Fixtures.Get("stories260K", "stories260K.gguf"));
        ModelConfig c = source.Config;
        Assert.Equal(h.GetProperty("dim").GetInt32(), c.Dim);
        Assert.Equal(h.GetProperty("hidden_dim").GetInt32(), c.HiddenDim);
        Assert.Equal(h.GetProperty("n_layers").GetInt32(), c.Layers);
        Assert.Equal(h.GetProperty("n_heads").GetInt32(), c.Heads);
        Assert.Equal(h.GetProperty("n_kv_heads").GetInt32(), c.KvHeads);
        Assert.Equal(h.GetProperty("vocab_size").GetInt32(), c.VocabSize);
        Assert.Equal(8, c.HeadDim);
        Assert.Equal(128, c.ContextLength); // what the converter wrote into llama.context_length
        Assert.Equal("llama", c.Name);
        Assert.All(source.Tensors.Values, t => Assert.Equal(DType.F32, t.Type));
        Assert.Equal(48, source.Tensors.Count);
        Assert.Empty(TensorNames.Verify(c, source.Tensors));
        Assert.Equal(4294967295u, source.Metadata["tokenizer.ggml.padding_token_id"]);
    }

    [FixtureFact("vocab/ggml-vocab-llama-spm.gguf")]
    public void VocabOnlyFileReadsAsMetadataButNotAsModel()
    {
        string path = Fixtures.Get("vocab", "ggml-vocab-llama-spm.gguf");
        IReadOnlyDictionary<string, object> md = GgufSource.ReadMetadata(path);
        var tokens = (string[])md["tokenizer.ggml.tokens"];
        Assert.Equal(32000, tokens.Length);
        Assert.Equal(["<unk>", "<s>", "</s>", "<0x00>"], tokens[..4]);
        Assert.Equal(32000, ((float[])md["tokenizer.ggml.scores"]).Length);
        Assert.Equal([2, 3, 3, 6], ((int[])md["tokenizer.ggml.token_type"])[..4]);
        Assert.Equal(1u, md["tokenizer.ggml.bos_token_id"]);
        Assert.Equal(true, md["tokenizer.ggml.add_bos_token"]);

        var e = Assert.Throws<GpuLlamaException>(() => GgufSource.Open(path));
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains("token_embd.weight", e.Message);
    }
}

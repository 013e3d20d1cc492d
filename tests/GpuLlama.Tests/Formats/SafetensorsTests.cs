using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using GpuLlama.Formats;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Formats;

public class SafetensorsTests
{
    [FixtureFact("tiny-llama-a/golden.json")]
    public void TinyLlamaA_ConfigMatchesGoldenAndTensorsAreComplete()
    {
        using SafetensorsSource source = SafetensorsSource.Open(Fixtures.Get("tiny-llama-a"));
        AssertMatchesGolden(source.Config, "tiny-llama-a");
        Assert.Equal(RopeStyle.Halves, source.Config.RopeStyle);
        Assert.Equal(16, source.Config.HeadDim);
        Assert.False(source.Config.TiedEmbeddings);
        Assert.Empty(TensorNames.Verify(source.Config, source.Tensors));

        // 2 + 4 layers × 9 + output norm, all stored as bf16 in one file
        Assert.Equal(39, source.Tensors.Count);
        Assert.All(source.Tensors.Values, t => Assert.Equal(DType.BF16, t.Type));
        Assert.All(source.Tensors.Values, t => Assert.Equal(0, t.File));
        Assert.Equal("safetensors", source.Format);

        Assert.Equal(128L, source.Metadata["config.hidden_size"]);
        Assert.Equal(new[] { "LlamaForCausalLM" }, source.Metadata["config.architectures"]);
        Assert.Equal(1e-5, source.Metadata["config.rms_norm_eps"]);
        Assert.False(source.Metadata.ContainsKey("config.rope_scaling"));
        Assert.Equal(2L, source.Metadata["generation_config.eos_token_id"]);
        Assert.Equal("<s>", source.Metadata["tokenizer_config.added_tokens_decoder.1.content"]);
        Assert.Equal(true, source.Metadata["tokenizer_config.add_bos_token"]);
        Assert.Equal("pt", source.Metadata["safetensors.format"]);
        Assert.Equal(Fixtures.Get("tiny-llama-a"), source.Metadata["hf.directory"]);
    }

    [FixtureFact("tiny-llama-c/golden.json")]
    public void TinyLlamaC_TiedF32ValuesMatchIndependentRead()
    {
        using SafetensorsSource source = SafetensorsSource.Open(Fixtures.Get("tiny-llama-c"));
        AssertMatchesGolden(source.Config, "tiny-llama-c");
        Assert.True(source.Config.TiedEmbeddings);
        Assert.False(source.Tensors.ContainsKey(TensorNames.Output));
        Assert.Empty(TensorNames.Verify(source.Config, source.Tensors));
        Assert.Equal(2 + 2 * 9, source.Tensors.Count);
        Assert.All(source.Tensors.Values, t => Assert.Equal(DType.F32, t.Type));

        // Bit patterns read with Python's struct module straight from the file.
        Assert.Equal(0xbcf07b5bu, F32Bits(source, TensorNames.TokenEmbedding, 7, 3));
        Assert.Equal(0x3c1306deu, F32Bits(source, TensorNames.TokenEmbedding, 31999, 255));
        Assert.Equal(0xbb82f204u, F32Bits(source, TensorNames.FfnDown(1), 200, 600));
        Assert.Equal(0x415b8531u, F32Bits(source, TensorNames.OutputNorm, 0, 10));
        Assert.Equal(0x3d95827bu, F32Bits(source, TensorNames.Wk(0), 5, 9));
    }

    [FixtureFact("tiny-llama-a/tiny-llama-a-f32.gguf")]
    public void TinyLlamaA_Bf16ValuesEqualTheF32Gguf()
    {
        using SafetensorsSource hf = SafetensorsSource.Open(Fixtures.Get("tiny-llama-a"));
        using GgufSource gguf = GgufSource.Open(Fixtures.Get("tiny-llama-a", "tiny-llama-a-f32.gguf"));

        // convert_hf_to_gguf.py widens bf16 to f32 exactly, so every value must be bit-equal.
        foreach (string name in new[] { TensorNames.TokenEmbedding, TensorNames.Wv(2), TensorNames.FfnDown(3), TensorNames.OutputNorm, TensorNames.Output })
        {
            TensorInfo h = hf.Tensors[name];
            Assert.Equal(h.Shape, gguf.Tensors[name].Shape);
            for (long row = 0; row < h.Rows; row += 5)
            {
                Assert.Equal(Bf16Row(hf, name, row), F32Row(gguf, name, row));
            }
        }

        // Q/K: the converter permuted rows for adjacent-pair RoPE: GGUF row h·d + 2i + t is HF row h·d + t·d/2 + i.
        ModelConfig c = hf.Config;
        foreach ((string name, int heads) in new[] { (TensorNames.Wq(1), c.Heads), (TensorNames.Wk(1), c.KvHeads) })
        {
            int d = c.HeadDim;
            for (int h = 0; h < heads; h++)
            {
                for (int i = 0; i < d / 2; i++)
                {
                    for (int t = 0; t < 2; t++)
                    {
                        Assert.Equal(Bf16Row(hf, name, h * d + t * d / 2 + i), F32Row(gguf, name, h * d + 2 * i + t));
                    }
                }
            }
        }
    }

    [FixtureTheory("tiny-llama-a/model.safetensors")]
    [InlineData(0L)]
    [InlineData(300_000L)]
    public void TinyLlamaA_RoundTripsThroughTheWriter(long maxShardBytes)
    {
        using var dir = new ScratchDirectory();
        using (SafetensorsSource original = SafetensorsSource.Open(Fixtures.Get("tiny-llama-a")))
        {
            SafetensorsWriter.Export(original, dir.Path, maxShardBytes);
            using SafetensorsSource copy = SafetensorsSource.Open(dir.Path);
            AssertSameConfig(original.Config with { Name = "" }, copy.Config with { Name = "" });
            Assert.Equal(original.Tensors.Keys.Order(), copy.Tensors.Keys.Order());
            foreach (TensorInfo t in original.Tensors.Values)
            {
                TensorInfo u = copy.Tensors[t.Name];
                Assert.Equal(t.Type, u.Type);
                Assert.Equal(t.Shape, u.Shape);
                Assert.True(original.View(t).AsSpan().SequenceEqual(copy.View(u).AsSpan()), t.Name);
            }

            if (maxShardBytes == 0)
            {
                Assert.Single(copy.Files);
                Assert.False(File.Exists(dir.File(SafetensorsSource.IndexFileName)));
            }
            else
            {
                // 1.7 MB of weights in shards of at most 300 kB, each mapped once
                Assert.True(copy.Files.Count >= 6, $"{copy.Files.Count} shards");
                Assert.Equal(copy.Files.Count, copy.Tensors.Values.Select(t => t.File).Distinct().Count());
                Assert.Equal(copy.Files.Count, Directory.GetFiles(dir.Path, "model-*-of-*.safetensors").Length);
                Assert.False(File.Exists(dir.File(SafetensorsSource.SingleFileName)));
                using JsonDocument index = JsonDocument.Parse(File.ReadAllBytes(dir.File(SafetensorsSource.IndexFileName)));
                Assert.Equal(39, index.RootElement.GetProperty("weight_map").EnumerateObject().Count());
                Assert.Equal(original.Tensors.Values.Sum(t => t.ByteLength), index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
            }
        }
    }

    [Theory]
    [InlineData(DType.F32, true)]
    [InlineData(DType.F16, false)]
    [InlineData(DType.BF16, false)]
    public void Writer_RoundTripsEachDtypeAndTying(DType type, bool tied)
    {
        using var dir = new ScratchDirectory();
        ModelConfig config = Small with { TiedEmbeddings = tied, EosIds = [2, 3], RopeScaling = new Llama3RopeScaling(8, 1, 4, 16) };
        Dictionary<string, (long[] Shape, byte[] Data)> tensors = MakeTensors(config, type);
        var writer = new SafetensorsWriter(config);
        foreach ((string name, (long[] shape, byte[] data)) in tensors)
        {
            writer.AddTensor(name, type, shape, data);
        }

        writer.Write(dir.Path);
        using SafetensorsSource source = SafetensorsSource.Open(dir.Path);
        AssertSameConfig(config with { Name = "" }, source.Config with { Name = "" });
        Assert.Equal(tensors.Keys.Order(), source.Tensors.Keys.Order());
        foreach ((string name, (long[] shape, byte[] data)) in tensors)
        {
            Assert.Equal(type, source.Tensors[name].Type);
            Assert.Equal(shape, source.Tensors[name].Shape);
            Assert.Equal(data, source.View(source.Tensors[name]).AsSpan().ToArray());
        }

        Assert.Equal(new long[] { 2, 3 }, source.Metadata["config.eos_token_id"]);
        Assert.Equal("llama3", source.Metadata["config.rope_scaling.rope_type"]);
    }

    [FixtureFact("stories260K/stories260K.bin")]
    public void Export_FromInterleavedSourceWritesHuggingFaceRowOrder()
    {
        using var dir = new ScratchDirectory();
        using Llama2cSource llama2c = Llama2cSource.Open(Fixtures.Get("stories260K", "stories260K.bin"));
        SafetensorsWriter.Export(llama2c, dir.Path);
        using SafetensorsSource hf = SafetensorsSource.Open(dir.Path);

        ModelConfig c = llama2c.Config;
        Assert.Equal(RopeStyle.Halves, hf.Config.RopeStyle);
        AssertSameConfig(c with { Name = "", RopeStyle = RopeStyle.Halves }, hf.Config with { Name = "" });
        Assert.True(hf.Config.TiedEmbeddings);
        Assert.Empty(TensorNames.Verify(hf.Config, hf.Tensors));
        Assert.True(llama2c.View(llama2c.Tensors[TensorNames.Wv(4)]).AsSpan().SequenceEqual(hf.View(hf.Tensors[TensorNames.Wv(4)]).AsSpan()));
        foreach ((string name, int heads) in new[] { (TensorNames.Wq(3), c.Heads), (TensorNames.Wk(3), c.KvHeads) })
        {
            int d = c.HeadDim;
            for (int h = 0; h < heads; h++)
            {
                for (int i = 0; i < d / 2; i++)
                {
                    for (int t = 0; t < 2; t++)
                    {
                        Assert.Equal(F32Row(llama2c, name, h * d + 2 * i + t), F32Row(hf, name, h * d + t * d / 2 + i));
                    }
                }
            }
        }
    }

    [Fact]
    public void ConfigVariantsOfTheLlamaFamilyParse()
    {
        // Llama 3 style: legacy "type" key, eos list, explicit null head_dim, theta 500000; generation_config overrides ids.
        using var dir = new ScratchDirectory();
        WriteSmall(dir.Path, Small);
        EditJson(dir.File("config.json"), j =>
        {
            j["model_type"] = "mistral";
            j["architectures"] = new JsonArray("MistralForCausalLM");
            j["sliding_window"] = null;
            j["head_dim"] = null;
            j["rope_theta"] = 500000.0;
            j["eos_token_id"] = new JsonArray(2, 7);
            j["rope_scaling"] = new JsonObject
            {
                ["type"] = "llama3",
                ["factor"] = 8.0,
                ["low_freq_factor"] = 1.0,
                ["high_freq_factor"] = 4.0,
                ["original_max_position_embeddings"] = 8,
            };
        });
        EditJson(dir.File("generation_config.json"), j =>
        {
            j["bos_token_id"] = 3;
            j["eos_token_id"] = new JsonArray(9, 10);
        });

        using SafetensorsSource source = SafetensorsSource.Open(dir.Path);
        ModelConfig c = source.Config;
        Assert.Equal(4, c.HeadDim);
        Assert.Equal(500000.0, c.RopeTheta);
        Assert.Equal(new Llama3RopeScaling(8.0, 1.0, 4.0, 8), c.RopeScaling);
        Assert.Equal(3, c.BosId);
        Assert.Equal([9, 10], c.EosIds);
        Assert.Equal(new long[] { 2, 7 }, source.Metadata["config.eos_token_id"]);
        Assert.Equal(new long[] { 9, 10 }, source.Metadata["generation_config.eos_token_id"]);
        Assert.Equal(8.0, Convert.ToDouble(source.Metadata["config.rope_scaling.factor"]));
        Assert.Equal(8L, source.Metadata["config.rope_scaling.original_max_position_embeddings"]);
        Assert.False(source.Metadata.ContainsKey("config.sliding_window"));
    }

    [Fact]
    public void UnusedTensorsOfOtherDtypesAreSkippedAndTiedHeadIsDropped()
    {
        using var dir = new ScratchDirectory();
        ModelConfig config = Small with { TiedEmbeddings = true };
        WriteSmall(dir.Path, config);
        RewriteHeader(dir.File("model.safetensors"), (header, dataLength) =>
        {
            // transformers < 4.31 saved the RoPE table; tied checkpoints sometimes still carry lm_head
            header["model.layers.0.self_attn.rotary_emb.inv_freq"] = Entry("I64", [2], dataLength, 16);
            header["lm_head.weight"] = Entry("F32", [16, 8], dataLength + 16, 512);
            return new byte[16 + 512];
        });

        using SafetensorsSource source = SafetensorsSource.Open(dir.Path);
        Assert.False(source.Tensors.ContainsKey(TensorNames.Output));
        Assert.Equal(2 + 9, source.Tensors.Count);
    }

    public static TheoryData<string> CorruptCases() =>
    [
        "header-size-absurd", "header-size-past-file", "header-json-invalid", "header-not-object", "truncated", "offsets-past-end",
        "offsets-reversed", "overlap", "byte-length-wrong", "dtype-int", "dtype-fp8", "dtype-unknown", "index-wrong-shard",
        "missing-shard", "missing-tensor-in-shard", "index-invalid", "shard-path-escapes", "no-weights", "config-missing",
        "config-missing-key", "config-wrong-type", "config-invalid-json", "config-hidden-vs-tensors", "config-ffn-vs-tensors",
        "config-untied-without-head", "config-rope-linear", "config-rope-unknown", "config-model-type", "config-sliding-window",
        "config-kv-heads", "generation-config-wrong-type",
    ];

    [Theory]
    [MemberData(nameof(CorruptCases))]
    public void CorruptDirectoriesFailWithOneLineNamingTheProblem(string name)
    {
        using var dir = new ScratchDirectory();
        bool sharded = name is "missing-shard" or "index-wrong-shard" or "missing-tensor-in-shard" or "index-invalid" or "shard-path-escapes";
        WriteSmall(dir.Path, Small, sharded ? 1100 : 0);
        string st = dir.File("model.safetensors");
        string shard1 = dir.File("model-00001-of-00003.safetensors");
        string config = dir.File("config.json");
        string index = dir.File(SafetensorsSource.IndexFileName);
        if (sharded)
        {
            Assert.Equal(3, Directory.GetFiles(dir.Path, "model-*.safetensors").Length);
        }

        string[] expected = name switch
        {
            "header-size-absurd" => Patch(st, 0, BitConverter.GetBytes(1L << 50), "model.safetensors", "header size 1125899906842624"),
            "header-size-past-file" => Patch(st, 0, BitConverter.GetBytes(new FileInfo(st).Length - 7), "model.safetensors", "header size"),
            "header-json-invalid" => Patch(st, 8, "#"u8.ToArray(), "model.safetensors", "header is not valid JSON"),
            "header-not-object" => ReplaceHeader(st, "[1, 2]", "model.safetensors", "header must be a JSON object"),
            "truncated" => Truncate(st, 4, "model.safetensors", "model.norm.weight", "past the end", "truncated"),
            "offsets-past-end" => Mutate(st, h => h["model.embed_tokens.weight"]!["data_offsets"] = new JsonArray(4096, 4096 + 512),
                "model.safetensors", "model.embed_tokens.weight", "past the end"),
            "offsets-reversed" => Mutate(st, h => h["model.norm.weight"]!["data_offsets"] = new JsonArray(32, 0),
                "model.safetensors", "model.norm.weight", "end before they begin"),
            "overlap" => Mutate(st, h => h["model.norm.weight"]!["data_offsets"] = new JsonArray(16, 48),
                "model.safetensors", "overlaps", "model.embed_tokens.weight"),
            "byte-length-wrong" => Mutate(st, h => h["model.norm.weight"]!["shape"] = new JsonArray(9),
                "model.safetensors", "model.norm.weight", "F32 [9] = 36 bytes", "span 32 bytes"),
            "dtype-int" => Mutate(st, h => h["model.norm.weight"]!["dtype"] = "I32", "model.safetensors", "model.norm.weight", "dtype I32"),
            "dtype-fp8" => Mutate(st, h =>
            {
                h["model.norm.weight"]!["dtype"] = "F8_E4M3";
                h["model.norm.weight"]!["shape"] = new JsonArray(32);
            }, "model.safetensors", "model.norm.weight", "dtype F8_E4M3"),
            "dtype-unknown" => Mutate(st, h => h["model.norm.weight"]!["dtype"] = "Q9", "model.safetensors", "model.norm.weight", "dtype Q9"),
            "index-wrong-shard" => EditJson(index, j => j["weight_map"]!["model.norm.weight"] = "model-00001-of-00003.safetensors",
                "model-00001-of-00003.safetensors", "model.norm.weight", "missing from the shard"),
            "missing-shard" => Delete(dir.File("model-00002-of-00003.safetensors"), "model-00002-of-00003.safetensors", "file not found"),
            "missing-tensor-in-shard" => Mutate(shard1, h => h.Remove("model.embed_tokens.weight"),
                "model-00001-of-00003.safetensors", "model.embed_tokens.weight", "missing from the shard"),
            "index-invalid" => Write(index, "{\"weight_map\": [", "model.safetensors.index.json", "not valid JSON"),
            "shard-path-escapes" => EditJson(index, j => j["weight_map"]!["model.norm.weight"] = "../model.safetensors",
                "model.safetensors.index.json", "model.norm.weight", "../model.safetensors"),
            "no-weights" => Delete(st, dir.Path, "neither model.safetensors nor model.safetensors.index.json"),
            "config-missing" => Delete(config, "config.json", "file not found"),
            "config-missing-key" => EditJson(config, j => j.Remove("hidden_size"), "config.json", "hidden_size is missing"),
            "config-wrong-type" => EditJson(config, j => j["hidden_size"] = "8", "config.json", "hidden_size must be a 32-bit integer, got string \"8\""),
            "config-invalid-json" => Write(config, "{\"hidden_size\": 8,,}", "config.json", "not valid JSON"),
            "config-hidden-vs-tensors" => EditJson(config, j =>
            {
                j["hidden_size"] = 16;
                j.Remove("head_dim");
            }, "model.safetensors", "token_embd.weight", "model.embed_tokens.weight", "[16, 8]", "expected [16, 16]"),
            "config-ffn-vs-tensors" => EditJson(config, j => j["intermediate_size"] = 32,
                "model.safetensors", "blk.0.ffn_gate.weight", "mlp.gate_proj", "[16, 8]", "expected [32, 8]"),
            "config-untied-without-head" => EditJson(config, j => j["tie_word_embeddings"] = false, dir.Path, "output.weight", "lm_head.weight", "missing"),
            "config-rope-linear" => EditJson(config, j => j["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = 2.0 },
                "config.json", "rope_scaling type 'linear' is not supported"),
            "config-rope-unknown" => EditJson(config, j => j["rope_scaling"] = new JsonObject { ["rope_type"] = "magic" },
                "config.json", "rope_scaling type 'magic' is unknown"),
            "config-model-type" => EditJson(config, j => j["model_type"] = "gpt2", "config.json", "model_type 'gpt2' is not supported"),
            "config-sliding-window" => EditJson(config, j => j["sliding_window"] = 16, "config.json", "sliding_window 16"),
            "config-kv-heads" => EditJson(config, j => j["num_key_value_heads"] = 3, "config.json", "KV head count 3"),
            "generation-config-wrong-type" => EditJson(dir.File("generation_config.json"), j => j["eos_token_id"] = "</s>",
                "generation_config.json", "eos_token_id must be an integer or a non-empty list"),
            _ => throw new ArgumentException(name),
        };

        var e = Assert.Throws<GpuLlamaException>(() => SafetensorsSource.Open(dir.Path));
        Assert.DoesNotContain('\n', e.Message);
        foreach (string part in expected)
        {
            Assert.Contains(part, e.Message);
        }
    }

    // ---- helpers ----

    /// <summary>A 1-layer model small enough to corrupt by hand: token_embd [16, 8] F32 is the first 512 data bytes.</summary>
    private static readonly ModelConfig Small = new()
    {
        Name = "small",
        Dim = 8,
        Layers = 1,
        Heads = 2,
        KvHeads = 1,
        HeadDim = 4,
        HiddenDim = 16,
        VocabSize = 16,
        ContextLength = 32,
        RopeStyle = RopeStyle.Halves,
        TiedEmbeddings = true,
    };

    private static void WriteSmall(string dir, ModelConfig config, long maxShardBytes = 0)
    {
        var writer = new SafetensorsWriter(config);
        foreach ((string name, (long[] shape, byte[] data)) in MakeTensors(config, DType.F32))
        {
            writer.AddTensor(name, DType.F32, shape, data);
        }

        writer.Write(dir, maxShardBytes);
    }

    private static Dictionary<string, (long[], byte[])> MakeTensors(ModelConfig config, DType type)
    {
        var result = new Dictionary<string, (long[], byte[])>();
        int seed = 1;
        foreach ((string name, long[] shape) in TensorNames.Required(config))
        {
            long n = shape.Aggregate(1L, (a, d) => a * d);
            var values = new float[n];
            var random = new Random(seed++);
            for (int i = 0; i < n; i++)
            {
                values[i] = (float)(random.NextDouble() * 2 - 1);
            }

            byte[] bytes = type switch
            {
                DType.F32 => MemoryMarshal.AsBytes(values.AsSpan()).ToArray(),
                DType.F16 => MemoryMarshal.AsBytes(values.Select(v => (Half)v).ToArray().AsSpan()).ToArray(),
                _ => MemoryMarshal.AsBytes(values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray().AsSpan()).ToArray(),
            };
            result[name] = (shape, bytes);
        }

        return result;
    }

    private static JsonObject Entry(string dtype, long[] shape, long begin, long length) => new()
    {
        ["dtype"] = dtype,
        ["shape"] = new JsonArray(shape.Select(d => (JsonNode)d).ToArray()),
        ["data_offsets"] = new JsonArray(begin, begin + length),
    };

    /// <summary>Rewrites a file's header via <paramref name="edit"/>, keeping its data and appending what edit returns.</summary>
    private static void RewriteHeader(string path, Func<JsonObject, long, byte[]?> edit)
    {
        byte[] file = File.ReadAllBytes(path);
        long size = BinaryPrimitives.ReadInt64LittleEndian(file);
        var header = JsonNode.Parse(file.AsSpan(8, (int)size))!.AsObject();
        byte[] data = file[(8 + (int)size)..];
        byte[] extra = edit(header, data.Length) ?? [];
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        using var stream = new FileStream(path, FileMode.Create);
        stream.Write(BitConverter.GetBytes((long)json.Length));
        stream.Write(json);
        stream.Write(data);
        stream.Write(extra);
    }

    private static string[] Mutate(string path, Action<JsonObject> edit, params string[] expected)
    {
        RewriteHeader(path, (h, _) =>
        {
            edit(h);
            return null;
        });
        return expected;
    }

    private static string[] ReplaceHeader(string path, string json, params string[] expected)
    {
        byte[] file = File.ReadAllBytes(path);
        long size = BinaryPrimitives.ReadInt64LittleEndian(file);
        byte[] replacement = Encoding.UTF8.GetBytes(json.PadRight((int)size));
        replacement.CopyTo(file, 8);
        File.WriteAllBytes(path, file);
        return expected;
    }

    private static string[] Patch(string path, long offset, byte[] bytes, params string[] expected)
    {
        using var stream = new FileStream(path, FileMode.Open);
        stream.Position = offset;
        stream.Write(bytes);
        return expected;
    }

    private static string[] Truncate(string path, int bytes, params string[] expected)
    {
        using var stream = new FileStream(path, FileMode.Open);
        stream.SetLength(stream.Length - bytes);
        return expected;
    }

    private static string[] Delete(string path, params string[] expected)
    {
        File.Delete(path);
        return expected;
    }

    private static string[] Write(string path, string text, params string[] expected)
    {
        File.WriteAllText(path, text);
        return expected;
    }

    private static string[] EditJson(string path, Action<JsonObject> edit, params string[] expected)
    {
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
        return expected;
    }

    private static void AssertMatchesGolden(ModelConfig c, string fixture)
    {
        using JsonDocument golden = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Get(fixture, "golden.json")));
        JsonElement g = golden.RootElement.GetProperty("config");
        Assert.Equal(g.GetProperty("hidden_size").GetInt32(), c.Dim);
        Assert.Equal(g.GetProperty("num_hidden_layers").GetInt32(), c.Layers);
        Assert.Equal(g.GetProperty("num_attention_heads").GetInt32(), c.Heads);
        Assert.Equal(g.GetProperty("num_key_value_heads").GetInt32(), c.KvHeads);
        Assert.Equal(g.GetProperty("intermediate_size").GetInt32(), c.HiddenDim);
        Assert.Equal(g.GetProperty("vocab_size").GetInt32(), c.VocabSize);
        Assert.Equal(g.GetProperty("max_position_embeddings").GetInt32(), c.ContextLength);
        Assert.Equal((float)g.GetProperty("rms_norm_eps").GetDouble(), c.RmsEps);
        Assert.Equal(g.GetProperty("rope_theta").GetDouble(), c.RopeTheta);
        Assert.Equal(g.GetProperty("tie_word_embeddings").GetBoolean(), c.TiedEmbeddings);
        Assert.Equal(g.GetProperty("bos_token_id").GetInt32(), c.BosId);
        Assert.Equal([g.GetProperty("eos_token_id").GetInt32()], c.EosIds);
        Assert.Null(c.RopeScaling);
        Assert.Equal(g.GetProperty("hidden_size").GetInt32() / g.GetProperty("num_attention_heads").GetInt32(), c.HeadDim);
    }

    private static readonly int[] s_noIds = [];

    internal static void AssertSameConfig(ModelConfig expected, ModelConfig actual)
    {
        Assert.Equal(expected with { EosIds = s_noIds }, actual with { EosIds = s_noIds });
        Assert.Equal(expected.EosIds, actual.EosIds);
    }

    private static uint F32Bits(IWeightSource s, string name, long row, long col) =>
        BinaryPrimitives.ReadUInt32LittleEndian(s.View(s.Tensors[name]).Row(row)[(int)(col * 4)..]);

    internal static float[] F32Row(IWeightSource s, string name, long row)
    {
        WeightView v = s.View(s.Tensors[name]);
        Assert.Equal(DType.F32, v.Type);
        return MemoryMarshal.Cast<byte, float>(v.Row(row)).ToArray();
    }

    private static float[] Bf16Row(IWeightSource s, string name, long row)
    {
        WeightView v = s.View(s.Tensors[name]);
        Assert.Equal(DType.BF16, v.Type);
        return MemoryMarshal.Cast<byte, ushort>(v.Row(row)).ToArray().Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16)).ToArray();
    }
}

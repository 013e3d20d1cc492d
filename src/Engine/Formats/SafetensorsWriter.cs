using System.Buffers.Binary;
using System.Text.Json;
using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>
/// Writes a Hugging Face model directory: <c>config.json</c>, <c>generation_config.json</c> and
/// <c>model.safetensors</c>, or shards <c>model-0000i-of-0000n.safetensors</c> with
/// <c>model.safetensors.index.json</c> (the names and index layout transformers' <c>save_pretrained</c> uses).
/// Tensors are given by canonical name and written under their Hugging Face names; rows are streamed, never
/// gathered in memory.
/// </summary>
public sealed class SafetensorsWriter
{
    /// <summary>Reads row <paramref name="row"/> of a tensor (rows of a 1-D tensor: just row 0).</summary>
    public delegate ReadOnlySpan<byte> RowReader(long row);

    private readonly ModelConfig _config;
    private readonly List<Tensor> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <param name="config">
    /// The model; with <see cref="RopeStyle.Interleaved"/> the Q/K rows given are in ggml's adjacent-pair order
    /// and are written back in Hugging Face's halves order, so the directory is a correct HF checkpoint.
    /// </param>
    public SafetensorsWriter(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        _config = config;
    }

    /// <summary>Adds a tensor from memory. <paramref name="shape"/> is row-major ([out, in] for matrices).</summary>
    public SafetensorsWriter AddTensor(string canonicalName, DType type, long[] shape, ReadOnlyMemory<byte> data)
    {
        long length = CheckTensor(canonicalName, type, shape);
        if (data.Length != length)
        {
            throw new ArgumentException($"tensor '{canonicalName}' {type} [{string.Join(", ", shape)}] takes {length} bytes, got {data.Length}", nameof(data));
        }

        long rowBytes = type.RowBytes(shape.Length == 0 ? 1 : shape[^1]);
        Add(canonicalName, type, shape, length, row => data.Span.Slice(checked((int)(row * rowBytes)), (int)rowBytes));
        return this;
    }

    /// <summary>Adds a tensor whose rows <paramref name="rows"/> reads (e.g. from another source's memory map).</summary>
    public SafetensorsWriter AddTensor(string canonicalName, DType type, long[] shape, RowReader rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        long length = CheckTensor(canonicalName, type, shape);
        Add(canonicalName, type, shape, length, rows);
        return this;
    }

    /// <summary>Writes every F32/F16/BF16 tensor of <paramref name="source"/> (zero-copy reads from its map) as a Hugging Face directory.</summary>
    public static void Export(IWeightSource source, string directory, long maxShardBytes = 0)
    {
        var writer = new SafetensorsWriter(source.Config);
        var required = TensorNames.Required(source.Config).Select(r => r.Name).ToList();
        foreach (string name in required)
        {
            if (!source.Tensors.TryGetValue(name, out TensorInfo? t))
            {
                GpuLlamaException.ThrowFile(source.Path, $"tensor {TensorNames.Describe(name)} is missing");
                return;
            }

            if (t.Type is not (DType.F32 or DType.F16 or DType.BF16))
            {
                GpuLlamaException.ThrowFile(source.Path, $"tensor '{name}' is {DTypeInfo.DisplayName(t.Type)}; safetensors export takes F32, F16 or BF16");
            }

            writer.AddTensor(name, t.Type, t.Shape, row => source.View(t).Row(row));
        }

        writer.Write(directory, maxShardBytes);
    }

    /// <summary>
    /// Writes the directory (created if needed). With <paramref name="maxShardBytes"/> &gt; 0, tensors are packed in
    /// order into shards of at most that many data bytes (a bigger tensor gets a shard of its own) plus an index.
    /// </summary>
    public void Write(string directory, long maxShardBytes = 0)
    {
        foreach ((string name, _) in TensorNames.Required(_config))
        {
            if (!_names.Contains(name))
            {
                throw new InvalidOperationException($"tensor {TensorNames.Describe(name)} was not added");
            }
        }

        DType mainType = _tensors.Count > 0 ? _tensors.GroupBy(t => t.Type).MaxBy(g => g.Count())!.Key : DType.F32;
        try
        {
            Directory.CreateDirectory(directory);
            WriteJson(Path.Combine(directory, HfConfig.ConfigFileName), HfConfig.ToJson(_config, mainType));
            WriteJson(Path.Combine(directory, HfConfig.GenerationConfigFileName), new Dictionary<string, object?>
            {
                ["bos_token_id"] = _config.BosId,
                ["eos_token_id"] = _config.EosIds.Count == 1 ? _config.EosIds[0] : _config.EosIds.ToArray(),
            });

            var shards = new List<List<Tensor>>();
            long used = 0;
            foreach (Tensor t in _tensors)
            {
                if (shards.Count == 0 || (maxShardBytes > 0 && used > 0 && used + t.Length > maxShardBytes))
                {
                    shards.Add([]);
                    used = 0;
                }

                shards[^1].Add(t);
                used += t.Length;
            }

            if (maxShardBytes <= 0)
            {
                File.Delete(Path.Combine(directory, SafetensorsSource.IndexFileName));
                WriteFile(Path.Combine(directory, SafetensorsSource.SingleFileName), shards.Count == 0 ? [] : shards[0]);
                return;
            }

            File.Delete(Path.Combine(directory, SafetensorsSource.SingleFileName));
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                string file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                WriteFile(Path.Combine(directory, file), shards[i]);
                foreach (Tensor t in shards[i])
                {
                    weightMap[t.HfName] = file;
                }
            }

            WriteJson(Path.Combine(directory, SafetensorsSource.IndexFileName), new Dictionary<string, object?>
            {
                ["metadata"] = new Dictionary<string, object> { ["total_size"] = _tensors.Sum(t => t.Length) },
                ["weight_map"] = weightMap,
            });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GpuLlamaException($"{directory}: cannot write model ({e.Message})", e);
        }
    }

    private void WriteFile(string path, List<Tensor> tensors)
    {
        var header = new Dictionary<string, object>(StringComparer.Ordinal)
        {
            ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" },
        };
        long offset = 0;
        foreach (Tensor t in tensors)
        {
            header[t.HfName] = new Dictionary<string, object>
            {
                ["dtype"] = t.Type.ToString(),
                ["shape"] = t.Shape,
                ["data_offsets"] = new[] { offset, offset + t.Length },
            };
            offset += t.Length;
        }

        // The reference writer pads the header with spaces so the data starts 8-byte aligned.
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(header);
        int padded = (json.Length + 7) / 8 * 8;
        byte[] headerBytes = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(headerBytes, (ulong)padded);
        json.CopyTo(headerBytes, 8);
        headerBytes.AsSpan(8 + json.Length).Fill((byte)' ');

        string temp = path + ".partial";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                stream.Write(headerBytes);
                foreach (Tensor t in tensors)
                {
                    WriteRows(stream, t);
                }
            }

            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>
    /// Streams a tensor's rows. Q/K of an interleaved source go back to Hugging Face order per head: destination
    /// row t*headDim/2 + j takes source row 2j + t — the inverse of convert_hf_to_gguf.py's <c>LlamaModel.permute</c>.
    /// </summary>
    private void WriteRows(Stream stream, Tensor t)
    {
        if (t.Length == 0)
        {
            return;
        }

        long rows = t.Shape.Length <= 1 ? 1 : t.Length / t.Type.RowBytes(t.Shape[^1]);
        if (t.PermuteHeads is not int heads)
        {
            for (long r = 0; r < rows; r++)
            {
                stream.Write(t.Rows(r));
            }

            return;
        }

        int headDim = _config.HeadDim;
        int half = headDim / 2;
        for (long h = 0; h < heads; h++)
        {
            for (int dst = 0; dst < headDim; dst++)
            {
                long src = h * headDim + 2 * (dst % half) + dst / half;
                stream.Write(t.Rows(src));
            }
        }
    }

    private void Add(string name, DType type, long[] shape, long length, RowReader rows)
    {
        int? permute = null;
        if (_config.RopeStyle == RopeStyle.Interleaved)
        {
            for (int l = 0; l < _config.Layers; l++)
            {
                permute = name == TensorNames.Wq(l) ? _config.Heads : name == TensorNames.Wk(l) ? _config.KvHeads : permute;
            }
        }

        if (permute is int heads && (shape.Length != 2 || shape[0] != (long)heads * _config.HeadDim))
        {
            throw new ArgumentException($"tensor '{name}' [{string.Join(", ", shape)}] must have {heads} × {_config.HeadDim} rows to be reordered for Hugging Face RoPE", nameof(shape));
        }

        _names.Add(name);
        _tensors.Add(new Tensor(name, TensorNames.ToHuggingFace(name), type, shape, length, rows, permute));
    }

    private long CheckTensor(string name, DType type, long[] shape)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (type is not (DType.F32 or DType.F16 or DType.BF16))
        {
            throw new ArgumentException($"tensor '{name}': safetensors export takes F32, F16 or BF16, got {type}", nameof(type));
        }

        if (_config.TiedEmbeddings && name == TensorNames.Output)
        {
            throw new ArgumentException($"tensor '{name}' must not be added: the config ties the output head to the embedding", nameof(name));
        }

        if (TensorNames.FromHuggingFace(TensorNames.ToHuggingFace(name)) != name)
        {
            throw new ArgumentException($"tensor '{name}' has no Hugging Face name", nameof(name));
        }

        if (_names.Contains(name))
        {
            throw new ArgumentException($"tensor '{name}' was already added", nameof(name));
        }

        long elements = 1;
        foreach (long d in shape)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(d, nameof(shape));
            elements = checked(elements * d);
        }

        return checked(elements * type.BlockBytes());
    }

    private static void WriteJson(string path, object value)
    {
        File.WriteAllBytes(path, JsonSerializer.SerializeToUtf8Bytes(value, new JsonSerializerOptions { WriteIndented = true }));
    }

    private sealed record Tensor(string Name, string HfName, DType Type, long[] Shape, long Length, RowReader Rows, int? PermuteHeads);
}

using System.Buffers.Binary;
using System.Text.Json;
using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>
/// A Hugging Face model directory (<c>config.json</c> + <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c>) as an <see cref="IWeightSource"/>. Every shard is memory mapped once and
/// tensors are views into the maps. Hugging Face Q/K weights are not permuted, so the config says
/// <see cref="RopeStyle.Halves"/> and no weight is touched.
/// </summary>
public sealed unsafe class SafetensorsSource : IWeightSource
{
    public const string SingleFileName = "model.safetensors";

    public const string IndexFileName = "model.safetensors.index.json";

    private readonly MappedFile[] _files;
    private readonly Dictionary<string, TensorInfo> _tensors;

    private SafetensorsSource(string directory, MappedFile[] files, Dictionary<string, TensorInfo> tensors, ModelConfig config, Dictionary<string, object> metadata)
    {
        Path = directory;
        _files = files;
        _tensors = tensors;
        Config = config;
        Metadata = metadata;
    }

    /// <summary>The model directory.</summary>
    public string Path { get; }

    public string Format => "safetensors";

    public ModelConfig Config { get; }

    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    public IReadOnlyDictionary<string, object> Metadata { get; }

    /// <summary>The mapped shard files; <see cref="TensorInfo.File"/> indexes this list.</summary>
    public IReadOnlyList<string> Files => _files.Select(f => f.Path).ToArray();

    /// <summary>
    /// Opens and validates a model directory (a path to a file inside it is accepted too): config, every
    /// shard's header, and every required tensor's dtype and shape against the config.
    /// </summary>
    public static SafetensorsSource Open(string directory)
    {
        if (File.Exists(directory))
        {
            directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(directory))!;
        }
        else if (!Directory.Exists(directory))
        {
            GpuLlamaException.ThrowFile(directory, "directory not found");
        }

        (ModelConfig config, Dictionary<string, object> metadata) = HfConfig.Read(directory);

        string indexPath = System.IO.Path.Combine(directory, IndexFileName);
        string singlePath = System.IO.Path.Combine(directory, SingleFileName);
        List<(string Shard, List<string>? Names)> plan;
        if (File.Exists(indexPath))
        {
            plan = ReadIndex(indexPath);
        }
        else if (File.Exists(singlePath))
        {
            plan = [(SingleFileName, null)];
        }
        else
        {
            GpuLlamaException.ThrowFile(directory, $"neither {SingleFileName} nor {IndexFileName} is in the directory");
            return null!;
        }

        var files = new List<MappedFile>();
        try
        {
            var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            foreach ((string shard, List<string>? names) in plan)
            {
                string shardPath = System.IO.Path.Combine(directory, shard);
                if (!File.Exists(shardPath))
                {
                    GpuLlamaException.ThrowFile(shardPath, names is null ? "file not found" : $"file not found (listed in {IndexFileName})");
                }

                MappedFile file = MappedFile.Open(shardPath);
                files.Add(file);
                int fileIndex = files.Count - 1;
                SafetensorsHeader header = SafetensorsHeader.Parse(file);
                if (fileIndex == 0)
                {
                    foreach ((string key, string value) in header.Metadata)
                    {
                        metadata[$"safetensors.{key}"] = value;
                    }
                }

                var wanted = names is null ? null : new HashSet<string>(names, StringComparer.Ordinal);
                if (names is not null)
                {
                    foreach (string name in names)
                    {
                        if (!header.Entries.ContainsKey(name))
                        {
                            GpuLlamaException.ThrowFile(shardPath, $"tensor '{name}' is missing from the shard, though {IndexFileName} lists it there");
                        }
                    }
                }

                foreach (SafetensorsEntry e in header.Entries.Values)
                {
                    // The index is the authority on which shard holds a tensor (transformers loads by weight_map).
                    if (wanted is not null && !wanted.Contains(e.Name))
                    {
                        continue;
                    }

                    string? canonical = TensorNames.FromHuggingFace(e.Name);
                    if (canonical is null)
                    {
                        continue; // e.g. rotary_emb.inv_freq: recomputed from the config
                    }

                    if (e.Type is not (DType.F32 or DType.F16 or DType.BF16))
                    {
                        GpuLlamaException.ThrowFile(shardPath, $"tensor '{e.Name}' has dtype {e.DTypeName}; only F32, F16 and BF16 are supported");
                    }

                    // HF → canonical names are one-to-one and the index lists each name once, so no canonical name repeats.
                    tensors.Add(canonical, new TensorInfo(canonical, e.Type.Value, e.Shape, fileIndex, header.DataStart + e.Begin, e.End - e.Begin));
                }
            }

            if (config.TiedEmbeddings)
            {
                // Some tied checkpoints still save lm_head (a copy of the embedding); the head is the embedding.
                tensors.Remove(TensorNames.Output);
            }

            CheckShapes(directory, config, tensors, files);
            metadata["hf.directory"] = directory;
            return new SafetensorsSource(directory, files.ToArray(), tensors, config, metadata);
        }
        catch
        {
            foreach (MappedFile f in files)
            {
                f.Dispose();
            }

            throw;
        }
    }

    public WeightView View(TensorInfo tensor)
    {
        if (!_tensors.TryGetValue(tensor.Name, out TensorInfo? own) || own.File != tensor.File || own.Offset != tensor.Offset || own.ByteLength != tensor.ByteLength)
        {
            GpuLlamaException.ThrowFile(Path, $"tensor '{tensor.Name}' is not part of this model");
        }

        MappedFile file = _files[own.File];
        ObjectDisposedException.ThrowIf(file.Pointer is null && file.Length > 0, this);
        return new WeightView(own, file.At(own.Offset, own.ByteLength, $"tensor '{own.Name}'"), fileMapped: true);
    }

    public void Dispose()
    {
        foreach (MappedFile f in _files)
        {
            f.Dispose();
        }
    }

    /// <summary>The shards in file-name order, each with the tensor names the index places in it.</summary>
    private static List<(string Shard, List<string>? Names)> ReadIndex(string indexPath)
    {
        using JsonDocument doc = HfConfig.ParseJsonFile(indexPath);
        if (doc.RootElement.ValueKind != JsonValueKind.Object
            || !doc.RootElement.TryGetProperty("weight_map", out JsonElement map)
            || map.ValueKind != JsonValueKind.Object)
        {
            GpuLlamaException.ThrowFile(indexPath, "expected an object with a \"weight_map\" object");
            return null!;
        }

        var byShard = new SortedDictionary<string, List<string>>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (JsonProperty p in map.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
            {
                GpuLlamaException.ThrowFile(indexPath, $"weight_map entry '{p.Name}' must be a file name string, got {HfConfig.Describe(p.Value)}");
            }

            string shard = p.Value.GetString()!;

            // A shard is a file beside the index, never a path elsewhere.
            if (shard.Length == 0 || shard is "." or ".." || shard.IndexOfAny(['/', '\\']) >= 0)
            {
                GpuLlamaException.ThrowFile(indexPath, $"weight_map entry '{p.Name}' names '{shard}', expected a file name in the same directory");
            }

            if (!seen.Add(p.Name))
            {
                GpuLlamaException.ThrowFile(indexPath, $"weight_map lists tensor '{p.Name}' twice");
            }

            if (!byShard.TryGetValue(shard, out List<string>? names))
            {
                byShard[shard] = names = [];
            }

            names.Add(p.Name);
        }

        if (byShard.Count == 0)
        {
            GpuLlamaException.ThrowFile(indexPath, "weight_map is empty");
        }

        return byShard.Select(kv => (kv.Key, (List<string>?)kv.Value)).ToList();
    }

    /// <summary>
    /// Every required tensor against the config (<see cref="TensorNames.Required"/>), failing on the first problem
    /// with the shard that holds the tensor, so a config/weights mismatch is one clear line.
    /// </summary>
    private static void CheckShapes(string directory, ModelConfig config, Dictionary<string, TensorInfo> tensors, List<MappedFile> files)
    {
        foreach ((string name, long[] shape) in TensorNames.Required(config))
        {
            if (!tensors.TryGetValue(name, out TensorInfo? t))
            {
                string hint = name == TensorNames.Output ? " (config.json has tie_word_embeddings false)" : "";
                GpuLlamaException.ThrowFile(directory, $"tensor {TensorNames.Describe(name)} is missing{hint}");
                return;
            }

            bool same = t.Shape.AsSpan().SequenceEqual(shape) || (shape.Length == 1 && t.Elements == shape[0] && t.Cols == shape[0]);
            if (!same)
            {
                GpuLlamaException.ThrowFile(files[t.File].Path,
                    $"tensor {TensorNames.Describe(name)} has shape {t.ShapeText}, expected [{string.Join(", ", shape)}] from config.json");
            }
        }
    }
}

/// <summary>One tensor entry of a safetensors header; offsets are relative to the data section.</summary>
internal sealed record SafetensorsEntry(string Name, string DTypeName, DType? Type, long[] Shape, long Begin, long End);

/// <summary>
/// The header of one <c>.safetensors</c> file (huggingface/safetensors format: 8-byte little-endian header size,
/// a UTF-8 JSON object, then the byte buffer), validated the way the reference implementation does: the size is
/// capped, every tensor lies inside the buffer with exactly shape × dtype-size bytes, and no two overlap.
/// </summary>
internal sealed class SafetensorsHeader
{
    /// <summary>The reference implementation's MAX_HEADER_SIZE (100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private SafetensorsHeader(long dataStart, Dictionary<string, SafetensorsEntry> entries, Dictionary<string, string> metadata)
    {
        DataStart = dataStart;
        Entries = entries;
        Metadata = metadata;
    }

    /// <summary>Absolute offset of the byte buffer (8 + header size).</summary>
    public long DataStart { get; }

    public Dictionary<string, SafetensorsEntry> Entries { get; }

    /// <summary>The free-form <c>__metadata__</c> string map.</summary>
    public Dictionary<string, string> Metadata { get; }

    /// <summary>safetensors dtype names → engine type (null for types the engine cannot compute with) and element size.</summary>
    public static (DType? Type, int Size) DTypeOf(string name) => name switch
    {
        "F32" => (DType.F32, 4),
        "F16" => (DType.F16, 2),
        "BF16" => (DType.BF16, 2),
        "F64" => (null, 8),
        "I64" or "U64" => (null, 8),
        "I32" or "U32" => (null, 4),
        "I16" or "U16" => (null, 2),
        "I8" or "U8" or "BOOL" or "F8_E4M3" or "F8_E5M2" or "F8_E8M0" => (null, 1),
        _ => (null, 0),
    };

    public static SafetensorsHeader Parse(MappedFile file)
    {
        string path = file.Path;
        if (file.Length < 8)
        {
            GpuLlamaException.ThrowFile(path, $"file is {file.Length} bytes, too short for a safetensors header (8-byte size + JSON)");
        }

        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(file.Span(0, 8, "header size"));
        if (size > MaxHeaderBytes || size > (ulong)(file.Length - 8))
        {
            GpuLlamaException.ThrowFile(path, $"header size {size} is impossible (file is {file.Length} bytes, limit {MaxHeaderBytes}); not a safetensors file or corrupt");
        }

        long dataStart = 8 + (long)size;
        long dataLength = file.Length - dataStart;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(file.Span(8, (int)size, "header").ToArray());
        }
        catch (JsonException e)
        {
            throw new GpuLlamaException($"{path}: header is not valid JSON ({e.Message})", e);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                GpuLlamaException.ThrowFile(path, $"header must be a JSON object, got {HfConfig.Describe(doc.RootElement)}");
            }

            var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (JsonProperty p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "__metadata__")
                {
                    if (p.Value.ValueKind == JsonValueKind.Object)
                    {
                        foreach (JsonProperty m in p.Value.EnumerateObject())
                        {
                            if (m.Value.ValueKind == JsonValueKind.String)
                            {
                                metadata[m.Name] = m.Value.GetString()!;
                            }
                        }
                    }

                    continue;
                }

                SafetensorsEntry e = ParseEntry(path, p, dataLength);
                if (!entries.TryAdd(e.Name, e))
                {
                    GpuLlamaException.ThrowFile(path, $"tensor '{e.Name}' appears twice in the header");
                }
            }

            SafetensorsEntry? previous = null;
            foreach (SafetensorsEntry e in entries.Values.Where(e => e.End > e.Begin).OrderBy(e => e.Begin))
            {
                if (previous is not null && e.Begin < previous.End)
                {
                    GpuLlamaException.ThrowFile(path,
                        $"tensor '{e.Name}' data [{e.Begin}, {e.End}) overlaps tensor '{previous.Name}' [{previous.Begin}, {previous.End})");
                }

                previous = e;
            }

            return new SafetensorsHeader(dataStart, entries, metadata);
        }
    }

    private static SafetensorsEntry ParseEntry(string path, JsonProperty p, long dataLength)
    {
        string name = p.Name;
        JsonElement v = p.Value;
        if (v.ValueKind != JsonValueKind.Object)
        {
            GpuLlamaException.ThrowFile(path, $"tensor '{name}' must be an object with dtype, shape and data_offsets, got {HfConfig.Describe(v)}");
        }

        if (!v.TryGetProperty("dtype", out JsonElement dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            GpuLlamaException.ThrowFile(path, $"tensor '{name}' has no dtype string");
        }

        string dtype = dtypeElement.GetString()!;
        long[] shape = ReadLongs(path, name, v, "shape", null);
        long[] offsets = ReadLongs(path, name, v, "data_offsets", 2);
        long begin = offsets[0];
        long end = offsets[1];
        if (begin > end)
        {
            GpuLlamaException.ThrowFile(path, $"tensor '{name}' data_offsets [{begin}, {end}) end before they begin");
        }

        if (end > dataLength)
        {
            GpuLlamaException.ThrowFile(path,
                $"tensor '{name}' data_offsets [{begin}, {end}) lie past the end of the data ({dataLength} bytes); the file is truncated or corrupt");
        }

        (DType? type, int size) = DTypeOf(dtype);
        if (size != 0)
        {
            long expected = size;
            foreach (long d in shape)
            {
                // shape × size above the data length is already wrong; stopping there avoids overflow
                expected = d == 0 ? 0 : expected > dataLength / d ? long.MaxValue : expected * d;
                if (expected == 0)
                {
                    break;
                }
            }

            if (expected != end - begin)
            {
                string want = expected == long.MaxValue ? "more than the file holds" : $"{expected} bytes";
                GpuLlamaException.ThrowFile(path,
                    $"tensor '{name}' is {dtype} [{string.Join(", ", shape)}] = {want}, but its data_offsets span {end - begin} bytes");
            }
        }

        return new SafetensorsEntry(name, dtype, type, shape, begin, end);
    }

    private static long[] ReadLongs(string path, string name, JsonElement v, string key, int? count)
    {
        if (!v.TryGetProperty(key, out JsonElement array) || array.ValueKind != JsonValueKind.Array
            || (count is int n && array.GetArrayLength() != n) || array.GetArrayLength() > 8)
        {
            string what = count is null ? "an array of at most 8 dimensions" : $"an array of {count} integers";
            GpuLlamaException.ThrowFile(path, $"tensor '{name}' {key} must be {what}");
        }

        var values = new long[array.GetArrayLength()];
        int i = 0;
        foreach (JsonElement x in array.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out long value) || value < 0)
            {
                GpuLlamaException.ThrowFile(path, $"tensor '{name}' {key} must hold non-negative integers, got {x.GetRawText()}");
                return null!;
            }

            values[i++] = value;
        }

        return values;
    }
}

using System.Runtime.InteropServices;
using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>
/// A GGUF model file (llama.cpp's format) as an <see cref="IWeightSource"/>: the file is memory mapped and
/// tensors are views into it. Quantized tensor types are exposed as stored; what to do with them is the
/// device's business. The config is read from the <c>{arch}.*</c> keys the way llama.cpp's
/// <c>llama_model::load_hparams</c> reads them.
/// </summary>
public sealed unsafe class GgufSource : IWeightSource
{
    private readonly MappedFile _file;
    private readonly Dictionary<string, TensorInfo> _tensors;

    private GgufSource(MappedFile file, GgufContents contents, ModelConfig config)
    {
        _file = file;
        Version = contents.Version;
        Alignment = contents.Alignment;
        DataOffset = contents.DataOffset;
        Metadata = contents.Metadata;
        TensorList = contents.Tensors;
        _tensors = contents.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Config = config;
    }

    public string Path => _file.Path;

    public string Format => "gguf";

    public ModelConfig Config { get; }

    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    /// <summary>The tensors in file order.</summary>
    public IReadOnlyList<TensorInfo> TensorList { get; }

    public IReadOnlyDictionary<string, object> Metadata { get; }

    /// <summary>GGUF version of the file (2 or 3).</summary>
    public uint Version { get; }

    public int Alignment { get; }

    /// <summary>Absolute offset of the tensor data section.</summary>
    public long DataOffset { get; }

    /// <summary>Opens and validates a GGUF model: structure, config keys, and every required tensor's shape.</summary>
    public static GgufSource Open(string path)
    {
        MappedFile file = MappedFile.Open(path);
        try
        {
            GgufContents contents = GgufReader.Parse(file, metadataOnly: false);
            ModelConfig config = GgufConfig.Read(path, contents.Metadata, contents.Tensors, t => ReadFloats(file, t));
            foreach (string problem in TensorNames.Verify(config, contents.Tensors.ToDictionary(t => t.Name)))
            {
                GpuLlamaException.ThrowFile(path, problem);
            }

            return new GgufSource(file, contents, config);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads only the header and the key/values (no tensor table, no model config): for vocab-only files
    /// and for tokenizers. Values are copies; the file is closed on return.
    /// </summary>
    public static IReadOnlyDictionary<string, object> ReadMetadata(string path)
    {
        using MappedFile file = MappedFile.Open(path);
        return GgufReader.Parse(file, metadataOnly: true).Metadata;
    }

    public WeightView View(TensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(_file.Pointer is null && _file.Length > 0, this);
        if (!_tensors.TryGetValue(tensor.Name, out TensorInfo? own) || own.Offset != tensor.Offset || own.ByteLength != tensor.ByteLength)
        {
            GpuLlamaException.ThrowFile(Path, $"tensor '{tensor.Name}' is not part of this file");
        }

        return new WeightView(own, _file.At(own.Offset, own.ByteLength, $"tensor '{own.Name}'"), fileMapped: true);
    }

    public void Dispose() => _file.Dispose();

    private static float[] ReadFloats(MappedFile file, TensorInfo t)
    {
        var values = new float[t.Elements];
        new ReadOnlySpan<byte>(file.At(t.Offset, t.ByteLength, $"tensor '{t.Name}'"), checked((int)t.ByteLength))
            .CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }
}

using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>
/// The weight seam: a model file (GGUF, Hugging Face directory, llama2.c checkpoint, or synthetic weights)
/// seen as hyper-parameters + canonical named tensors (<see cref="TensorNames"/>) + metadata. The rest of the
/// engine never knows which format it came from.
/// </summary>
public interface IWeightSource : IDisposable
{
    /// <summary>The path the user gave, for every error message.</summary>
    string Path { get; }

    /// <summary>"gguf", "safetensors", "llama2c" or "synthetic".</summary>
    string Format { get; }

    ModelConfig Config { get; }

    /// <summary>Tensors by canonical (GGUF) name, with row-major shapes.</summary>
    IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>
    /// GGUF key/values, or config.json / generation_config.json / tokenizer_config.json entries.
    /// GGUF arrays come as typed arrays (string[], int[], float[], uint[], long[], double[], bool[], object[] for nested).
    /// </summary>
    IReadOnlyDictionary<string, object> Metadata { get; }

    /// <summary>The tensor's bytes in the map; bounds were checked when the source was opened.</summary>
    WeightView View(TensorInfo tensor);
}

/// <summary>Opens any supported model path, choosing the format from what is there.</summary>
public static class WeightSource
{
    /// <summary>
    /// A directory (or a <c>.safetensors</c> / <c>.json</c> file in one) is a Hugging Face model; a file starting
    /// with the GGUF magic or named <c>.gguf</c> is GGUF; any other file is read as a llama2.c checkpoint, whose
    /// exact-size check rejects files that are not one.
    /// </summary>
    public static IWeightSource Open(string path)
    {
        if (Directory.Exists(path))
        {
            return SafetensorsSource.Open(path);
        }

        if (!File.Exists(path))
        {
            GpuLlamaException.ThrowFile(path, "file or directory not found");
        }

        string extension = System.IO.Path.GetExtension(path);
        if (extension.Equals(".safetensors", StringComparison.OrdinalIgnoreCase) || extension.Equals(".json", StringComparison.OrdinalIgnoreCase))
        {
            return SafetensorsSource.Open(path);
        }

        if (extension.Equals(".gguf", StringComparison.OrdinalIgnoreCase) || StartsWithGgufMagic(path))
        {
            return GgufSource.Open(path);
        }

        return Llama2cSource.Open(path);
    }

    private static bool StartsWithGgufMagic(string path)
    {
        Span<byte> magic = stackalloc byte[4];
        try
        {
            using FileStream stream = File.OpenRead(path);
            return stream.ReadAtLeast(magic, 4, throwOnEndOfStream: false) == 4 && BitConverter.ToUInt32(magic) == Gguf.Magic;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GpuLlamaException($"{path}: cannot read file ({e.Message})", e);
        }
    }
}

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

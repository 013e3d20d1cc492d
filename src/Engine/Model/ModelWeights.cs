using GpuLlama.Devices;
using GpuLlama.Formats;

namespace GpuLlama.Model;

/// <summary>One transformer layer's weights, on the layer's device. Shapes are row-major [rows, cols].</summary>
public sealed record LayerWeights(
    DeviceWeight AttnNorm,   // [Dim]
    DeviceWeight Wq,         // [QDim, Dim]
    DeviceWeight Wk,         // [KvDim, Dim]
    DeviceWeight Wv,         // [KvDim, Dim]
    DeviceWeight Wo,         // [Dim, QDim]
    DeviceWeight FfnNorm,    // [Dim]
    DeviceWeight FfnGate,    // [HiddenDim, Dim]   w1
    DeviceWeight FfnUp,      // [HiddenDim, Dim]   w3
    DeviceWeight FfnDown)    // [Dim, HiddenDim]   w2
{
    /// <summary>The nine weights in <see cref="TensorNames.LayerTensors"/>' order.</summary>
    public static LayerWeights Of(IReadOnlyList<DeviceWeight> w) => new(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]);
}

/// <summary>All of a model's weights, each uploaded to the device that uses it.</summary>
public sealed class ModelWeights : IDisposable
{
    private ModelWeights(IWeightSource source, DeviceWeight tokenEmbedding, IReadOnlyList<LayerWeights> layers, DeviceWeight outputNorm, DeviceWeight output, List<DeviceWeight> all)
    {
        Source = source;
        TokenEmbedding = tokenEmbedding;
        Layers = layers;
        OutputNorm = outputNorm;
        Output = output;
        _all = all;
    }

    private readonly List<DeviceWeight> _all;

    /// <summary>Where the weights came from (not owned): prompt offload reads CPU-resident layers from it again.</summary>
    public IWeightSource Source { get; }

    /// <summary>[Vocab, Dim] on the input device.</summary>
    public DeviceWeight TokenEmbedding { get; }

    public IReadOnlyList<LayerWeights> Layers { get; }

    /// <summary>[Dim] on the output device.</summary>
    public DeviceWeight OutputNorm { get; }

    /// <summary>[Vocab, Dim] on the output device (the token embedding again when the head is tied).</summary>
    public DeviceWeight Output { get; }

    /// <summary>
    /// Checks every tensor against the config (the first problem is the error, naming the file), then uploads each
    /// to its device straight from the map. A tied head is the token embedding uploaded again where the output runs
    /// (on the CPU that is the same pointer, no copy).
    /// </summary>
    public static ModelWeights Upload(IWeightSource source, DevicePlacement placement, CancellationToken cancellationToken = default)
    {
        ModelConfig c = source.Config;
        List<string> problems = TensorNames.Verify(c, source.Tensors);
        if (problems.Count > 0)
        {
            GpuLlamaException.ThrowFile(source.Path, problems[0]);
        }

        var all = new List<DeviceWeight>();
        try
        {
            DeviceWeight Up(string name, IDevice device)
            {
                cancellationToken.ThrowIfCancellationRequested();
                DeviceWeight w = device.Upload(source.View(source.Tensors[name]));
                all.Add(w);
                return w;
            }

            DeviceWeight embedding = Up(TensorNames.TokenEmbedding, placement.Input);
            var layers = new List<LayerWeights>(c.Layers);
            for (int l = 0; l < c.Layers; l++)
            {
                IDevice d = placement.Layers[l];
                layers.Add(LayerWeights.Of([.. TensorNames.LayerTensors(l).Select(name => Up(name, d))]));
            }

            DeviceWeight norm = Up(TensorNames.OutputNorm, placement.Output);
            DeviceWeight head = c.TiedEmbeddings
                ? ReferenceEquals(placement.Output, placement.Input) ? embedding : Up(TensorNames.TokenEmbedding, placement.Output)
                : Up(TensorNames.Output, placement.Output);
            return new ModelWeights(source, embedding, layers, norm, head, all);
        }
        catch
        {
            foreach (DeviceWeight w in all)
            {
                w.Dispose();
            }

            throw;
        }
    }

    public void Dispose()
    {
        foreach (DeviceWeight w in _all)
        {
            w.Dispose();
        }
    }
}

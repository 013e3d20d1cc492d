using GpuLlama.Devices;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>run --verbose: the placement per layer, and the memory plan's estimate next to what each device allocated.</summary>
public static class Diagnostics
{
    public static void PrintMemory(LlamaModel model)
    {
        Console.Error.WriteLine($"placement: {LayerPlacement.Describe(model.Plan)}");
        var options = new MemoryPlanOptions
        {
            ContextLength = model.ContextLength,
            BatchSize = model.Transformer.BatchSize,
            OpOffloadMinBatch = model.Transformer.OffloadMinBatch,
            CacheTypeK = model.Transformer.CacheTypeK,
            CacheTypeV = model.Transformer.CacheTypeV,
        };
        if (model.Transformer.OffloadDevice is { } offload)
        {
            Console.Error.WriteLine($"prompt offload: batches of {model.Transformer.OffloadMinBatch}+ tokens stream {model.Transformer.StreamedLayerCount} CPU layer(s) to {offload.Name} (its scratch holds their weight slots)");
        }

        foreach (DeviceMemory m in MemoryPlan.Estimate(model.Config, model.Source.Tensors, model.Plan, options))
        {
            IDevice? d = model.Devices.FirstOrDefault(x => x.Name == m.Device);
            long actual = d?.AllocatedBytes ?? 0;
            double ratio = m.Total > 0 ? (double)actual / m.Total : 1;
            Console.Error.WriteLine($"memory {m.Device}: estimated {Mib(m.Total)} MiB (weights {Mib(m.Weights)}, KV {Mib(m.KvCache)}, scratch {Mib(m.Scratch)}), allocated {Mib(actual)} MiB ({ratio:P1} of the estimate)");
        }
    }

    public static string Mib(long bytes) => (bytes / (double)(1 << 20)).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
}

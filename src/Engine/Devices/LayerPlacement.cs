namespace GpuLlama.Devices;

/// <summary>llama.cpp's --split-mode: split offloaded layers across devices, or use one device only.</summary>
public enum SplitMode
{
    None,
    Layer,
}

/// <summary>
/// Where the input (token embedding), each repeating layer and the output (final norm + head) run, by device
/// name ("cpu", "cuda:0" …). A plain record: computed by pure functions, printed, unit tested from tables.
/// </summary>
public sealed record LayerPlan(string Input, IReadOnlyList<string> Layers, string Output)
{
    /// <summary>Distinct device names in order of first use, input first.</summary>
    public IReadOnlyList<string> DeviceNames() => new[] { Input }.Concat(Layers).Append(Output).Distinct().ToList();

    /// <summary>Layers (and the output, counted as layer n like llama.cpp) not on the CPU.</summary>
    public int OffloadedCount => Layers.Count(l => l != "cpu") + (Output != "cpu" ? 1 : 0);

    public bool Equals(LayerPlan? other) => other is not null && Input == other.Input && Output == other.Output && Layers.SequenceEqual(other.Layers);

    public override int GetHashCode() => HashCode.Combine(Input, Output, Layers.Count);
}

/// <summary>Placement with llama.cpp's semantics (llama_model::load_tensors: i_gpu_start, splits, dev_layer/dev_output).</summary>
public static class LayerPlacement
{
    public const string Cpu = "cpu";

    /// <summary>
    /// --gpu-layers N: the last N repeating layers go to the GPUs; N &gt; layers also puts the output there (llama.cpp
    /// counts the output as layer n); the token embedding stays on the CPU. Offloaded layers are cut into contiguous
    /// slices in proportion to <paramref name="split"/> (default: each device's free memory); with
    /// <see cref="SplitMode.None"/> only <paramref name="mainGpu"/> is used.
    /// </summary>
    public static LayerPlan FromGpuLayers(int layers, int gpuLayers, IReadOnlyList<DeviceInfo> gpus, IReadOnlyList<float>? split, SplitMode mode, int mainGpu)
    {
        if (gpuLayers < 0)
        {
            throw new GpuLlamaException($"--gpu-layers {gpuLayers}: must be 0 or more");
        }

        var names = new string[layers];
        Array.Fill(names, Cpu);
        if (gpus.Count == 0 || gpuLayers == 0)
        {
            return new LayerPlan(Cpu, names, Cpu);
        }

        float[] cumulative = Cumulative(gpus, split, mode, mainGpu);
        int start = Math.Max(layers - gpuLayers, 0);                 // i_gpu_start
        int offloaded = Math.Min(gpuLayers, layers + 1);              // act_gpu_layers (the output counts as layer n)
        string DeviceOf(int il)
        {
            float fraction = (float)(il - start) / offloaded;
            int i = 0;
            while (i < cumulative.Length - 1 && !(cumulative[i] > fraction))
            {
                i++;
            }

            return gpus[i].Name;
        }

        for (int il = start; il < layers; il++)
        {
            names[il] = DeviceOf(il);
        }

        string output = layers - start < offloaded ? DeviceOf(layers) : Cpu;
        return new LayerPlan(Cpu, names, output);
    }

    /// <summary>Normalised cumulative proportions per device (llama.cpp's splits array).</summary>
    private static float[] Cumulative(IReadOnlyList<DeviceInfo> gpus, IReadOnlyList<float>? split, SplitMode mode, int mainGpu)
    {
        var weights = new float[gpus.Count];
        if (mode == SplitMode.None)
        {
            if ((uint)mainGpu >= (uint)gpus.Count)
            {
                throw new GpuLlamaException($"--main-gpu {mainGpu}: there are only {gpus.Count} device(s)");
            }

            weights[mainGpu] = 1;
        }
        else if (split is { Count: > 0 })
        {
            if (split.Count > gpus.Count)
            {
                throw new GpuLlamaException($"--tensor-split has {split.Count} values but {gpus.Count} device(s) are in use (choose them with --devices)");
            }

            for (int i = 0; i < split.Count; i++)
            {
                weights[i] = split[i];
            }
        }
        else
        {
            for (int i = 0; i < gpus.Count; i++)
            {
                weights[i] = Math.Max(1, gpus[i].FreeMemoryKnown ? gpus[i].FreeMemory : gpus[i].TotalMemory);
            }
        }

        float total = weights.Sum();
        if (total <= 0)
        {
            throw new GpuLlamaException("--tensor-split: the proportions add up to zero");
        }

        var cumulative = new float[gpus.Count];
        float sum = 0;
        for (int i = 0; i < gpus.Count; i++)
        {
            sum += weights[i];
            cumulative[i] = sum / total;
        }

        return cumulative;
    }

    /// <summary>"layers 0-11 cpu, 12-31 cuda:0; output cuda:0".</summary>
    public static string Describe(LayerPlan plan)
    {
        var parts = new List<string>();
        int i = 0;
        while (i < plan.Layers.Count)
        {
            int j = i;
            while (j + 1 < plan.Layers.Count && plan.Layers[j + 1] == plan.Layers[i])
            {
                j++;
            }

            parts.Add(i == j ? $"{i} {plan.Layers[i]}" : $"{i}-{j} {plan.Layers[i]}");
            i = j + 1;
        }

        return $"layers {string.Join(", ", parts)}; output {plan.Output}";
    }

    /// <summary>llama.cpp's "offloaded 24/33 layers to GPU", with the per-layer description.</summary>
    public static string Summary(LayerPlan plan, int layers) =>
        $"offloaded {plan.OffloadedCount}/{layers + 1} layers to GPU ({Describe(plan)})";
}

using GpuLlama.Devices;
using GpuLlama.Formats;

namespace GpuLlama.Model;

/// <summary>
/// Prompt offload, llama.cpp's op offload: a prompt batch of at least <see cref="DefaultMinBatch"/> tokens runs the
/// layers placed on the CPU on a GPU of the placement instead, their weights copied over for that batch through one
/// device weight per distinct tensor role, dtype and shape (a "slot", refilled layer by layer); their KV caches stay
/// on the CPU, where their attention runs. A batch of n tokens does 2n FLOPs per weight that the copy moves once, so
/// from some n on the GPU's speed pays for the copy.
/// Decoding (one token) never streams. This class is the one rule for which layers stream and what their slots
/// take, shared by the transformer (which allocates them) and <see cref="MemoryPlan"/> (which counts them).
/// </summary>
public static class PromptOffload
{
    /// <summary>
    /// The smallest batch that streams, by default. llama.cpp's CUDA backend streams from 32 tokens, but its matmuls
    /// run on tensor cores and ours on SIMT cores (Llama-3-8B BF16 on an H100: 46 ms per layer of 512 tokens,
    /// docs/performance.md), so the copy of a layer (436 MB in BF16) is paid back only by longer batches. Until a GPU
    /// measures where streaming starts to pay, 256 keeps chat-sized prompts on the CPU and streams the full batches of
    /// long prompts; <c>--op-offload-min-batch</c> moves it.
    /// </summary>
    public const int DefaultMinBatch = 256;

    /// <summary>
    /// The device that runs the CPU's layers for large batches: the first non-CPU device of the layers (the one the
    /// hidden state reaches first), else the output's; null when the placement uses no other device.
    /// </summary>
    public static T? Target<T>(IReadOnlyList<T> layers, T output, Func<T, bool> isCpu)
        where T : class => layers.FirstOrDefault(d => !isCpu(d)) ?? (isCpu(output) ? null : output);

    /// <summary>Whether a GPU can hold the tensor in a slot: the formats the ILGPU backend uploads.</summary>
    public static bool Streams(TensorInfo t) => QuantRepack.Uploadable(t.Type, t.Cols);

    /// <summary>Per layer: whether it streams, i.e. it is on the CPU and each of its nine tensors can be streamed.</summary>
    public static bool[] StreamedLayers(ModelConfig c, IReadOnlyDictionary<string, TensorInfo> tensors, Func<int, bool> onCpu)
    {
        var streamed = new bool[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            streamed[l] = onCpu(l) && TensorNames.LayerTensors(l).All(n => tensors.TryGetValue(n, out TensorInfo? t) && Streams(t));
        }

        return streamed;
    }

    /// <summary>One slot per distinct (role, dtype, shape) among the streamed layers, with the first tensor that needs it.</summary>
    public static IReadOnlyList<(SlotKey Key, TensorInfo First)> Slots(ModelConfig c, IReadOnlyDictionary<string, TensorInfo> tensors, bool[] streamed)
    {
        var slots = new List<(SlotKey, TensorInfo)>();
        var seen = new HashSet<SlotKey>();
        for (int l = 0; l < c.Layers; l++)
        {
            if (!streamed[l])
            {
                continue;
            }

            string[] names = TensorNames.LayerTensors(l);
            for (int role = 0; role < names.Length; role++)
            {
                TensorInfo t = tensors[names[role]];
                if (seen.Add(SlotKey.Of(role, t)))
                {
                    slots.Add((SlotKey.Of(role, t), t));
                }
            }
        }

        return slots;
    }

    /// <summary>
    /// Device bytes of the slots a placement needs on its <see cref="Target{T}"/> (0 when nothing would stream: offload
    /// off, batches smaller than the minimum, no GPU, or no streamable layer on the CPU).
    /// </summary>
    public static long SlotBytes(ModelConfig c, IReadOnlyDictionary<string, TensorInfo> tensors, LayerPlan plan, int minBatch, int batch)
    {
        if (!Active(minBatch, batch) || Target(plan.Layers, plan.Output, d => d == LayerPlacement.Cpu) is null)
        {
            return 0;
        }

        bool[] streamed = StreamedLayers(c, tensors, l => plan.Layers[l] == LayerPlacement.Cpu);
        return Slots(c, tensors, streamed).Sum(s => MemoryPlan.WeightBytes(s.First));
    }

    /// <summary>Whether batches of up to <paramref name="batch"/> tokens can reach <paramref name="minBatch"/> (0 = offload off).</summary>
    public static bool Active(int minBatch, int batch) => minBatch > 0 && batch >= minBatch;

    /// <summary>A slot's identity: the tensor's index in <see cref="TensorNames.LayerTensors"/>, dtype and shape.</summary>
    public readonly record struct SlotKey(int Role, DType Type, long Rows, long Cols)
    {
        public static SlotKey Of(int role, TensorInfo t) => new(role, t.Type, t.Rows, t.Cols);
    }
}

using GpuLlama.Devices;

namespace GpuLlama.Model;

/// <summary>
/// Which opened device runs the input (token embedding), each transformer layer, and the output (final norm +
/// head) — llama.cpp's dev_input / dev_layer / dev_output. Computed from a <c>LayerPlan</c> of device names.
/// </summary>
public sealed record DevicePlacement(IDevice Input, IReadOnlyList<IDevice> Layers, IDevice Output)
{
    /// <summary>Every device in the placement, each once, input first.</summary>
    public IReadOnlyList<IDevice> Devices { get; } = new[] { Input }.Concat(Layers).Append(Output).Distinct().ToList();

    /// <summary>Everything on one device.</summary>
    public static DevicePlacement All(IDevice device, int layers) => new(device, Enumerable.Repeat(device, layers).ToList(), device);
}

namespace GpuLlama.Devices;

/// <summary>What a device is, before it is opened: enough for placement and memory planning.</summary>
public sealed record DeviceInfo(string Name, DeviceKind Kind, long TotalMemory, long FreeMemory, bool FreeMemoryKnown, string Description = "");

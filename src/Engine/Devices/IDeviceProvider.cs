using System.Reflection;

namespace GpuLlama.Devices;

/// <summary>
/// Finds and opens accelerators. The engine itself has no GPU library; the ILGPU backend (GpuLlama.Kernels)
/// provides one. <see cref="DeviceProviders.Default"/> finds it when that assembly is deployed beside the engine,
/// so a library user who references the package gets GPUs without wiring anything.
/// </summary>
public interface IDeviceProvider
{
    /// <summary>Every accelerator present: CUDA, OpenCL and the emulated (ILGPU CPU accelerator) ones.</summary>
    IReadOnlyList<DeviceInfo> Discover();

    /// <summary>Opens a device by name ("cuda:0", "opencl:1", "emulated:0").</summary>
    IDevice Create(string name);
}

public static class DeviceProviders
{
    private const string IlgpuProviderType = "GpuLlama.Kernels.IlgpuDeviceProvider, GpuLlama.Kernels";

    /// <summary>The ILGPU provider when GpuLlama.Kernels is present, else null (CPU only).</summary>
    public static IDeviceProvider? Default { get; } = LoadDefault();

    private static IDeviceProvider? LoadDefault()
    {
        try
        {
            Type? t = Type.GetType(IlgpuProviderType, throwOnError: false);
            return t is null ? null : (IDeviceProvider?)Activator.CreateInstance(t);
        }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException or TargetInvocationException)
        {
            return null;
        }
    }
}

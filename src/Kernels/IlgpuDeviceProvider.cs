using GpuLlama.Devices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using IDevice = GpuLlama.Devices.IDevice;
using ILGPU.Runtime.OpenCL;

namespace GpuLlama.Kernels;

/// <summary>
/// Discovers and opens ILGPU accelerators: "cuda:N", "opencl:N" (only devices ILGPU can compile for: OpenCL 2.0, or
/// 3.0 with the generic address space — PoCL without it is left out) and always "emulated:0", ILGPU's CPU accelerator.
/// The engine loads this type by name (<see cref="DeviceProviders"/>), so it needs a public parameterless constructor.
/// </summary>
public sealed class IlgpuDeviceProvider : IDeviceProvider
{
    /// <summary>
    /// The emulator runs one OS thread per simulated GPU thread; a 4-lane warp and 4 warps per group keep launches
    /// fast while still exercising multi-warp reductions.
    /// </summary>
    private static readonly CPUDevice s_emulated = new(numThreadsPerWarp: 4, numWarpsPerMultiprocessor: 4, numMultiprocessors: 1);

    /// <summary>How many emulated devices are offered (emulated:0 … emulated:3).</summary>
    public const int EmulatedDevices = 4;

    private static readonly Lazy<Context> s_context = new(CreateContext, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The process-wide ILGPU context (compiled kernels are cached per context).</summary>
    internal static Context Context => s_context.Value;

    public IReadOnlyList<DeviceInfo> Discover()
    {
        var list = new List<DeviceInfo>();
        Context ctx = Context;
        var cuda = ctx.GetCudaDevices();
        for (int i = 0; i < cuda.Count; i++)
        {
            list.Add(CudaInfo(ctx, cuda[i], i));
        }

        var cl = ctx.GetCLDevices();
        for (int i = 0; i < cl.Count; i++)
        {
            list.Add(new DeviceInfo($"opencl:{i}", DeviceKind.OpenCL, cl[i].MemorySize, cl[i].MemorySize, false, cl[i].Name));
        }

        // several emulated devices (separate accelerators on the host) let multi-GPU placements run without GPUs
        for (int i = 0; i < EmulatedDevices; i++)
        {
            list.Add(new DeviceInfo($"emulated:{i}", DeviceKind.Emulated, IlgpuDevice.EmulatedMemory, IlgpuDevice.EmulatedMemory, false,
                $"ILGPU CPU accelerator (warp {s_emulated.WarpSize}, {s_emulated.MaxNumThreadsPerGroup} threads per group)"));
        }
        return list;
    }

    public IDevice Create(string name)
    {
        Context ctx = Context;
        int colon = name.IndexOf(':');
        string kind = colon < 0 ? name : name[..colon];
        bool hasIndex = int.TryParse(colon < 0 ? "" : name[(colon + 1)..], out int index) && index >= 0;
        if (hasIndex)
        {
            switch (kind)
            {
                case "cuda" when index < ctx.GetCudaDevices().Count:
                    return Open(ctx.GetCudaDevices()[index], name, DeviceKind.Cuda);
                case "opencl" when index < ctx.GetCLDevices().Count:
                    return Open(ctx.GetCLDevices()[index], name, DeviceKind.OpenCL);
                case "emulated" when index < EmulatedDevices:
                    return Open(ctx.GetCPUDevices()[0], name, DeviceKind.Emulated);
            }
        }

        string known = string.Join(", ", Discover().Select(d => d.Name));
        throw new GpuLlamaException($"unknown device '{name}' (available: cpu, {known})");
    }

    private static IlgpuDevice Open(Device device, string name, DeviceKind kind)
    {
        Accelerator accelerator;
        try
        {
            accelerator = device.CreateAccelerator(Context);
        }
        catch (Exception e) when (e is AcceleratorException or NotSupportedException or InvalidOperationException)
        {
            throw new GpuLlamaException($"cannot open {name} ({device.Name}): {e.Message}", e);
        }

        try
        {
            return new IlgpuDevice(accelerator, name, kind);
        }
        catch
        {
            accelerator.Dispose();
            throw;
        }
    }

    private static DeviceInfo CudaInfo(Context ctx, CudaDevice device, int index)
    {
        long total = device.MemorySize;
        long free = total;
        bool known = false;
        try
        {
            // free memory needs a context on the device; open one briefly (discovery runs once per process)
            using Accelerator accelerator = device.CreateAccelerator(ctx);
            accelerator.Bind();
            known = CudaMemoryInfo.TryGetFree(out free);
            if (!known)
            {
                free = total;
            }
        }
        catch (AcceleratorException)
        {
        }

        return new DeviceInfo($"cuda:{index}", DeviceKind.Cuda, total, free, known, device.Name);
    }

    private static Context CreateContext()
    {
        try
        {
            // O2 is what turns ArrayView loads into ld.global.v4 (O1 leaves generic ld.v4); PtxGateTests compiles at O2 too
            return Context.Create(b => b.Cuda().OpenCL().CPU(s_emulated).EnableAlgorithms().Optimize(OptimizationLevel.O2));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // a broken GPU driver or OpenCL ICD must not take the emulator (and the CPU path) down with it
            return Context.Create(b => b.CPU(s_emulated).EnableAlgorithms().Optimize(OptimizationLevel.O2));
        }
    }
}

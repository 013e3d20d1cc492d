using System.CommandLine;
using GpuLlama.Devices;

namespace GpuLlama.Host;

/// <summary>gpullama devices: what accelerators are there (name, type, memory).</summary>
public static class DevicesCommand
{
    public static Command Create()
    {
        var command = new Command("devices", "List the CPU and the accelerators ILGPU finds (CUDA, OpenCL, emulated).");
        command.SetAction(_ =>
        {
            using var cpu = new CpuDevice();
            Console.Out.WriteLine($"{"name",-12} {"type",-9} {"total MiB",10} {"free MiB",10}  description");
            Console.Out.WriteLine($"{cpu.Name,-12} {"cpu",-9} {cpu.TotalMemory >> 20,10} {cpu.FreeMemory >> 20,10}  {cpu.Description}");
            IDeviceProvider? provider = DeviceProviders.Default;
            if (provider is null)
            {
                Console.Out.WriteLine("(the ILGPU backend GpuLlama.Kernels is not deployed: CPU only)");
                return 0;
            }

            foreach (DeviceInfo d in provider.Discover())
            {
                string free = d.FreeMemoryKnown ? (d.FreeMemory >> 20).ToString() : "unknown";
                Console.Out.WriteLine($"{d.Name,-12} {d.Kind.ToString().ToLowerInvariant(),-9} {d.TotalMemory >> 20,10} {free,10}  {d.Description}");
            }

            return 0;
        });
        return command;
    }
}

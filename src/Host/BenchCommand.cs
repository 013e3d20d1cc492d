using System.CommandLine;

namespace GpuLlama.Host;

public static class BenchCommand
{
    public static Command Create()
    {
        var command = new Command("bench", "Benchmark prompt processing and generation.");
        return command;
    }
}

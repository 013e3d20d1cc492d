namespace GpuLlama.Host;

public static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("gpullama: not built yet");
        return 1;
    }
}

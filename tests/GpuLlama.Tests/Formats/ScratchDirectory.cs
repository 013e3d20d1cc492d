namespace GpuLlama.Tests.Formats;

/// <summary>A scratch directory deleted when the test ends.</summary>
internal sealed class ScratchDirectory : IDisposable
{
    public ScratchDirectory() => Path = Directory.CreateTempSubdirectory("gpullama-test-").FullName;

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // a test that failed while a map was open; the OS temp cleaner gets it
        }
    }
}

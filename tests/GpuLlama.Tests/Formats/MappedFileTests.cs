using GpuLlama.Formats;
using Xunit;

namespace GpuLlama.Tests.Formats;

public sealed unsafe class MappedFileTests
{
    [Fact]
    public void Released_pages_read_back_from_the_file()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gpullama-map-{Guid.NewGuid():N}.bin");
        try
        {
            byte[] data = new byte[5 * 4096 + 123];
            new Random(3).NextBytes(data);
            File.WriteAllBytes(path, data);
            using MappedFile map = MappedFile.Open(path);
            byte* p = map.At(0, data.Length, "test data");
            Assert.Equal(data, new ReadOnlySpan<byte>(p, data.Length).ToArray()); // pages faulted in
            MappedFile.Release(p + 100, data.Length - 200); // whole pages inside, as a device that copied a tensor does
            Assert.Equal(data, new ReadOnlySpan<byte>(p, data.Length).ToArray());
        }
        finally
        {
            File.Delete(path);
        }
    }
}

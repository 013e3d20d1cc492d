using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace GpuLlama.Formats;

/// <summary>
/// A read-only memory map of one file. Weights are never copied into the managed heap: tensors are pointers into
/// this map, so a 16 GB model needs 16 GB of page cache, not of GC heap. This is the only type that touches the
/// raw mapping; every range it hands out is bounds checked against the file length.
/// </summary>
public sealed unsafe partial class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _pointer;

    private MappedFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* pointer, long length)
    {
        Path = path;
        _map = map;
        _view = view;
        _pointer = pointer;
        Length = length;
    }

    public string Path { get; }

    public long Length { get; }

    /// <summary>Start of the mapping (null for an empty file).</summary>
    public byte* Pointer => _pointer;

    public static MappedFile Open(string path)
    {
        if (!File.Exists(path))
        {
            GpuLlamaException.ThrowFile(path, Directory.Exists(path) ? "is a directory, expected a file" : "file not found");
        }

        long length;
        try
        {
            length = new FileInfo(path).Length;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GpuLlamaException($"{path}: cannot read file ({e.Message})", e);
        }

        if (length == 0)
        {
            return new MappedFile(path, null, null, null, 0);
        }

        try
        {
            var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            MemoryMappedViewAccessor view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            p += view.PointerOffset;
            return new MappedFile(path, map, view, p, length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GpuLlamaException($"{path}: cannot map file ({e.Message})", e);
        }
    }

    /// <summary>True when [offset, offset+count) lies inside the file.</summary>
    public bool Contains(long offset, long count) => offset >= 0 && count >= 0 && offset <= Length && count <= Length - offset;

    /// <summary>Pointer to <paramref name="offset"/>, after checking that <paramref name="count"/> bytes follow; <paramref name="what"/> names the thing for the error.</summary>
    public byte* At(long offset, long count, string what)
    {
        if (!Contains(offset, count))
        {
            GpuLlamaException.ThrowFile(Path, $"{what} at byte {offset} (+{count} bytes) lies past the end of the file ({Length} bytes); the file is truncated or corrupt");
        }

        return _pointer + offset;
    }

    /// <summary>
    /// Lets go of the whole pages inside [<paramref name="p"/>, +<paramref name="bytes"/>) of a map, when a copy has
    /// taken their place (Linux; elsewhere nothing): they leave the process's resident set, and reading them again is
    /// still correct — a file map's pages come back from the file. Never for memory that is not a file map.
    /// </summary>
    public static void Release(byte* p, long bytes)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        long page = Environment.SystemPageSize;
        long start = ((long)p + page - 1) / page * page, end = ((long)p + bytes) / page * page;
        if (end > start)
        {
            _ = Madvise((void*)start, (nuint)(end - start), MadvDontNeed);
        }
    }

    private const int MadvDontNeed = 4; // linux/mman.h

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);

    /// <summary>A bounds-checked span (below 2 GiB).</summary>
    public ReadOnlySpan<byte> Span(long offset, int count, string what) => new(At(offset, count, what), count);

    public void Dispose()
    {
        if (_view is not null && _pointer is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _pointer = null;
        }

        _view?.Dispose();
        _map?.Dispose();
    }
}

using System.Runtime.InteropServices;
using System.Text;

namespace GpuLlama.Formats;

/// <summary>What a GGUF file holds, parsed and validated (nothing here points into the map).</summary>
internal sealed record GgufContents(
    uint Version,
    Dictionary<string, object> Metadata,
    List<TensorInfo> Tensors,
    int Alignment,
    long DataOffset);

/// <summary>
/// Parses a GGUF file (ggml docs/gguf.md; the checks follow ggml's gguf.cpp <c>gguf_init_from_file_impl</c>).
/// Every length and count is checked against the bytes that remain before anything is allocated, so a
/// crafted file can make us allocate at most about the size of the file itself. Each problem is one
/// <see cref="GpuLlamaException"/> line that names the file and the key or tensor.
/// </summary>
internal sealed unsafe class GgufReader
{
    private readonly string _path;
    private readonly byte* _base;
    private readonly long _length;
    private long _pos;

    private GgufReader(MappedFile file)
    {
        _path = file.Path;
        _base = file.Pointer;
        _length = file.Length;
    }

    /// <summary>Parses header, metadata and (unless <paramref name="metadataOnly"/>) the tensor table.</summary>
    public static GgufContents Parse(MappedFile file, bool metadataOnly)
    {
        if (!BitConverter.IsLittleEndian)
        {
            GpuLlamaException.ThrowFile(file.Path, "GGUF reading needs a little-endian machine");
        }

        return new GgufReader(file).Parse(metadataOnly);
    }

    private GgufContents Parse(bool metadataOnly)
    {
        if (_length < 4)
        {
            throw Error($"file is {_length} bytes, too short to be a GGUF file");
        }

        uint magic = *(uint*)_base;
        if (magic != Gguf.Magic)
        {
            throw Error($"not a GGUF file (first bytes are {MagicText(magic)}, expected \"GGUF\")");
        }

        _pos = 4;
        uint version = U32("the version");
        if (version is < Gguf.MinVersion or > Gguf.MaxVersion)
        {
            uint swapped = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(version);
            throw Error(version == 1 ? "GGUF version 1 is not supported (versions 2 and 3 are); re-convert the model with a current llama.cpp"
                : swapped is >= Gguf.MinVersion and <= Gguf.MaxVersion ? "big-endian GGUF files are not supported"
                : $"GGUF version {version} is not supported (versions 2 and 3 are); this file is newer than this reader or corrupt");
        }

        ulong tensorCount = U64("the tensor count");
        ulong kvCount = U64("the metadata count");

        // Counts only bound the loops; nothing is sized by them, so a lying count ends in a truncation error
        // that names the key or tensor being read.
        if (kvCount > (ulong)Gguf.MaxKeyValues)
        {
            throw Error($"metadata count {kvCount} is more than the {Gguf.MaxKeyValues} allowed; the file is corrupt");
        }

        if (tensorCount > (ulong)Gguf.MaxTensors)
        {
            throw Error($"tensor count {tensorCount} is more than the {Gguf.MaxTensors} allowed; the file is corrupt");
        }

        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        for (int i = 0; i < (int)kvCount; i++)
        {
            ReadKeyValue(metadata, i);
        }

        int alignment = Gguf.DefaultAlignment;
        if (metadata.TryGetValue(Gguf.AlignmentKey, out object? a))
        {
            // gguf.cpp requires uint32; an alignment must be a power of two for GGML_PAD to work
            if (a is not uint u)
            {
                throw Error($"key '{Gguf.AlignmentKey}' has type {Gguf.Name(Gguf.TypeOf(a)!.Value)}, expected uint32");
            }

            if (u == 0 || (u & (u - 1)) != 0 || u > 1 << 30)
            {
                throw Error($"key '{Gguf.AlignmentKey}' is {u}, expected a power of two");
            }

            alignment = (int)u;
        }

        var tensors = new List<TensorInfo>();
        if (metadataOnly)
        {
            return new GgufContents(version, metadata, tensors, alignment, 0);
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < (int)tensorCount; i++)
        {
            // Offset is relative to the data section until the section's start is known
            TensorInfo t = ReadTensorInfo(i, alignment);
            if (!names.Add(t.Name))
            {
                throw Error($"tensor {Gguf.Quote(t.Name)} appears twice in the tensor table");
            }

            tensors.Add(t);
        }

        long dataOffset = Gguf.Align(_pos, alignment);
        if (tensorCount > 0 && dataOffset > _length)
        {
            throw Error($"the data section starts at byte {dataOffset} (tensor table ends at {_pos}, aligned to {alignment}) past the end of the file ({_length} bytes); the file is truncated");
        }

        for (int i = 0; i < tensors.Count; i++)
        {
            TensorInfo t = tensors[i];
            long start = t.Offset;
            if (start > _length - dataOffset || t.ByteLength > _length - dataOffset - start)
            {
                throw Error($"tensor {Gguf.Quote(t.Name)} data [{start}, +{t.ByteLength} bytes) in the data section at byte {dataOffset} lies past the end of the file ({_length} bytes); the file is truncated or corrupt");
            }

            tensors[i] = t with { Offset = dataOffset + start };
        }

        CheckOverlaps(tensors);
        return new GgufContents(version, metadata, tensors, alignment, dataOffset);
    }

    private void CheckOverlaps(List<TensorInfo> tensors)
    {
        var byOffset = tensors.OrderBy(t => t.Offset).ToArray();
        for (int i = 1; i < byOffset.Length; i++)
        {
            TensorInfo prev = byOffset[i - 1];
            TensorInfo next = byOffset[i];
            if (prev.Offset + prev.ByteLength > next.Offset)
            {
                throw Error($"tensors {Gguf.Quote(prev.Name)} (bytes {prev.Offset}..{prev.Offset + prev.ByteLength}) and {Gguf.Quote(next.Name)} (from byte {next.Offset}) overlap");
            }
        }
    }

    private void ReadKeyValue(Dictionary<string, object> metadata, int index)
    {
        long at = _pos;
        string key = ReadString($"metadata key #{index}", Gguf.MaxKeyBytes);
        if (key.Length == 0)
        {
            throw Error($"metadata key #{index} at byte {at} is empty");
        }

        var type = (GgufType)U32($"the type of key {Gguf.Quote(key)}");
        object value = ReadValue(type, key, 0);
        if (!metadata.TryAdd(key, value))
        {
            throw Error($"key {Gguf.Quote(key)} appears twice in the metadata");
        }
    }

    private object ReadValue(GgufType type, string key, int depth)
    {
        string what = $"the value of key {Gguf.Quote(key)}";
        switch (type)
        {
            case GgufType.UInt8: return Scalar<byte>(what);
            case GgufType.Int8: return Scalar<sbyte>(what);
            case GgufType.UInt16: return Scalar<ushort>(what);
            case GgufType.Int16: return Scalar<short>(what);
            case GgufType.UInt32: return Scalar<uint>(what);
            case GgufType.Int32: return Scalar<int>(what);
            case GgufType.Float32: return Scalar<float>(what);
            case GgufType.UInt64: return Scalar<ulong>(what);
            case GgufType.Int64: return Scalar<long>(what);
            case GgufType.Float64: return Scalar<double>(what);
            case GgufType.Bool: return Bool(Scalar<byte>(what), key);
            case GgufType.String: return ReadString(what, Gguf.MaxStringBytes);
            case GgufType.Array: return ReadArray(key, depth + 1);
            default:
                throw Error($"key {Gguf.Quote(key)} has unknown value type {(uint)type}");
        }
    }

    private Array ReadArray(string key, int depth)
    {
        if (depth > Gguf.MaxArrayDepth)
        {
            throw Error($"key {Gguf.Quote(key)} nests arrays deeper than {Gguf.MaxArrayDepth} levels");
        }

        var elementType = (GgufType)U32($"the array type of key {Gguf.Quote(key)}");
        if (!Gguf.IsKnown(elementType))
        {
            throw Error($"key {Gguf.Quote(key)} is an array of unknown value type {(uint)elementType}");
        }

        ulong count = U64($"the array length of key {Gguf.Quote(key)}");
        long min = Gguf.MinEncodedSize(elementType);
        if (count > (ulong)Array.MaxLength || count > (ulong)(Remaining / min))
        {
            throw Error($"key {Gguf.Quote(key)} claims {count} {Gguf.Name(elementType)} values but only {Remaining} bytes remain in the file");
        }

        int n = (int)count;
        string what = $"the values of key {Gguf.Quote(key)}";
        switch (elementType)
        {
            case GgufType.UInt8: return ScalarArray<byte>(n, what);
            case GgufType.Int8: return ScalarArray<sbyte>(n, what);
            case GgufType.UInt16: return ScalarArray<ushort>(n, what);
            case GgufType.Int16: return ScalarArray<short>(n, what);
            case GgufType.UInt32: return ScalarArray<uint>(n, what);
            case GgufType.Int32: return ScalarArray<int>(n, what);
            case GgufType.Float32: return ScalarArray<float>(n, what);
            case GgufType.UInt64: return ScalarArray<ulong>(n, what);
            case GgufType.Int64: return ScalarArray<long>(n, what);
            case GgufType.Float64: return ScalarArray<double>(n, what);
            case GgufType.Bool:
            {
                byte[] raw = ScalarArray<byte>(n, what);
                var result = new bool[n];
                for (int i = 0; i < n; i++)
                {
                    result[i] = Bool(raw[i], key);
                }

                return result;
            }

            case GgufType.String:
            {
                var result = new string[n];
                for (int i = 0; i < n; i++)
                {
                    result[i] = ReadString($"string #{i} of key {Gguf.Quote(key)}", Gguf.MaxStringBytes);
                }

                return result;
            }

            default:
            {
                var result = new object[n];
                for (int i = 0; i < n; i++)
                {
                    result[i] = ReadArray(key, depth + 1);
                }

                return result;
            }
        }
    }

    private TensorInfo ReadTensorInfo(int index, int alignment)
    {
        string name = ReadString($"the name of tensor #{index}", Gguf.MaxTensorNameBytes);
        if (name.Length == 0)
        {
            throw Error($"tensor #{index} has an empty name");
        }

        uint nDims = U32($"the dimension count of tensor {Gguf.Quote(name)}");
        if (nDims is 0 or > Gguf.MaxDims)
        {
            throw Error($"tensor {Gguf.Quote(name)} has {nDims} dimensions, expected 1 to {Gguf.MaxDims}");
        }

        // GGUF lists ne[0] (the contiguous, innermost dimension) first; TensorInfo.Shape is row-major,
        // outermost first, so the order is reversed here, once (llama.cpp CONTRIBUTING.md, "dimension 0 as columns").
        var shape = new long[nDims];
        long elements = 1;
        for (int d = 0; d < nDims; d++)
        {
            ulong ne = U64($"dimension {d} of tensor {Gguf.Quote(name)}");
            if (ne == 0 || ne > long.MaxValue || (long)ne > long.MaxValue / elements)
            {
                throw Error(ne == 0 ? $"tensor {Gguf.Quote(name)} has a zero dimension (ne[{d}] = 0)"
                    : $"tensor {Gguf.Quote(name)} dimension ne[{d}] = {ne} makes its element count overflow 64 bits");
            }

            elements *= (long)ne;
            shape[nDims - 1 - d] = (long)ne;
        }

        uint typeId = U32($"the type of tensor {Gguf.Quote(name)}");
        var type = (DType)typeId;
        if (!Enum.IsDefined(type) || !type.IsKnown())
        {
            throw Error(Gguf.GgmlTypeName(typeId) is { } ggml
                ? $"tensor {Gguf.Quote(name)} is {ggml} (ggml type {typeId}), which this engine does not read; requantize the model with llama-quantize to one it does ({Gguf.ReadableTypes})"
                : $"tensor {Gguf.Quote(name)} has unknown type id {typeId}");
        }

        long cols = shape[^1];
        if (cols % type.BlockSize() != 0)
        {
            throw Error($"tensor {Gguf.Quote(name)} has {cols} columns, not a multiple of the {type} block size {type.BlockSize()}");
        }

        long rows = elements / cols;
        long rowBytes = type.RowBytes(cols);
        if (rows > long.MaxValue / rowBytes)
        {
            throw Error($"tensor {Gguf.Quote(name)} shape [{string.Join(", ", shape)}] makes its byte size overflow 64 bits");
        }

        ulong offset = U64($"the data offset of tensor {Gguf.Quote(name)}");
        if (offset % (ulong)alignment != 0)
        {
            throw Error($"tensor {Gguf.Quote(name)} data offset {offset} is not a multiple of the alignment {alignment}");
        }

        if (offset > long.MaxValue)
        {
            throw Error($"tensor {Gguf.Quote(name)} data offset {offset} lies past the end of the file ({_length} bytes)");
        }

        return new TensorInfo(name, type, shape, 0, (long)offset, rows * rowBytes);
    }

    private long Remaining => _length - _pos;

    private void Need(long count, string what)
    {
        if (count > Remaining)
        {
            throw Error($"{what} at byte {_pos} needs {count} bytes but the file ends at byte {_length}; the file is truncated or corrupt");
        }
    }

    private T Scalar<T>(string what) where T : unmanaged
    {
        Need(sizeof(T), what);
        T value = *(T*)(_base + _pos);
        _pos += sizeof(T);
        return value;
    }

    private T[] ScalarArray<T>(int count, string what) where T : unmanaged
    {
        long bytes = (long)count * sizeof(T);
        Need(bytes, what);
        var result = new T[count];
        new ReadOnlySpan<byte>(_base + _pos, checked((int)bytes)).CopyTo(MemoryMarshal.AsBytes(result.AsSpan()));
        _pos += bytes;
        return result;
    }

    private uint U32(string what) => Scalar<uint>(what);

    private ulong U64(string what) => Scalar<ulong>(what);

    private bool Bool(byte b, string key)
    {
        if (b > 1)
        {
            throw Error($"key {Gguf.Quote(key)} has a bool value {b}, expected 0 or 1");
        }

        return b == 1;
    }

    private string ReadString(string what, long maxBytes)
    {
        ulong length = U64($"the length of {what}");
        if (length > (ulong)maxBytes)
        {
            throw Error($"{what} claims a length of {length} bytes, more than the {maxBytes} allowed");
        }

        Need((long)length, what);
        string s = Encoding.UTF8.GetString(_base + _pos, (int)length);
        _pos += (long)length;
        return s;
    }

    private static string MagicText(uint magic)
    {
        Span<byte> b = stackalloc byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(b, magic);
        return "0x" + Convert.ToHexString(b);
    }

    private GpuLlamaException Error(string message) => new($"{_path}: {message}");
}

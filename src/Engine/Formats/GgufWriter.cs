using System.Runtime.InteropServices;
using System.Text;

namespace GpuLlama.Formats;

/// <summary>Where each part of a written GGUF file starts (absolute byte offsets); tests use it to corrupt files precisely.</summary>
public sealed record GgufLayout(
    long[] KeyValueOffsets,
    long[] TensorInfoOffsets,
    long PaddingOffset,
    long DataOffset,
    long[] TensorDataOffsets,
    long Length);

/// <summary>
/// Writes GGUF version 3 files (the layout gguf-py's GGUFWriter produces, so llama.cpp loads them): header,
/// key/values, tensor table, padding to the alignment, then each tensor's data padded to the alignment.
/// Tensor data can come from a callback that writes into the output stream, so a model of many gigabytes is
/// streamed and never held in memory at once.
/// </summary>
public sealed class GgufWriter
{
    private readonly List<KeyValuePair<string, object>> _metadata = [];
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private readonly List<Tensor> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <param name="alignment">Data alignment; other than 32 it is recorded as general.alignment.</param>
    public GgufWriter(int alignment = Gguf.DefaultAlignment)
    {
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment, "alignment must be a power of two");
        }

        Alignment = alignment;
        if (alignment != Gguf.DefaultAlignment)
        {
            _keys.Add(Gguf.AlignmentKey);
            _metadata.Add(new(Gguf.AlignmentKey, (uint)alignment));
        }
    }

    public int Alignment { get; }

    /// <summary>Adds a key with a value of a GGUF-representable CLR type (see <see cref="Gguf.TypeOf"/>).</summary>
    public GgufWriter AddMetadata(string key, object value)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentNullException.ThrowIfNull(value);
        if (Encoding.UTF8.GetByteCount(key) > Gguf.MaxKeyBytes)
        {
            throw new ArgumentException($"key '{key[..40]}…' is longer than {Gguf.MaxKeyBytes} bytes", nameof(key));
        }

        if (key == Gguf.AlignmentKey)
        {
            throw new ArgumentException($"{Gguf.AlignmentKey} follows the alignment given to the GgufWriter constructor", nameof(key));
        }

        CheckValue(key, value, 0);

        if (!_keys.Add(key))
        {
            throw new ArgumentException($"key '{key}' was already added", nameof(key));
        }

        _metadata.Add(new(key, value));
        return this;
    }

    /// <summary>Adds a tensor whose bytes are in memory. <paramref name="shape"/> is row-major (outermost first).</summary>
    public GgufWriter AddTensor(string name, DType type, long[] shape, ReadOnlyMemory<byte> data)
    {
        long length = CheckTensor(name, type, shape);
        if (data.Length != length)
        {
            throw new ArgumentException($"tensor '{name}' {type} [{string.Join(", ", shape)}] takes {length} bytes, got {data.Length}", nameof(data));
        }

        _names.Add(name);
        _tensors.Add(new Tensor(name, type, shape, length, s => s.Write(data.Span)));
        return this;
    }

    /// <summary>
    /// Adds a tensor whose bytes <paramref name="writeData"/> writes into the output stream when the file is
    /// written; it must write exactly the tensor's byte size (<see cref="DTypeInfo.RowBytes"/> × rows).
    /// </summary>
    public GgufWriter AddTensor(string name, DType type, long[] shape, Action<Stream> writeData)
    {
        ArgumentNullException.ThrowIfNull(writeData);
        long length = CheckTensor(name, type, shape);
        _names.Add(name);
        _tensors.Add(new Tensor(name, type, shape, length, writeData));
        return this;
    }

    /// <summary>Writes the file (to a temporary name first, so a failed write never leaves a half file behind).</summary>
    public GgufLayout Write(string path)
    {
        string temp = path + ".partial";
        try
        {
            GgufLayout layout;
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                layout = Write(stream);
            }

            File.Move(temp, path, overwrite: true);
            return layout;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            File.Delete(temp);
            throw new GpuLlamaException($"{path}: cannot write file ({e.Message})", e);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>Writes the file into <paramref name="output"/> from its current position.</summary>
    public GgufLayout Write(Stream output)
    {
        var stream = new CountingStream(output);
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(Gguf.Magic);
        w.Write(Gguf.MaxVersion);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);

        var kvOffsets = new long[_metadata.Count];
        for (int i = 0; i < _metadata.Count; i++)
        {
            w.Flush();
            kvOffsets[i] = stream.Position;
            WriteString(w, _metadata[i].Key);
            WriteValue(w, _metadata[i].Value);
        }

        var infoOffsets = new long[_tensors.Count];
        var relative = new long[_tensors.Count];
        long next = 0;
        for (int i = 0; i < _tensors.Count; i++)
        {
            Tensor t = _tensors[i];
            w.Flush();
            infoOffsets[i] = stream.Position;
            WriteString(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (int d = t.Shape.Length - 1; d >= 0; d--)
            {
                w.Write((ulong)t.Shape[d]); // GGUF's ne order: innermost first
            }

            w.Write((uint)t.Type);
            w.Write((ulong)next);
            relative[i] = next;
            next = Gguf.Align(next + t.Length, Alignment);
        }

        w.Flush();
        long paddingOffset = stream.Position;
        Pad(stream, Alignment);
        long dataOffset = stream.Position;

        var dataOffsets = new long[_tensors.Count];
        for (int i = 0; i < _tensors.Count; i++)
        {
            Tensor t = _tensors[i];
            dataOffsets[i] = stream.Position;
            t.WriteData(stream);
            long written = stream.Position - dataOffsets[i];
            if (written != t.Length)
            {
                throw new InvalidOperationException($"the data callback of tensor '{t.Name}' wrote {written} bytes, expected {t.Length}");
            }

            Pad(stream, Alignment);
        }

        stream.Flush();
        return new GgufLayout(kvOffsets, infoOffsets, paddingOffset, dataOffset, dataOffsets, stream.Position);
    }

    private long CheckTensor(string name, DType type, long[] shape)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (Encoding.UTF8.GetByteCount(name) > Gguf.MaxTensorNameBytes)
        {
            throw new ArgumentException($"tensor name '{name}' is longer than {Gguf.MaxTensorNameBytes} bytes", nameof(name));
        }

        if (!Enum.IsDefined(type) || !type.IsKnown())
        {
            throw new ArgumentException($"tensor '{name}' has unknown type {DTypeInfo.DisplayName(type)}", nameof(type));
        }

        if (shape.Length is 0 or > Gguf.MaxDims || shape.Any(d => d <= 0))
        {
            throw new ArgumentException($"tensor '{name}' shape [{string.Join(", ", shape)}] must have 1 to {Gguf.MaxDims} positive dimensions", nameof(shape));
        }

        if (shape[^1] % type.BlockSize() != 0)
        {
            throw new ArgumentException($"tensor '{name}' has {shape[^1]} columns, not a multiple of the {type} block size {type.BlockSize()}", nameof(shape));
        }

        if (_names.Contains(name))
        {
            throw new ArgumentException($"tensor '{name}' was already added", nameof(name));
        }

        long rows = 1;
        for (int i = 0; i < shape.Length - 1; i++)
        {
            rows = checked(rows * shape[i]);
        }

        return checked(rows * type.RowBytes(shape[^1]));
    }

    private static void CheckValue(string key, object value, int depth)
    {
        if (Gguf.TypeOf(value) is null)
        {
            throw new ArgumentException($"key '{key}': values of type {value.GetType().Name} cannot be stored in GGUF", nameof(value));
        }

        // exact type: array covariance makes a string[] an object[] too
        if (value.GetType() == typeof(object[]))
        {
            var nested = (object[])value;
            if (depth >= Gguf.MaxArrayDepth)
            {
                throw new ArgumentException($"key '{key}': arrays nest deeper than {Gguf.MaxArrayDepth} levels", nameof(value));
            }

            foreach (object? item in nested)
            {
                if (item is not Array)
                {
                    throw new ArgumentException($"key '{key}': an object[] value must hold arrays (GGUF arrays of arrays)", nameof(value));
                }

                CheckValue(key, item, depth + 1);
            }
        }
        else if (value is string[] strings && strings.Any(s => s is null))
        {
            throw new ArgumentException($"key '{key}': string arrays cannot hold null", nameof(value));
        }
    }

    private static void WriteValue(BinaryWriter w, object value)
    {
        GgufType type = Gguf.TypeOf(value)!.Value;
        w.Write((uint)type);
        WriteBody(w, value);
    }

    /// <summary>The value without its type tag (array elements are stored untagged).</summary>
    private static void WriteBody(BinaryWriter w, object value)
    {
        switch (value)
        {
            case byte v: w.Write(v); break;
            case sbyte v: w.Write(v); break;
            case ushort v: w.Write(v); break;
            case short v: w.Write(v); break;
            case uint v: w.Write(v); break;
            case int v: w.Write(v); break;
            case float v: w.Write(v); break;
            case bool v: w.Write((byte)(v ? 1 : 0)); break;
            case string v: WriteString(w, v); break;
            case ulong v: w.Write(v); break;
            case long v: w.Write(v); break;
            case double v: w.Write(v); break;
            case Array a: WriteArray(w, a); break;
        }
    }

    private static void WriteArray(BinaryWriter w, Array array)
    {
        GgufType element = Gguf.ElementTypeOf(array)!.Value;
        w.Write((uint)element);
        w.Write((ulong)array.Length);
        switch (element)
        {
            case GgufType.String:
                foreach (string s in (string[])array)
                {
                    WriteString(w, s);
                }

                break;
            case GgufType.Array:
                foreach (object a in (object[])array)
                {
                    WriteArray(w, (Array)a);
                }

                break;
            case GgufType.Bool:
                foreach (bool b in (bool[])array)
                {
                    w.Write((byte)(b ? 1 : 0));
                }

                break;
            default:
                // fixed-size scalars: little-endian in memory, as on disk
                w.Write(MemoryMarshal.CreateReadOnlySpan(ref MemoryMarshal.GetArrayDataReference(array), array.Length * Gguf.SizeOf(element)));
                break;
        }
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void Pad(Stream stream, int alignment)
    {
        long pad = Gguf.Align(stream.Position, alignment) - stream.Position;
        Span<byte> zeros = stackalloc byte[256];
        zeros.Clear();
        while (pad > 0)
        {
            int n = (int)Math.Min(pad, zeros.Length);
            stream.Write(zeros[..n]);
            pad -= n;
        }
    }

    private sealed record Tensor(string Name, DType Type, long[] Shape, long Length, Action<Stream> WriteData);

    /// <summary>Forwards writes and counts them, so offsets are known for any output stream (seekable or not).</summary>
    private sealed class CountingStream(Stream inner) : Stream
    {
        private long _written;

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => _written;

        public override long Position
        {
            get => _written;
            set => throw new NotSupportedException();
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            inner.Write(buffer);
            _written += buffer.Length;
        }

        public override void WriteByte(byte value)
        {
            inner.WriteByte(value);
            _written++;
        }

        public override void Flush() => inner.Flush();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}

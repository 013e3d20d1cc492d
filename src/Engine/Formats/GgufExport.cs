using GpuLlama.Model;

namespace GpuLlama.Formats;

/// <summary>
/// Writes any weight source as a GGUF file llama.cpp can load (same tensors, same dtypes), so both engines can
/// be benchmarked and compared on identical weights, e.g. a synthetic TinyLlama in F16.
/// </summary>
public static class GgufExport
{
    /// <summary>
    /// Writes <paramref name="source"/> to <paramref name="path"/>: the <c>llama.*</c> keys from its config, its
    /// <c>general.*</c> and <c>tokenizer.*</c> metadata, and its tensors streamed from memory in their stored dtype
    /// (1-D F16/BF16 norm vectors become F32, as convert_hf_to_gguf.py stores them).
    /// Q/K rows of a "halves" (Hugging Face) source are permuted the way convert_hf_to_gguf.py does, and Llama 3
    /// RoPE scaling becomes a <c>rope_freqs.weight</c> tensor, as llama.cpp expects.
    /// </summary>
    public static GgufLayout ExportGguf(IWeightSource source, string path)
    {
        ModelConfig c = source.Config;
        DType fileType = source.Tensors.TryGetValue(TensorNames.Wq(0), out TensorInfo? q) ? q.Type : DType.F32;
        var writer = new GgufWriter();
        List<KeyValuePair<string, object>> configKeys = GgufConfig.Write(c, fileType);
        var written = new HashSet<string>(configKeys.Select(kv => kv.Key), StringComparer.Ordinal);
        foreach ((string key, object value) in configKeys)
        {
            writer.AddMetadata(key, value);
        }

        foreach ((string key, object value) in source.Metadata)
        {
            bool carried = key.StartsWith("general.", StringComparison.Ordinal) || key.StartsWith("tokenizer.", StringComparison.Ordinal);
            if (carried && key != Gguf.AlignmentKey && !written.Contains(key) && Gguf.TypeOf(value) is not null)
            {
                writer.AddMetadata(key, value);
            }
        }

        float[]? freqFactors = c.RopeFreqFactors ?? Llama3FreqFactors(c);
        if (freqFactors is not null && !source.Tensors.ContainsKey(TensorNames.RopeFreqs))
        {
            byte[] bytes = new byte[freqFactors.Length * sizeof(float)];
            Buffer.BlockCopy(freqFactors, 0, bytes, 0, bytes.Length);
            writer.AddTensor(TensorNames.RopeFreqs, DType.F32, [freqFactors.Length], bytes);
        }

        var required = TensorNames.Required(c).Select(r => r.Name).ToList();
        IEnumerable<string> order = required.Concat(source.Tensors.Keys.Where(n => !required.Contains(n)).Order(StringComparer.Ordinal));
        foreach (string name in order)
        {
            if (!source.Tensors.TryGetValue(name, out TensorInfo? t))
            {
                continue;
            }

            int? permuteHeads = c.RopeStyle == RopeStyle.Halves && IsQ(name, c) ? c.Heads
                : c.RopeStyle == RopeStyle.Halves && IsK(name, c) ? c.KvHeads
                : null;
            if (t.Shape.Length == 1 && t.Type is DType.F16 or DType.BF16)
            {
                // convert_hf_to_gguf.py stores 1-D tensors (the norms) as F32; ggml's CPU ops expect them so
                writer.AddTensor(name, DType.F32, t.Shape, stream => WidenVector(source.View(t), stream));
            }
            else
            {
                writer.AddTensor(name, t.Type, t.Shape, stream => CopyTensor(source.View(t), stream, permuteHeads, c.HeadDim));
            }
        }

        return writer.Write(path);
    }

    private static bool IsQ(string name, ModelConfig c) => Enumerable.Range(0, c.Layers).Any(l => name == TensorNames.Wq(l));

    private static bool IsK(string name, ModelConfig c) => Enumerable.Range(0, c.Layers).Any(l => name == TensorNames.Wk(l));

    /// <summary>
    /// Streams a tensor's rows. With <paramref name="heads"/> set, rows are reordered from the "halves" RoPE layout
    /// to ggml's adjacent pairs, per head: destination row 2j+t takes source row t*headDim/2 + j
    /// (convert_hf_to_gguf.py <c>LlamaModel.permute</c>). Rows are whole, so this works for any dtype.
    /// </summary>
    private static unsafe void CopyTensor(WeightView view, Stream stream, int? heads, int headDim)
    {
        long rowBytes = view.RowBytes;
        if (heads is null)
        {
            const long chunk = 1 << 22;
            for (long done = 0; done < view.ByteLength; done += chunk)
            {
                stream.Write(new ReadOnlySpan<byte>(view.Pointer + done, (int)Math.Min(chunk, view.ByteLength - done)));
            }

            return;
        }

        int half = headDim / 2;
        for (long h = 0; h < heads; h++)
        {
            for (int dst = 0; dst < headDim; dst++)
            {
                long src = h * headDim + (dst & 1) * half + dst / 2;
                stream.Write(view.Row(src));
            }
        }
    }

    private static void WidenVector(WeightView view, Stream stream)
    {
        ReadOnlySpan<byte> bytes = view.AsSpan();
        var values = new float[view.Cols];
        for (int i = 0; i < values.Length; i++)
        {
            ushort bits = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]);
            values[i] = view.Type == DType.F16 ? (float)BitConverter.UInt16BitsToHalf(bits) : BitConverter.UInt32BitsToSingle((uint)bits << 16);
        }

        stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
    }

    /// <summary>
    /// The per-frequency divisors llama.cpp's converter stores for Llama 3 scaling (LlamaModel.generate_extra_tensors):
    /// the unscaled inverse frequency over the scaled one. Null without scaling.
    /// </summary>
    private static float[]? Llama3FreqFactors(ModelConfig c)
    {
        if (c.RopeScaling is null)
        {
            return null;
        }

        double[] scaled = c.RopeInverseFrequencies();
        double[] plain = (c with { RopeScaling = null, RopeFreqFactors = null }).RopeInverseFrequencies();
        var factors = new float[scaled.Length];
        for (int i = 0; i < factors.Length; i++)
        {
            factors[i] = (float)(plain[i] / scaled[i]);
        }

        return factors;
    }
}

using System.Buffers.Binary;

namespace GpuLlama.Formats;

/// <summary>
/// Float32 → block-quantized rows, for writing quantized models and for tests. Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and
/// Q5_K follow ggml's <c>quantize_row_*_ref</c> exactly (same search, same rounding, same clamping, float32
/// arithmetic in the same order without FMA contraction), which is what llama-quantize writes without an importance
/// matrix; IQ4_NL and IQ4_XS follow quantize_iq4_nl/quantize_iq4_xs without an importance matrix (llama-quantize's
/// search over 15 scales per 32 values). Q2_K, Q3_K, Q4_K and Q6_K use a plain min/max (or abs-max) fit per sub-block instead of ggml's
/// error-minimizing scale search, which yields valid blocks with a somewhat larger error than llama-quantize.
/// </summary>
public static class BlockQuantizer
{
    /// <summary>The types <see cref="QuantizeRow"/> writes.</summary>
    public static IReadOnlyList<DType> SupportedTypes { get; } =
    [
        DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0,
        DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K, DType.Q8_K, DType.IQ4_NL, DType.IQ4_XS,
    ];

    /// <summary>Quantizes <paramref name="src"/> (a whole number of blocks) into <paramref name="dst"/> (its <see cref="DTypeInfo.RowBytes"/>).</summary>
    public static void QuantizeRow(DType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        int blockSize = type.BlockSize();
        if (!type.IsQuantized() || type == DType.Q8_1)
        {
            throw new NotSupportedException($"quantization to {DTypeInfo.DisplayName(type)} is not supported");
        }

        if (src.Length % blockSize != 0)
        {
            throw new ArgumentException($"{type} rows hold whole blocks of {blockSize}; got {src.Length} values", nameof(src));
        }

        long expected = type.RowBytes(src.Length);
        if (dst.Length != expected)
        {
            throw new ArgumentException($"{type} row of {src.Length} values takes {expected} bytes; got {dst.Length}", nameof(dst));
        }

        int blockBytes = type.BlockBytes();
        for (int i = 0, blocks = src.Length / blockSize; i < blocks; i++)
        {
            ReadOnlySpan<float> x = src.Slice(i * blockSize, blockSize);
            Span<byte> y = dst.Slice(i * blockBytes, blockBytes);
            y.Clear();
            switch (type)
            {
                case DType.Q4_0: QuantizeQ4_0(x, y); break;
                case DType.Q4_1: QuantizeQ4_1(x, y); break;
                case DType.Q5_0: QuantizeQ5_0(x, y); break;
                case DType.Q5_1: QuantizeQ5_1(x, y); break;
                case DType.Q8_0: QuantizeQ8_0(x, y); break;
                case DType.Q2_K: QuantizeQ2_K(x, y); break;
                case DType.Q3_K: QuantizeQ3_K(x, y); break;
                case DType.Q4_K: QuantizeQ4_K(x, y); break;
                case DType.Q5_K: QuantizeQ5_K(x, y); break;
                case DType.Q6_K: QuantizeQ6_K(x, y); break;
                case DType.Q8_K: QuantizeQ8_K(x, y); break;
                case DType.IQ4_NL: QuantizeIQ4(x, y); break;
                case DType.IQ4_XS: QuantizeIQ4(x, y); break;
            }
        }
    }

    /// <summary>Quantizes a whole row-major matrix ([rows, cols] floats) into a new byte array.</summary>
    public static byte[] QuantizeMatrix(DType type, ReadOnlySpan<float> src, int cols)
    {
        int rows = src.Length / cols;
        int rowBytes = checked((int)type.RowBytes(cols));
        byte[] dst = new byte[checked(rows * rowBytes)];
        for (int r = 0; r < rows; r++)
        {
            QuantizeRow(type, src.Slice(r * cols, cols), dst.AsSpan(r * rowBytes, rowBytes));
        }

        return dst;
    }

    private static void WriteHalf(Span<byte> b, int offset, float v) =>
        BinaryPrimitives.WriteUInt16LittleEndian(b.Slice(offset), BitConverter.HalfToUInt16Bits((Half)v));

    /// <summary>ggml <c>nearest_int</c>: round half to even.</summary>
    private static int NearestInt(float v) => (int)MathF.Round(v, MidpointRounding.ToEven);

    /// <summary>The element of largest magnitude, sign kept (the first one on ties, as ggml scans).</summary>
    private static float SignedAbsMax(ReadOnlySpan<float> x)
    {
        float amax = 0;
        float max = 0;
        foreach (float v in x)
        {
            if (amax < MathF.Abs(v))
            {
                amax = MathF.Abs(v);
                max = v;
            }
        }

        return max;
    }

    // quantize_row_q4_0_ref: d = max / -8 so the extreme value maps to q = 0 exactly; q = min(15, trunc(x/d + 8.5)).
    private static void QuantizeQ4_0(ReadOnlySpan<float> x, Span<byte> y)
    {
        float d = SignedAbsMax(x) / -8;
        float id = d != 0 ? 1.0f / d : 0.0f;
        WriteHalf(y, 0, d);
        for (int j = 0; j < 16; j++)
        {
            int xi0 = Math.Min(15, (int)(sbyte)(x[j] * id + 8.5f));
            int xi1 = Math.Min(15, (int)(sbyte)(x[16 + j] * id + 8.5f));
            y[2 + j] = (byte)(xi0 | (xi1 << 4));
        }
    }

    /// <summary>
    /// ggml quantize_row_iq4_nl_impl with ntry = 7 and no importance matrix, for a 32-value IQ4_NL block or a 256-value
    /// IQ4_XS super-block (x.Length tells which): per 32 values, the scale d = Σw·q·x / Σw·q² (w = x²) of the best of
    /// the grid fits with 1/d = (t + levels[0]) / max, t = −7..7; an IQ4_XS super-block then keeps one F16 scale and a
    /// six-bit multiple of it per sub-block, and re-picks each value's level against that.
    /// </summary>
    private static void QuantizeIQ4(ReadOnlySpan<float> x, Span<byte> y)
    {
        const int ntry = 7;
        const float groupMaxEps = 1e-15f;
        ReadOnlySpan<sbyte> values = QuantBlocks.IQ4Values;
        int n = x.Length, blocks = n / 32;
        Span<byte> levels = stackalloc byte[256];
        Span<float> scales = stackalloc float[8];
        Span<float> weight = stackalloc float[32];
        levels.Clear();
        float maxScale = 0, amaxScale = 0;
        for (int ib = 0; ib < blocks; ib++)
        {
            ReadOnlySpan<float> xb = x.Slice(32 * ib, 32);
            Span<byte> lb = levels.Slice(32 * ib, 32);
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
            {
                weight[j] = xb[j] * xb[j];
                float ax = MathF.Abs(xb[j]);
                if (ax > amax)
                {
                    amax = ax;
                    max = xb[j];
                }
            }

            if (amax < groupMaxEps)
            {
                scales[ib] = 0;
                continue;
            }

            float d = -max / values[0];
            float id = 1 / d;
            float sumqx = 0, sumq2 = 0;
            for (int j = 0; j < 32; j++)
            {
                int l = BestIndex(values, id * xb[j]);
                lb[j] = (byte)l;
                float q = values[l];
                sumqx += weight[j] * q * xb[j];
                sumq2 += weight[j] * q * q;
            }

            d = sumqx / sumq2;
            float best = d * sumqx;
            for (int itry = -ntry; itry <= ntry; itry++)
            {
                id = (itry + values[0]) / max;
                sumqx = sumq2 = 0;
                for (int j = 0; j < 32; j++)
                {
                    float q = values[BestIndex(values, id * xb[j])];
                    sumqx += weight[j] * q * xb[j];
                    sumq2 += weight[j] * q * q;
                }

                if (sumq2 > 0 && sumqx * sumqx > best * sumq2)
                {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }

            scales[ib] = d;
            if (MathF.Abs(d) > amaxScale)
            {
                amaxScale = MathF.Abs(d);
                maxScale = d;
            }
        }

        int qsAt;
        if (blocks > 1)
        {
            float d = -maxScale / 32;
            WriteHalf(y, 0, d);
            float id = d != 0 ? 1 / d : 0f;
            int scalesH = 0;
            for (int ib = 0; ib < blocks; ib++)
            {
                int l = Math.Clamp(NearestInt(id * scales[ib]), -32, 31);
                float dl = d * l;
                float idl = dl != 0 ? 1 / dl : 0f;
                for (int j = 0; j < 32; j++)
                {
                    levels[32 * ib + j] = (byte)BestIndex(values, idl * x[32 * ib + j]);
                }

                l += 32;
                y[4 + ib / 2] |= (byte)((l & 0xF) << (4 * (ib % 2)));
                scalesH |= (l >> 4) << (2 * ib);
            }

            BinaryPrimitives.WriteUInt16LittleEndian(y.Slice(2), (ushort)scalesH);
            qsAt = 8;
        }
        else
        {
            WriteHalf(y, 0, scales[0]);
            float id = scales[0] != 0 ? 1 / scales[0] : 0f;
            for (int j = 0; j < 32; j++)
            {
                levels[j] = (byte)BestIndex(values, id * x[j]);
            }

            qsAt = 2;
        }

        for (int i = 0; i < blocks; i++)
        {
            for (int j = 0; j < 16; j++)
            {
                y[qsAt + 16 * i + j] = (byte)(levels[32 * i + j] | (levels[32 * i + 16 + j] << 4));
            }
        }
    }

    /// <summary>ggml best_index_int8: the level nearest <paramref name="x"/> (the upper one of a tie).</summary>
    private static int BestIndex(ReadOnlySpan<sbyte> values, float x)
    {
        if (x <= values[0])
        {
            return 0;
        }

        if (x >= values[15])
        {
            return 15;
        }

        int ml = 0, mu = 15;
        while (mu - ml > 1)
        {
            int mav = (ml + mu) / 2;
            if (x < values[mav])
            {
                mu = mav;
            }
            else
            {
                ml = mav;
            }
        }

        return x - values[mu - 1] < values[mu] - x ? mu - 1 : mu;
    }

    // quantize_row_q4_1_ref: affine, d = (max - min) / 15, m = min.
    private static void QuantizeQ4_1(ReadOnlySpan<float> x, Span<byte> y)
    {
        (float min, float max) = MinMax(x);
        float d = (max - min) / 15;
        float id = d != 0 ? 1.0f / d : 0.0f;
        WriteHalf(y, 0, d);
        WriteHalf(y, 2, min);
        for (int j = 0; j < 16; j++)
        {
            int xi0 = Math.Min(15, (int)(sbyte)((x[j] - min) * id + 0.5f));
            int xi1 = Math.Min(15, (int)(sbyte)((x[16 + j] - min) * id + 0.5f));
            y[4 + j] = (byte)(xi0 | (xi1 << 4));
        }
    }

    // quantize_row_q5_0_ref: d = max / -16; the 5th bit of element j goes to bit j of qh.
    private static void QuantizeQ5_0(ReadOnlySpan<float> x, Span<byte> y)
    {
        float d = SignedAbsMax(x) / -16;
        float id = d != 0 ? 1.0f / d : 0.0f;
        WriteHalf(y, 0, d);
        uint qh = 0;
        for (int j = 0; j < 16; j++)
        {
            int xi0 = Math.Min(31, (int)(sbyte)(x[j] * id + 16.5f));
            int xi1 = Math.Min(31, (int)(sbyte)(x[16 + j] * id + 16.5f));
            y[6 + j] = (byte)((xi0 & 0xF) | ((xi1 & 0xF) << 4));
            qh |= (uint)((xi0 & 0x10) >> 4) << j;
            qh |= (uint)((xi1 & 0x10) >> 4) << (j + 16);
        }

        BinaryPrimitives.WriteUInt32LittleEndian(y.Slice(2), qh);
    }

    // quantize_row_q5_1_ref: affine with 31 levels.
    private static void QuantizeQ5_1(ReadOnlySpan<float> x, Span<byte> y)
    {
        (float min, float max) = MinMax(x);
        float d = (max - min) / 31;
        float id = d != 0 ? 1.0f / d : 0.0f;
        WriteHalf(y, 0, d);
        WriteHalf(y, 2, min);
        uint qh = 0;
        for (int j = 0; j < 16; j++)
        {
            int xi0 = (int)((x[j] - min) * id + 0.5f);
            int xi1 = (int)((x[16 + j] - min) * id + 0.5f);
            y[8 + j] = (byte)((xi0 & 0xF) | ((xi1 & 0xF) << 4));
            qh |= (uint)((xi0 & 0x10) >> 4) << j;
            qh |= (uint)((xi1 & 0x10) >> 4) << (j + 16);
        }

        BinaryPrimitives.WriteUInt32LittleEndian(y.Slice(4), qh);
    }

    // quantize_row_q8_0_ref: symmetric, d = amax / 127, q = roundf(x / d) (half away from zero).
    private static void QuantizeQ8_0(ReadOnlySpan<float> x, Span<byte> y)
    {
        float amax = 0;
        foreach (float v in x)
        {
            amax = MathF.Max(amax, MathF.Abs(v));
        }

        float d = amax / 127;
        float id = d != 0 ? 1.0f / d : 0.0f;
        WriteHalf(y, 0, d);
        for (int j = 0; j < 32; j++)
        {
            y[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
        }
    }

    private static (float Min, float Max) MinMax(ReadOnlySpan<float> x)
    {
        float min = x[0];
        float max = x[0];
        foreach (float v in x)
        {
            min = MathF.Min(min, v);
            max = MathF.Max(max, v);
        }

        return (min, max);
    }

    /// <summary>
    /// Affine sub-block fit used by Q2_K/Q4_K: value ≈ scale·q − min with q in [0, levels], min ≥ 0 (the range
    /// always includes zero, as ggml's make_qkx2_quants enforces).
    /// </summary>
    private static (float Scale, float Min) AffineFit(ReadOnlySpan<float> x, int levels)
    {
        (float lo, float hi) = MinMax(x);
        lo = MathF.Min(lo, 0);
        return ((hi - lo) / levels, -lo);
    }

    /// <summary>Quantizes non-negative sub-block parameters to <paramref name="bits"/>-bit integers under one shared float scale.</summary>
    private static float ShareScale(ReadOnlySpan<float> values, Span<int> q, int bits)
    {
        int top = (1 << bits) - 1;
        float max = 0;
        foreach (float v in values)
        {
            max = MathF.Max(max, v);
        }

        float d = max / top;
        float id = d != 0 ? 1 / d : 0;
        for (int i = 0; i < values.Length; i++)
        {
            q[i] = Math.Clamp(NearestInt(values[i] * id), 0, top);
        }

        return d;
    }

    private static void QuantizeQ2_K(ReadOnlySpan<float> x, Span<byte> y)
    {
        Span<float> scales = stackalloc float[16];
        Span<float> mins = stackalloc float[16];
        for (int s = 0; s < 16; s++)
        {
            (scales[s], mins[s]) = AffineFit(x.Slice(16 * s, 16), 3);
        }

        Span<int> qs = stackalloc int[16];
        Span<int> qm = stackalloc int[16];
        float d = ShareScale(scales, qs, 4);
        float dmin = ShareScale(mins, qm, 4);
        WriteHalf(y, 80, d);
        WriteHalf(y, 82, dmin);
        d = QuantBlocks.Half(y, 80);
        dmin = QuantBlocks.Half(y, 82);
        for (int s = 0; s < 16; s++)
        {
            y[s] = (byte)(qs[s] | (qm[s] << 4));
        }

        for (int e = 0; e < QuantBlocks.QK_K; e++)
        {
            int s = e / 16;
            float dl = d * qs[s];
            float ml = dmin * qm[s];
            int q = dl != 0 ? Math.Clamp(NearestInt((x[e] + ml) / dl), 0, 3) : 0;
            int c = e / 128;
            int r = e % 128;
            y[16 + 32 * c + r % 32] |= (byte)(q << (2 * (r / 32)));
        }
    }

    private static void QuantizeQ3_K(ReadOnlySpan<float> x, Span<byte> y)
    {
        // Symmetric per 16 values (q in -4..3, so the signed extreme maps to -4), then signed 6-bit scales.
        Span<float> scales = stackalloc float[16];
        for (int s = 0; s < 16; s++)
        {
            scales[s] = SignedAbsMax(x.Slice(16 * s, 16)) / -4;
        }

        float maxScale = SignedAbsMax(scales);
        float iscale = maxScale != 0 ? -32 / maxScale : 0;
        float d = iscale != 0 ? 1 / iscale : 0;
        WriteHalf(y, 108, d);
        d = QuantBlocks.Half(y, 108);
        Span<int> ls = stackalloc int[16];
        for (int s = 0; s < 16; s++)
        {
            ls[s] = Math.Clamp(NearestInt(iscale * scales[s]), -32, 31);
            int v = ls[s] + 32;
            y[96 + (s < 8 ? s : s - 8)] |= (byte)((v & 0xF) << (s < 8 ? 0 : 4));
            y[96 + 8 + s % 4] |= (byte)((v >> 4) << (2 * (s / 4)));
        }

        for (int e = 0; e < QuantBlocks.QK_K; e++)
        {
            float dl = d * ls[e / 16];
            int q = dl != 0 ? Math.Clamp(NearestInt(x[e] / dl), -4, 3) : 0;
            int stored = q + 4;
            int c = e / 128;
            int r = e % 128;
            y[32 + 32 * c + r % 32] |= (byte)((stored & 3) << (2 * (r / 32)));
            if ((stored & 4) != 0)
            {
                y[r % 32] |= (byte)(1 << (4 * c + r / 32));
            }
        }
    }

    private static void QuantizeQ4_K(ReadOnlySpan<float> x, Span<byte> y)
    {
        Span<float> scales = stackalloc float[8];
        Span<float> mins = stackalloc float[8];
        for (int s = 0; s < 8; s++)
        {
            (scales[s], mins[s]) = AffineFit(x.Slice(32 * s, 32), 15);
        }

        Span<int> qs = stackalloc int[8];
        Span<int> qm = stackalloc int[8];
        float d = ShareScale(scales, qs, 6);
        float dmin = ShareScale(mins, qm, 6);
        WriteHalf(y, 0, d);
        WriteHalf(y, 2, dmin);
        d = QuantBlocks.Half(y, 0);
        dmin = QuantBlocks.Half(y, 2);
        PackScaleMinK4(qs, qm, y.Slice(4, QuantBlocks.KScaleSize));
        for (int e = 0; e < QuantBlocks.QK_K; e++)
        {
            int s = e / 32;
            float dl = d * qs[s];
            float ml = dmin * qm[s];
            int q = dl != 0 ? Math.Clamp(NearestInt((x[e] + ml) / dl), 0, 15) : 0;
            y[16 + 32 * (e / 64) + e % 32] |= (byte)(q << (s % 2 == 1 ? 4 : 0));
        }
    }

    /// <summary>The inverse of <see cref="QuantBlocks.ScaleMinK4"/>: eight 6-bit scales and mins into 12 bytes (<paramref name="packed"/> zeroed).</summary>
    private static void PackScaleMinK4(ReadOnlySpan<int> scales, ReadOnlySpan<int> mins, Span<byte> packed)
    {
        for (int j = 0; j < 8; j++)
        {
            if (j < 4)
            {
                packed[j] |= (byte)scales[j];
                packed[j + 4] |= (byte)mins[j];
            }
            else
            {
                packed[j + 4] = (byte)((scales[j] & 0xF) | ((mins[j] & 0xF) << 4));
                packed[j - 4] |= (byte)((scales[j] >> 4) << 6);
                packed[j] |= (byte)((mins[j] >> 4) << 6);
            }
        }
    }

    /// <summary>
    /// quantize_row_q5_K_ref: each 32-value sub-block gets an affine fit (value ≈ scale·q − min, q in 0..31) from
    /// <see cref="MakeQkx2Quants"/> with weights rms(x) + |x|; the eight scales and mins become 6-bit integers under
    /// d = max scale / 63 and dmin = max min / 63 (binary16); then every value is re-rounded against the stored
    /// d·sc and dmin·m. A sub-block whose stored scale is zero keeps the search's levels, as in ggml.
    /// </summary>
    private static void QuantizeQ5_K(ReadOnlySpan<float> x, Span<byte> y)
    {
        Span<byte> levels = stackalloc byte[QuantBlocks.QK_K];
        Span<byte> scratch = stackalloc byte[32];
        Span<float> weights = stackalloc float[32];
        Span<float> scales = stackalloc float[8];
        Span<float> mins = stackalloc float[8];
        float maxScale = 0;
        float maxMin = 0;
        for (int j = 0; j < 8; j++)
        {
            ReadOnlySpan<float> xs = x.Slice(32 * j, 32);
            float sumX2 = 0;
            for (int l = 0; l < 32; l++)
            {
                sumX2 += xs[l] * xs[l];
            }

            float avX = MathF.Sqrt(sumX2 / 32);
            for (int l = 0; l < 32; l++)
            {
                weights[l] = avX + MathF.Abs(xs[l]);
            }

            scales[j] = MakeQkx2Quants(xs, weights, 31, levels.Slice(32 * j, 32), out mins[j], scratch, -0.5f, 0.1f, 15);
            if (scales[j] > maxScale)
            {
                maxScale = scales[j];
            }

            if (mins[j] > maxMin)
            {
                maxMin = mins[j];
            }
        }

        float invScale = maxScale > 0 ? 63f / maxScale : 0f;
        float invMin = maxMin > 0 ? 63f / maxMin : 0f;
        Span<int> ls = stackalloc int[8];
        Span<int> lm = stackalloc int[8];
        for (int j = 0; j < 8; j++)
        {
            // ggml stores nearest_int(...) in a uint8_t, then takes MIN(63, ·).
            ls[j] = Math.Min(63, (int)(byte)NearestInt(invScale * scales[j]));
            lm[j] = Math.Min(63, (int)(byte)NearestInt(invMin * mins[j]));
        }

        PackScaleMinK4(ls, lm, y.Slice(4, QuantBlocks.KScaleSize));
        WriteHalf(y, 0, maxScale / 63f);
        WriteHalf(y, 2, maxMin / 63f);
        float d = QuantBlocks.Half(y, 0);
        float dmin = QuantBlocks.Half(y, 2);
        for (int j = 0; j < 8; j++)
        {
            float dl = d * ls[j];
            if (dl == 0)
            {
                continue;
            }

            float ml = dmin * lm[j];
            for (int i = 0; i < 32; i++)
            {
                levels[32 * j + i] = (byte)Math.Clamp(NearestInt((x[32 * j + i] + ml) / dl), 0, 31);
            }
        }

        // Sub-blocks 2g and 2g+1 share qs[32g..32g+31] (low and high nibbles); their 5th bits are bits 2g and 2g+1 of qh[l].
        for (int g = 0; g < 4; g++)
        {
            for (int l = 0; l < 32; l++)
            {
                int l1 = levels[64 * g + l];
                int l2 = levels[64 * g + 32 + l];
                y[48 + 32 * g + l] = (byte)((l1 & 0xF) | ((l2 & 0xF) << 4));
                y[16 + l] |= (byte)(((l1 >> 4) << (2 * g)) | ((l2 >> 4) << (2 * g + 1)));
            }
        }
    }

    /// <summary>
    /// ggml <c>make_qkx2_quants</c> (squared error): the weighted least-squares affine fit x ≈ scale·L + min with
    /// L in 0..<paramref name="nmax"/> and min ≤ 0, starting from the min/max grid and trying nstep+1 grid widths
    /// (nmax + rmin + rdelta·k). Returns the scale; <paramref name="theMin"/> is −min (≥ 0). Float32 arithmetic in
    /// ggml's order, so the chosen levels are llama.cpp's.
    /// </summary>
    private static float MakeQkx2Quants(ReadOnlySpan<float> x, ReadOnlySpan<float> weights, int nmax, Span<byte> levels, out float theMin,
        Span<byte> scratch, float rmin, float rdelta, int nstep)
    {
        int n = x.Length;
        float min = x[0];
        float max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min)
            {
                min = x[i];
            }

            if (x[i] > max)
            {
                max = x[i];
            }

            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }

        if (min > 0)
        {
            min = 0;
        }

        if (max == min)
        {
            levels.Slice(0, n).Clear();
            theMin = -min;
            return 0f;
        }

        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * (x[i] - min));
            levels[i] = (byte)Math.Max(0, Math.Min(nmax, l));
            float diff = scale * levels[i] + min - x[i];
            bestError += weights[i] * (diff * diff);
        }

        for (int step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0;
            float sumL2 = 0;
            float sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Max(0, Math.Min(nmax, NearestInt(iscale * (x[i] - min))));
                scratch[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }

            float det = sumW * sumL2 - sumL * sumL;
            if (det > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / det;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / det;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }

                float error = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * scratch[i] + thisMin - x[i];
                    error += weights[i] * (diff * diff);
                }

                if (error < bestError)
                {
                    scratch.Slice(0, n).CopyTo(levels);
                    bestError = error;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }

        theMin = -min;
        return scale;
    }

    private static void QuantizeQ6_K(ReadOnlySpan<float> x, Span<byte> y)
    {
        Span<float> scales = stackalloc float[16];
        for (int s = 0; s < 16; s++)
        {
            scales[s] = SignedAbsMax(x.Slice(16 * s, 16)) / -32;
        }

        float maxScale = SignedAbsMax(scales);
        float iscale = maxScale != 0 ? -128 / maxScale : 0;
        float d = iscale != 0 ? 1 / iscale : 0;
        WriteHalf(y, 208, d);
        d = QuantBlocks.Half(y, 208);
        Span<int> ls = stackalloc int[16];
        for (int s = 0; s < 16; s++)
        {
            ls[s] = Math.Min(127, NearestInt(iscale * scales[s]));
            y[192 + s] = (byte)(sbyte)ls[s];
        }

        for (int e = 0; e < QuantBlocks.QK_K; e++)
        {
            float dl = d * ls[e / 16];
            int q = dl != 0 ? Math.Clamp(NearestInt(x[e] / dl), -32, 31) : 0;
            int stored = q + 32;
            int c = e / 128;
            int r = e % 128;
            int k = r / 32;
            int l = r % 32;
            y[64 * c + 32 * (k % 2) + l] |= (byte)((stored & 0xF) << (k >= 2 ? 4 : 0));
            y[128 + 32 * c + l] |= (byte)((stored >> 4) << (2 * k));
        }
    }

    // quantize_row_q8_K_ref: iscale = -127 / (signed extreme), q = min(127, nearest(iscale·x)), bsums per 16.
    private static void QuantizeQ8_K(ReadOnlySpan<float> x, Span<byte> y)
    {
        float max = SignedAbsMax(x);
        if (max == 0)
        {
            return;
        }

        float iscale = -127f / max;
        for (int j = 0; j < QuantBlocks.QK_K; j++)
        {
            y[4 + j] = (byte)(sbyte)Math.Min(127, NearestInt(iscale * x[j]));
        }

        for (int s = 0; s < 16; s++)
        {
            int sum = 0;
            for (int j = 0; j < 16; j++)
            {
                sum += (sbyte)y[4 + 16 * s + j];
            }

            BinaryPrimitives.WriteInt16LittleEndian(y.Slice(260 + 2 * s), (short)sum);
        }

        BinaryPrimitives.WriteSingleLittleEndian(y, 1 / iscale);
    }
}

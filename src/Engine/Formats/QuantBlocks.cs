using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace GpuLlama.Formats;

/// <summary>
/// Block-quantized formats as ggml lays them out (ggml-common.h <c>block_*</c> structs, little-endian, packed)
/// and the scalar reference dequantization of each (ggml-quants.c <c>dequantize_row_*</c>, same arithmetic in
/// the same order, so values agree with llama.cpp's to the last bit where its compiler does not contract to FMA).
/// Block size and byte count live in <see cref="DTypeInfo"/>; the byte offsets of each field are here.
/// </summary>
/// <remarks>
/// Layouts (offsets in bytes; "half" is IEEE binary16):
/// <list type="bullet">
/// <item>Q4_0 (32 / 18): d half @0, qs[16] @2 — element j &lt; 16 is low nibble of qs[j], j ≥ 16 the high nibble of qs[j-16]; value (q-8)·d.</item>
/// <item>Q4_1 (32 / 20): d @0, m @2, qs[16] @4; value q·d + m.</item>
/// <item>Q5_0 (32 / 22): d @0, qh u32 @2 (bit j = 5th bit of element j), qs[16] @6; value (q-16)·d.</item>
/// <item>Q5_1 (32 / 24): d @0, m @2, qh u32 @4, qs[16] @8; value q·d + m.</item>
/// <item>Q8_0 (32 / 34): d @0, int8 qs[32] @2; value q·d.</item>
/// <item>Q2_K (256 / 84): scales[16] @0 (low nibble scale, high nibble min, per 16 elements), qs[64] @16 (2 bits), d @80, dmin @82.</item>
/// <item>Q3_K (256 / 110): hmask[32] @0, qs[64] @32 (low 2 bits), scales[12] @96 (16 six-bit scales, biased by 32), d @108.</item>
/// <item>Q4_K (256 / 144): d @0, dmin @2, scales[12] @4 (8 six-bit scale/min pairs, <c>get_scale_min_k4</c>), qs[128] @16.</item>
/// <item>Q5_K (256 / 176): d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48.</item>
/// <item>Q6_K (256 / 210): ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208; value (q-32)·d·scale.</item>
/// <item>Q8_K (256 / 292): d float32 @0, int8 qs[256] @4, int16 bsums[16] @260; value q·d.</item>
/// <item>IQ4_NL (32 / 18): d @0, qs[16] @2 (nibbles as Q4_0's); value d·<see cref="IQ4Values"/>[q] (a non-uniform 16-level grid).</item>
/// <item>IQ4_XS (256 / 136): d @0, scales_h u16 @2, scales_l[4] @4, qs[128] @8: eight 32-value sub-blocks as IQ4_NL's, sub-block
/// i's six-bit scale ls = low nibble i of scales_l | bits 2i..2i+1 of scales_h &lt;&lt; 4; value d·(ls − 32)·IQ4Values[q].</item>
/// </list>
/// </remarks>
public static class QuantBlocks
{
    /// <summary>Elements per block of the legacy formats (ggml <c>QK4_0</c>, <c>QK8_0</c> …).</summary>
    public const int QK = 32;

    /// <summary>Elements per super-block of the K-quants (ggml <c>QK_K</c>).</summary>
    public const int QK_K = 256;

    /// <summary>The 16 levels of IQ4_NL and IQ4_XS (ggml <c>kvalues_iq4nl</c>).</summary>
    public static ReadOnlySpan<sbyte> IQ4Values => [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    /// <summary>Bytes of packed 6-bit scales in Q3_K/Q4_K/Q5_K (ggml <c>K_SCALE_SIZE</c>).</summary>
    public const int KScaleSize = 12;

    /// <summary>Converts one row of any supported dtype to float32 (the reference path; also used by Embed).</summary>
    /// <remarks><paramref name="dst"/>'s length is the column count; <paramref name="row"/> must hold exactly that many elements' blocks.</remarks>
    public static void DequantizeRow(DType type, ReadOnlySpan<byte> row, Span<float> dst)
    {
        int blockSize = type.BlockSize();
        if (blockSize == 0 || type is DType.I8 or DType.I16 or DType.I32 or DType.I64 or DType.F64 or DType.Q8_1)
        {
            throw new NotSupportedException($"dequantization of {DTypeInfo.DisplayName(type)} is not supported");
        }

        if (dst.Length % blockSize != 0)
        {
            throw new ArgumentException($"{type} rows hold whole blocks of {blockSize}; got {dst.Length} columns", nameof(dst));
        }

        long expected = type.RowBytes(dst.Length);
        if (row.Length != expected)
        {
            throw new ArgumentException($"{type} row of {dst.Length} columns takes {expected} bytes; got {row.Length}", nameof(row));
        }

        switch (type)
        {
            case DType.F32:
                for (int i = 0; i < dst.Length; i++)
                {
                    dst[i] = BinaryPrimitives.ReadSingleLittleEndian(row.Slice(4 * i));
                }
                return;
            case DType.F16:
                for (int i = 0; i < dst.Length; i++)
                {
                    dst[i] = Half(row, 2 * i);
                }
                return;
            case DType.BF16:
                for (int i = 0; i < dst.Length; i++)
                {
                    dst[i] = BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(row.Slice(2 * i)) << 16);
                }
                return;
        }

        int blockBytes = type.BlockBytes();
        int blocks = dst.Length / blockSize;
        for (int i = 0; i < blocks; i++)
        {
            DequantizeBlock(type, row.Slice(i * blockBytes, blockBytes), dst.Slice(i * blockSize, blockSize));
        }
    }

    /// <summary>Dequantizes one block of a block-quantized <paramref name="type"/> into <paramref name="y"/> (block-size floats).</summary>
    public static void DequantizeBlock(DType type, ReadOnlySpan<byte> block, Span<float> y)
    {
        switch (type)
        {
            case DType.Q4_0: DequantizeQ4_0(block, y); break;
            case DType.Q4_1: DequantizeQ4_1(block, y); break;
            case DType.Q5_0: DequantizeQ5_0(block, y); break;
            case DType.Q5_1: DequantizeQ5_1(block, y); break;
            case DType.Q8_0: DequantizeQ8_0(block, y); break;
            case DType.Q2_K: DequantizeQ2_K(block, y); break;
            case DType.Q3_K: DequantizeQ3_K(block, y); break;
            case DType.Q4_K: DequantizeQ4_K(block, y); break;
            case DType.Q5_K: DequantizeQ5_K(block, y); break;
            case DType.Q6_K: DequantizeQ6_K(block, y); break;
            case DType.Q8_K: DequantizeQ8_K(block, y); break;
            case DType.IQ4_NL: DequantizeIQ4_NL(block, y); break;
            case DType.IQ4_XS: DequantizeIQ4_XS(block, y); break;
            default: throw new NotSupportedException($"{DTypeInfo.DisplayName(type)} is not a block-quantized type this engine knows");
        }
    }

    /// <summary>The binary16 at <paramref name="offset"/> as float (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Half(ReadOnlySpan<byte> b, int offset) =>
        (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(offset)));

    /// <summary>
    /// ggml <c>get_scale_min_k4</c>: the j-th (0..7) six-bit scale and min of Q4_K/Q5_K's 12 packed bytes. Bytes 0-3 hold
    /// scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; bytes 8-11 hold the low nibbles of scales 4-7 (low half) and
    /// mins 4-7 (high half), whose top 2 bits sit in the spare top bits of bytes 0-3 and 4-7.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScaleMinK4(int j, ReadOnlySpan<byte> q, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = q[j] & 63;
            min = q[j + 4] & 63;
        }
        else
        {
            scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    /// <summary>
    /// Q3_K's 16 six-bit scales (still biased by 32): bytes 0-7 give the low nibbles (scales 0-7 from the low halves,
    /// 8-15 from the high halves), bytes 8-11 the top 2 bits, four per byte (ggml's <c>kmask1/kmask2</c> shuffle).
    /// </summary>
    public static void ScalesQ3_K(ReadOnlySpan<byte> packed, Span<sbyte> scales)
    {
        uint a0 = BinaryPrimitives.ReadUInt32LittleEndian(packed);
        uint a1 = BinaryPrimitives.ReadUInt32LittleEndian(packed.Slice(4));
        uint tmp = BinaryPrimitives.ReadUInt32LittleEndian(packed.Slice(8));
        const uint kmask1 = 0x03030303;
        const uint kmask2 = 0x0f0f0f0f;
        uint s2 = ((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
        uint s3 = ((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
        uint s0 = (a0 & kmask2) | (((tmp >> 0) & kmask1) << 4);
        uint s1 = (a1 & kmask2) | (((tmp >> 2) & kmask1) << 4);
        for (int i = 0; i < 4; i++)
        {
            scales[i] = (sbyte)(byte)(s0 >> (8 * i));
            scales[4 + i] = (sbyte)(byte)(s1 >> (8 * i));
            scales[8 + i] = (sbyte)(byte)(s2 >> (8 * i));
            scales[12 + i] = (sbyte)(byte)(s3 >> (8 * i));
        }
    }

    private static void DequantizeQ4_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        ReadOnlySpan<byte> qs = b.Slice(2, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((qs[j] & 0x0F) - 8) * d;
            y[j + 16] = ((qs[j] >> 4) - 8) * d;
        }
    }

    private static void DequantizeQ4_1(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        float m = Half(b, 2);
        ReadOnlySpan<byte> qs = b.Slice(4, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = (qs[j] & 0x0F) * d + m;
            y[j + 16] = (qs[j] >> 4) * d + m;
        }
    }

    private static void DequantizeQ5_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(2));
        ReadOnlySpan<byte> qs = b.Slice(6, 16);
        for (int j = 0; j < 16; j++)
        {
            int xh0 = (int)(((qh >> j) << 4) & 0x10);
            int xh1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (((qs[j] & 0x0F) | xh0) - 16) * d;
            y[j + 16] = (((qs[j] >> 4) | xh1) - 16) * d;
        }
    }

    private static void DequantizeQ5_1(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        float m = Half(b, 2);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(4));
        ReadOnlySpan<byte> qs = b.Slice(8, 16);
        for (int j = 0; j < 16; j++)
        {
            int xh0 = (int)(((qh >> j) << 4) & 0x10);
            int xh1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = ((qs[j] & 0x0F) | xh0) * d + m;
            y[j + 16] = ((qs[j] >> 4) | xh1) * d + m;
        }
    }

    private static void DequantizeQ8_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        for (int j = 0; j < 32; j++)
        {
            y[j] = (sbyte)b[2 + j] * d;
        }
    }

    private static void DequantizeQ2_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        ReadOnlySpan<byte> scales = b.Slice(0, 16);
        ReadOnlySpan<byte> q = b.Slice(16, 64);
        float d = Half(b, 80);
        float min = Half(b, 82);
        int yi = 0;
        int isc = 0;
        for (int n = 0; n < QK_K; n += 128)
        {
            int shift = 0;
            for (int j = 0; j < 4; j++)
            {
                for (int half = 0; half < 2; half++)
                {
                    byte sc = scales[isc++];
                    float dl = d * (sc & 0xF);
                    float ml = min * (sc >> 4);
                    for (int l = 0; l < 16; l++)
                    {
                        y[yi++] = dl * ((q[l + 16 * half] >> shift) & 3) - ml;
                    }
                }

                shift += 2;
            }

            q = q.Slice(32);
        }
    }

    /// <summary>ggml dequantize_row_iq4_nl: y[j] = d·levels[low nibble j], y[j+16] = d·levels[high nibble j].</summary>
    private static void DequantizeIQ4_NL(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        ReadOnlySpan<sbyte> levels = IQ4Values;
        for (int j = 0; j < 16; j++)
        {
            y[j] = d * levels[b[2 + j] & 0xF];
            y[j + 16] = d * levels[b[2 + j] >> 4];
        }
    }

    /// <summary>ggml dequantize_row_iq4_xs: eight IQ4_NL-shaped sub-blocks, each scaled by dl = d·(ls − 32).</summary>
    private static void DequantizeIQ4_XS(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        int scalesH = BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(2));
        ReadOnlySpan<sbyte> levels = IQ4Values;
        for (int ib = 0; ib < 8; ib++)
        {
            int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((scalesH >> (2 * ib)) & 3) << 4);
            float dl = d * (ls - 32);
            ReadOnlySpan<byte> qs = b.Slice(8 + 16 * ib, 16);
            for (int j = 0; j < 16; j++)
            {
                y[32 * ib + j] = dl * levels[qs[j] & 0xF];
                y[32 * ib + j + 16] = dl * levels[qs[j] >> 4];
            }
        }
    }

    private static void DequantizeQ3_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        ReadOnlySpan<byte> hm = b.Slice(0, 32);
        ReadOnlySpan<byte> q = b.Slice(32, 64);
        Span<sbyte> scales = stackalloc sbyte[16];
        ScalesQ3_K(b.Slice(96, KScaleSize), scales);
        float dAll = Half(b, 108);
        int yi = 0;
        int isc = 0;
        int m = 1;
        for (int n = 0; n < QK_K; n += 128)
        {
            int shift = 0;
            for (int j = 0; j < 4; j++)
            {
                for (int half = 0; half < 2; half++)
                {
                    float dl = dAll * (scales[isc++] - 32);
                    for (int l = 0; l < 16; l++)
                    {
                        int i = l + 16 * half;
                        y[yi++] = dl * (((q[i] >> shift) & 3) - ((hm[i] & m) != 0 ? 0 : 4));
                    }
                }

                shift += 2;
                m <<= 1;
            }

            q = q.Slice(32);
        }
    }

    private static void DequantizeQ4_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        float min = Half(b, 2);
        ReadOnlySpan<byte> scales = b.Slice(4, KScaleSize);
        ReadOnlySpan<byte> q = b.Slice(16, 128);
        int yi = 0;
        for (int j = 0, isc = 0; j < QK_K; j += 64, isc += 2)
        {
            ScaleMinK4(isc, scales, out int sc, out int m);
            float d1 = d * sc;
            float m1 = min * m;
            ScaleMinK4(isc + 1, scales, out sc, out m);
            float d2 = d * sc;
            float m2 = min * m;
            for (int l = 0; l < 32; l++)
            {
                y[yi++] = d1 * (q[l] & 0xF) - m1;
            }

            for (int l = 0; l < 32; l++)
            {
                y[yi++] = d2 * (q[l] >> 4) - m2;
            }

            q = q.Slice(32);
        }
    }

    private static void DequantizeQ5_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        float min = Half(b, 2);
        ReadOnlySpan<byte> scales = b.Slice(4, KScaleSize);
        ReadOnlySpan<byte> qh = b.Slice(16, 32);
        ReadOnlySpan<byte> ql = b.Slice(48, 128);
        int yi = 0;
        int u1 = 1;
        int u2 = 2;
        for (int j = 0, isc = 0; j < QK_K; j += 64, isc += 2)
        {
            ScaleMinK4(isc, scales, out int sc, out int m);
            float d1 = d * sc;
            float m1 = min * m;
            ScaleMinK4(isc + 1, scales, out sc, out m);
            float d2 = d * sc;
            float m2 = min * m;
            for (int l = 0; l < 32; l++)
            {
                y[yi++] = d1 * ((ql[l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0)) - m1;
            }

            for (int l = 0; l < 32; l++)
            {
                y[yi++] = d2 * ((ql[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0)) - m2;
            }

            ql = ql.Slice(32);
            u1 <<= 2;
            u2 <<= 2;
        }
    }

    private static void DequantizeQ6_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        ReadOnlySpan<byte> ql = b.Slice(0, 128);
        ReadOnlySpan<byte> qh = b.Slice(128, 64);
        ReadOnlySpan<byte> sc = b.Slice(192, 16);
        float d = Half(b, 208);
        for (int n = 0; n < QK_K; n += 128)
        {
            for (int l = 0; l < 32; l++)
            {
                int isc = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[n + l] = d * (sbyte)sc[isc] * q1;
                y[n + l + 32] = d * (sbyte)sc[isc + 2] * q2;
                y[n + l + 64] = d * (sbyte)sc[isc + 4] * q3;
                y[n + l + 96] = d * (sbyte)sc[isc + 6] * q4;
            }

            ql = ql.Slice(64);
            qh = qh.Slice(32);
            sc = sc.Slice(8);
        }
    }

    private static void DequantizeQ8_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = BinaryPrimitives.ReadSingleLittleEndian(b);
        for (int j = 0; j < QK_K; j++)
        {
            y[j] = d * (sbyte)b[4 + j];
        }
    }
}

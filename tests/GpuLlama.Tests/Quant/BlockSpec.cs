using System.Buffers.Binary;
using GpuLlama.Formats;

namespace GpuLlama.Tests.Quant;

/// <summary>
/// An independent float64 reading of ggml blocks, written element by element from the layout description
/// (ggml-common.h): for element e it finds e's bits wherever the format puts them, instead of walking the block
/// in the production code's loop order. Also makes random valid blocks.
/// </summary>
internal static class BlockSpec
{
    public static readonly DType[] QuantTypes =
    [
        DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0,
        DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K, DType.Q8_K, DType.IQ4_NL, DType.IQ4_XS,
    ];

    /// <summary>ggml's kvalues_iq4nl, written out here rather than read from the production table.</summary>
    private static readonly int[] s_iq4Levels = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    private static double H(ReadOnlySpan<byte> b, int at) => (double)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(at)));

    private static int Bit(uint v, int i) => (int)((v >> i) & 1);

    /// <summary>Element <paramref name="e"/> of one block, and the magnitude of the terms that make it (for rounding tolerances).</summary>
    public static (double Value, double Magnitude) Element(DType type, ReadOnlySpan<byte> b, int e)
    {
        switch (type)
        {
            case DType.Q4_0:
            {
                int q = e < 16 ? b[2 + e] & 15 : b[2 + e - 16] >> 4;
                double v = (q - 8) * H(b, 0);
                return (v, Math.Abs(v));
            }

            case DType.Q4_1:
            {
                int q = e < 16 ? b[4 + e] & 15 : b[4 + e - 16] >> 4;
                double a = q * H(b, 0);
                return (a + H(b, 2), Math.Abs(a) + Math.Abs(H(b, 2)));
            }

            case DType.Q5_0:
            {
                uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(2));
                int q = (e < 16 ? b[6 + e] & 15 : b[6 + e - 16] >> 4) + 16 * Bit(qh, e);
                double v = (q - 16) * H(b, 0);
                return (v, Math.Abs(v));
            }

            case DType.Q5_1:
            {
                uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(4));
                int q = (e < 16 ? b[8 + e] & 15 : b[8 + e - 16] >> 4) + 16 * Bit(qh, e);
                double a = q * H(b, 0);
                return (a + H(b, 2), Math.Abs(a) + Math.Abs(H(b, 2)));
            }

            case DType.Q8_0:
            {
                double v = (sbyte)b[2 + e] * H(b, 0);
                return (v, Math.Abs(v));
            }

            case DType.Q2_K:
            {
                // 16 groups of 16 share scales[e/16] (scale low nibble, min high nibble). Two bits per value: the 128-value
                // halves use 32 bytes each, value r of a half sits in byte r%32 at bit pair r/32.
                byte sm = b[e / 16];
                int r = e % 128;
                int q = (b[16 + 32 * (e / 128) + r % 32] >> (2 * (r / 32))) & 3;
                double a = H(b, 80) * (sm & 15) * q;
                double m = H(b, 82) * (sm >> 4);
                return (a - m, Math.Abs(a) + Math.Abs(m));
            }

            case DType.Q3_K:
            {
                // 16 six-bit scales: low nibbles in bytes 0..7 (k < 8 low half, k ≥ 8 high half of byte k-8), top two
                // bits in byte 8 + k%4 at bit pair k/4; bias 32. Values: 2 low bits as Q2_K, the third bit in
                // hmask[r%32] at bit 4·half + r/32, and a clear third bit means "minus 4".
                int k = e / 16;
                int low4 = k < 8 ? b[96 + k] & 15 : b[96 + k - 8] >> 4;
                int high2 = (b[96 + 8 + k % 4] >> (2 * (k / 4))) & 3;
                int scale = (low4 | (high2 << 4)) - 32;
                int half = e / 128;
                int r = e % 128;
                int q2 = (b[32 + 32 * half + r % 32] >> (2 * (r / 32))) & 3;
                int hbit = (b[r % 32] >> (4 * half + r / 32)) & 1;
                double v = H(b, 108) * scale * (q2 - (hbit == 1 ? 0 : 4));
                return (v, Math.Abs(v));
            }

            case DType.Q4_K:
            case DType.Q5_K:
            {
                // 8 sub-blocks of 32 with 6-bit scale/min. Sub-block s < 4: scale = low 6 bits of byte s, min = low 6
                // bits of byte s+4. s ≥ 4: low nibbles in byte s+4 (scale low, min high), top 2 bits in the spare
                // top bits of byte s-4 (scale) and byte s (min).
                int s = e / 32;
                ReadOnlySpan<byte> p = b.Slice(4, 12);
                int sc = s < 4 ? p[s] & 63 : (p[s + 4] & 15) | ((p[s - 4] >> 6) << 4);
                int mn = s < 4 ? p[s + 4] & 63 : (p[s + 4] >> 4) | ((p[s] >> 6) << 4);
                int g = e / 64;
                bool high = s % 2 == 1;
                int qsAt = type == DType.Q4_K ? 16 : 48;
                int qb = b[qsAt + 32 * g + e % 32];
                int q = high ? qb >> 4 : qb & 15;
                if (type == DType.Q5_K)
                {
                    q += 16 * ((b[16 + e % 32] >> (2 * g + (high ? 1 : 0))) & 1);
                }

                double a = H(b, 0) * sc * q;
                double m = H(b, 2) * mn;
                return (a - m, Math.Abs(a) + Math.Abs(m));
            }

            case DType.Q6_K:
            {
                // Halves of 128; value r of a half: quarter k = r/32, lane l = r%32. Low 4 bits: ql[64·half + 32·(k%2) + l],
                // low nibble for k < 2, high for k ≥ 2. High 2 bits: qh[32·half + l] bit pair k. Bias 32, int8 scale per 16.
                int half = e / 128;
                int r = e % 128;
                int k = r / 32;
                int l = r % 32;
                int qlb = b[64 * half + 32 * (k % 2) + l];
                int low4 = k < 2 ? qlb & 15 : qlb >> 4;
                int high2 = (b[128 + 32 * half + l] >> (2 * k)) & 3;
                int q = (low4 | (high2 << 4)) - 32;
                double v = H(b, 208) * (sbyte)b[192 + e / 16] * q;
                return (v, Math.Abs(v));
            }

            case DType.Q8_K:
            {
                double v = BinaryPrimitives.ReadSingleLittleEndian(b) * (double)(sbyte)b[4 + e];
                return (v, Math.Abs(v));
            }

            case DType.IQ4_NL:
            {
                int q = e < 16 ? b[2 + e] & 15 : b[2 + e - 16] >> 4;
                double v = H(b, 0) * s_iq4Levels[q];
                return (v, Math.Abs(v));
            }

            case DType.IQ4_XS:
            {
                // Sub-block s (32 values): its scale's low nibble is nibble s of scales_l (byte 4 + s/2, low half for even
                // s), its top 2 bits bits 2s, 2s+1 of scales_h (u16 at 2); bias 32. Values as IQ4_NL's from byte 8 + 16s.
                int s = e / 32;
                int low4 = (b[4 + s / 2] >> (4 * (s % 2))) & 15;
                int high2 = (BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(2)) >> (2 * s)) & 3;
                int r = e % 32;
                int q = r < 16 ? b[8 + 16 * s + r] & 15 : b[8 + 16 * s + r - 16] >> 4;
                double v = H(b, 0) * ((low4 | (high2 << 4)) - 32) * s_iq4Levels[q];
                return (v, Math.Abs(v));
            }

            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, null);
        }
    }

    /// <summary>Byte offsets of the binary16 scale fields (the rest of a block is any bit pattern).</summary>
    private static int[] HalfFields(DType type) => type switch
    {
        DType.Q4_0 or DType.Q5_0 or DType.Q8_0 or DType.IQ4_NL or DType.IQ4_XS => [0],
        DType.Q4_1 or DType.Q5_1 or DType.Q4_K or DType.Q5_K => [0, 2],
        DType.Q2_K => [80, 82],
        DType.Q3_K => [108],
        DType.Q6_K => [208],
        _ => [],
    };

    /// <summary>
    /// Random blocks: random bytes with finite scales of either sign in [1e-3, 0.1), and, every 7th block, a half
    /// denormal or zero scale (exercising every conversion path).
    /// </summary>
    public static byte[] RandomRow(DType type, int cols, Random rng)
    {
        byte[] row = new byte[type.RowBytes(cols)];
        rng.NextBytes(row);
        int bb = type.BlockBytes();
        for (int blk = 0; blk < row.Length / bb; blk++)
        {
            Span<byte> b = row.AsSpan(blk * bb, bb);
            if (type == DType.Q8_K)
            {
                BinaryPrimitives.WriteSingleLittleEndian(b, RandomScale(rng));
                continue;
            }

            foreach (int at in HalfFields(type))
            {
                ushort bits = BitConverter.HalfToUInt16Bits((Half)RandomScale(rng));
                if (blk % 7 == 3)
                {
                    bits = (ushort)(rng.Next(0, 0x400) | (rng.Next(2) << 15));
                }

                BinaryPrimitives.WriteUInt16LittleEndian(b.Slice(at), bits);
            }
        }

        return row;
    }

    private static float RandomScale(Random rng) => (float)((rng.Next(2) == 0 ? -1 : 1) * (0.001 + 0.099 * rng.NextDouble()));

    /// <summary>The whole row read by the spec.</summary>
    public static (double[] Values, double[] Magnitudes) Row(DType type, ReadOnlySpan<byte> row, int cols)
    {
        double[] v = new double[cols];
        double[] m = new double[cols];
        int bs = type.BlockSize();
        int bb = type.BlockBytes();
        for (int i = 0; i < cols; i++)
        {
            (v[i], m[i]) = Element(type, row.Slice(i / bs * bb, bb), i % bs);
        }

        return (v, m);
    }
}

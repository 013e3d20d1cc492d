using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GpuLlama.Formats;

namespace GpuLlama.Devices;

/// <summary>
/// Prompt processing's matrix product on the CPU, C[m, n] = Σ_k X[m, k]·W[n, k] (both operands K-contiguous, as
/// activations and weights are stored), blocked so that it runs from the caches instead of memory: weights are taken
/// in panels of <see cref="PanelRows"/> rows and <see cref="KBlock"/> columns, converted to float once (F16, BF16 and
/// quantized blocks; F32 row panels de-interleaved), and multiplied by register-blocked micro-kernels of two kinds.
/// With a full token tile: outer products (<see cref="Outer12x32"/>, AVX2 <see cref="Outer6x16"/>) of 12 weight rows
/// by 32 (16) activation rows from X transposed once per product (<see cref="PackTokens"/>): per step 2 vector loads
/// and 12 broadcasts feed 24 FMAs, and no horizontal sums (Zen 5: 105-115 -> 165-190 GFLOP/s on a core whose FMA peak
/// is 235). Q8_0, Q4_0, Q5_0 and the K-quants Q4_K, Q5_K, Q6_K multiply their quants as bytes from 6 rows instead,
/// block by block, against the 8-bit activations (<see cref="UsesIntegerTiles"/>: <see cref="Integer12x32"/>,
/// <see cref="Integer6x32K"/>, <see cref="Split6x32"/> on 32-row tiles; <see cref="Integer4x16"/>,
/// <see cref="Integer2x16K"/>, <see cref="Split2x16"/> on 16-row tiles, AVX2 or prompts of 16-31 rows; Q8_0 with
/// AVX-VNNI <see cref="Vnni6x16"/>): each block's sum is exact, then scaled by d_w·d_x — the sum llama.cpp's
/// repacked Q4_0 GEMM computes.
/// Other quantized weights and short products: dot-product tiles, 4 weight rows by 6 (AVX2: 3) activation rows, whose
/// lane order tracks llama.cpp's quantized runs (<see cref="UsesOuterTiles"/>).
/// </summary>
internal static unsafe class CpuGemm
{
    public const int PanelRows = 4;

    /// <summary>Activation rows per tile of the AVX-512 kernel (<see cref="Tile4x6"/>).</summary>
    public const int TileRows = 6;

    /// <summary>Activation rows per tile of the AVX2 kernel (<see cref="Tile4x3"/>: 16 registers, not 32).</summary>
    public const int Avx2TileRows = 3;

    private const int KBlockFloats = 3072;

    /// <summary>Whether <see cref="Multiply"/> has a register-blocked kernel on this machine (AVX-512, or AVX2 with FMA).</summary>
    public static bool IsAccelerated => Vector512.IsHardwareAccelerated || (Vector256.IsHardwareAccelerated && Fma.IsSupported);

    /// <summary>
    /// Columns per K block: K itself up to 3072 (one pass, no partial sums), else K split evenly into blocks of at
    /// most 3072 rounded up to 256 (so quantized rows split on block boundaries). 64 activation rows of 3072 floats are
    /// 768 KiB, what an L2 of 1 MiB keeps while the weight panels stream by; each tile's horizontal sums are then
    /// paid once per up to 192 FMA steps.
    /// </summary>
    public static int KBlock(int k)
    {
        if (k <= KBlockFloats)
        {
            return k;
        }

        int blocks = (k + KBlockFloats - 1) / KBlockFloats;
        return (k / blocks + 255) / 256 * 256;
    }

    /// <summary>Weight rows per tile of the outer-product kernel (<see cref="Outer12x32"/>): three panels.</summary>
    public const int OuterRows = 12;

    /// <summary>
    /// Activation rows per tile of the outer-product kernels for a product of <paramref name="m"/> rows: 32 with
    /// AVX-512 (<see cref="Outer12x32"/>), 16 with AVX2 (<see cref="Outer6x16"/>) — and on AVX-512 machines for
    /// products of 16 to 31 rows (<see cref="Outer12x16"/>).
    /// </summary>
    public static int OuterTokens(int m) => Vector512.IsHardwareAccelerated && m >= 32 ? 32 : 16;

    // Row stride of the converted weight panels in the scratch: fixed, so that the outer kernel's twelve broadcasts
    // address one pointer plus constants, and a cache line more than the largest K block, so that the twelve rows do
    // not fall into one L1 set (3072 floats are three times 4 KiB).
    private const int ScratchStride = KBlockFloats + 16;

    // Row stride of the integer kernel's decoded quants (bytes): a cache line more than the largest K block.
    private const int ByteStride = KBlockFloats + 64;

    // The split Q8_0 kernels' high nibbles: a second plane of rows after the twelve low-nibble rows (both fit in the float rows).
    private const int SplitPlane = OuterRows * ByteStride;

    // Row stride of the weight scales of a decoded group (integer kernels): one per 32 values of a K block.
    // K-quants: per super-block d at 0 and dmin at 16, then from float 32 on 16 shorts each: Q4_K/Q5_K's 8 scales and
    // 8 mins, or Q6_K's 16 scales. Q8_0 on the VNNI kernel: its block sums' starting values (ints) from float 96 on.
    private const int ScaleStride = 2 * (KBlockFloats / 32) + 16;

    /// <summary>
    /// Floats of panel scratch one thread needs: twelve converted rows of a K block (<paramref name="k"/> is at most
    /// <see cref="KBlockFloats"/> per block, so any K fits) and, for the quantized rows, their block scales.
    /// </summary>
    public static int ScratchFloats(int k) => OuterRows * ScratchStride + OuterRows * ScaleStride;

    /// <summary>
    /// Whether a product of <paramref name="m"/> activation rows by <paramref name="type"/> weights runs on the
    /// outer-product kernels (AVX-512 or AVX2, at least one full token tile); the caller then packs X with
    /// <see cref="PackTokens"/> and splits the work by <see cref="OuterRows"/>-row groups. Float-stored weights only:
    /// each output of this kernel is one sequence of K additions of rounded products, where the dot tiles sum 8 or 16
    /// lanes and then across them, and the quantized products exist to reproduce llama.cpp's quantized runs — whose
    /// 8-bit rounding of every layer's input turns a 1-ulp difference into a different code on the tiny fixtures: the
    /// sequential order moved tiny-llama-a's Q8_0 logits from 1.4e-7 to 6.6e-3 of llama.cpp's (docs/performance.md).
    /// Q8_0, Q4_0, Q5_0 and the K-quants take the integer kernels instead, block by block (<see cref="UsesIntegerTiles"/>).
    /// </summary>
    public static bool UsesOuterTiles(DType type, int m) => IsAccelerated && m >= 16 && type is DType.F32 or DType.F16 or DType.BF16;

    /// <summary>
    /// Whether a product of <paramref name="m"/> rows by <paramref name="type"/> weights against the 8-bit activations
    /// runs on the integer kernels (AVX2, <see cref="MinIntegerRows"/>+ rows; the caller packs the activations' quants with
    /// <see cref="PackQuantBytes"/>). Each block's sum is exact, then scaled by d_w·d_x and added — llama.cpp's formula
    /// Σ_b (d_w·d_x)·Σ q_w·q_x, the order of float additions over blocks, not over values. Formats whose quants are
    /// unsigned before their offset are multiplied by the signed 8-bit activations on vpmaddubsw directly — 64 products
    /// per 512-bit instruction, where an FMA does 16: Q4_0 and Q5_0 (<see cref="Integer12x32"/>, the exact block sums
    /// llama.cpp's repacked Q4_0 GEMM scales and adds in this order) and the K-quants Q4_K, Q5_K, Q6_K
    /// (<see cref="Integer6x32K"/>: llama.cpp's integer sums per super-block). Q8_0's signed weights would saturate
    /// vpmaddubsw's pair sums; where AVX-VNNI exists it takes <see cref="Vnni6x16"/> instead (vpdpbusd sums four
    /// products into 32 bits directly), else <see cref="Split6x32"/> and <see cref="Split2x16"/> (its weights as two
    /// unsigned nibbles). 16-row tiles (AVX2, and on AVX-512 prompts of 6-31 rows; below 16 one tile padded with zero
    /// rows): the same with 256-bit vectors in 16 registers, 4 rows (<see cref="Integer4x16"/>) and 2 rows
    /// (<see cref="Integer2x16K"/>, <see cref="Split2x16"/>) per kernel.
    /// </summary>
    public static bool UsesIntegerTiles(DType type, int m) =>
        Avx2.IsSupported && IsAccelerated && m >= MinIntegerRows(type) &&
        (type is DType.Q4_0 or DType.Q5_0 or DType.Q4_K or DType.Q5_K or DType.Q6_K || type == DType.Q8_0 && (AvxVnni.IsSupported || SplitsQ8_0));

    /// <summary>
    /// Whether Q8_0 runs on <see cref="Split6x32"/> (AVX-512, 32-row tiles) or <see cref="Split2x16"/> (16-row tiles):
    /// without AVX-VNNI, its quants + 128 as two unsigned nibbles, each multiplied on vpmaddubsw like Q4_0's — twice
    /// the products per instruction of the float kernel's FMA (Zen 4 has AVX-512 VNNI, which .NET 10 cannot emit, and
    /// no AVX-VNNI; Zen 3 has neither).
    /// </summary>
    private static bool SplitsQ8_0 => !AvxVnni.IsSupported;

    /// <summary>
    /// Fewest rows for <see cref="UsesIntegerTiles"/>: prompts of 6-15 rows (8-15 for Q8_0 and Q4_0) run one 16-row tile
    /// padded with zero rows. It costs what 16 rows cost, but the weights are unpacked once for all rows instead of
    /// dequantized per dot tile (Llama-3-8B Q4_K_M on Zen 4: pp8 4.4 and pp15 6.4 t/s on the dot tiles, pp16 16.8 on the
    /// integer kernel). Fewer rows take the decode kernels row by row (CpuDevice), which is cheaper than a padded tile up
    /// to about 5 rows; Q8_0 and Q4_0 unpack each weight block once for up to eight rows there
    /// (<see cref="CpuQ8Dot.DotRows"/>), which keeps them ahead up to 7 (TinyLlama on Zen 4, four runs each: pp6 Q8_0 38
    /// t/s row by row, 30 padded, Q4_0 56 and 44; pp7 even; pp8 Q4_0 72 and 78).
    /// </summary>
    public static int MinIntegerRows(DType type) => type is DType.Q8_0 or DType.Q4_0 ? 8 : 6;

    private static bool IsKQuant(DType type) => type is DType.Q4_K or DType.Q5_K or DType.Q6_K;

    /// <summary>Values per scale of an integer-kernel format: 32, or 16 for Q6_K.</summary>
    private static int SubBlock(DType type) => type == DType.Q6_K ? 16 : 32;

    /// <summary>
    /// What the integer kernels subtract from the unsigned quants through their starting sums: Q4_0 8, Q5_0 16, Q6_K 32
    /// (the formats' own offsets) and Q5_K 16 (none in the format, whose mins do that, but its 5-bit quants' 16-bit
    /// sums would overflow without it; the kernel adds 16·Σ sc_j·Σx_j back); Q4_K none.
    /// </summary>
    private static int QuantOffset(DType type) => type switch
    {
        DType.Q4_0 => 8,
        DType.Q6_K => 32,
        DType.Q4_K => 0,
        // Q8_0 on VNNI: the offset is on the activations, undone per weight row (Vnni6x16); split into nibbles, the
        // high nibble's 8 (Split6x32, Split2x16)
        DType.Q8_0 => SplitsQ8_0 ? 8 : 0,
        _ => 16, // Q5_0, Q5_K
    };

    /// <summary>
    /// The activations' quants of rows [m, k] (<paramref name="qs"/>) in token tiles for the integer kernels, in a buffer
    /// of <see cref="PackedFloats"/> floats.
    /// With T = <see cref="OuterTokens"/> rows per tile (32, AVX2 16) and V = T/2 rows per vector (16, AVX2 8), tile t
    /// lies at packed + t·<see cref="IntegerTileBytes"/>: the quants as [i/4][j][i%4] (one vector load is V rows'
    /// four values i..i+3); from byte T·k, as shorts, the starting sums of each sub-block b of <see cref="SubBlock"/>
    /// values c, 2T per sub-block: per vector v (rows Vv..Vv+V−1), lane 2j + h = −offset·Σ_s (x[cb + 4s + 2h] +
    /// x[cb + 4s + 2h + 1]) of row Vv + j, so that the kernel adds q·x and gets (q − offset)·x
    /// (<see cref="QuantOffset"/>); from byte 5T·k/4, for Q4_K/Q5_K, per super-block, pair p of sub-blocks and vector
    /// v, lane 2j + e = Σx over sub-block 2p + e of row Vv + j (from the Q8_K <paramref name="bsums"/>: what the mins
    /// multiply). qs and d are the 32-blocks, or for the K-quants the Q8_K 256-blocks. Scales:
    /// <see cref="PackScales"/> of d per block.
    /// </summary>
    public static void PackQuantBytes(DType type, sbyte* qs, float* d, short* bsums, int m, int k, byte* packed, float* scales, int t0, int t1)
    {
        bool k256 = IsKQuant(type), mins = type is DType.Q4_K or DType.Q5_K;
        int sub = SubBlock(type), offset = QuantOffset(type), tokens = OuterTokens(m), perVector = tokens / 2;
        int flip = type == DType.Q8_0 && !SplitsQ8_0 ? unchecked((int)0x80808080) : 0; // Q8_0 on VNNI: x + 128 as unsigned bytes
        for (int t = t0; t < t1; t++)
        {
            byte* dst = packed + (long)t * IntegerTileBytes(k, tokens);
            short* starts = (short*)(dst + (long)tokens * k), sums = (short*)(dst + 5L * tokens * k / 4);
            int start = TileStart(t, m);
            for (int j = 0; j < tokens; j++)
            {
                int lane = (j / perVector) * tokens + (j % perVector) * 2;
                if (start + j >= m)
                {
                    PadRow(type, dst, starts, sums, tokens, j, lane, k, flip); // a padded tile's rows past m: zero quants
                    continue;
                }

                sbyte* src = qs + (long)(start + j) * k;
                for (int g = 0; g < k / 4; g++)
                {
                    ((int*)dst)[g * tokens + j] = ((int*)src)[g] ^ flip;
                }

                if (mins)
                {
                    // sub-block 2p + e (of 32 values; 8 per super-block): [p][v][lane], 2T shorts per pair
                    short* bj = bsums + (long)(start + j) * (k / 16);
                    for (int sub32 = 0; sub32 < k / 32; sub32++)
                    {
                        sums[(sub32 / 2) * 2 * tokens + lane + sub32 % 2] = (short)(bj[2 * sub32] + bj[2 * sub32 + 1]);
                    }
                }

                for (int b = 0; offset != 0 && b < k / sub; b++, src += sub)
                {
                    int even = 0, odd = 0;
                    for (int i = 0; i < sub; i += 4)
                    {
                        even += src[i] + src[i + 1];
                        odd += src[i + 2] + src[i + 3];
                    }

                    starts[b * 2 * tokens + lane] = (short)(-offset * even); // |offset·(sub/2)·127| ≤ 32512 < 2^15
                    starts[b * 2 * tokens + lane + 1] = (short)(-offset * odd);
                }
            }
        }

        PackScales(d, m, k, k256 ? 256 : 32, scales, t0, t1);
    }

    /// <summary>Row j of a padded tile (<see cref="MinIntegerRows"/>) in <see cref="PackQuantBytes"/>' layout: quants 0, sums 0.</summary>
    private static void PadRow(DType type, byte* dst, short* starts, short* sums, int tokens, int j, int lane, int k, int flip)
    {
        for (int g = 0; g < k / 4; g++)
        {
            ((int*)dst)[g * tokens + j] = flip;
        }

        for (int b = 0; b < k / SubBlock(type); b++)
        {
            starts[b * 2 * tokens + lane] = starts[b * 2 * tokens + lane + 1] = 0;
        }

        for (int sub32 = 0; type is DType.Q4_K or DType.Q5_K && sub32 < k / 32; sub32++)
        {
            sums[(sub32 / 2) * 2 * tokens + lane + sub32 % 2] = 0;
        }
    }

    /// <summary>
    /// Bytes of one token tile of <see cref="PackQuantBytes"/>: T rows' k quants, their starting sums (at most k/16
    /// sub-blocks × 2T shorts) and the K-quants' x sums (k/256 × 8T shorts): 21·T·k/16.
    /// </summary>
    private static long IntegerTileBytes(int k, int tokens) => 21L * tokens * k / 16;

    /// <summary>Floats of <see cref="PackQuantBytes"/>' scales for an [m, k] X.</summary>
    public static long PackedScaleFloats(int m, int k) => (long)OuterTiles(m) * OuterTokens(m) * (k / 32);

    /// <summary>The block scales of tiles [t0, t1): scales[t·T·nb + b·T + j] = d32[TileStart(t) + j, b], nb = k / block.</summary>
    private static void PackScales(float* d32, int m, int k, int block, float* scales, int t0, int t1)
    {
        int nb = k / block, tokens = OuterTokens(m);
        for (int t = t0; t < t1; t++)
        {
            float* ds = scales + (long)t * tokens * nb;
            int start = TileStart(t, m);
            for (int j = 0; j < tokens; j++)
            {
                float* dj = d32 + (long)(start + j) * nb;
                for (int b = 0; b < nb; b++)
                {
                    ds[b * tokens + j] = start + j < m ? dj[b] : 0; // a padded tile's rows past m: scale 0
                }
            }
        }
    }

    /// <summary>Token tiles of X for <paramref name="m"/> rows (the last one overlaps the one before).</summary>
    public static int OuterTiles(int m) => (m + OuterTokens(m) - 1) / OuterTokens(m);

    /// <summary>Floats of <see cref="PackTokens"/>' output for an [m, k] X.</summary>
    public static long PackedFloats(int m, int k) => (long)OuterTiles(m) * OuterTokens(m) * k;

    // (0 for a padded tile: fewer rows than the tile holds)
    private static int TileStart(int tile, int m) => Math.Max(0, Math.Min(tile * OuterTokens(m), m - OuterTokens(m)));

    /// <summary>
    /// Tiles [t0, t1) of X [m, k] transposed for the outer kernels: with T = <see cref="OuterTokens"/>, tile t holds
    /// rows TileStart(t) .. +T as packed[t·T·k + i·T + j] = X[TileStart(t) + j, i], so one step of a kernel reads T
    /// rows' value i as two contiguous vectors. The last tile starts at m − T instead of running short.
    /// </summary>
    public static void PackTokens(float* x, int m, int k, float* packed, int t0, int t1)
    {
        int tokens = OuterTokens(m);
        for (int t = t0; t < t1; t++)
        {
            float* dst = packed + (long)t * tokens * k;
            float* src = x + (long)TileStart(t, m) * k;
            for (int j = 0; j < tokens; j++, src += k)
            {
                for (int i = 0; i < k; i++)
                {
                    dst[(long)i * tokens + j] = src[i];
                }
            }
        }
    }

    /// <summary>
    /// C (+)= X·Wᵀ for the weight panels [p0, p1) (rows 4·p0 .. min(4·p1, N)): X is [m, K] with row stride K, C is
    /// [m, N] with row stride N; <paramref name="accumulate"/> adds to C (the fused residual) instead of overwriting it.
    /// <paramref name="groupedQ4_0"/>: the rows are in <see cref="CpuQ8Dot.GroupQ4_0"/>'s layout;
    /// <paramref name="rowPanels"/>: in <see cref="CpuMatMul.InterleaveRowPanels"/>'s (a panel here is one there).
    /// <paramref name="packed"/>: X as <see cref="PackTokens"/> left it when <see cref="UsesOuterTiles"/>, else null;
    /// groups of three full panels then run on the outer-product kernel, the rest on the dot-product tiles.
    /// <paramref name="packedScales"/>: with <see cref="UsesIntegerTiles"/>, packed and packedScales are
    /// <see cref="PackQuantBytes"/>' output and the groups run on the integer kernels (x stays the dequantized
    /// activations for the dot tiles of the rest).
    /// </summary>
    public static void Multiply(DType type, bool groupedQ4_0, bool rowPanels, byte* weights, long rowBytes, int n, int k, float* x, int m, float* c,
                                bool accumulate, int p0, int p1, float* scratch, float* packed, float* packedScales = null)
    {
        int kb = KBlock(k);
        Span<float> tile = stackalloc float[OuterRows * 32];
        fixed (float* t = tile)
        {
            for (int k0 = 0; k0 < k; k0 += kb)
            {
                int kn = Math.Min(kb, k - k0);
                bool add = accumulate || k0 > 0;
                int p = p0;
                while (p < p1)
                {
                    if (packed != null && p + 3 <= p1 && (p + 3) * PanelRows <= n)
                    {
                        OuterGroup(type, groupedQ4_0, rowPanels, weights, rowBytes, n, k, packed, packedScales, m, c, add, p, k0, kn, scratch, t);
                        p += 3;
                        continue;
                    }

                    DotPanel(type, groupedQ4_0, rowPanels, weights, rowBytes, n, k, x, m, c, add, p, k0, kn, scratch, t);
                    p++;
                }
            }
        }
    }

    /// <summary>
    /// Panels p .. p + 2 (12 rows) against every activation row on the outer-product kernels. With
    /// <paramref name="packedScales"/> (quantized weights against quantized activations) the weights are decoded to
    /// their integer quants as bytes and block scales, and the integer kernels add each block's exact sums times
    /// d_w·d_x.
    /// </summary>
    private static void OuterGroup(DType type, bool groupedQ4_0, bool rowPanels, byte* weights, long rowBytes, int n, int k, float* packed,
                                   float* packedScales, int m, float* c, bool add, int p, int k0, int kn, float* scratch, float* t)
    {
        int n0 = p * PanelRows;
        bool integer = packedScales != null;
        float* dw = integer ? scratch + OuterRows * ScratchStride : null;
        for (int r = 0; integer && r < OuterRows; r++)
        {
            DecodeQuantBytes(type, groupedQ4_0, weights + (n0 + r) * rowBytes + type.RowBytes(k0), kn, (byte*)scratch + r * ByteStride,
                             dw + r * ScaleStride);
        }

        for (int g = 0; !integer && g < 3; g++)
        {
            ConvertPanel(type, groupedQ4_0, rowPanels, weights, rowBytes, n, p + g, k0, kn, scratch + g * PanelRows * ScratchStride);
        }

        // The next group's weights are fetched into L2 while this one computes, else its conversion waits on memory
        // (single thread, TinyLlama shapes from DRAM: 150 -> 165-190 GFLOP/s). One K block: each token tile fetches
        // a share of the group's bytes; K blocks: tile t the block's part of panel t % 3 (4 rows' worth of contiguous
        // bytes in a row panel). Past the last group the addresses are only prefetched, never read.
        int tiles = OuterTiles(m), tokens = OuterTokens(m);
        byte* next = weights + (n0 + OuterRows) * rowBytes;
        long share = OuterRows * rowBytes / tiles;
        long blockOffset = (rowPanels ? PanelRows : 1) * type.RowBytes(k0);
        for (int ti = 0; ti < tiles; ti++)
        {
            byte* prefetch = kn == k ? next + ti * share : next + ti % 3 * PanelRows * rowBytes + blockOffset;
            float* xt = packed + (long)ti * tokens * k + (long)k0 * tokens; // the float kernels' X tile (PackTokens)
            if (integer)
            {
                new Span<float>(t, OuterRows * tokens).Clear(); // the integer kernels add to t
                float* dx = packedScales + (long)ti * tokens * (k / 32) + k0 / 32 * tokens;
                byte* tile = (byte*)packed + ti * IntegerTileBytes(k, tokens);
                byte* xq = tile + (long)tokens * k0;
                short* starts = (short*)(tile + (long)tokens * k) + k0 / SubBlock(type) * 2 * tokens;
                byte* wq = (byte*)scratch;
                if (IsKQuant(type))
                {
                    // 256-blocks: the scales at t·T·(k/256), the x sums 8T shorts per block; 6-row (AVX2 2-row) parts
                    short* xs = (short*)(tile + 5L * tokens * k / 4) + k0 / 256 * 8 * tokens;
                    float* dxk = packedScales + (long)ti * tokens * (k / 256) + k0 / 256 * tokens;
                    int rows = tokens == 32 ? 6 : 2;
                    for (int r = 0; r < OuterRows; r += rows)
                    {
                        byte* pf = prefetch + r * kn * 16L / rows;
                        if (tokens == 32)
                        {
                            Integer6x32K(type, wq + r * ByteStride, xq, starts, xs, kn, t + r * 32, pf, dw + r * ScaleStride, dxk);
                        }
                        else
                        {
                            Integer2x16K(type, wq + r * ByteStride, xq, starts, xs, kn, t + r * 16, pf, dw + r * ScaleStride, dxk);
                        }
                    }
                }
                else if (type == DType.Q8_0 && SplitsQ8_0)
                {
                    // 6-row (2-row) parts, each prefetching its share of what the tile's part of the next group may need
                    int rows = tokens == 32 ? 6 : 2;
                    for (int r = 0; r < OuterRows; r += rows)
                    {
                        byte* pf = prefetch + r * kn * 16L / rows;
                        if (tokens == 32)
                        {
                            Split6x32(wq + r * ByteStride, xq, starts, kn, t + r * 32, pf, dw + r * ScaleStride, dx);
                        }
                        else
                        {
                            Split2x16(wq + r * ByteStride, xq, starts, kn, t + r * 16, pf, dw + r * ScaleStride, dx);
                        }
                    }
                }
                else if (type == DType.Q8_0)
                {
                    // 6-row × 16-token parts (VEX: 16 registers); a 32-row tile's second half 64 bytes on per step. Each
                    // part prefetches the same 16·kn bytes of the next group: the first fetches them, the rest hit.
                    for (int h = 0; h < tokens / 16; h++)
                    {
                        for (int r = 0; r < OuterRows; r += 6)
                        {
                            Vnni6x16(wq + r * ByteStride, xq + 64 * h, tokens * 4, kn, t + r * tokens + 16 * h, tokens, prefetch,
                                     dw + r * ScaleStride, dx + 16 * h, tokens);
                        }
                    }
                }
                else if (tokens == 32)
                {
                    Integer12x32(wq, xq, starts, kn, t, prefetch, dw, dx);
                }
                else
                {
                    for (int r = 0; r < OuterRows; r += 4)
                    {
                        Integer4x16(wq + r * ByteStride, xq, starts, kn, t + r * 16, prefetch + r * kn * 4L, dw + r * ScaleStride, dx);
                    }
                }
            }
            else if (tokens == 32)
            {
                Outer12x32(scratch, xt, kn, t, prefetch);
            }
            else if (Vector512.IsHardwareAccelerated)
            {
                Outer12x16(scratch, xt, kn, t, prefetch);
            }
            else
            {
                Outer6x16(scratch, xt, kn, t, prefetch);
                Outer6x16(scratch + 6 * ScratchStride, xt, kn, t + 6 * 16, prefetch + kn * 32L);
            }

            int start = TileStart(ti, m), from = ti * tokens - start; // rows before `from`: stored by the tile before
            StoreTile(t, tokens, from, Math.Min(tokens, m - start), c + (long)start * n + n0, n, add);
        }
    }

    /// <summary>
    /// The outer kernels' tile t[r·tokens + j] (12 weight rows) into C's activation rows from ≤ j &lt; to (to &lt; tokens:
    /// a padded tile):
    /// c[j·ldc + r] (+)= t[r·tokens + j]. With AVX2 two gathers collect a row j's 12 values (8 + 4), stored as they
    /// are (a profile had the scalar transposing store at 5% of a quantized prompt).
    /// </summary>
    private static void StoreTile(float* t, int tokens, int from, int to, float* c, int ldc, bool add)
    {
        if (Avx2.IsSupported)
        {
            Vector256<int> rows = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7) * tokens;
            Vector128<int> rows8 = Vector128.Create(8, 9, 10, 11) * tokens;
            for (int j = from; j < to; j++)
            {
                float* cj = c + (long)j * ldc;
                Vector256<float> lo = Avx2.GatherVector256(t + j, rows, 4);
                Vector128<float> hi = Avx2.GatherVector128(t + j, rows8, 4);
                if (add)
                {
                    lo += Vector256.Load(cj);
                    hi += Vector128.Load(cj + 8);
                }

                lo.Store(cj);
                hi.Store(cj + 8);
            }

            return;
        }

        for (int j = from; j < to; j++)
        {
            float* cj = c + (long)j * ldc;
            for (int r = 0; r < OuterRows; r++)
            {
                cj[r] = add ? cj[r] + t[r * tokens + j] : t[r * tokens + j];
            }
        }
    }

    /// <summary>
    /// A Q4_0, Q5_0 or K-quant row segment of <paramref name="n"/> values (whole blocks) as its unsigned quants, one
    /// byte each (Q4_0/Q4_K: 0..15, Q5_0/Q5_K: 0..31, Q6_K: 0..63; offsets are in <see cref="PackQuantBytes"/>'
    /// starting sums), and its block scales (K-quants: see <see cref="ScaleStride"/>): the integer kernels' weight operand.
    /// </summary>
    private static void DecodeQuantBytes(DType type, bool groupedQ4_0, byte* row, int n, byte* q, float* d)
    {
        float* ht = CpuQuantDot.HalfTable;
        Vector128<byte> low = Vector128.Create((byte)0x0F);
        if (type == DType.Q8_0 && SplitsQ8_0)
        {
            // 34-byte blocks: F16 d, 32 signed quants, as q + 128 = 16·h + l: l at q, h at q + SplitPlane (the split kernels)
            Vector256<byte> low256 = Vector256.Create((byte)0x0F), flip = Vector256.Create((byte)0x80);
            for (int b = 0; b < n / 32; b++, row += 34, q += 32)
            {
                d[b] = ht[*(ushort*)row];
                Vector256<byte> u = Vector256.Load(row + 2) ^ flip;
                (u & low256).Store(q);
                ((u.AsUInt16() >> 4).AsByte() & low256).Store(q + SplitPlane);
            }

            return;
        }

        if (type == DType.Q8_0)
        {
            // 34-byte blocks: F16 d, 32 signed quants; the kernel's activations are x + 128, so each block's sum starts
            // at −128·Σq (ints from d + 96)
            int* starts = (int*)(d + 96);
            for (int b = 0; b < n / 32; b++, row += 34, q += 32)
            {
                d[b] = ht[*(ushort*)row];
                Vector256<sbyte> v = Vector256.Load((sbyte*)row + 2);
                v.AsByte().Store(q);
                Vector256<short> wide = Avx2.ConvertToVector256Int16(v.GetLower()) + Avx2.ConvertToVector256Int16(v.GetUpper());
                starts[b] = -128 * Vector256.Sum(Avx2.MultiplyAddAdjacent(wide, Vector256<short>.One));
            }

            return;
        }

        if (type == DType.Q6_K)
        {
            // 210-byte super-blocks: 128 bytes of low nibbles, 64 of 2-bit highs, 16 int8 scales, F16 d. Each half of
            // 128 values: ql[0..31] low nibbles are values 0..31, ql[32..63]'s 32..63, their high nibbles 64..127, with
            // the highs from qh[0..31] bits 0-1, 2-3, 4-5, 6-7 (16-bit shifts then a mask: no bits cross a byte)
            Vector256<byte> low256 = Vector256.Create((byte)0x0F), bits45 = Vector256.Create((byte)0x30);
            short* sm = (short*)(d + 32);
            for (int sb = 0; sb < n / 256; sb++, row += 210, q += 256, sm += 16)
            {
                d[sb] = ht[*(ushort*)(row + 208)];
                Avx2.ConvertToVector256Int16((sbyte*)row + 192).Store(sm);
                for (int h = 0; h < 2; h++)
                {
                    Vector256<byte> l0 = Vector256.Load(row + 64 * h), l1 = Vector256.Load(row + 64 * h + 32);
                    Vector256<ushort> hb = Vector256.Load(row + 128 + 32 * h).AsUInt16();
                    byte* o = q + 128 * h;
                    ((l0 & low256) | ((hb << 4).AsByte() & bits45)).Store(o);
                    ((l1 & low256) | ((hb << 2).AsByte() & bits45)).Store(o + 32);
                    (((l0.AsUInt16() >> 4).AsByte() & low256) | (hb.AsByte() & bits45)).Store(o + 64);
                    (((l1.AsUInt16() >> 4).AsByte() & low256) | ((hb >> 2).AsByte() & bits45)).Store(o + 96);
                }
            }

            return;
        }

        if (type == DType.Q5_K)
        {
            // 176-byte super-blocks: F16 d and dmin, 12 bytes of scales and mins (as Q4_K), 32 bytes of fifth bits,
            // 128 nibble bytes; value 64c + l takes bit 2c of qh[l] as its fifth bit, value 64c + 32 + l bit 2c + 1
            Vector256<byte> low256 = Vector256.Create((byte)0x0F), one = Vector256.Create((byte)1);
            short* sm = (short*)(d + 32);
            for (int sb = 0; sb < n / 256; sb++, row += 176, q += 256, sm += 16)
            {
                d[sb] = ht[*(ushort*)row];
                d[16 + sb] = ht[*(ushort*)(row + 2)];
                CpuQ8Dot.UnpackScalesMinsK4(row + 4).Store(sm);
                Vector256<ushort> qh = Vector256.Load(row + 16).AsUInt16();
                for (int c = 0; c < 4; c++)
                {
                    Vector256<byte> v = Vector256.Load(row + 48 + 32 * c);
                    Vector256<byte> h0 = ((qh >> (2 * c)).AsByte() & one) << 4, h1 = ((qh >> (2 * c + 1)).AsByte() & one) << 4;
                    ((v & low256) | h0).Store(q + 64 * c);
                    (((v.AsUInt16() >> 4).AsByte() & low256) | h1).Store(q + 64 * c + 32);
                }
            }

            return;
        }

        if (type == DType.Q4_K)
        {
            // 144-byte super-blocks: F16 d and dmin, 12 bytes of 6-bit scales and mins, 128 nibble bytes (each 32
            // bytes: sub-block 2c in the low nibbles, 2c + 1 in the high); d at d[sb], dmin at d[16 + sb], the scales
            // and mins as 16 shorts at d + 32
            Vector256<byte> low256 = Vector256.Create((byte)0x0F);
            short* sm = (short*)(d + 32);
            for (int sb = 0; sb < n / 256; sb++, row += 144, q += 256, sm += 16)
            {
                d[sb] = ht[*(ushort*)row];
                d[16 + sb] = ht[*(ushort*)(row + 2)];
                CpuQ8Dot.UnpackScalesMinsK4(row + 4).Store(sm);
                for (int c = 0; c < 4; c++)
                {
                    Vector256<byte> v = Vector256.Load(row + 16 + 32 * c);
                    (v & low256).Store(q + 64 * c);
                    ((v.AsUInt16() >> 4).AsByte() & low256).Store(q + 64 * c + 32);
                }
            }

            return;
        }

        if (type == DType.Q5_0)
        {
            // 22-byte blocks: F16 d, 32 fifth bits (value j's at bit j), 16 nibble bytes (values j and j + 16); the
            // fifth bits spread to bytes by a shuffle of their bytes and a per-lane bit test
            Vector128<byte> bit = Vector128.Create((byte)1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
            Vector128<byte> spreadLow = Vector128.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
            Vector128<byte> spreadHigh = spreadLow + Vector128.Create((byte)2);
            Vector128<byte> sixteen = Vector128.Create((byte)16);
            for (int b = 0; b < n / 32; b++, row += 22, q += 32)
            {
                d[b] = ht[*(ushort*)row];
                Vector128<byte> qh = Vector128.CreateScalar(*(uint*)(row + 2)).AsByte();
                Vector128<byte> v = Vector128.Load(row + 6);
                Vector128<byte> h0 = Vector128.Equals(Ssse3.Shuffle(qh, spreadLow) & bit, bit) & sixteen;
                Vector128<byte> h1 = Vector128.Equals(Ssse3.Shuffle(qh, spreadHigh) & bit, bit) & sixteen;
                ((v & low) | h0).Store(q);
                ((Vector128.ShiftRightLogical(v, 4) & low) | h1).Store(q + 16);
            }

            return;
        }

        if (groupedQ4_0)
        {
            // groups of eight blocks (eight scales, then the 8 × 16 nibble bytes): four blocks' nibbles per vector,
            // their low and high halves interleaved back by 16-byte lanes (block b's values 0..15, then 16..31)
            Vector512<byte> low512 = Vector512.Create((byte)0x0F);
            Vector512<ulong> first = Vector512.Create(0ul, 1, 8, 9, 2, 3, 10, 11), second = Vector512.Create(4ul, 5, 12, 13, 6, 7, 14, 15);
            for (int b = 0; b < n / 32; b += 8, row += 144, q += 256, d += 8)
            {
                for (int i = 0; i < 8; i++)
                {
                    d[i] = ht[((ushort*)row)[i]];
                }

                for (int h = 0; h < 2; h++)
                {
                    Vector512<byte> v = Vector512.Load(row + 16 + 64 * h);
                    Vector512<ulong> lo = (v & low512).AsUInt64(), hi = ((v.AsUInt16() >> 4).AsByte() & low512).AsUInt64();
                    Avx512F.PermuteVar8x64x2(lo, first, hi).Store((ulong*)(q + 128 * h));
                    Avx512F.PermuteVar8x64x2(lo, second, hi).Store((ulong*)(q + 128 * h + 64));
                }
            }

            return;
        }

        // Q4_0 file blocks of 18 bytes: F16 d, 16 nibble bytes (values j and j + 16)
        for (int b = 0; b < n / 32; b++, row += 18, q += 32)
        {
            d[b] = ht[*(ushort*)row];
            Vector128<byte> v = Vector128.Load(row + 2);
            (v & low).Store(q);
            (Vector128.ShiftRightLogical(v, 4) & low).Store(q + 16);
        }
    }

    /// <summary>Panel p's rows, values [k0, k0 + kn), to float32 at dst with row stride <see cref="ScratchStride"/> (rows past N zero).</summary>
    private static void ConvertPanel(DType type, bool groupedQ4_0, bool rowPanels, byte* weights, long rowBytes, int n, int p, int k0, int kn, float* dst)
    {
        int n0 = p * PanelRows;
        int nr = Math.Min(PanelRows, n - n0);
        if (rowPanels && nr == PanelRows)
        {
            CpuMatMul.PanelToF32(type, weights + n0 * rowBytes, k0, kn, dst, ScratchStride); // k0, kn: whole chunks
            return;
        }

        for (int r = 0; r < PanelRows; r++, dst += ScratchStride)
        {
            if (r >= nr)
            {
                new Span<float>(dst, kn).Clear();
                continue;
            }

            byte* row = weights + (n0 + r) * rowBytes + type.RowBytes(k0);
            if (groupedQ4_0)
            {
                CpuQ8Dot.DequantizeGroupedQ4_0(row, dst, kn); // k0 and kn are multiples of 256
            }
            else if (type == DType.F16)
            {
                CpuMatMul.F16ToF32Finite((ushort*)row, dst, kn); // the decode kernels' arithmetic
            }
            else
            {
                CpuDevice.ConvertRow(type, row, dst, kn);
            }
        }
    }

    /// <summary>Panel p against every activation row on the dot-product tiles (4 × 6 on AVX-512, 4 × 3 on AVX2).</summary>
    private static void DotPanel(DType type, bool groupedQ4_0, bool rowPanels, byte* weights, long rowBytes, int n, int k, float* x, int m, float* c,
                                 bool add, int p, int k0, int kn, float* scratch, float* t)
    {
        int n0 = p * PanelRows;
        int nr = Math.Min(PanelRows, n - n0);
        float* panel;
        long stride;
        if (type == DType.F32 && nr == PanelRows && !rowPanels)
        {
            panel = (float*)(weights + n0 * rowBytes) + k0; // read in place
            stride = rowBytes / sizeof(float);
        }
        else
        {
            panel = scratch;
            stride = ScratchStride;
            ConvertPanel(type, groupedQ4_0, rowPanels, weights, rowBytes, n, p, k0, kn, scratch);
        }

        int tileRows = Vector512.IsHardwareAccelerated ? TileRows : Avx2TileRows;
        int mi = 0;
        while (mi < m)
        {
            if (m < tileRows)
            {
                // fewer activation rows than a tile in the whole product: one at a time
                CpuMatMul.DotF32x4(panel, stride, 16, x + (long)mi * k + k0, kn, t);
                Store(t, 1, c + (long)mi * n + n0, n, nr, add);
                mi++;
                continue;
            }

            // the last tile overlaps the one before instead of running short (a full tile's work for
            // the leftover rows, not the single-row kernel's third of the speed), storing only new rows
            int start = Math.Min(mi, m - tileRows);
            float* xt = x + (long)start * k + k0;
            if (Vector512.IsHardwareAccelerated)
            {
                Tile4x6(panel, stride, xt, k, kn, t);
            }
            else
            {
                Tile4x3(panel, stride, xt, k, kn, t);
            }

            Store(t + (mi - start) * PanelRows, start + tileRows - mi, c + (long)mi * n + n0, n, nr, add);
            mi = start + tileRows;
        }
    }

    /// <summary>t[j·4 + r] into C[j, r] for j &lt; rows, r &lt; nr.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* t, int rows, float* c, int ldc, int nr, bool add)
    {
        for (int j = 0; j < rows; j++)
        {
            float* cj = c + (long)j * ldc;
            for (int r = 0; r < nr; r++)
            {
                cj[r] = add ? cj[r] + t[j * PanelRows + r] : t[j * PanelRows + r];
            }
        }
    }

    /// <summary>
    /// [Σa, Σb, Σc, Σd] in 13 instructions instead of four 12-instruction reductions: halve each vector to 256 bits,
    /// then a tree of horizontal adds that reduces all four at once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        return Sum4(a.GetLower() + a.GetUpper(), b.GetLower() + b.GetUpper(), c.GetLower() + c.GetUpper(), d.GetLower() + d.GetUpper());
    }

    /// <summary>[Σa, Σb, Σc, Σd] of four 256-bit vectors: two levels of horizontal adds, then the halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        Vector256<float> h = Avx.HorizontalAdd(Avx.HorizontalAdd(a, b), Avx.HorizontalAdd(c, d));
        return h.GetLower() + h.GetUpper();
    }

    /// <summary>
    /// AVX2: t[j·4 + r] = Σ w[r·ws + i]·x[j·xs + i] for 4 weight rows and 3 activation rows: 12 accumulators and the 3
    /// activation vectors in registers, weight vectors loaded one at a time (7 loads per 12 FMAs). On a Zen 3 core it
    /// ran 10-15% faster than 2 weight rows × 6 activation rows (8 loads per 12 FMAs, x's tile twice the bytes), and
    /// K blocks below 3072 did not help either shape (docs/performance.md).
    /// </summary>
    private static void Tile4x3(float* w, long ws, float* x, long xs, int kn, float* t)
    {
        float* w1 = w + ws, w2 = w1 + ws, w3 = w2 + ws;
        float* x1 = x + xs, x2 = x1 + xs;
        Vector256<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector256<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector256<float> c20 = default, c21 = default, c22 = default, c23 = default;
        int i = 0;
        for (; i + 8 <= kn; i += 8)
        {
            Vector256<float> b0 = Vector256.Load(x + i);
            Vector256<float> b1 = Vector256.Load(x1 + i);
            Vector256<float> b2 = Vector256.Load(x2 + i);
            Vector256<float> a = Vector256.Load(w + i);
            c00 = Vector256.FusedMultiplyAdd(a, b0, c00);
            c10 = Vector256.FusedMultiplyAdd(a, b1, c10);
            c20 = Vector256.FusedMultiplyAdd(a, b2, c20);
            a = Vector256.Load(w1 + i);
            c01 = Vector256.FusedMultiplyAdd(a, b0, c01);
            c11 = Vector256.FusedMultiplyAdd(a, b1, c11);
            c21 = Vector256.FusedMultiplyAdd(a, b2, c21);
            a = Vector256.Load(w2 + i);
            c02 = Vector256.FusedMultiplyAdd(a, b0, c02);
            c12 = Vector256.FusedMultiplyAdd(a, b1, c12);
            c22 = Vector256.FusedMultiplyAdd(a, b2, c22);
            a = Vector256.Load(w3 + i);
            c03 = Vector256.FusedMultiplyAdd(a, b0, c03);
            c13 = Vector256.FusedMultiplyAdd(a, b1, c13);
            c23 = Vector256.FusedMultiplyAdd(a, b2, c23);
        }

        Sum4(c00, c01, c02, c03).Store(t);
        Sum4(c10, c11, c12, c13).Store(t + 4);
        Sum4(c20, c21, c22, c23).Store(t + 8);
        AddTail(w, ws, x, xs, i, kn, Avx2TileRows, t);
    }

    /// <summary>
    /// t[j·4 + r] = Σ_{i&lt;kn} w[r·ws + i]·x[j·xs + i] for 4 weight rows and 6 activation rows: 24 accumulators, 4
    /// weight vectors and 1 activation vector in the 32 AVX-512 registers.
    /// </summary>
    private static void Tile4x6(float* w, long ws, float* x, long xs, int kn, float* t)
    {
        float* w1 = w + ws, w2 = w1 + ws, w3 = w2 + ws;
        float* x1 = x + xs, x2 = x1 + xs, x3 = x2 + xs, x4 = x3 + xs, x5 = x4 + xs;
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        int i = 0;
        for (; i + 16 <= kn; i += 16)
        {
            Vector512<float> a0 = Vector512.Load(w + i);
            Vector512<float> a1 = Vector512.Load(w1 + i);
            Vector512<float> a2 = Vector512.Load(w2 + i);
            Vector512<float> a3 = Vector512.Load(w3 + i);
            Vector512<float> b = Vector512.Load(x + i);
            c00 = Vector512.FusedMultiplyAdd(a0, b, c00);
            c01 = Vector512.FusedMultiplyAdd(a1, b, c01);
            c02 = Vector512.FusedMultiplyAdd(a2, b, c02);
            c03 = Vector512.FusedMultiplyAdd(a3, b, c03);
            b = Vector512.Load(x1 + i);
            c10 = Vector512.FusedMultiplyAdd(a0, b, c10);
            c11 = Vector512.FusedMultiplyAdd(a1, b, c11);
            c12 = Vector512.FusedMultiplyAdd(a2, b, c12);
            c13 = Vector512.FusedMultiplyAdd(a3, b, c13);
            b = Vector512.Load(x2 + i);
            c20 = Vector512.FusedMultiplyAdd(a0, b, c20);
            c21 = Vector512.FusedMultiplyAdd(a1, b, c21);
            c22 = Vector512.FusedMultiplyAdd(a2, b, c22);
            c23 = Vector512.FusedMultiplyAdd(a3, b, c23);
            b = Vector512.Load(x3 + i);
            c30 = Vector512.FusedMultiplyAdd(a0, b, c30);
            c31 = Vector512.FusedMultiplyAdd(a1, b, c31);
            c32 = Vector512.FusedMultiplyAdd(a2, b, c32);
            c33 = Vector512.FusedMultiplyAdd(a3, b, c33);
            b = Vector512.Load(x4 + i);
            c40 = Vector512.FusedMultiplyAdd(a0, b, c40);
            c41 = Vector512.FusedMultiplyAdd(a1, b, c41);
            c42 = Vector512.FusedMultiplyAdd(a2, b, c42);
            c43 = Vector512.FusedMultiplyAdd(a3, b, c43);
            b = Vector512.Load(x5 + i);
            c50 = Vector512.FusedMultiplyAdd(a0, b, c50);
            c51 = Vector512.FusedMultiplyAdd(a1, b, c51);
            c52 = Vector512.FusedMultiplyAdd(a2, b, c52);
            c53 = Vector512.FusedMultiplyAdd(a3, b, c53);
        }

        Sum4(c00, c01, c02, c03).Store(t);
        Sum4(c10, c11, c12, c13).Store(t + 4);
        Sum4(c20, c21, c22, c23).Store(t + 8);
        Sum4(c30, c31, c32, c33).Store(t + 12);
        Sum4(c40, c41, c42, c43).Store(t + 16);
        Sum4(c50, c51, c52, c53).Store(t + 20);

        AddTail(w, ws, x, xs, i, kn, TileRows, t);
    }

    /// <summary>
    /// t[r·32 + j] = Σ_{i&lt;kn} w[r·ScratchStride + i]·xt[i·32 + j] for 12 weight rows and 32 activation rows, as a sum
    /// of outer products: each step loads the 32 activations' value i as two vectors and broadcasts each row's weight
    /// i, 24 FMAs for 2 vector loads and 12 broadcasts, where the dot-product tile pays 10 vector loads (6 of them from
    /// L2) for 24 and then horizontal sums. 24 accumulators, 2 activation vectors and a broadcast in the 32 registers.
    /// </summary>
    private static void Outer12x32(float* w, float* xt, int kn, float* t, byte* prefetch)
    {
        const int S = ScratchStride;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default;
        Vector512<float> a6 = default, a7 = default, a8 = default, a9 = default, a10 = default, a11 = default;
        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default;
        Vector512<float> b6 = default, b7 = default, b8 = default, b9 = default, b10 = default, b11 = default;
        for (float* end = w + kn; w < end; w++, xt += 32, prefetch += 32)
        {
            Sse.Prefetch1(prefetch);
            Vector512<float> x0 = Vector512.Load(xt);
            Vector512<float> x1 = Vector512.Load(xt + 16);
            Vector512<float> v = Vector512.Create(w[0]);
            a0 = Vector512.FusedMultiplyAdd(v, x0, a0);
            b0 = Vector512.FusedMultiplyAdd(v, x1, b0);
            v = Vector512.Create(w[S]);
            a1 = Vector512.FusedMultiplyAdd(v, x0, a1);
            b1 = Vector512.FusedMultiplyAdd(v, x1, b1);
            v = Vector512.Create(w[2 * S]);
            a2 = Vector512.FusedMultiplyAdd(v, x0, a2);
            b2 = Vector512.FusedMultiplyAdd(v, x1, b2);
            v = Vector512.Create(w[3 * S]);
            a3 = Vector512.FusedMultiplyAdd(v, x0, a3);
            b3 = Vector512.FusedMultiplyAdd(v, x1, b3);
            v = Vector512.Create(w[4 * S]);
            a4 = Vector512.FusedMultiplyAdd(v, x0, a4);
            b4 = Vector512.FusedMultiplyAdd(v, x1, b4);
            v = Vector512.Create(w[5 * S]);
            a5 = Vector512.FusedMultiplyAdd(v, x0, a5);
            b5 = Vector512.FusedMultiplyAdd(v, x1, b5);
            v = Vector512.Create(w[6 * S]);
            a6 = Vector512.FusedMultiplyAdd(v, x0, a6);
            b6 = Vector512.FusedMultiplyAdd(v, x1, b6);
            v = Vector512.Create(w[7 * S]);
            a7 = Vector512.FusedMultiplyAdd(v, x0, a7);
            b7 = Vector512.FusedMultiplyAdd(v, x1, b7);
            v = Vector512.Create(w[8 * S]);
            a8 = Vector512.FusedMultiplyAdd(v, x0, a8);
            b8 = Vector512.FusedMultiplyAdd(v, x1, b8);
            v = Vector512.Create(w[9 * S]);
            a9 = Vector512.FusedMultiplyAdd(v, x0, a9);
            b9 = Vector512.FusedMultiplyAdd(v, x1, b9);
            v = Vector512.Create(w[10 * S]);
            a10 = Vector512.FusedMultiplyAdd(v, x0, a10);
            b10 = Vector512.FusedMultiplyAdd(v, x1, b10);
            v = Vector512.Create(w[11 * S]);
            a11 = Vector512.FusedMultiplyAdd(v, x0, a11);
            b11 = Vector512.FusedMultiplyAdd(v, x1, b11);
        }

        a0.Store(t); b0.Store(t + 16);
        a1.Store(t + 32); b1.Store(t + 48);
        a2.Store(t + 64); b2.Store(t + 80);
        a3.Store(t + 96); b3.Store(t + 112);
        a4.Store(t + 128); b4.Store(t + 144);
        a5.Store(t + 160); b5.Store(t + 176);
        a6.Store(t + 192); b6.Store(t + 208);
        a7.Store(t + 224); b7.Store(t + 240);
        a8.Store(t + 256); b8.Store(t + 272);
        a9.Store(t + 288); b9.Store(t + 304);
        a10.Store(t + 320); b10.Store(t + 336);
        a11.Store(t + 352); b11.Store(t + 368);
    }

    /// <summary>
    /// <see cref="Outer12x32"/>'s shape on bytes, block by block (Q4_0, Q5_0): w holds 12 rows of unsigned quants at
    /// <see cref="ByteStride"/>, xt 32 activation rows' 8-bit quants four values at a time (<see cref="PackQuantBytes"/>),
    /// corr each block's starting sums. Per step of four values, 2 loads of 16 rows × 4 quants and 12 broadcasts of a
    /// row's 4 quants feed 24 vpmaddubsw (u8·s8 pairs added into 16 bits) — 64 products each, where an FMA does 16 —
    /// added into 16-bit sums: a lane's two products per step and eight steps per block stay within 16 bits because
    /// the starting sum holds the offset's share (|Σ (q − offset)·x| ≤ 16·16·127 &lt; 2^15 at every step). Per block,
    /// vpmaddwd adds each row's two 16-bit halves into its exact 32-bit block sum, and t[r·32 + j] += Σ·(dw·dx).
    /// </summary>
    private static void Integer12x32(byte* w, byte* xt, short* corr, int kn, float* t, byte* prefetch, float* dw, float* dx)
    {
        const int S = ByteStride;
        Vector512<short> ones = Vector512.Create((short)1);
        for (int done = 0; done < kn; done += 32, dw++, dx += 32, corr += 64)
        {
            Vector512<short> c0 = Vector512.Load(corr), c1 = Vector512.Load(corr + 32);
            Vector512<short> a0 = c0, a1 = c0, a2 = c0, a3 = c0, a4 = c0, a5 = c0, a6 = c0, a7 = c0, a8 = c0, a9 = c0, a10 = c0, a11 = c0;
            Vector512<short> b0 = c1, b1 = c1, b2 = c1, b3 = c1, b4 = c1, b5 = c1, b6 = c1, b7 = c1, b8 = c1, b9 = c1, b10 = c1, b11 = c1;
            for (byte* end = w + 32; w < end; w += 4, xt += 128, prefetch += 64)
            {
                Sse.Prefetch1(prefetch);
                Vector512<sbyte> x0 = Vector512.Load((sbyte*)xt);
                Vector512<sbyte> x1 = Vector512.Load((sbyte*)xt + 64);
                Vector512<byte> v = Vector512.Create(*(int*)w).AsByte();
                a0 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b0 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + S)).AsByte();
                a1 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b1 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 2 * S)).AsByte();
                a2 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b2 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 3 * S)).AsByte();
                a3 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b3 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 4 * S)).AsByte();
                a4 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b4 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 5 * S)).AsByte();
                a5 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b5 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 6 * S)).AsByte();
                a6 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b6 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 7 * S)).AsByte();
                a7 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b7 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 8 * S)).AsByte();
                a8 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b8 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 9 * S)).AsByte();
                a9 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b9 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 10 * S)).AsByte();
                a10 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b10 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 11 * S)).AsByte();
                a11 += Avx512BW.MultiplyAddAdjacent(v, x0);
                b11 += Avx512BW.MultiplyAddAdjacent(v, x1);
            }

            Vector512<float> d0 = Vector512.Load(dx), d1 = Vector512.Load(dx + 16), sw;
            sw = Vector512.Create(dw[0 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a0, ones), d0 * sw, Vector512.Load(t)).Store(t);
            Vector512.FusedMultiplyAdd(BlockSum(b0, ones), d1 * sw, Vector512.Load(t + 16)).Store(t + 16);
            sw = Vector512.Create(dw[1 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a1, ones), d0 * sw, Vector512.Load(t + 32)).Store(t + 32);
            Vector512.FusedMultiplyAdd(BlockSum(b1, ones), d1 * sw, Vector512.Load(t + 48)).Store(t + 48);
            sw = Vector512.Create(dw[2 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a2, ones), d0 * sw, Vector512.Load(t + 64)).Store(t + 64);
            Vector512.FusedMultiplyAdd(BlockSum(b2, ones), d1 * sw, Vector512.Load(t + 80)).Store(t + 80);
            sw = Vector512.Create(dw[3 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a3, ones), d0 * sw, Vector512.Load(t + 96)).Store(t + 96);
            Vector512.FusedMultiplyAdd(BlockSum(b3, ones), d1 * sw, Vector512.Load(t + 112)).Store(t + 112);
            sw = Vector512.Create(dw[4 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a4, ones), d0 * sw, Vector512.Load(t + 128)).Store(t + 128);
            Vector512.FusedMultiplyAdd(BlockSum(b4, ones), d1 * sw, Vector512.Load(t + 144)).Store(t + 144);
            sw = Vector512.Create(dw[5 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a5, ones), d0 * sw, Vector512.Load(t + 160)).Store(t + 160);
            Vector512.FusedMultiplyAdd(BlockSum(b5, ones), d1 * sw, Vector512.Load(t + 176)).Store(t + 176);
            sw = Vector512.Create(dw[6 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a6, ones), d0 * sw, Vector512.Load(t + 192)).Store(t + 192);
            Vector512.FusedMultiplyAdd(BlockSum(b6, ones), d1 * sw, Vector512.Load(t + 208)).Store(t + 208);
            sw = Vector512.Create(dw[7 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a7, ones), d0 * sw, Vector512.Load(t + 224)).Store(t + 224);
            Vector512.FusedMultiplyAdd(BlockSum(b7, ones), d1 * sw, Vector512.Load(t + 240)).Store(t + 240);
            sw = Vector512.Create(dw[8 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a8, ones), d0 * sw, Vector512.Load(t + 256)).Store(t + 256);
            Vector512.FusedMultiplyAdd(BlockSum(b8, ones), d1 * sw, Vector512.Load(t + 272)).Store(t + 272);
            sw = Vector512.Create(dw[9 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a9, ones), d0 * sw, Vector512.Load(t + 288)).Store(t + 288);
            Vector512.FusedMultiplyAdd(BlockSum(b9, ones), d1 * sw, Vector512.Load(t + 304)).Store(t + 304);
            sw = Vector512.Create(dw[10 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a10, ones), d0 * sw, Vector512.Load(t + 320)).Store(t + 320);
            Vector512.FusedMultiplyAdd(BlockSum(b10, ones), d1 * sw, Vector512.Load(t + 336)).Store(t + 336);
            sw = Vector512.Create(dw[11 * ScaleStride]);
            Vector512.FusedMultiplyAdd(BlockSum(a11, ones), d0 * sw, Vector512.Load(t + 352)).Store(t + 352);
            Vector512.FusedMultiplyAdd(BlockSum(b11, ones), d1 * sw, Vector512.Load(t + 368)).Store(t + 368);
        }
    }

    /// <summary>
    /// Q8_0 without AVX-VNNI (<see cref="SplitsQ8_0"/>), AVX-512: 6 weight rows by 32 activation rows, t[r·32 + j]. w
    /// holds the rows' quants + 128 as low nibbles l at <see cref="ByteStride"/> and high nibbles h a <see cref="SplitPlane"/>
    /// further (q = 16·(h − 8) + l), xt the activations' signed quants and starts −8·Σx per block as for Q4_0
    /// (<see cref="PackQuantBytes"/>). Per step 2 loads, 12 broadcasts and 24 vpmaddubsw: the h sums start at −8·Σx
    /// and hold Σ (h − 8)·x (|Σ| ≤ 16·8·127), the l sums Σ l·x (≤ 16·15·127), both within 16 bits; per block,
    /// vpmaddwd by 16 and by 1 adds them into the exact Σ q·x, and t += Σ·(d_w·d_x) as in <see cref="Integer12x32"/>.
    /// 24 sums, 2 activation vectors and a broadcast in the 32 registers.
    /// </summary>
    private static void Split6x32(byte* w, byte* xt, short* starts, int kn, float* t, byte* prefetch, float* dw, float* dx)
    {
        const int S = ByteStride, H = SplitPlane;
        for (int done = 0; done < kn; done += 32, dw++, dx += 32, starts += 64)
        {
            Vector512<short> c0 = Vector512.Load(starts), c1 = Vector512.Load(starts + 32);
            Vector512<short> h0 = c0, h1 = c0, h2 = c0, h3 = c0, h4 = c0, h5 = c0;
            Vector512<short> g0 = c1, g1 = c1, g2 = c1, g3 = c1, g4 = c1, g5 = c1;
            Vector512<short> l0 = default, l1 = default, l2 = default, l3 = default, l4 = default, l5 = default;
            Vector512<short> m0 = default, m1 = default, m2 = default, m3 = default, m4 = default, m5 = default;
            for (byte* end = w + 32; w < end; w += 4, xt += 128, prefetch += 64)
            {
                Sse.Prefetch1(prefetch);
                Vector512<sbyte> x0 = Vector512.Load((sbyte*)xt);
                Vector512<sbyte> x1 = Vector512.Load((sbyte*)xt + 64);
                Vector512<byte> v;
                v = Vector512.Create(*(int*)(w + H)).AsByte();
                h0 += Avx512BW.MultiplyAddAdjacent(v, x0);
                g0 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)w).AsByte();
                l0 += Avx512BW.MultiplyAddAdjacent(v, x0);
                m0 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + H + S)).AsByte();
                h1 += Avx512BW.MultiplyAddAdjacent(v, x0);
                g1 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + S)).AsByte();
                l1 += Avx512BW.MultiplyAddAdjacent(v, x0);
                m1 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + H + 2 * S)).AsByte();
                h2 += Avx512BW.MultiplyAddAdjacent(v, x0);
                g2 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 2 * S)).AsByte();
                l2 += Avx512BW.MultiplyAddAdjacent(v, x0);
                m2 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + H + 3 * S)).AsByte();
                h3 += Avx512BW.MultiplyAddAdjacent(v, x0);
                g3 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 3 * S)).AsByte();
                l3 += Avx512BW.MultiplyAddAdjacent(v, x0);
                m3 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + H + 4 * S)).AsByte();
                h4 += Avx512BW.MultiplyAddAdjacent(v, x0);
                g4 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 4 * S)).AsByte();
                l4 += Avx512BW.MultiplyAddAdjacent(v, x0);
                m4 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + H + 5 * S)).AsByte();
                h5 += Avx512BW.MultiplyAddAdjacent(v, x0);
                g5 += Avx512BW.MultiplyAddAdjacent(v, x1);
                v = Vector512.Create(*(int*)(w + 5 * S)).AsByte();
                l5 += Avx512BW.MultiplyAddAdjacent(v, x0);
                m5 += Avx512BW.MultiplyAddAdjacent(v, x1);
            }

            Vector512<float> d0 = Vector512.Load(dx), d1 = Vector512.Load(dx + 16), sw;
            sw = Vector512.Create(dw[0 * ScaleStride]);
            Vector512.FusedMultiplyAdd(SplitSum(h0, l0), d0 * sw, Vector512.Load(t)).Store(t);
            Vector512.FusedMultiplyAdd(SplitSum(g0, m0), d1 * sw, Vector512.Load(t + 16)).Store(t + 16);
            sw = Vector512.Create(dw[1 * ScaleStride]);
            Vector512.FusedMultiplyAdd(SplitSum(h1, l1), d0 * sw, Vector512.Load(t + 32)).Store(t + 32);
            Vector512.FusedMultiplyAdd(SplitSum(g1, m1), d1 * sw, Vector512.Load(t + 48)).Store(t + 48);
            sw = Vector512.Create(dw[2 * ScaleStride]);
            Vector512.FusedMultiplyAdd(SplitSum(h2, l2), d0 * sw, Vector512.Load(t + 64)).Store(t + 64);
            Vector512.FusedMultiplyAdd(SplitSum(g2, m2), d1 * sw, Vector512.Load(t + 80)).Store(t + 80);
            sw = Vector512.Create(dw[3 * ScaleStride]);
            Vector512.FusedMultiplyAdd(SplitSum(h3, l3), d0 * sw, Vector512.Load(t + 96)).Store(t + 96);
            Vector512.FusedMultiplyAdd(SplitSum(g3, m3), d1 * sw, Vector512.Load(t + 112)).Store(t + 112);
            sw = Vector512.Create(dw[4 * ScaleStride]);
            Vector512.FusedMultiplyAdd(SplitSum(h4, l4), d0 * sw, Vector512.Load(t + 128)).Store(t + 128);
            Vector512.FusedMultiplyAdd(SplitSum(g4, m4), d1 * sw, Vector512.Load(t + 144)).Store(t + 144);
            sw = Vector512.Create(dw[5 * ScaleStride]);
            Vector512.FusedMultiplyAdd(SplitSum(h5, l5), d0 * sw, Vector512.Load(t + 160)).Store(t + 160);
            Vector512.FusedMultiplyAdd(SplitSum(g5, m5), d1 * sw, Vector512.Load(t + 176)).Store(t + 176);
        }
    }

    /// <summary>A block's split sums (lanes 2j, 2j + 1 of Σ (h − 8)·x and Σ l·x) as row j's exact Σ q·x, a float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> SplitSum(Vector512<short> high, Vector512<short> low) =>
        Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(high, Vector512.Create((short)16)) +
                                         Avx512BW.MultiplyAddAdjacent(low, Vector512.Create((short)1)));

    /// <summary>
    /// <see cref="Integer12x32"/> for the K-quants, 6 weight rows by 32 activation rows (t[r·32 + j]): w holds the
    /// rows' unsigned quants at <see cref="ByteStride"/>, dw their d, dmin and 16 scales (or 8 scales and 8 mins) per
    /// super-block (<see cref="DecodeQuantBytes"/>), xt/starts/xs the Q8_K activations (<see cref="PackQuantBytes"/>).
    /// Per sub-block (32 values, Q6_K 16), steps of vpmaddubsw into 16-bit sums that start at −offset·Σx, so that a
    /// lane holds Σ (q − offset)·x of at most 16 values (|Σ| ≤ 32512 for Q5_K and Q6_K; Q4_K, no offset: 30480);
    /// vpmaddwd by the sub-block's scale then adds them into the row's 32-bit super-block sum. Per super-block: for
    /// Q5_K the offset's share 16·Σ_j sc_j·Σx_j back, and t += d·d_x·Σ_j sc_j·(Σ q·x)_j (− dmin·d_x·Σ_j m_j·(Σ x)_j
    /// for Q4_K/Q5_K) — llama.cpp's q·q8_K dot sums, exact in integers up to the float products per super-block.
    /// 12 sums of 16 bits, 12 of 32, 2 activation vectors and a broadcast in the 32 registers.
    /// </summary>
    private static void Integer6x32K(DType type, byte* w, byte* xt, short* starts, short* xs, int kn, float* t, byte* prefetch, float* dw, float* dx)
    {
        const int S = ByteStride, SS = ScaleStride * 2; // SS: a row's shorts
        int sub = SubBlock(type);
        bool offset = QuantOffset(type) != 0;
        short* sm = (short*)(dw + 32);
        for (int sb = 0; sb < kn / 256; sb++, dx += 32, xs += 256)
        {
            Vector512<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default;
            Vector512<int> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default;
            for (int j = 0; j < 256 / sub; j++)
            {
                Vector512<short> s0 = default, s1 = default;
                if (offset)
                {
                    s0 = Vector512.Load(starts);
                    s1 = Vector512.Load(starts + 32);
                    starts += 64;
                }

                Vector512<short> p0 = s0, p1 = s0, p2 = s0, p3 = s0, p4 = s0, p5 = s0;
                Vector512<short> q0 = s1, q1 = s1, q2 = s1, q3 = s1, q4 = s1, q5 = s1;
                for (byte* end = w + sub; w < end; w += 4, xt += 128, prefetch += 64)
                {
                    Sse.Prefetch1(prefetch);
                    Vector512<sbyte> x0 = Vector512.Load((sbyte*)xt);
                    Vector512<sbyte> x1 = Vector512.Load((sbyte*)xt + 64);
                    Vector512<byte> v = Vector512.Create(*(int*)w).AsByte();
                    p0 += Avx512BW.MultiplyAddAdjacent(v, x0);
                    q0 += Avx512BW.MultiplyAddAdjacent(v, x1);
                    v = Vector512.Create(*(int*)(w + S)).AsByte();
                    p1 += Avx512BW.MultiplyAddAdjacent(v, x0);
                    q1 += Avx512BW.MultiplyAddAdjacent(v, x1);
                    v = Vector512.Create(*(int*)(w + 2 * S)).AsByte();
                    p2 += Avx512BW.MultiplyAddAdjacent(v, x0);
                    q2 += Avx512BW.MultiplyAddAdjacent(v, x1);
                    v = Vector512.Create(*(int*)(w + 3 * S)).AsByte();
                    p3 += Avx512BW.MultiplyAddAdjacent(v, x0);
                    q3 += Avx512BW.MultiplyAddAdjacent(v, x1);
                    v = Vector512.Create(*(int*)(w + 4 * S)).AsByte();
                    p4 += Avx512BW.MultiplyAddAdjacent(v, x0);
                    q4 += Avx512BW.MultiplyAddAdjacent(v, x1);
                    v = Vector512.Create(*(int*)(w + 5 * S)).AsByte();
                    p5 += Avx512BW.MultiplyAddAdjacent(v, x0);
                    q5 += Avx512BW.MultiplyAddAdjacent(v, x1);
                }

                short* sc = sm + sb * 16 + j;
                Vector512<short> c = Vector512.Create(sc[0]);
                a0 += Avx512BW.MultiplyAddAdjacent(p0, c);
                b0 += Avx512BW.MultiplyAddAdjacent(q0, c);
                c = Vector512.Create(sc[SS]);
                a1 += Avx512BW.MultiplyAddAdjacent(p1, c);
                b1 += Avx512BW.MultiplyAddAdjacent(q1, c);
                c = Vector512.Create(sc[2 * SS]);
                a2 += Avx512BW.MultiplyAddAdjacent(p2, c);
                b2 += Avx512BW.MultiplyAddAdjacent(q2, c);
                c = Vector512.Create(sc[3 * SS]);
                a3 += Avx512BW.MultiplyAddAdjacent(p3, c);
                b3 += Avx512BW.MultiplyAddAdjacent(q3, c);
                c = Vector512.Create(sc[4 * SS]);
                a4 += Avx512BW.MultiplyAddAdjacent(p4, c);
                b4 += Avx512BW.MultiplyAddAdjacent(q4, c);
                c = Vector512.Create(sc[5 * SS]);
                a5 += Avx512BW.MultiplyAddAdjacent(p5, c);
                b5 += Avx512BW.MultiplyAddAdjacent(q5, c);
            }

            Vector512<float> d0 = Vector512.Load(dx), d1 = Vector512.Load(dx + 16);
            short* row = sm + sb * 16;
            SuperBlock(type, t, a0, b0, xs, row, d0, d1, dw + sb);
            SuperBlock(type, t + 32, a1, b1, xs, row + SS, d0, d1, dw + ScaleStride + sb);
            SuperBlock(type, t + 64, a2, b2, xs, row + 2 * SS, d0, d1, dw + 2 * ScaleStride + sb);
            SuperBlock(type, t + 96, a3, b3, xs, row + 3 * SS, d0, d1, dw + 3 * ScaleStride + sb);
            SuperBlock(type, t + 128, a4, b4, xs, row + 4 * SS, d0, d1, dw + 4 * ScaleStride + sb);
            SuperBlock(type, t + 160, a5, b5, xs, row + 5 * SS, d0, d1, dw + 5 * ScaleStride + sb);
        }
    }

    /// <summary>
    /// One row's Σ_j f_j·(Σ x)_j over a super-block's 8 sub-blocks, for its 32 activation rows (two vectors): four
    /// vpmaddwd of a pair of factors (mins, or Q5_K's scales) by the x sums of that pair of sub-blocks
    /// (<see cref="PackQuantBytes"/>' layout).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<int> Lo, Vector512<int> Hi) FactorSums(short* xs, short* factors)
    {
        Vector512<short> f = Vector512.Create(*(int*)factors).AsInt16();
        Vector512<int> lo = Avx512BW.MultiplyAddAdjacent(Vector512.Load(xs), f), hi = Avx512BW.MultiplyAddAdjacent(Vector512.Load(xs + 32), f);
        for (int p = 1; p < 4; p++)
        {
            f = Vector512.Create(*(int*)(factors + 2 * p)).AsInt16();
            lo += Avx512BW.MultiplyAddAdjacent(Vector512.Load(xs + 64 * p), f);
            hi += Avx512BW.MultiplyAddAdjacent(Vector512.Load(xs + 64 * p + 32), f);
        }

        return (lo, hi);
    }

    /// <summary>
    /// A super-block's end for one row's 32 activation rows: t[j] += d·d_x·sums (− dmin·d_x·Σ_j m_j·Σx_j), with
    /// Q5_K's offset added back first. scalesMins: the row's 16 shorts for this super-block; d: its d (d[16]: dmin).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SuperBlock(DType type, float* t, Vector512<int> sumLo, Vector512<int> sumHi, short* xs, short* scalesMins,
                                   Vector512<float> dx0, Vector512<float> dx1, float* d)
    {
        if (type == DType.Q5_K)
        {
            (Vector512<int> lo16, Vector512<int> hi16) = FactorSums(xs, scalesMins);
            sumLo += lo16 << 4;
            sumHi += hi16 << 4;
        }

        Vector512<float> sd = Vector512.Create(d[0]);
        Vector512<float> lo = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sumLo), dx0 * sd, Vector512.Load(t));
        Vector512<float> hi = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sumHi), dx1 * sd, Vector512.Load(t + 16));
        if (type == DType.Q6_K)
        {
            lo.Store(t);
            hi.Store(t + 16);
            return;
        }

        (Vector512<int> minLo, Vector512<int> minHi) = FactorSums(xs, scalesMins + 8);
        Vector512<float> sm = Vector512.Create(d[16]);
        Vector512.FusedMultiplyAdd(-Avx512F.ConvertToVector512Single(minLo), dx0 * sm, lo).Store(t);
        Vector512.FusedMultiplyAdd(-Avx512F.ConvertToVector512Single(minHi), dx1 * sm, hi).Store(t + 16);
    }

    /// <summary>
    /// Q8_0 on AVX-VNNI: 6 weight rows by 16 activation rows, t[r·ts + j]. w holds the rows' signed quants at
    /// <see cref="ByteStride"/>, xt the activations' quants + 128 as unsigned bytes, four values of 16 rows per
    /// <paramref name="xStep"/> bytes (<see cref="PackQuantBytes"/>). vpdpbusd adds four u8·s8 products into each
    /// 32-bit lane without saturation, so a block's sums start at −128·Σq_w (per row, from the decoding) and end as
    /// the exact Σ q_w·q_x; then t += Σ·(d_w·d_x) as in <see cref="Integer12x32"/>. 12 sums, 2
    /// activation vectors and a broadcast: VNNI's VEX form reaches only the first 16 registers. dx: per block
    /// <paramref name="dxStride"/> rows' scales, this part's 16 first.
    /// </summary>
    private static void Vnni6x16(byte* w, byte* xt, int xStep, int kn, float* t, int ts, byte* prefetch, float* dw, float* dx, int dxStride)
    {
        const int S = ByteStride;
        int* st = (int*)(dw + 96);
        for (int b = 0; b < kn / 32; b++, dx += dxStride, xt += 8 * xStep)
        {
            Vector256<int> a0 = Vector256.Create(st[b]), a1 = Vector256.Create(st[ScaleStride + b]), a2 = Vector256.Create(st[2 * ScaleStride + b]);
            Vector256<int> a3 = Vector256.Create(st[3 * ScaleStride + b]), a4 = Vector256.Create(st[4 * ScaleStride + b]), a5 = Vector256.Create(st[5 * ScaleStride + b]);
            Vector256<int> b0 = a0, b1 = a1, b2 = a2, b3 = a3, b4 = a4, b5 = a5;
            byte* x = xt;
            for (byte* end = w + 32; w < end; w += 4, x += xStep, prefetch += 64)
            {
                Sse.Prefetch1(prefetch);
                Vector256<byte> x0 = Vector256.Load(x);
                Vector256<byte> x1 = Vector256.Load(x + 32);
                Vector256<sbyte> v = Vector256.Create(*(int*)w).AsSByte();
                a0 = AvxVnni.MultiplyWideningAndAdd(a0, x0, v);
                b0 = AvxVnni.MultiplyWideningAndAdd(b0, x1, v);
                v = Vector256.Create(*(int*)(w + S)).AsSByte();
                a1 = AvxVnni.MultiplyWideningAndAdd(a1, x0, v);
                b1 = AvxVnni.MultiplyWideningAndAdd(b1, x1, v);
                v = Vector256.Create(*(int*)(w + 2 * S)).AsSByte();
                a2 = AvxVnni.MultiplyWideningAndAdd(a2, x0, v);
                b2 = AvxVnni.MultiplyWideningAndAdd(b2, x1, v);
                v = Vector256.Create(*(int*)(w + 3 * S)).AsSByte();
                a3 = AvxVnni.MultiplyWideningAndAdd(a3, x0, v);
                b3 = AvxVnni.MultiplyWideningAndAdd(b3, x1, v);
                v = Vector256.Create(*(int*)(w + 4 * S)).AsSByte();
                a4 = AvxVnni.MultiplyWideningAndAdd(a4, x0, v);
                b4 = AvxVnni.MultiplyWideningAndAdd(b4, x1, v);
                v = Vector256.Create(*(int*)(w + 5 * S)).AsSByte();
                a5 = AvxVnni.MultiplyWideningAndAdd(a5, x0, v);
                b5 = AvxVnni.MultiplyWideningAndAdd(b5, x1, v);
            }

            Vector256<float> d0 = Vector256.Load(dx), d1 = Vector256.Load(dx + 8), sw;
            sw = Vector256.Create(dw[b]);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(a0), d0 * sw, Vector256.Load(t)).Store(t);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(b0), d1 * sw, Vector256.Load(t + 8)).Store(t + 8);
            sw = Vector256.Create(dw[ScaleStride + b]);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(a1), d0 * sw, Vector256.Load(t + ts)).Store(t + ts);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(b1), d1 * sw, Vector256.Load(t + ts + 8)).Store(t + ts + 8);
            sw = Vector256.Create(dw[2 * ScaleStride + b]);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(a2), d0 * sw, Vector256.Load(t + 2 * ts)).Store(t + 2 * ts);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(b2), d1 * sw, Vector256.Load(t + 2 * ts + 8)).Store(t + 2 * ts + 8);
            sw = Vector256.Create(dw[3 * ScaleStride + b]);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(a3), d0 * sw, Vector256.Load(t + 3 * ts)).Store(t + 3 * ts);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(b3), d1 * sw, Vector256.Load(t + 3 * ts + 8)).Store(t + 3 * ts + 8);
            sw = Vector256.Create(dw[4 * ScaleStride + b]);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(a4), d0 * sw, Vector256.Load(t + 4 * ts)).Store(t + 4 * ts);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(b4), d1 * sw, Vector256.Load(t + 4 * ts + 8)).Store(t + 4 * ts + 8);
            sw = Vector256.Create(dw[5 * ScaleStride + b]);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(a5), d0 * sw, Vector256.Load(t + 5 * ts)).Store(t + 5 * ts);
            Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(b5), d1 * sw, Vector256.Load(t + 5 * ts + 8)).Store(t + 5 * ts + 8);
        }
    }

    /// <summary>
    /// AVX2's <see cref="Integer12x32"/>: 4 weight rows by 16 activation rows (t[r·16 + j]), per step 2 loads of 8
    /// rows × 4 quants and 4 broadcasts for 8 vpmaddubsw; 8 sums of 16 bits, 2 activation vectors, a broadcast and a
    /// product in the 16 registers. Starting sums, block sums and scaling as there (starts: 32 shorts per block).
    /// </summary>
    private static void Integer4x16(byte* w, byte* xt, short* starts, int kn, float* t, byte* prefetch, float* dw, float* dx)
    {
        const int S = ByteStride;
        Vector256<short> ones = Vector256.Create((short)1);
        for (int done = 0; done < kn; done += 32, dw++, dx += 16, starts += 32)
        {
            Vector256<short> c0 = Vector256.Load(starts), c1 = Vector256.Load(starts + 16);
            Vector256<short> a0 = c0, a1 = c0, a2 = c0, a3 = c0, b0 = c1, b1 = c1, b2 = c1, b3 = c1;
            for (byte* end = w + 32; w < end; w += 4, xt += 64, prefetch += 64)
            {
                Sse.Prefetch1(prefetch);
                Vector256<sbyte> x0 = Vector256.Load((sbyte*)xt);
                Vector256<sbyte> x1 = Vector256.Load((sbyte*)xt + 32);
                Vector256<byte> v = Vector256.Create(*(int*)w).AsByte();
                a0 += Avx2.MultiplyAddAdjacent(v, x0);
                b0 += Avx2.MultiplyAddAdjacent(v, x1);
                v = Vector256.Create(*(int*)(w + S)).AsByte();
                a1 += Avx2.MultiplyAddAdjacent(v, x0);
                b1 += Avx2.MultiplyAddAdjacent(v, x1);
                v = Vector256.Create(*(int*)(w + 2 * S)).AsByte();
                a2 += Avx2.MultiplyAddAdjacent(v, x0);
                b2 += Avx2.MultiplyAddAdjacent(v, x1);
                v = Vector256.Create(*(int*)(w + 3 * S)).AsByte();
                a3 += Avx2.MultiplyAddAdjacent(v, x0);
                b3 += Avx2.MultiplyAddAdjacent(v, x1);
            }

            Vector256<float> d0 = Vector256.Load(dx), d1 = Vector256.Load(dx + 8), sw;
            sw = Vector256.Create(dw[0 * ScaleStride]);
            Vector256.FusedMultiplyAdd(BlockSum(a0, ones), d0 * sw, Vector256.Load(t)).Store(t);
            Vector256.FusedMultiplyAdd(BlockSum(b0, ones), d1 * sw, Vector256.Load(t + 8)).Store(t + 8);
            sw = Vector256.Create(dw[1 * ScaleStride]);
            Vector256.FusedMultiplyAdd(BlockSum(a1, ones), d0 * sw, Vector256.Load(t + 16)).Store(t + 16);
            Vector256.FusedMultiplyAdd(BlockSum(b1, ones), d1 * sw, Vector256.Load(t + 24)).Store(t + 24);
            sw = Vector256.Create(dw[2 * ScaleStride]);
            Vector256.FusedMultiplyAdd(BlockSum(a2, ones), d0 * sw, Vector256.Load(t + 32)).Store(t + 32);
            Vector256.FusedMultiplyAdd(BlockSum(b2, ones), d1 * sw, Vector256.Load(t + 40)).Store(t + 40);
            sw = Vector256.Create(dw[3 * ScaleStride]);
            Vector256.FusedMultiplyAdd(BlockSum(a3, ones), d0 * sw, Vector256.Load(t + 48)).Store(t + 48);
            Vector256.FusedMultiplyAdd(BlockSum(b3, ones), d1 * sw, Vector256.Load(t + 56)).Store(t + 56);
        }
    }

    /// <summary>
    /// AVX2's <see cref="Split6x32"/> (and AVX-512's for 16-31 rows): 2 weight rows by 16 activation rows
    /// (t[r·16 + j]), per step 2 loads and 4 broadcasts for 8 vpmaddubsw; 8 sums of 16 bits, 2 activation vectors and a
    /// broadcast in the 16 registers. Starts: 32 shorts per block, as <see cref="Integer4x16"/>'s.
    /// </summary>
    private static void Split2x16(byte* w, byte* xt, short* starts, int kn, float* t, byte* prefetch, float* dw, float* dx)
    {
        const int S = ByteStride, H = SplitPlane;
        for (int done = 0; done < kn; done += 32, dw++, dx += 16, starts += 32)
        {
            Vector256<short> c0 = Vector256.Load(starts), c1 = Vector256.Load(starts + 16);
            Vector256<short> h0 = c0, h1 = c0, g0 = c1, g1 = c1, l0 = default, l1 = default, m0 = default, m1 = default;
            for (byte* end = w + 32; w < end; w += 4, xt += 64, prefetch += 64)
            {
                Sse.Prefetch1(prefetch);
                Vector256<sbyte> x0 = Vector256.Load((sbyte*)xt);
                Vector256<sbyte> x1 = Vector256.Load((sbyte*)xt + 32);
                Vector256<byte> v = Vector256.Create(*(int*)(w + H)).AsByte();
                h0 += Avx2.MultiplyAddAdjacent(v, x0);
                g0 += Avx2.MultiplyAddAdjacent(v, x1);
                v = Vector256.Create(*(int*)w).AsByte();
                l0 += Avx2.MultiplyAddAdjacent(v, x0);
                m0 += Avx2.MultiplyAddAdjacent(v, x1);
                v = Vector256.Create(*(int*)(w + H + S)).AsByte();
                h1 += Avx2.MultiplyAddAdjacent(v, x0);
                g1 += Avx2.MultiplyAddAdjacent(v, x1);
                v = Vector256.Create(*(int*)(w + S)).AsByte();
                l1 += Avx2.MultiplyAddAdjacent(v, x0);
                m1 += Avx2.MultiplyAddAdjacent(v, x1);
            }

            Vector256<float> d0 = Vector256.Load(dx), d1 = Vector256.Load(dx + 8), sw;
            sw = Vector256.Create(dw[0]);
            Vector256.FusedMultiplyAdd(SplitSum(h0, l0), d0 * sw, Vector256.Load(t)).Store(t);
            Vector256.FusedMultiplyAdd(SplitSum(g0, m0), d1 * sw, Vector256.Load(t + 8)).Store(t + 8);
            sw = Vector256.Create(dw[ScaleStride]);
            Vector256.FusedMultiplyAdd(SplitSum(h1, l1), d0 * sw, Vector256.Load(t + 16)).Store(t + 16);
            Vector256.FusedMultiplyAdd(SplitSum(g1, m1), d1 * sw, Vector256.Load(t + 24)).Store(t + 24);
        }
    }

    /// <summary><see cref="SplitSum(Vector512{short}, Vector512{short})"/> with 256-bit vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> SplitSum(Vector256<short> high, Vector256<short> low) =>
        Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(high, Vector256.Create((short)16)) +
                                     Avx2.MultiplyAddAdjacent(low, Vector256.Create((short)1)));

    /// <summary>
    /// AVX2's <see cref="Integer6x32K"/>: 2 weight rows by 16 activation rows (t[r·16 + j]); 4 sums of 16 bits and 4
    /// of 32 in registers. Starts: 32 shorts per sub-block; xs: 128 shorts per super-block; dx: 16 per super-block.
    /// </summary>
    private static void Integer2x16K(DType type, byte* w, byte* xt, short* starts, short* xs, int kn, float* t, byte* prefetch, float* dw, float* dx)
    {
        const int S = ByteStride, SS = ScaleStride * 2;
        int sub = SubBlock(type);
        bool offset = QuantOffset(type) != 0;
        short* sm = (short*)(dw + 32);
        for (int sb = 0; sb < kn / 256; sb++, dx += 16, xs += 128)
        {
            Vector256<int> a0 = default, a1 = default, b0 = default, b1 = default;
            for (int j = 0; j < 256 / sub; j++)
            {
                Vector256<short> s0 = default, s1 = default;
                if (offset)
                {
                    s0 = Vector256.Load(starts);
                    s1 = Vector256.Load(starts + 16);
                    starts += 32;
                }

                Vector256<short> p0 = s0, p1 = s0, q0 = s1, q1 = s1;
                for (byte* end = w + sub; w < end; w += 4, xt += 64, prefetch += 64)
                {
                    Sse.Prefetch1(prefetch);
                    Vector256<sbyte> x0 = Vector256.Load((sbyte*)xt);
                    Vector256<sbyte> x1 = Vector256.Load((sbyte*)xt + 32);
                    Vector256<byte> v = Vector256.Create(*(int*)w).AsByte();
                    p0 += Avx2.MultiplyAddAdjacent(v, x0);
                    q0 += Avx2.MultiplyAddAdjacent(v, x1);
                    v = Vector256.Create(*(int*)(w + S)).AsByte();
                    p1 += Avx2.MultiplyAddAdjacent(v, x0);
                    q1 += Avx2.MultiplyAddAdjacent(v, x1);
                }

                short* sc = sm + sb * 16 + j;
                Vector256<short> c = Vector256.Create(sc[0]);
                a0 += Avx2.MultiplyAddAdjacent(p0, c);
                b0 += Avx2.MultiplyAddAdjacent(q0, c);
                c = Vector256.Create(sc[SS]);
                a1 += Avx2.MultiplyAddAdjacent(p1, c);
                b1 += Avx2.MultiplyAddAdjacent(q1, c);
            }

            Vector256<float> d0 = Vector256.Load(dx), d1 = Vector256.Load(dx + 8);
            short* row = sm + sb * 16;
            SuperBlock(type, t, a0, b0, xs, row, d0, d1, dw + sb);
            SuperBlock(type, t + 16, a1, b1, xs, row + SS, d0, d1, dw + ScaleStride + sb);
        }
    }

    /// <summary><see cref="FactorSums"/> for 16 activation rows (AVX2: 32 shorts per pair of sub-blocks).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<int> Lo, Vector256<int> Hi) FactorSums256(short* xs, short* factors)
    {
        Vector256<short> f = Vector256.Create(*(int*)factors).AsInt16();
        Vector256<int> lo = Avx2.MultiplyAddAdjacent(Vector256.Load(xs), f), hi = Avx2.MultiplyAddAdjacent(Vector256.Load(xs + 16), f);
        for (int p = 1; p < 4; p++)
        {
            f = Vector256.Create(*(int*)(factors + 2 * p)).AsInt16();
            lo += Avx2.MultiplyAddAdjacent(Vector256.Load(xs + 32 * p), f);
            hi += Avx2.MultiplyAddAdjacent(Vector256.Load(xs + 32 * p + 16), f);
        }

        return (lo, hi);
    }

    /// <summary><see cref="SuperBlock"/> for 16 activation rows (AVX2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SuperBlock(DType type, float* t, Vector256<int> sumLo, Vector256<int> sumHi, short* xs, short* scalesMins,
                                   Vector256<float> dx0, Vector256<float> dx1, float* d)
    {
        if (type == DType.Q5_K)
        {
            (Vector256<int> lo16, Vector256<int> hi16) = FactorSums256(xs, scalesMins);
            sumLo += lo16 << 4;
            sumHi += hi16 << 4;
        }

        Vector256<float> sd = Vector256.Create(d[0]);
        Vector256<float> lo = Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(sumLo), dx0 * sd, Vector256.Load(t));
        Vector256<float> hi = Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(sumHi), dx1 * sd, Vector256.Load(t + 8));
        if (type == DType.Q6_K)
        {
            lo.Store(t);
            hi.Store(t + 8);
            return;
        }

        (Vector256<int> minLo, Vector256<int> minHi) = FactorSums256(xs, scalesMins + 8);
        Vector256<float> sm = Vector256.Create(d[16]);
        Vector256.FusedMultiplyAdd(-Avx.ConvertToVector256Single(minLo), dx0 * sm, lo).Store(t);
        Vector256.FusedMultiplyAdd(-Avx.ConvertToVector256Single(minHi), dx1 * sm, hi).Store(t + 8);
    }

    /// <summary>A block's 16-bit half sums (lanes 2j, 2j + 1) added into row j's exact sum, as a float (AVX2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockSum(Vector256<short> halves, Vector256<short> ones) =>
        Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(halves, ones));

    /// <summary>A block's 16-bit half sums (lanes 2j, 2j + 1) added into row j's exact sum, as a float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> BlockSum(Vector512<short> halves, Vector512<short> ones) =>
        Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(halves, ones));

    /// <summary>
    /// <see cref="Outer12x32"/> for 16-token tiles on AVX-512 (prompts of 16 to 31 rows): one activation vector per
    /// step, 12 FMAs for 1 load and 12 broadcasts (t[r·16 + j]).
    /// </summary>
    private static void Outer12x16(float* w, float* xt, int kn, float* t, byte* prefetch)
    {
        const int S = ScratchStride;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default;
        Vector512<float> a6 = default, a7 = default, a8 = default, a9 = default, a10 = default, a11 = default;
        for (float* end = w + kn; w < end; w++, xt += 16, prefetch += 32)
        {
            Sse.Prefetch1(prefetch);
            Vector512<float> x0 = Vector512.Load(xt);
            Vector512<float> v = Vector512.Create(w[0]);
            a0 = Vector512.FusedMultiplyAdd(v, x0, a0);
            v = Vector512.Create(w[S]);
            a1 = Vector512.FusedMultiplyAdd(v, x0, a1);
            v = Vector512.Create(w[2 * S]);
            a2 = Vector512.FusedMultiplyAdd(v, x0, a2);
            v = Vector512.Create(w[3 * S]);
            a3 = Vector512.FusedMultiplyAdd(v, x0, a3);
            v = Vector512.Create(w[4 * S]);
            a4 = Vector512.FusedMultiplyAdd(v, x0, a4);
            v = Vector512.Create(w[5 * S]);
            a5 = Vector512.FusedMultiplyAdd(v, x0, a5);
            v = Vector512.Create(w[6 * S]);
            a6 = Vector512.FusedMultiplyAdd(v, x0, a6);
            v = Vector512.Create(w[7 * S]);
            a7 = Vector512.FusedMultiplyAdd(v, x0, a7);
            v = Vector512.Create(w[8 * S]);
            a8 = Vector512.FusedMultiplyAdd(v, x0, a8);
            v = Vector512.Create(w[9 * S]);
            a9 = Vector512.FusedMultiplyAdd(v, x0, a9);
            v = Vector512.Create(w[10 * S]);
            a10 = Vector512.FusedMultiplyAdd(v, x0, a10);
            v = Vector512.Create(w[11 * S]);
            a11 = Vector512.FusedMultiplyAdd(v, x0, a11);
        }

        a0.Store(t);
        a1.Store(t + 16);
        a2.Store(t + 32);
        a3.Store(t + 48);
        a4.Store(t + 64);
        a5.Store(t + 80);
        a6.Store(t + 96);
        a7.Store(t + 112);
        a8.Store(t + 128);
        a9.Store(t + 144);
        a10.Store(t + 160);
        a11.Store(t + 176);
    }

    /// <summary>
    /// AVX2's <see cref="Outer12x32"/>: t[r·16 + j] = Σ_{i&lt;kn} w[r·ScratchStride + i]·xt[i·16 + j] for 6 weight rows
    /// and 16 activation rows, 12 FMAs for 2 vector loads and 6 broadcasts; 12 accumulators, 2 activation vectors and
    /// a broadcast in the 16 registers.
    /// </summary>
    private static void Outer6x16(float* w, float* xt, int kn, float* t, byte* prefetch)
    {
        const int S = ScratchStride;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default;
        Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default;
        for (float* end = w + kn; w < end; w++, xt += 16, prefetch += 32)
        {
            Sse.Prefetch1(prefetch);
            Vector256<float> x0 = Vector256.Load(xt);
            Vector256<float> x1 = Vector256.Load(xt + 8);
            Vector256<float> v = Vector256.Create(w[0]);
            a0 = Vector256.FusedMultiplyAdd(v, x0, a0);
            b0 = Vector256.FusedMultiplyAdd(v, x1, b0);
            v = Vector256.Create(w[S]);
            a1 = Vector256.FusedMultiplyAdd(v, x0, a1);
            b1 = Vector256.FusedMultiplyAdd(v, x1, b1);
            v = Vector256.Create(w[2 * S]);
            a2 = Vector256.FusedMultiplyAdd(v, x0, a2);
            b2 = Vector256.FusedMultiplyAdd(v, x1, b2);
            v = Vector256.Create(w[3 * S]);
            a3 = Vector256.FusedMultiplyAdd(v, x0, a3);
            b3 = Vector256.FusedMultiplyAdd(v, x1, b3);
            v = Vector256.Create(w[4 * S]);
            a4 = Vector256.FusedMultiplyAdd(v, x0, a4);
            b4 = Vector256.FusedMultiplyAdd(v, x1, b4);
            v = Vector256.Create(w[5 * S]);
            a5 = Vector256.FusedMultiplyAdd(v, x0, a5);
            b5 = Vector256.FusedMultiplyAdd(v, x1, b5);
        }

        a0.Store(t); b0.Store(t + 8);
        a1.Store(t + 16); b1.Store(t + 24);
        a2.Store(t + 32); b2.Store(t + 40);
        a3.Store(t + 48); b3.Store(t + 56);
        a4.Store(t + 64); b4.Store(t + 72);
        a5.Store(t + 80); b5.Store(t + 88);
    }

    /// <summary>The tiles' scalar tail: t[j·4 + r] += Σ_{from ≤ i &lt; kn} w[r·ws + i]·x[j·xs + i] for j &lt; <paramref name="rows"/>.</summary>
    private static void AddTail(float* w, long ws, float* x, long xs, int from, int kn, int rows, float* t)
    {
        for (int i = from; i < kn; i++)
        {
            for (int j = 0; j < rows; j++)
            {
                float xv = x[j * xs + i];
                for (int r = 0; r < PanelRows; r++)
                {
                    t[j * PanelRows + r] += w[r * ws + i] * xv;
                }
            }
        }
    }
}

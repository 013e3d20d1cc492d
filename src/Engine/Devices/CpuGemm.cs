using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using GpuLlama.Formats;

namespace GpuLlama.Devices;

/// <summary>
/// Prompt processing's matrix product on the CPU, C[m, n] = Σ_k X[m, k]·W[n, k] (both operands K-contiguous, as
/// activations and weights are stored), blocked so that it runs from the caches instead of memory:
/// weights are taken in panels of <see cref="PanelRows"/> rows and <see cref="KBlock"/> columns, converted to float
/// once (F16, BF16 and quantized blocks; F32 is read in place), and every tile of activation rows is multiplied against
/// the panel by a register-blocked micro-kernel — AVX-512: 4 × 6 accumulators, so each 16-float load of a weight feeds
/// 6 FMAs and each load of an activation 4; AVX2: 4 × 3 (the old one-weight-row-at-a-time loop fed 4 FMAs with 5 loads
/// and was bound by the loads). A K block of the activation rows stays in L2 while the panels stream by.
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

    /// <summary>Floats of panel scratch one thread needs for a weight of <paramref name="k"/> columns.</summary>
    public static int ScratchFloats(int k) => PanelRows * KBlock(k);

    /// <summary>
    /// C (+)= X·Wᵀ for the weight panels [p0, p1) (rows 4·p0 .. min(4·p1, N)): X is [m, K] with row stride K, C is
    /// [m, N] with row stride N; <paramref name="accumulate"/> adds to C (the fused residual) instead of overwriting it.
    /// <paramref name="groupedQ4_0"/>: the rows are in <see cref="CpuQ8Dot.GroupQ4_0"/>'s layout;
    /// <paramref name="rowPanels"/>: in <see cref="CpuMatMul.InterleaveRowPanels"/>'s (a panel here is one there).
    /// </summary>
    public static void Multiply(DType type, bool groupedQ4_0, bool rowPanels, byte* weights, long rowBytes, int n, int k, float* x, int m, float* c,
                                bool accumulate, int p0, int p1, float* scratch)
    {
        int kb = KBlock(k);
        Span<float> tile = stackalloc float[PanelRows * TileRows];
        for (int k0 = 0; k0 < k; k0 += kb)
        {
            int kn = Math.Min(kb, k - k0);
            bool add = accumulate || k0 > 0;
            for (int p = p0; p < p1; p++)
            {
                int n0 = p * PanelRows;
                int nr = Math.Min(PanelRows, n - n0);
                float* panel;
                long stride;
                if (type == DType.F32 && nr == PanelRows && !rowPanels)
                {
                    panel = (float*)(weights + n0 * rowBytes) + k0;
                    stride = rowBytes / sizeof(float);
                }
                else if (rowPanels && nr == PanelRows)
                {
                    panel = scratch;
                    stride = kn;
                    CpuMatMul.PanelToF32(type, weights + n0 * rowBytes, k0, kn, scratch, kn); // k0, kn: whole chunks
                }
                else
                {
                    panel = scratch;
                    stride = kn;
                    for (int r = 0; r < PanelRows; r++)
                    {
                        float* dst = scratch + r * kn;
                        if (r < nr)
                        {
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
                        else
                        {
                            new Span<float>(dst, kn).Clear();
                        }
                    }
                }

                fixed (float* t = tile)
                {
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
            }
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

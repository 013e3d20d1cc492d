using ILGPU;
using ILGPU.Algorithms;

namespace GpuLlama.Kernels;

/// <summary>Shape of a batched or fallback matmul: dst[r, o] (+)= W[o, :] · x[r, :].</summary>
public struct MatMulArgs
{
    public int OutRows;
    public int Cols;
    public int Rows;
    public int Type;

    /// <summary>Type the activations are rounded to before the product (F32: none, e.g. when already rounded).</summary>
    public int Accumulate;
}

/// <summary>
/// Dense matmul over F32/F16/BF16 weights kept in their stored type. Decode (one activation row) is bound by reading
/// the weights once, so the GEMV kernels follow the design measured on the H100 at 84-100% of copy bandwidth: one
/// warp per output row, each lane keeping four independent 16-byte weight loads in flight with two accumulators,
/// activations read as float4, and a shuffle reduction. Activations stay float32 for every weight type (exact float
/// math on the stored weights, as the CPU backend does; see IDevice.MatMul).
/// </summary>
internal static class MatMulKernels
{
    // ---- decode GEMV: rows == 1; requires the row length in bytes to be a multiple of 16 ----

    private static float DotBf16(U4 v, F4 a, F4 b) =>
        KernelMath.Bf16(v.X) * a.X + KernelMath.Bf16High(v.X) * a.Y
        + KernelMath.Bf16(v.Y) * a.Z + KernelMath.Bf16High(v.Y) * a.W
        + KernelMath.Bf16(v.Z) * b.X + KernelMath.Bf16High(v.Z) * b.Y
        + KernelMath.Bf16(v.W) * b.Z + KernelMath.Bf16High(v.W) * b.W;

    private static float DotF16(U4 v, F4 a, F4 b) =>
        KernelMath.F16(v.X) * a.X + KernelMath.F16High(v.X) * a.Y
        + KernelMath.F16(v.Y) * a.Z + KernelMath.F16High(v.Y) * a.W
        + KernelMath.F16(v.Z) * b.X + KernelMath.F16High(v.Z) * b.Y
        + KernelMath.F16(v.W) * b.Z + KernelMath.F16High(v.W) * b.W;

    private static float DotF32(U4 v, F4 a) =>
        Interop.IntAsFloat(v.X) * a.X + Interop.IntAsFloat(v.Y) * a.Y + Interop.IntAsFloat(v.Z) * a.Z + Interop.IntAsFloat(v.W) * a.W;

    /// <summary>
    /// This lane's share of W[row] · x (two partial sums folded), for a row starting at chunk <paramref name="rowBase"/>
    /// of <paramref name="chunks"/> 16-byte chunks. Four independent loads stay in flight per lane. The type branch is
    /// uniform across the grid and outside the loop.
    /// </summary>
    private static float RowDot(ArrayView<U4> w, ArrayView<F4> x, long rowBase, int chunks, int type)
    {
        int ws = Warp.WarpSize;
        float acc0 = 0;
        float acc1 = 0;
        int c = Warp.LaneIdx;
        if (type == WeightCode.BF16)
        {
            for (; c + 3 * ws < chunks; c += 4 * ws)
            {
                U4 v0 = w[rowBase + c];
                U4 v1 = w[rowBase + c + ws];
                U4 v2 = w[rowBase + c + 2 * ws];
                U4 v3 = w[rowBase + c + 3 * ws];
                acc0 += DotBf16(v0, x[2 * c], x[2 * c + 1]);
                acc1 += DotBf16(v1, x[2 * (c + ws)], x[2 * (c + ws) + 1]);
                acc0 += DotBf16(v2, x[2 * (c + 2 * ws)], x[2 * (c + 2 * ws) + 1]);
                acc1 += DotBf16(v3, x[2 * (c + 3 * ws)], x[2 * (c + 3 * ws) + 1]);
            }

            for (; c < chunks; c += ws)
            {
                acc0 += DotBf16(w[rowBase + c], x[2 * c], x[2 * c + 1]);
            }
        }
        else if (type == WeightCode.F16)
        {
            for (; c + 3 * ws < chunks; c += 4 * ws)
            {
                U4 v0 = w[rowBase + c];
                U4 v1 = w[rowBase + c + ws];
                U4 v2 = w[rowBase + c + 2 * ws];
                U4 v3 = w[rowBase + c + 3 * ws];
                acc0 += DotF16(v0, x[2 * c], x[2 * c + 1]);
                acc1 += DotF16(v1, x[2 * (c + ws)], x[2 * (c + ws) + 1]);
                acc0 += DotF16(v2, x[2 * (c + 2 * ws)], x[2 * (c + 2 * ws) + 1]);
                acc1 += DotF16(v3, x[2 * (c + 3 * ws)], x[2 * (c + 3 * ws) + 1]);
            }

            for (; c < chunks; c += ws)
            {
                acc0 += DotF16(w[rowBase + c], x[2 * c], x[2 * c + 1]);
            }
        }
        else
        {
            for (; c + 3 * ws < chunks; c += 4 * ws)
            {
                U4 v0 = w[rowBase + c];
                U4 v1 = w[rowBase + c + ws];
                U4 v2 = w[rowBase + c + 2 * ws];
                U4 v3 = w[rowBase + c + 3 * ws];
                acc0 += DotF32(v0, x[c]);
                acc1 += DotF32(v1, x[c + ws]);
                acc0 += DotF32(v2, x[c + 2 * ws]);
                acc1 += DotF32(v3, x[c + 3 * ws]);
            }

            for (; c < chunks; c += ws)
            {
                acc0 += DotF32(w[rowBase + c], x[c]);
            }
        }

        return acc0 + acc1;
    }

    /// <summary>
    /// Decode GEMV over a plain type: y[row] (+)= W[row] · x, one warp per row. <paramref name="x"/> holds the
    /// activation as float4; <paramref name="chunks"/> = row bytes / 16 (cols / 8 for 16-bit types, cols / 4 for F32).
    /// </summary>
    public static void Gemv(ArrayView<U4> w, ArrayView<F4> x, ArrayView<float> y, int rows, int chunks, int type, int accumulate)
    {
        int row = Grid.GlobalIndex.X / Warp.WarpSize;
        if (row >= rows)
        {
            return; // whole warps only: the row is uniform across a warp
        }

        float sum = KernelMath.WarpSum(RowDot(w, x, (long)row * chunks, chunks, type));
        if (Warp.LaneIdx == 0)
        {
            y[row] = accumulate != 0 ? y[row] + sum : sum;
        }
    }

    /// <summary>
    /// Three projections of one activation (Q, K and V) in one launch: warps 0..rows0-1 compute y0 = W0 · x, the
    /// next rows1 warps y1 = W1 · x, the rest y2 = W2 · x. One launch instead of three, and the small K/V products
    /// fill the device alongside Q instead of running alone at low occupancy.
    /// </summary>
    public static void Gemv3(
        ArrayView<U4> w0, ArrayView<U4> w1, ArrayView<U4> w2, ArrayView<F4> x,
        ArrayView<float> y0, ArrayView<float> y1, ArrayView<float> y2, int rows0, int rows1, int rows2, int chunks, int type)
    {
        int row = Grid.GlobalIndex.X / Warp.WarpSize;
        if (row >= rows0 + rows1 + rows2)
        {
            return;
        }

        ArrayView<U4> w = w0;
        ArrayView<float> y = y0;
        if (row >= rows0 + rows1)
        {
            w = w2;
            y = y2;
            row -= rows0 + rows1;
        }
        else if (row >= rows0)
        {
            w = w1;
            y = y1;
            row -= rows0;
        }

        float sum = KernelMath.WarpSum(RowDot(w, x, (long)row * chunks, chunks, type));
        if (Warp.LaneIdx == 0)
        {
            y[row] = sum;
        }
    }

    /// <summary>
    /// The SwiGLU input of the FFN in one launch: y[row] = silu(Wg[row] · x) * (Wu[row] · x) (llama.cpp's
    /// ggml_swiglu). Each warp reads a gate row and an up row; the separate SwiGLU pass and its launch disappear.
    /// </summary>
    public static void GemvSwiGlu(ArrayView<U4> wg, ArrayView<U4> wu, ArrayView<F4> x, ArrayView<float> y, int rows, int chunks, int type)
    {
        int row = Grid.GlobalIndex.X / Warp.WarpSize;
        if (row >= rows)
        {
            return;
        }

        long rowBase = (long)row * chunks;
        float g = KernelMath.WarpSum(RowDot(wg, x, rowBase, chunks, type));
        float u = KernelMath.WarpSum(RowDot(wu, x, rowBase, chunks, type));
        if (Warp.LaneIdx == 0)
        {
            y[row] = g / (1.0f + XMath.Exp(-g)) * u;
        }
    }

    // ---- batched (prompt) matmul: one warp per weight row, each weight load reused for up to 8 activation rows ----

    /// <summary>Eight consecutive weights of a row, decoded to float.</summary>
    private struct W8
    {
        public float A;
        public float B;
        public float C;
        public float D;
        public float E;
        public float F;
        public float G;
        public float H;
    }

    private static W8 LoadW8(ArrayView<U4> w, long rowBase, int chunk, int type)
    {
        W8 r;
        if (type == WeightCode.F32)
        {
            U4 p = w[rowBase + 2L * chunk];
            U4 q = w[rowBase + 2L * chunk + 1];
            r.A = Interop.IntAsFloat(p.X);
            r.B = Interop.IntAsFloat(p.Y);
            r.C = Interop.IntAsFloat(p.Z);
            r.D = Interop.IntAsFloat(p.W);
            r.E = Interop.IntAsFloat(q.X);
            r.F = Interop.IntAsFloat(q.Y);
            r.G = Interop.IntAsFloat(q.Z);
            r.H = Interop.IntAsFloat(q.W);
        }
        else if (type == WeightCode.BF16)
        {
            U4 v = w[rowBase + chunk];
            r.A = KernelMath.Bf16(v.X);
            r.B = KernelMath.Bf16High(v.X);
            r.C = KernelMath.Bf16(v.Y);
            r.D = KernelMath.Bf16High(v.Y);
            r.E = KernelMath.Bf16(v.Z);
            r.F = KernelMath.Bf16High(v.Z);
            r.G = KernelMath.Bf16(v.W);
            r.H = KernelMath.Bf16High(v.W);
        }
        else
        {
            U4 v = w[rowBase + chunk];
            r.A = KernelMath.F16(v.X);
            r.B = KernelMath.F16High(v.X);
            r.C = KernelMath.F16(v.Y);
            r.D = KernelMath.F16High(v.Y);
            r.E = KernelMath.F16(v.Z);
            r.F = KernelMath.F16High(v.Z);
            r.G = KernelMath.F16(v.W);
            r.H = KernelMath.F16High(v.W);
        }

        return r;
    }

    /// <summary>Weights · the 8 activations of chunk <paramref name="chunk"/> of x row <paramref name="xRow"/>.</summary>
    private static float Dot8(W8 v, ArrayView<F4> x, long xRow, int chunk)
    {
        F4 a = x[xRow + 2L * chunk];
        F4 b = x[xRow + 2L * chunk + 1];
        return v.A * a.X + v.B * a.Y
            + v.C * a.Z + v.D * a.W
            + v.E * b.X + v.F * b.Y
            + v.G * b.Z + v.H * b.W;
    }

    private static void StoreTile(ArrayView<float> y, MatMulArgs a, int row, int xRow, float sum)
    {
        sum = KernelMath.WarpSum(sum);
        if (Warp.LaneIdx == 0 && xRow < a.Rows)
        {
            long i = (long)xRow * a.OutRows + row;
            y[i] = a.Accumulate != 0 ? y[i] + sum : sum;
        }
    }

    /// <summary>
    /// Batched matmul for any plain type; needs Cols % 8 == 0 (16-byte weight and activation loads). Activation
    /// rows past the end are clamped to the last row for loading (in bounds) and not stored.
    /// </summary>
    public static void MatMulTiled(ArrayView<U4> w, ArrayView<F4> x, ArrayView<float> y, MatMulArgs a)
    {
        int ws = Warp.WarpSize;
        int row = Grid.GlobalIndex.X / ws;
        if (row >= a.OutRows)
        {
            return;
        }

        int chunks = a.Cols / 8;
        long rowBase = (long)row * (a.Type == WeightCode.F32 ? 2 * chunks : chunks);
        long xStride = a.Cols / 4;
        int last = a.Rows - 1;
        for (int r0 = 0; r0 < a.Rows; r0 += 8)
        {
            long x0 = XMath.Min(r0, last) * xStride;
            long x1 = XMath.Min(r0 + 1, last) * xStride;
            long x2 = XMath.Min(r0 + 2, last) * xStride;
            long x3 = XMath.Min(r0 + 3, last) * xStride;
            long x4 = XMath.Min(r0 + 4, last) * xStride;
            long x5 = XMath.Min(r0 + 5, last) * xStride;
            long x6 = XMath.Min(r0 + 6, last) * xStride;
            long x7 = XMath.Min(r0 + 7, last) * xStride;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
            for (int c = Warp.LaneIdx; c < chunks; c += ws)
            {
                W8 v = LoadW8(w, rowBase, c, a.Type);
                s0 += Dot8(v, x, x0, c);
                s1 += Dot8(v, x, x1, c);
                s2 += Dot8(v, x, x2, c);
                s3 += Dot8(v, x, x3, c);
                s4 += Dot8(v, x, x4, c);
                s5 += Dot8(v, x, x5, c);
                s6 += Dot8(v, x, x6, c);
                s7 += Dot8(v, x, x7, c);
            }

            StoreTile(y, a, row, r0, s0);
            StoreTile(y, a, row, r0 + 1, s1);
            StoreTile(y, a, row, r0 + 2, s2);
            StoreTile(y, a, row, r0 + 3, s3);
            StoreTile(y, a, row, r0 + 4, s4);
            StoreTile(y, a, row, r0 + 5, s5);
            StoreTile(y, a, row, r0 + 6, s6);
            StoreTile(y, a, row, r0 + 7, s7);
        }
    }

    /// <summary>
    /// Fallback for rows whose byte length is not a multiple of 16 (no vector loads possible): one warp per weight
    /// row, scalar loads, any plain type, any number of activation rows.
    /// </summary>
    public static void MatMulScalar(ArrayView<uint> w, ArrayView<float> x, ArrayView<float> y, MatMulArgs a)
    {
        int ws = Warp.WarpSize;
        int row = Grid.GlobalIndex.X / ws;
        if (row >= a.OutRows)
        {
            return;
        }

        long rowBase = (long)row * a.Cols;
        for (int r = 0; r < a.Rows; r++)
        {
            long xBase = (long)r * a.Cols;
            float sum = 0;
            for (int c = Warp.LaneIdx; c < a.Cols; c += ws)
            {
                sum += KernelMath.LoadWeight(w, a.Type, rowBase + c) * x[xBase + c];
            }

            StoreTile(y, a, row, r, sum);
        }
    }
}

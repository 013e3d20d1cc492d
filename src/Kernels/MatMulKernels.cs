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
/// <summary>Shape of a norm-fused decode GEMV: up to three weights' rows, 16-byte chunks per row, weight and norm types.</summary>
public struct NormGemvArgs
{
    public int Rows0;
    public int Rows1;
    public int Rows2;
    public int Chunks;
    public int Type;
    public int NormType;
    public float Eps;
}

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

    // ---- decode GEMV with the RMSNorm before it folded in: y = W · (x ⊙ g) · rsqrt(mean(x²) + eps) ----

    /// <summary>One 16-byte chunk's share: its 8 weights · (x ⊙ g) over the same 8 activations, and Σ x² of them.</summary>
    private struct DotSquares
    {
        public float Dot;
        public float Squares;
    }

    private static F4 Mul(F4 a, F4 b)
    {
        F4 r;
        r.X = a.X * b.X;
        r.Y = a.Y * b.Y;
        r.Z = a.Z * b.Z;
        r.W = a.W * b.W;
        return r;
    }

    /// <summary>Four norm weights from the low and high halves of two 16-bit words, or four float32 words.</summary>
    private static F4 Norm4(uint p, uint q, int type)
    {
        F4 r;
        if (type == WeightCode.BF16)
        {
            r.X = KernelMath.Bf16(p);
            r.Y = KernelMath.Bf16High(p);
            r.Z = KernelMath.Bf16(q);
            r.W = KernelMath.Bf16High(q);
        }
        else
        {
            r.X = KernelMath.F16(p);
            r.Y = KernelMath.F16High(p);
            r.Z = KernelMath.F16(q);
            r.W = KernelMath.F16High(q);
        }

        return r;
    }

    /// <summary>
    /// Chunk <paramref name="c"/> (8 values) of a 16-bit weight row <paramref name="v"/> against x ⊙ g, g the norm
    /// weight in its stored type (F32: two 16-byte vectors a chunk; F16/BF16: one). The type branches are uniform.
    /// </summary>
    private static DotSquares NormChunk(U4 v, ArrayView<F4> x, ArrayView<U4> g, int c, int type, int normType)
    {
        F4 a = x[2 * c];
        F4 b = x[2 * c + 1];
        F4 ga;
        F4 gb;
        if (normType == WeightCode.F32)
        {
            ga = g.Cast<F4>()[2 * c];
            gb = g.Cast<F4>()[2 * c + 1];
        }
        else
        {
            U4 n = g[c];
            ga = Norm4(n.X, n.Y, normType);
            gb = Norm4(n.Z, n.W, normType);
        }

        DotSquares r;
        r.Squares = a.X * a.X + a.Y * a.Y + a.Z * a.Z + a.W * a.W + b.X * b.X + b.Y * b.Y + b.Z * b.Z + b.W * b.W;
        r.Dot = type == WeightCode.BF16 ? DotBf16(v, Mul(a, ga), Mul(b, gb)) : DotF16(v, Mul(a, ga), Mul(b, gb));
        return r;
    }

    /// <summary>
    /// This lane's share of W[row] · (x ⊙ g) and of Σ x² for a 16-bit row (RowDot's loop: four 16-byte weight loads
    /// in flight per lane). Every warp sums the squares of the whole x itself, so no norm pass runs before it.
    /// </summary>
    private static DotSquares RowDotNorm(ArrayView<U4> w, ArrayView<F4> x, ArrayView<U4> g, long rowBase, int chunks, int type, int normType)
    {
        int ws = Warp.WarpSize;
        float acc0 = 0;
        float acc1 = 0;
        float squares = 0;
        int c = Warp.LaneIdx;
        for (; c + 3 * ws < chunks; c += 4 * ws)
        {
            U4 v0 = w[rowBase + c];
            U4 v1 = w[rowBase + c + ws];
            U4 v2 = w[rowBase + c + 2 * ws];
            U4 v3 = w[rowBase + c + 3 * ws];
            DotSquares p0 = NormChunk(v0, x, g, c, type, normType);
            DotSquares p1 = NormChunk(v1, x, g, c + ws, type, normType);
            DotSquares p2 = NormChunk(v2, x, g, c + 2 * ws, type, normType);
            DotSquares p3 = NormChunk(v3, x, g, c + 3 * ws, type, normType);
            acc0 += p0.Dot + p2.Dot;
            acc1 += p1.Dot + p3.Dot;
            squares += (p0.Squares + p1.Squares) + (p2.Squares + p3.Squares);
        }

        for (; c < chunks; c += ws)
        {
            DotSquares p = NormChunk(w[rowBase + c], x, g, c, type, normType);
            acc0 += p.Dot;
            squares += p.Squares;
        }

        DotSquares r;
        r.Dot = acc0 + acc1;
        r.Squares = squares;
        return r;
    }

    /// <summary>The warp's dot and squares summed across lanes, scaled by 1/rms as NormKernels.RmsNorm computes it.</summary>
    private static float Normalized(DotSquares s, int cols, float eps) => KernelMath.WarpSum(s.Dot) * InverseRms(s.Squares, cols, eps);

    /// <summary>1/sqrt(mean(x²) + eps) from each lane's share of Σ x².</summary>
    private static float InverseRms(float laneSquares, int cols, float eps) => 1.0f / XMath.Sqrt(KernelMath.WarpSum(laneSquares) / cols + eps);

    /// <summary>
    /// <see cref="Gemv3"/> of the RMSNorm of x: y_i = W_i · (x ⊙ g) / rms(x), for 16-bit weights — the attention
    /// norm and the Q/K/V projections in one launch (the normalized x is never written).
    /// </summary>
    public static void Gemv3Norm(
        ArrayView<U4> w0, ArrayView<U4> w1, ArrayView<U4> w2, ArrayView<F4> x, ArrayView<U4> g,
        ArrayView<float> y0, ArrayView<float> y1, ArrayView<float> y2, NormGemvArgs a)
    {
        int row = Grid.GlobalIndex.X / Warp.WarpSize;
        if (row >= a.Rows0 + a.Rows1 + a.Rows2)
        {
            return;
        }

        ArrayView<U4> w = w0;
        ArrayView<float> y = y0;
        if (row >= a.Rows0 + a.Rows1)
        {
            w = w2;
            y = y2;
            row -= a.Rows0 + a.Rows1;
        }
        else if (row >= a.Rows0)
        {
            w = w1;
            y = y1;
            row -= a.Rows0;
        }

        float sum = Normalized(RowDotNorm(w, x, g, (long)row * a.Chunks, a.Chunks, a.Type, a.NormType), a.Chunks * 8, a.Eps);
        if (Warp.LaneIdx == 0)
        {
            y[row] = sum;
        }
    }

    /// <summary><see cref="GemvSwiGlu"/> of the RMSNorm of x: the FFN norm, gate, up and SwiGLU in one launch.</summary>
    public static void GemvSwiGluNorm(ArrayView<U4> wg, ArrayView<U4> wu, ArrayView<F4> x, ArrayView<U4> g, ArrayView<float> y, NormGemvArgs a)
    {
        int row = Grid.GlobalIndex.X / Warp.WarpSize;
        if (row >= a.Rows0)
        {
            return;
        }

        // the norm's scale once, from the gate pass (the up pass sums the same squares in the same order)
        long rowBase = (long)row * a.Chunks;
        DotSquares gs = RowDotNorm(wg, x, g, rowBase, a.Chunks, a.Type, a.NormType);
        float scale = InverseRms(gs.Squares, a.Chunks * 8, a.Eps);
        float gate = KernelMath.WarpSum(gs.Dot) * scale;
        float up = KernelMath.WarpSum(RowDotNorm(wu, x, g, rowBase, a.Chunks, a.Type, a.NormType).Dot) * scale;
        if (Warp.LaneIdx == 0)
        {
            y[row] = gate / (1.0f + XMath.Exp(-gate)) * up;
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
        else
        {
            r = Decode8(w[rowBase + chunk], type);
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

    // ---- prompt GEMM through shared memory: each weight tile is read once per tile of activation rows ----

    /// <summary>Depth (columns) of one shared-memory step of <see cref="MatMulShared"/>.</summary>
    public const int SharedDepth = 16;

    /// <summary>Largest tile side (activation rows and weight rows per group): 16 × 16 threads of a 4 × 4 output block each.</summary>
    public const int MaxSharedTile = 64;

    // a tile row in shared memory is padded by 4 floats so the transposing stores of a group spread over the banks
    private const int SharedStride = MaxSharedTile + 4;

    /// <summary>
    /// Batched matmul for prompts: y[m, n] (+)= Σ_k x[m, k] · W[n, k] for plain weights, needing Cols % 16 == 0. A group of
    /// side² threads (<paramref name="side"/> = tile / 4) computes a tile × tile block of y — thread (ty, tx) the 4 × 4
    /// outputs of activation rows ty·4.. and weight rows tx·4.. — stepping through the columns 16 at a time: the group
    /// loads the step's activation and weight tiles (weights widened to float32) into shared memory, transposed so that
    /// a thread reads its four activations and four weights of a column with two 16-byte loads, then each thread does
    /// 16 multiply-adds per column. Where <see cref="MatMulTiled"/> reads a weight row again for every 8 activation rows,
    /// this reads it once per tile of rows (64 on a GPU). Rows and weight rows past the ends load zeros and store nothing.
    /// </summary>
    public static void MatMulShared(ArrayView<U4> w, ArrayView<F4> x, ArrayView<float> y, MatMulArgs a, int side,
        ArrayView<uint> quants, ArrayView<uint> high, ArrayView<float> scales, ArrayView<uint> aux)
    {
        ArrayView<F4> xs = SharedMemory.Allocate<F4>(SharedDepth * SharedStride / 4);
        ArrayView<F4> ws = SharedMemory.Allocate<F4>(SharedDepth * SharedStride / 4);
        ArrayView<float> xsf = xs.Cast<float>();
        ArrayView<float> wsf = ws.Cast<float>();
        int tile = side * 4;
        int threads = side * side;
        int tid = Group.IdxX;
        int ty = tid / side;
        int tx = tid - ty * side;
        int tilesN = (a.OutRows + tile - 1) / tile;
        int m0 = Grid.IdxX / tilesN * tile;
        int n0 = (Grid.IdxX - Grid.IdxX / tilesN * tilesN) * tile;
        long xRowF4 = a.Cols / 4;
        long wRowU4 = a.Type == WeightCode.F32 ? a.Cols / 4 : a.Cols / 8;
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (int k0 = 0; k0 < a.Cols; k0 += SharedDepth)
        {
            // activations: 4 float4s per row of the step; xs[k][m]
            for (int i = tid; i < tile * 4; i += threads)
            {
                int m = i / 4;
                int part = i - m * 4;
                F4 v = default;
                if (m0 + m < a.Rows)
                {
                    v = x[(m0 + m) * xRowF4 + k0 / 4 + part];
                }

                int at = part * 4 * SharedStride + m;
                xsf[at] = v.X;
                xsf[at + SharedStride] = v.Y;
                xsf[at + 2 * SharedStride] = v.Z;
                xsf[at + 3 * SharedStride] = v.W;
            }

            // weights: 2 vectors of 8 16-bit values (or 4 of 4 float32s) per row of the step, widened; a block-quantized
            // weight (w empty) is dequantized four values at a time; ws[k][n]
            bool plain = a.Type == WeightCode.F32 || a.Type == WeightCode.F16 || a.Type == WeightCode.BF16;
            for (int i = tid; !plain && i < tile * 4; i += threads)
            {
                int n = i / 4;
                int e = k0 + (i - n * 4) * 4;
                int at = (e - k0) * SharedStride + n;
                bool inside = n0 + n < a.OutRows;
                wsf[at] = inside ? QuantMatMulKernels.Dequant(n0 + n, e, quants, high, scales, aux, a.Cols, a.Type) : 0.0f;
                wsf[at + SharedStride] = inside ? QuantMatMulKernels.Dequant(n0 + n, e + 1, quants, high, scales, aux, a.Cols, a.Type) : 0.0f;
                wsf[at + 2 * SharedStride] = inside ? QuantMatMulKernels.Dequant(n0 + n, e + 2, quants, high, scales, aux, a.Cols, a.Type) : 0.0f;
                wsf[at + 3 * SharedStride] = inside ? QuantMatMulKernels.Dequant(n0 + n, e + 3, quants, high, scales, aux, a.Cols, a.Type) : 0.0f;
            }

            int perRow = a.Type == WeightCode.F32 ? 4 : 2;
            for (int i = tid; plain && i < tile * perRow; i += threads)
            {
                int n = i / perRow;
                int part = i - n * perRow;
                U4 v = default;
                if (n0 + n < a.OutRows)
                {
                    v = w[(n0 + n) * wRowU4 + k0 / (a.Type == WeightCode.F32 ? 4 : 8) + part];
                }

                if (a.Type == WeightCode.F32)
                {
                    int at = part * 4 * SharedStride + n;
                    wsf[at] = Interop.IntAsFloat(v.X);
                    wsf[at + SharedStride] = Interop.IntAsFloat(v.Y);
                    wsf[at + 2 * SharedStride] = Interop.IntAsFloat(v.Z);
                    wsf[at + 3 * SharedStride] = Interop.IntAsFloat(v.W);
                }
                else
                {
                    W8 d = Decode8(v, a.Type);
                    int at = part * 8 * SharedStride + n;
                    wsf[at] = d.A;
                    wsf[at + SharedStride] = d.B;
                    wsf[at + 2 * SharedStride] = d.C;
                    wsf[at + 3 * SharedStride] = d.D;
                    wsf[at + 4 * SharedStride] = d.E;
                    wsf[at + 5 * SharedStride] = d.F;
                    wsf[at + 6 * SharedStride] = d.G;
                    wsf[at + 7 * SharedStride] = d.H;
                }
            }

            Group.Barrier();
            for (int k = 0; k < SharedDepth; k++)
            {
                F4 xv = xs[k * (SharedStride / 4) + ty];
                F4 wv = ws[k * (SharedStride / 4) + tx];
                c00 += xv.X * wv.X;
                c01 += xv.X * wv.Y;
                c02 += xv.X * wv.Z;
                c03 += xv.X * wv.W;
                c10 += xv.Y * wv.X;
                c11 += xv.Y * wv.Y;
                c12 += xv.Y * wv.Z;
                c13 += xv.Y * wv.W;
                c20 += xv.Z * wv.X;
                c21 += xv.Z * wv.Y;
                c22 += xv.Z * wv.Z;
                c23 += xv.Z * wv.W;
                c30 += xv.W * wv.X;
                c31 += xv.W * wv.Y;
                c32 += xv.W * wv.Z;
                c33 += xv.W * wv.W;
            }

            Group.Barrier();
        }

        int mBase = m0 + ty * 4;
        int nBase = n0 + tx * 4;
        StoreRow4(y, a, mBase, nBase, c00, c01, c02, c03);
        StoreRow4(y, a, mBase + 1, nBase, c10, c11, c12, c13);
        StoreRow4(y, a, mBase + 2, nBase, c20, c21, c22, c23);
        StoreRow4(y, a, mBase + 3, nBase, c30, c31, c32, c33);
    }

    /// <summary>Eight 16-bit weights of one vector widened to float (F16 or BF16).</summary>
    private static W8 Decode8(U4 v, int type)
    {
        W8 r;
        if (type == WeightCode.BF16)
        {
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

    /// <summary>y[m, n..n+4) (+)= v0..v3, the ones inside the output.</summary>
    private static void StoreRow4(ArrayView<float> y, MatMulArgs a, int m, int n, float v0, float v1, float v2, float v3)
    {
        if (m >= a.Rows)
        {
            return;
        }

        long i = (long)m * a.OutRows + n;
        StoreOne(y, a, i, n, v0);
        StoreOne(y, a, i + 1, n + 1, v1);
        StoreOne(y, a, i + 2, n + 2, v2);
        StoreOne(y, a, i + 3, n + 3, v3);
    }

    private static void StoreOne(ArrayView<float> y, MatMulArgs a, long i, int n, float v)
    {
        if (n < a.OutRows)
        {
            y[i] = a.Accumulate != 0 ? y[i] + v : v;
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

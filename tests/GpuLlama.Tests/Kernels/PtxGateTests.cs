using System.Reflection;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Kernels;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Xunit;

namespace GpuLlama.Tests.Kernels;

/// <summary>
/// GPU-free gate on the CUDA code path: every kernel is compiled to PTX for sm_90 the way the CUDA accelerator
/// would (ilgpu-notes.md appendix B), each in its own Context because one bad kernel can poison a context. The
/// emulated tests cannot see these failures: an unresolved <c>.extern .func</c> (e.g. MathF.FusedMultiplyAdd) only
/// fails when the driver loads the module, and local-memory spills or scalar weight loads only cost speed.
/// </summary>
public sealed class PtxGateTests
{
    private const BindingFlags Static = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static;

    /// <summary>Kernel, whether it is explicitly grouped, whether it is hot (no .local allowed), whether it must use 16-byte loads.</summary>
    public static TheoryData<string, bool, bool, bool> Kernels() => new()
    {
        { "NormKernels.RmsNorm", true, true, false },
        { "MatMulKernels.Gemv", true, true, true },
        { "MatMulKernels.Gemv3", true, true, true },
        { "MatMulKernels.GemvSwiGlu", true, true, true },
        { "MatMulKernels.Gemv3Norm", true, true, true },
        { "MatMulKernels.GemvSwiGluNorm", true, true, true },
        { "MatMulKernels.MatMulTiled", true, true, true },
        { "MatMulKernels.MatMulShared", true, true, true },
        { "MatMulKernels.MatMulScalar", true, true, false },
        { "AttentionKernels.Rope", false, false, false },
        { "AttentionKernels.StoreKv", false, false, false },
        { "AttentionKernels.RopeStoreKv", false, true, false },
        { "AttentionKernels.StoreCache", false, false, false },
        { "AttentionKernels.LoadCache", false, false, false },
        { "AttentionKernels.Attention", true, true, false },
        { "AttentionKernels.AttentionCombine", true, true, false },
        { "AttentionKernels.AttentionDecode", true, true, true },
        { "ElementwiseKernels.SwiGlu", false, false, false },
        { "ElementwiseKernels.Add", false, false, false },
        { "ElementwiseKernels.Embed", false, false, false },
        { "ElementwiseKernels.Argmax", true, false, false },
        { "QuantMatMulKernels.Q8_0Kernel", true, true, true },
        { "QuantMatMulKernels.Q4_0Kernel", true, true, true },
        { "QuantMatMulKernels.Q4_1Kernel", true, true, true },
        { "QuantMatMulKernels.Q5_0Kernel", true, true, true },
        { "QuantMatMulKernels.Q5_1Kernel", true, true, true },
        { "QuantMatMulKernels.Q4_KKernel", true, true, true },
        { "QuantMatMulKernels.Q5_KKernel", true, true, false },
        { "QuantMatMulKernels.Q6_KKernel", true, true, true },
        { "QuantMatMulKernels.IQ4_NLKernel", true, true, true },
        { "QuantMatMulKernels.IQ4_XSKernel", true, true, true },
        { "QuantMatMulKernels.EmbedKernel", false, true, false },
    };

    /// <summary>Classes whose kernels are gated; QuantMatMulKernels keeps its kernels private (the <c>…Kernel</c> methods).</summary>
    private static readonly string[] KernelClasses = ["NormKernels", "MatMulKernels", "AttentionKernels", "ElementwiseKernels", "QuantMatMulKernels"];

    internal static MethodInfo Find(string name)
    {
        string[] parts = name.Split('.');
        Type type = typeof(IlgpuDevice).Assembly.GetType("GpuLlama.Kernels." + parts[0], throwOnError: true)!;
        return type.GetMethod(parts[1], Static) ?? throw new MissingMethodException(name);
    }

    internal static string CompilePtx(MethodInfo kernel, bool explicitlyGrouped)
    {
        using Context ctx = Context.Create(b => b.Default().EnableAlgorithms().Optimize(OptimizationLevel.O2));
        using var backend = new PTXBackend(ctx, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90,
            CudaInstructionSet.ISA_88, nvvmAPI: null);
        EntryPointDescription entry = explicitlyGrouped
            ? EntryPointDescription.FromExplicitlyGroupedKernel(kernel)
            : EntryPointDescription.FromImplicitlyGroupedKernel(kernel);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, default);
        return compiled.PTXAssembly;
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void Kernel_compiles_to_clean_PTX_for_sm_90(string name, bool explicitlyGrouped, bool hot, bool vectorLoads)
    {
        string ptx = CompilePtx(Find(name), explicitlyGrouped);
        if (Environment.GetEnvironmentVariable("GPULLAMA_PTX_DUMP") is { Length: > 0 } dir)
        {
            File.WriteAllText(Path.Combine(dir, name + ".ptx"), ptx);
        }

        Assert.DoesNotContain(".extern .func", ptx);
        if (hot)
        {
            Assert.DoesNotContain(".local", ptx);
        }

        if (explicitlyGrouped && name.StartsWith("QuantMatMulKernels.", StringComparison.Ordinal))
        {
            // One warp per output row: the partial sums must meet in register shuffles, not shared memory or atomics.
            Assert.Contains("shfl.sync.bfly", ptx);
        }

        if (vectorLoads)
        {
            Assert.True(ptx.Contains("ld.global.v4", StringComparison.Ordinal) || ptx.Contains("ld.global.nc.v4", StringComparison.Ordinal),
                $"{name}: no 16-byte global loads in the PTX");
        }
    }

    [Fact]
    public void F16_weights_widen_with_the_hardware_conversion_and_activations_stay_float32_on_PTX()
    {
        // Activations are never rounded to half (see IDevice.MatMul): the only conversion is f16 -> f32 of the weights.
        string ptx = CompilePtx(Find("MatMulKernels.Gemv"), true);
        Assert.Contains("cvt.f32.f16", ptx);
        Assert.DoesNotContain("cvt.rn.f16.f32", ptx);
    }

    [Fact]
    public void Shared_memory_GEMM_reads_its_tiles_with_16_byte_shared_loads()
    {
        // a thread's four activations and four weights of a column are one ld.shared.v4 each: the inner loop's only loads
        string ptx = CompilePtx(Find("MatMulKernels.MatMulShared"), true);
        Assert.Contains("ld.shared.v4.f32", ptx);
        Assert.Contains("bar.sync", ptx);
    }

    [Fact]
    public void Every_kernel_is_gated()
    {
        var gated = Kernels().Select(row => (string)row[0]).ToHashSet();
        foreach (string c in KernelClasses)
        {
            Type type = typeof(IlgpuDevice).Assembly.GetType("GpuLlama.Kernels." + c, throwOnError: true)!;
            foreach (MethodInfo m in type.GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly))
            {
                Assert.Contains($"{c}.{m.Name}", gated);
            }

            foreach (MethodInfo m in type.GetMethods(BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly))
            {
                if (m.Name.EndsWith("Kernel", StringComparison.Ordinal))
                {
                    Assert.Contains($"{c}.{m.Name}", gated);
                }
            }
        }

        // Every block format the device computes has its MatMul kernel here.
        foreach (DType t in Enum.GetValues<DType>().Where(QuantRepack.Supports))
        {
            Assert.Contains($"QuantMatMulKernels.{t}Kernel", gated);
        }
    }
}

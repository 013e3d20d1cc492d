using System.Globalization;
using System.Reflection;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Parameters;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace GpuLlama.Bench;

/// <summary>
/// What one benchmark operation (one call of the benchmark method) moves and computes, derived from the [Params]
/// alone (no setup needed), so the summary can show throughput next to BenchmarkDotNet's time columns.
/// </summary>
public interface IKernelWork
{
    /// <summary>Bytes read plus bytes written by one operation (weights, KV cache, activations), each counted once.</summary>
    long Bytes { get; }

    /// <summary>Floating-point operations of one operation (a multiply-add counts 2); 0 where not meaningful.</summary>
    long Flops { get; }
}

/// <summary>Bytes/op, GB/s = Bytes/op ÷ mean time, GFLOP/s = Flops/op ÷ mean time, for benchmarks that implement <see cref="IKernelWork"/>.</summary>
public sealed class WorkColumn : IColumn
{
    private enum Kind
    {
        Bytes,
        GBps,
        GFlops,
    }

    public static readonly IColumn BytesPerOp = new WorkColumn(Kind.Bytes);
    public static readonly IColumn GBps = new WorkColumn(Kind.GBps);
    public static readonly IColumn GFlops = new WorkColumn(Kind.GFlops);

    private readonly Kind _kind;

    private WorkColumn(Kind kind) => _kind = kind;

    public string Id => "GpuLlama." + _kind;

    public string ColumnName => _kind switch
    {
        Kind.Bytes => "Bytes/op",
        Kind.GBps => "GB/s",
        _ => "GFLOP/s",
    };

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => (int)_kind;

    public bool IsNumeric => true;

    public UnitType UnitType => _kind == Kind.Bytes ? UnitType.Size : UnitType.Dimensionless;

    public string Legend => _kind switch
    {
        Kind.Bytes => "Bytes read + written by one operation (weights, KV cache, activations)",
        Kind.GBps => "Bytes/op ÷ Mean, in 10^9 bytes per second (compare with `gpullama bench --memory`)",
        _ => "Floating-point operations per op ÷ Mean, in 10^9 per second (a multiply-add counts 2)",
    };

    public bool IsAvailable(Summary summary) => summary.BenchmarksCases.Any(c => typeof(IKernelWork).IsAssignableFrom(c.Descriptor.Type));

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, summary.Style);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        if (Work(benchmarkCase) is not { } work)
        {
            return "-";
        }

        if (_kind == Kind.Bytes)
        {
            return work.Bytes.ToString("N0", CultureInfo.InvariantCulture);
        }

        double? meanNs = summary[benchmarkCase]?.ResultStatistics?.Mean;
        long amount = _kind == Kind.GBps ? work.Bytes : work.Flops;
        if (meanNs is not > 0 || amount <= 0)
        {
            return "-";
        }

        // bytes per nanosecond = 10^9 bytes per second
        return (amount / meanNs.Value).ToString("F2", CultureInfo.InvariantCulture);
    }

    public override string ToString() => ColumnName;

    /// <summary>A fresh instance of the benchmark class with this case's [Params] set; null when it reports no work.</summary>
    internal static IKernelWork? Work(BenchmarkCase benchmarkCase)
    {
        Type type = benchmarkCase.Descriptor.Type;
        if (!typeof(IKernelWork).IsAssignableFrom(type))
        {
            return null;
        }

        object instance = Activator.CreateInstance(type)!;
        foreach (ParameterInstance p in benchmarkCase.Parameters.Items)
        {
            const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance;
            if (type.GetProperty(p.Name, flags) is { CanWrite: true } property)
            {
                property.SetValue(instance, p.Value);
            }
            else
            {
                type.GetField(p.Name, flags)?.SetValue(instance, p.Value);
            }
        }

        return (IKernelWork)instance;
    }
}

using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using GpuLlama.Bench;

// Micro-benchmarks of the CPU backend's hot kernels; see bench/README.md. Command-line options are BenchmarkDotNet's
// (--filter, --job, --list flat, --inProcess, …); the config adds the Bytes/op, GB/s and GFLOP/s columns.
IConfig config = DefaultConfig.Instance.AddColumn(WorkColumn.BytesPerOp, WorkColumn.GBps, WorkColumn.GFlops);
Summary[] summaries = [.. BenchmarkSwitcher.FromAssembly(typeof(WorkColumn).Assembly).Run(args, config)];

// A benchmark that threw (in setup or in the method) fails the run, so CI notices.
bool failed = summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success));
return failed ? 1 : 0;

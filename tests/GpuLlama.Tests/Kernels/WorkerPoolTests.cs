using GpuLlama.Devices;
using Xunit;

namespace GpuLlama.Tests.Kernels;

/// <summary>The CPU backend's thread pool: every index once, wake-ups after the workers went to sleep, failures.</summary>
public sealed class WorkerPoolTests
{
    [Theory]
    [InlineData(1, 10)]
    [InlineData(2, 1)]
    [InlineData(3, 1000)]
    [InlineData(4, 7)]
    public void Every_index_runs_once(int threads, int count)
    {
        using var pool = new WorkerPool(threads);
        var hits = new int[count];
        for (int round = 0; round < 50; round++)
        {
            pool.For(count, (start, end, slice) =>
            {
                for (int i = start; i < end; i++)
                {
                    Interlocked.Increment(ref hits[i]);
                }
            });
        }

        Assert.All(hits, h => Assert.Equal(50, h));
    }

    [Fact]
    public async Task Ops_after_the_workers_fell_asleep_still_finish()
    {
        // Alternate back-to-back ops (workers spinning) with pauses past the spin window (workers asleep), many times:
        // a lost wake-up shows as an op that never completes, caught by the timeout instead of hanging the suite.
        var run = Task.Run(() =>
        {
            using var pool = new WorkerPool(3);
            long total = 0;
            for (int round = 0; round < 300; round++)
            {
                pool.For(64, (start, end, slice) => Interlocked.Add(ref total, end - start));
                if (round % 3 == 0)
                {
                    Thread.Sleep(round % 2 == 0 ? 1 : 2);
                }
            }

            return total;
        });
        Task done = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(60)));
        Assert.True(done == run, "an op did not complete: a worker missed its wake-up");
        Assert.Equal(300 * 64, await run);
    }

    [Fact]
    public void A_failure_in_any_slice_reaches_the_caller()
    {
        using var pool = new WorkerPool(2);
        Assert.Throws<InvalidOperationException>(() => pool.For(2, (start, end, slice) =>
        {
            if (slice == 0)
            {
                throw new InvalidOperationException("caller's slice");
            }
        }));
        var e = Assert.Throws<AggregateException>(() => pool.For(2, (start, end, slice) =>
        {
            if (slice == 1)
            {
                throw new InvalidOperationException("worker's slice");
            }
        }));
        Assert.IsType<InvalidOperationException>(e.InnerException);
        int ran = 0;
        pool.For(2, (start, end, slice) => Interlocked.Increment(ref ran));
        Assert.Equal(2, ran);
    }
}

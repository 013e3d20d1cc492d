using System.Diagnostics;

namespace GpuLlama.Devices;

/// <summary>
/// A fixed set of worker threads for the CPU backend's data-parallel ops. Each op splits its range into a few
/// contiguous chunks per thread; every thread starts on its own first chunk and then takes the next free one from a
/// shared counter (as ggml's thread pool does), so a thread that the OS or a neighbouring VM slows down holds up one
/// chunk, not half the op. The calling thread takes part as slice 0. Unlike Parallel.For this allocates
/// nothing per call (the body is a cached delegate reading its arguments from the caller's fields), which keeps
/// decoding free of per-token garbage.
/// </summary>
/// <remarks>
/// A decode step is a few hundred ops of tens of microseconds each, so waking a sleeping thread for every op (a
/// futex round trip, 5–50 µs) would cost as much as the work. Workers therefore spin on the op counter for a while
/// after each op, as ggml's thread pool does, and only then sleep on their semaphore; the caller spins until the
/// slices are done. An idle engine costs nothing after <see cref="SpinTicks"/>.
/// </remarks>
internal sealed class WorkerPool : IDisposable
{
    private static readonly long SpinTicks = Stopwatch.Frequency / 2000; // 0.5 ms

    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _wake;
    private readonly int[] _sleeping;
    private Action<int, int, int>? _body;
    private int _count;
    private int _slices;
    private int _chunks;
    private int _nextChunk;
    private volatile int _generation;
    private int _pending;
    private volatile bool _stopping;
    private Exception? _failure;

    public WorkerPool(int threads)
    {
        Threads = Math.Max(1, threads);
        _threads = new Thread[Threads - 1];
        _wake = new SemaphoreSlim[Threads - 1];
        _sleeping = new int[Threads - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            int slice = i + 1;
            _wake[i] = new SemaphoreSlim(0);
            _threads[i] = new Thread(() => Work(slice)) { IsBackground = true, Name = $"gpullama-cpu-{slice}" };
            _threads[i].Start();
        }
    }

    public int Threads { get; }

    /// <summary>Chunks per thread and op: enough to even out a slowed thread, few enough to keep long sequential streams.</summary>
    private const int ChunksPerThread = 4;

    /// <summary>
    /// Runs body(start, end, slice) over [0, count) split into contiguous chunks (body may be called several times
    /// per slice, never twice for one index), and waits for all of them.
    /// </summary>
    public void For(int count, Action<int, int, int> body)
    {
        if (count <= 0)
        {
            return;
        }

        int slices = Math.Min(Threads, count);
        if (slices == 1)
        {
            body(0, count, 0);
            return;
        }

        _body = body;
        _count = count;
        _slices = slices;
        _chunks = Math.Min(count, slices * ChunksPerThread);
        _nextChunk = slices;
        _failure = null;
        Volatile.Write(ref _pending, Threads - 1);
        _generation++;
        for (int i = 0; i < _wake.Length; i++)
        {
            if (Interlocked.Exchange(ref _sleeping[i], 0) == 1)
            {
                _wake[i].Release();
            }
        }

        Exception? own = null;
        try
        {
            Run(0);
        }
        catch (Exception e)
        {
            own = e;
        }

        var spin = new SpinWait();
        while (Volatile.Read(ref _pending) != 0)
        {
            spin.SpinOnce(sleep1Threshold: -1);
        }

        _body = null;
        if (own is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(own);
        }

        if (_failure is { } failure)
        {
            throw new AggregateException(failure);
        }
    }

    private void Run(int slice)
    {
        if (slice >= _slices)
        {
            return;
        }

        for (int chunk = slice; chunk < _chunks; chunk = Interlocked.Increment(ref _nextChunk) - 1)
        {
            int start = (int)((long)_count * chunk / _chunks);
            int end = (int)((long)_count * (chunk + 1) / _chunks);
            _body!(start, end, slice);
        }
    }

    private void Work(int slice)
    {
        int seen = 0;
        int index = slice - 1;
        while (true)
        {
            WaitForOp(index, seen);
            if (_stopping)
            {
                return;
            }

            seen = _generation;
            try
            {
                Run(slice);
            }
            catch (Exception e)
            {
                _failure = e;
            }
            finally
            {
                Interlocked.Decrement(ref _pending);
            }
        }
    }

    /// <summary>Spins until the op counter moves past <paramref name="seen"/>, then sleeps until woken.</summary>
    private void WaitForOp(int index, int seen)
    {
        long deadline = Stopwatch.GetTimestamp() + SpinTicks;
        var spin = new SpinWait();
        while (_generation == seen && !_stopping)
        {
            if (Stopwatch.GetTimestamp() < deadline)
            {
                spin.SpinOnce(sleep1Threshold: -1);
                continue;
            }

            // Announce the sleep, then look once more: For either sees the flag and releases the semaphore, or
            // bumped the counter before the flag was up (then take the flag back, or the release it already made).
            // The flag is raised with a full fence: a plain store could still sit in the store buffer when the
            // counter is read (x86 lets a load pass an earlier store), and both sides would miss each other.
            Interlocked.Exchange(ref _sleeping[index], 1);
            if (_generation != seen || _stopping)
            {
                if (Interlocked.Exchange(ref _sleeping[index], 0) == 0)
                {
                    _wake[index].Wait();
                }

                return;
            }

            _wake[index].Wait();
            deadline = Stopwatch.GetTimestamp() + SpinTicks;
        }
    }

    public void Dispose()
    {
        _stopping = true;
        for (int i = 0; i < _wake.Length; i++)
        {
            if (Interlocked.Exchange(ref _sleeping[i], 0) == 1)
            {
                _wake[i].Release();
            }
        }

        foreach (Thread t in _threads)
        {
            t.Join();
        }

        foreach (SemaphoreSlim s in _wake)
        {
            s.Dispose();
        }
    }
}

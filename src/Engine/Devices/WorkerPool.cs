namespace GpuLlama.Devices;

/// <summary>
/// A fixed set of worker threads for the CPU backend's data-parallel ops. Each op splits its range into one
/// contiguous slice per thread; the calling thread runs slice 0 itself. Unlike Parallel.For this allocates
/// nothing per call (the body is a cached delegate reading its arguments from the caller's fields), which keeps
/// decoding free of per-token garbage.
/// </summary>
internal sealed class WorkerPool : IDisposable
{
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _start;
    private readonly CountdownEvent _done;
    private Action<int, int, int>? _body;
    private int _count;
    private volatile bool _stopping;
    private Exception? _failure;

    public WorkerPool(int threads)
    {
        Threads = Math.Max(1, threads);
        _threads = new Thread[Threads - 1];
        _start = new SemaphoreSlim[Threads - 1];
        _done = new CountdownEvent(1);
        for (int i = 0; i < _threads.Length; i++)
        {
            int slice = i + 1;
            _start[i] = new SemaphoreSlim(0);
            _threads[i] = new Thread(() => Work(slice)) { IsBackground = true, Name = $"gpullama-cpu-{slice}" };
            _threads[i].Start();
        }
    }

    public int Threads { get; }

    /// <summary>
    /// Runs body(start, end, slice) over [0, count) split into contiguous slices, one per thread (fewer when
    /// count is small), and waits for all of them.
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
        _failure = null;
        _done.Reset(slices - 1);
        for (int i = 0; i < slices - 1; i++)
        {
            _start[i].Release();
        }

        Run(0, slices);
        _done.Wait();
        _body = null;
        if (_failure is { } e)
        {
            throw new AggregateException(e);
        }
    }

    private void Run(int slice, int slices)
    {
        int start = (int)((long)_count * slice / slices);
        int end = (int)((long)_count * (slice + 1) / slices);
        _body!(start, end, slice);
    }

    private void Work(int slice)
    {
        while (true)
        {
            _start[slice - 1].Wait();
            if (_stopping)
            {
                return;
            }

            try
            {
                Run(slice, Math.Min(Threads, _count));
            }
            catch (Exception e)
            {
                _failure = e;
            }
            finally
            {
                _done.Signal();
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        foreach (SemaphoreSlim s in _start)
        {
            s.Release();
        }

        foreach (Thread t in _threads)
        {
            t.Join();
        }

        foreach (SemaphoreSlim s in _start)
        {
            s.Dispose();
        }

        _done.Dispose();
    }
}

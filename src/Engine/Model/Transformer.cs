using GpuLlama.Devices;
using GpuLlama.Formats;

namespace GpuLlama.Model;

/// <summary>
/// The forward pass of a Llama model, written once against <see cref="IDevice"/>: it names no file format, no
/// dtype and no concrete device. Each layer runs on the device the placement gives it; the hidden state hops
/// between devices only where consecutive layers differ. The prompt is processed in batches of up to
/// <see cref="BatchSize"/> tokens, generation one token at a time; nothing is allocated per token. A prompt batch of
/// at least the offload minimum runs the CPU's layers on the placement's first GPU, their weights streamed there
/// (<see cref="PromptOffload"/>).
/// </summary>
public sealed class Transformer : IDisposable
{
    private readonly ModelConfig _config;
    private readonly ModelWeights _weights;
    private readonly DevicePlacement _placement;
    private readonly AttentionShape _shape;
    private readonly Dictionary<IDevice, RunState> _states = [];
    private readonly KvCacheLayer[] _cache;
    private readonly float[] _hostLogits;
    private int _lastRows;
    private int _lastHiddenRows;
    private float[]? _hostHidden;

    // prompt offload: the device that runs streamed layers, their weight slots on it, and per streamed layer (null
    // for the others) each tensor's slot and where its bytes are, resolved once at construction
    private readonly IDevice? _offload;
    private readonly int _offloadMinBatch;
    private readonly Dictionary<PromptOffload.SlotKey, DeviceWeight> _slots = [];
    private readonly StreamedLayer?[] _streams = [];

    /// <param name="logitRows">How many positions of one batch can get logits (1 unless all-position logits are wanted).</param>
    /// <param name="offloadMinBatch">Smallest batch that runs the CPU's layers on a GPU of the placement (0 = never).</param>
    /// <param name="cacheTypeK">How the KV caches store keys (llama.cpp's default F16; its goldens are made with F32).</param>
    /// <param name="cacheTypeV">How the KV caches store values.</param>
    public Transformer(ModelConfig config, ModelWeights weights, DevicePlacement placement, int contextLength, int batchSize = 512, int logitRows = 1,
        int offloadMinBatch = PromptOffload.DefaultMinBatch, KvCacheType cacheTypeK = KvCacheType.F16, KvCacheType cacheTypeV = KvCacheType.F16)
    {
        KvCacheTypes.CheckHeadDim(cacheTypeK, cacheTypeV, config.HeadDim);
        _config = config;
        _weights = weights;
        _placement = placement;
        _shape = AttentionShape.Of(config);
        ContextLength = contextLength;
        CacheTypeK = cacheTypeK;
        CacheTypeV = cacheTypeV;
        BatchSize = Math.Max(1, Math.Min(batchSize, contextLength));
        LogitRows = Math.Max(1, Math.Min(logitRows, BatchSize));
        float[] rope = RopeTable.Build(config, contextLength);
        try
        {
            foreach (IDevice d in placement.Devices)
            {
                _states[d] = new RunState(d, config, BatchSize, ReferenceEquals(d, placement.Output) ? LogitRows : 0, rope);
            }

            _cache = new KvCacheLayer[config.Layers];
            for (int l = 0; l < config.Layers; l++)
            {
                _cache[l] = placement.Layers[l].AllocateKv(contextLength, config.KvDim, cacheTypeK, cacheTypeV);
            }

            IDevice? target = PromptOffload.Target(placement.Layers, placement.Output, d => d.Kind == DeviceKind.Cpu);
            if (target is { StreamsWeights: true } && PromptOffload.Active(offloadMinBatch, BatchSize))
            {
                IWeightSource source = weights.Source;
                bool[] streamed = PromptOffload.StreamedLayers(config, source.Tensors, l => placement.Layers[l].Kind == DeviceKind.Cpu);
                if (streamed.Any(x => x))
                {
                    // the slots are allocated (and their formats' kernels compiled) now, so memory is what the plan says from the start
                    foreach ((PromptOffload.SlotKey key, TensorInfo first) in PromptOffload.Slots(config, source.Tensors, streamed))
                    {
                        try
                        {
                            _slots[key] = target.Upload(source.View(first));
                        }
                        catch (GpuLlamaException e)
                        {
                            throw new GpuLlamaException($"{e.Message} (for prompt offload's weight slots: --no-op-offload does without them)", e);
                        }
                    }

                    _offload = target;
                    _offloadMinBatch = offloadMinBatch;
                    _streams = new StreamedLayer?[config.Layers];
                    for (int l = 0; l < config.Layers; l++)
                    {
                        if (streamed[l])
                        {
                            TensorInfo[] tensors = [.. TensorNames.LayerTensors(l).Select(n => source.Tensors[n])];
                            DeviceWeight[] slots = [.. tensors.Select((t, role) => _slots[PromptOffload.SlotKey.Of(role, t)])];
                            _streams[l] = new StreamedLayer(LayerWeights.Of(slots), slots, [.. tensors.Select(source.View)]);
                        }
                    }
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }

        _hostLogits = new float[config.VocabSize];
    }

    public int ContextLength { get; }

    public int BatchSize { get; }

    public int LogitRows { get; }

    public KvCacheType CacheTypeK { get; }

    public KvCacheType CacheTypeV { get; }

    /// <summary>The GPU that runs the CPU's layers for prompt batches of <see cref="OffloadMinBatch"/>+ tokens; null when none does.</summary>
    public IDevice? OffloadDevice => _offload;

    public int OffloadMinBatch => _offloadMinBatch;

    /// <summary>How many of the layers placed on the CPU stream to <see cref="OffloadDevice"/> (all but those holding a format it lacks).</summary>
    public int StreamedLayerCount => _streams.Count(x => x is not null);

    /// <summary>Layer runs so far that streamed their weights to <see cref="OffloadDevice"/> (a layer once per batch).</summary>
    public long StreamedLayerRuns { get; private set; }

    /// <summary>
    /// Runs tokens at positions position.. through the model, leaving the logits of the last token (or of every
    /// token of the last batch, with <paramref name="allLogits"/>) on the output device.
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, int position, bool allLogits = false)
    {
        if (position < 0 || position + tokens.Length > ContextLength)
        {
            throw new GpuLlamaException($"{tokens.Length} tokens at position {position} exceed the context size of {ContextLength} (use --ctx)");
        }

        if (allLogits && tokens.Length > LogitRows)
        {
            throw new GpuLlamaException($"logits of {tokens.Length} positions were asked for, but this model was loaded for {LogitRows}");
        }

        for (int start = 0; start < tokens.Length; start += BatchSize)
        {
            int n = Math.Min(BatchSize, tokens.Length - start);
            ForwardBatch(tokens.Slice(start, n), position + start, allLogits ? Outputs.AllLogits : Outputs.LastLogits);
        }
    }

    /// <summary>
    /// Runs one batch (at most <see cref="BatchSize"/> tokens) at positions position.. and stops after the final
    /// rmsnorm: <see cref="Hidden"/> then gives every position's normalized hidden state (embeddings), and no
    /// classifier runs.
    /// </summary>
    public void ForwardHidden(ReadOnlySpan<int> tokens, int position)
    {
        if (tokens.Length > BatchSize || position < 0 || position + tokens.Length > ContextLength)
        {
            throw new GpuLlamaException($"{tokens.Length} tokens at position {position}: a hidden-state batch holds at most {BatchSize} tokens within the context of {ContextLength}");
        }

        ForwardBatch(tokens, position, Outputs.Hidden);
    }

    /// <summary>Layer <paramref name="layer"/>'s KV cache (on the layer's device).</summary>
    internal KvCacheLayer Cache(int layer) => _cache[layer];

    /// <summary>
    /// llama.cpp's K-shift, for a context shift: the cached positions from..from+count−1 move to to.. (to &lt; from),
    /// each key rotated by to − from positions — RoPE's angles add, so the key rotated back by d is the one it would
    /// have at its new position — and each value as it is. Every layer's cache on its own device: read back as
    /// float32, rotated, and stored again (rounded to the cache type, as llama.cpp writes its shifted keys back).
    /// </summary>
    public void ShiftCache(int from, int to, int count)
    {
        if (to < 0 || to >= from || count < 0 || from + count > ContextLength)
        {
            throw new ArgumentOutOfRangeException(nameof(from), $"cannot shift positions {from}..{from + count - 1} to {to} in a context of {ContextLength}");
        }

        // a table whose every row rotates by −d: cos(d·θ_i), −sin(d·θ_i)
        int d = from - to, half = _config.HeadDim / 2;
        float[] forward = RopeTable.Build(_config, d + 1);
        float[] back = new float[BatchSize * half * 2];
        for (int r = 0; r < BatchSize; r++)
        {
            for (int i = 0; i < half; i++)
            {
                back[(r * half + i) * 2] = forward[(d * half + i) * 2];
                back[(r * half + i) * 2 + 1] = -forward[(d * half + i) * 2 + 1];
            }
        }

        var tables = new Dictionary<IDevice, DeviceBuffer>(ReferenceEqualityComparer.Instance);
        try
        {
            for (int l = 0; l < _config.Layers; l++)
            {
                IDevice dev = _placement.Layers[l];
                if (!tables.TryGetValue(dev, out DeviceBuffer? table))
                {
                    table = dev.Allocate(back.Length);
                    dev.Write(table, back);
                    tables[dev] = table;
                }

                // ascending chunks: a chunk's new place lies below every position still to be read
                RunState st = _states[dev];
                for (int o = 0; o < count; o += BatchSize)
                {
                    int n = Math.Min(BatchSize, count - o);
                    dev.ReadKv(_cache[l], st.K, st.V, from + o, n);
                    dev.Rope(st.Q, st.K, table, 0, n, _shape); // (q is scratch here)
                    dev.StoreKv(_cache[l], st.K, st.V, to + o, n);
                }
            }
        }
        finally
        {
            foreach (DeviceBuffer b in tables.Values)
            {
                b.Dispose();
            }
        }
    }

    /// <summary>Row <paramref name="row"/> of the last <see cref="ForwardHidden"/> batch: the final-norm hidden state (Dim floats, valid until the next call).</summary>
    public ReadOnlySpan<float> Hidden(int row)
    {
        if ((uint)row >= (uint)_lastHiddenRows)
        {
            throw new ArgumentOutOfRangeException(nameof(row), $"the last hidden-state pass produced {_lastHiddenRows} row(s)");
        }

        RunState o = _states[_placement.Output];
        _hostHidden ??= new float[_config.Dim];
        o.Device.Read(o.Xb, _hostHidden, row * _config.Dim);
        return _hostHidden;
    }

    private enum Outputs
    {
        LastLogits,
        AllLogits,
        Hidden,
    }

    private void ForwardBatch(ReadOnlySpan<int> tokens, int position, Outputs outputs)
    {
        ModelConfig c = _config;
        int n = tokens.Length;

        // token embedding, on the input device (the CPU, as in llama.cpp)
        RunState s = _states[_placement.Input];
        s.Device.Embed(s.X, _weights.TokenEmbedding, tokens);

        // a batch this large runs the CPU's layers on the offload GPU, their weights copied into its slots layer by layer
        bool offload = _offload is not null && n >= _offloadMinBatch;
        for (int l = 0; l < c.Layers; l++)
        {
            bool streams = offload && _streams[l] is not null;
            LayerWeights w = streams ? Stream(l) : _weights.Layers[l];
            s = Hop(s, streams ? _offload! : _placement.Layers[l], n);   // move the residual stream x to this layer's device
            IDevice dev = s.Device;

            // attention rmsnorm and the qkv matmuls for these positions (a GPU decodes them in one launch)
            dev.NormMatMul3(s.Q, w.Wq, s.K, w.Wk, s.V, w.Wv, s.X, w.AttnNorm, c.RmsEps, n, s.Xb);

            // RoPE, remember k and v for later positions and attend, where the layer's KV cache lives (a streamed
            // layer's stays on the CPU: q, k and v go there and the attention output comes back)
            RunState a = HopQkv(s, _placement.Layers[l], n);
            a.Device.RopeStoreKv(a.Q, a.K, a.V, a.Rope, _cache[l], position, n, _shape);

            // grouped-query attention over positions 0..position+n-1, then the output projection + residual
            a.Device.Attention(a.Xb, a.Q, _cache[l], position, n, _shape);
            if (!ReferenceEquals(a, s))
            {
                dev.CopyFrom(s.Xb, 0, a.Xb, 0, n * c.QDim);
            }

            dev.MatMul(s.X, w.Wo, s.Xb, n, accumulate: true);

            // ffn rmsnorm and SwiGLU: x += w2(silu(w1·xb) * w3·xb), xb = rmsnorm(x)
            dev.NormMatMulSwiGlu(s.Hb, w.FfnGate, w.FfnUp, s.X, w.FfnNorm, c.RmsEps, n, s.Xb, s.Hb2);
            dev.MatMul(s.X, w.FfnDown, s.Hb, n, accumulate: true);
        }

        // final rmsnorm and classifier, on the output device, for the last position only (or all of them; the
        // hidden states of all of them and no classifier)
        int rows = outputs == Outputs.LastLogits ? 1 : n;
        RunState o = _states[_placement.Output];
        o.Device.CopyFrom(o.Xb2, 0, s.X, (n - rows) * c.Dim, rows * c.Dim);
        o.Device.RmsNorm(o.Xb, o.Xb2, _weights.OutputNorm, rows, c.RmsEps);
        if (outputs == Outputs.Hidden)
        {
            _lastHiddenRows = rows;
            _lastRows = 0;
            return;
        }

        o.Device.MatMul(o.Logits!, _weights.Output, o.Xb, rows);
        _lastRows = rows;
        _lastHiddenRows = 0;
    }

    /// <summary>The hidden state of the batch moves to <paramref name="device"/> when the layer runs elsewhere.</summary>
    private RunState Hop(RunState from, IDevice device, int rows)
    {
        if (ReferenceEquals(from.Device, device))
        {
            return from;
        }

        RunState to = _states[device];
        device.CopyFrom(to.X, 0, from.X, 0, rows * _config.Dim);
        return to;
    }

    /// <summary>Layer <paramref name="l"/>'s weights copied into the offload device's slots (after the ops enqueued before).</summary>
    private LayerWeights Stream(int l)
    {
        StreamedLayer s = _streams[l]!;
        for (int i = 0; i < s.Slots.Length; i++)
        {
            _offload!.Reload(s.Slots[i], s.Sources[i]);
        }

        StreamedLayerRuns++;
        return s.Weights;
    }

    /// <summary>A streamed layer: its slots as the forward pass reads them, and the tensor each is refilled from.</summary>
    private sealed record StreamedLayer(LayerWeights Weights, DeviceWeight[] Slots, WeightView[] Sources);

    /// <summary>q, k and v of the batch move to <paramref name="device"/> (where the KV cache is) when the layer ran elsewhere.</summary>
    private RunState HopQkv(RunState from, IDevice device, int rows)
    {
        if (ReferenceEquals(from.Device, device))
        {
            return from;
        }

        RunState to = _states[device];
        device.CopyFrom(to.Q, 0, from.Q, 0, rows * _config.QDim);
        device.CopyFrom(to.K, 0, from.K, 0, rows * _config.KvDim);
        device.CopyFrom(to.V, 0, from.V, 0, rows * _config.KvDim);
        return to;
    }

    /// <summary>Greedy choice over the last position's logits, computed on the output device (4 bytes come back).</summary>
    public int ArgmaxLast()
    {
        if (_lastRows == 0)
        {
            throw new InvalidOperationException("no logits: the last pass was a hidden-state pass (ForwardHidden)");
        }

        RunState o = _states[_placement.Output];
        return o.Device.Argmax(o.Logits!, (_lastRows - 1) * _config.VocabSize, _config.VocabSize);
    }

    /// <summary>The last position's logits, copied to the host (valid until the next call).</summary>
    public ReadOnlySpan<float> LogitsLast() => Logits(_lastRows - 1);

    /// <summary>Logits of row <paramref name="row"/> of the last batch run with allLogits (row 0 otherwise).</summary>
    public ReadOnlySpan<float> Logits(int row)
    {
        if ((uint)row >= (uint)_lastRows)
        {
            throw new ArgumentOutOfRangeException(nameof(row), $"the last forward pass produced logits for {_lastRows} row(s)");
        }

        RunState o = _states[_placement.Output];
        o.Device.Read(o.Logits!, _hostLogits, row * _config.VocabSize);
        return _hostLogits;
    }

    public void Dispose()
    {
        foreach (RunState s in _states.Values)
        {
            s.Dispose();
        }

        _states.Clear();
        foreach (DeviceWeight w in _slots.Values)
        {
            w.Dispose();
        }

        _slots.Clear();
        if (_cache is not null)
        {
            foreach (KvCacheLayer? kv in _cache)
            {
                kv?.Dispose();
            }
        }
    }

    /// <summary>Activation buffers of one device, for a batch of up to BatchSize positions.</summary>
    private sealed class RunState : IDisposable
    {
        public RunState(IDevice device, ModelConfig c, int batch, int logitRows, float[] rope)
        {
            Device = device;
            X = device.Allocate(batch * c.Dim);            // residual stream [batch, Dim]
            Xb = device.Allocate(batch * Math.Max(c.Dim, c.QDim));  // normed x / attention output
            Xb2 = device.Allocate(batch * c.Dim);          // the rows handed to the output head
            Q = device.Allocate(batch * c.QDim);           // [batch, QDim]
            K = device.Allocate(batch * c.KvDim);          // [batch, KvDim]
            V = device.Allocate(batch * c.KvDim);
            Hb = device.Allocate(batch * c.HiddenDim);     // FFN gate [batch, HiddenDim]
            Hb2 = device.Allocate(batch * c.HiddenDim);    // FFN up
            Rope = device.Allocate(rope.Length);           // cos/sin table [context, HeadDim/2, 2]
            device.Write(Rope, rope);
            Logits = logitRows > 0 ? device.Allocate(logitRows * c.VocabSize) : null;
        }

        public IDevice Device { get; }

        public DeviceBuffer X { get; }

        public DeviceBuffer Xb { get; }

        public DeviceBuffer Xb2 { get; }

        public DeviceBuffer Q { get; }

        public DeviceBuffer K { get; }

        public DeviceBuffer V { get; }

        public DeviceBuffer Hb { get; }

        public DeviceBuffer Hb2 { get; }

        public DeviceBuffer Rope { get; }

        public DeviceBuffer? Logits { get; }

        public void Dispose()
        {
            foreach (DeviceBuffer? b in new[] { X, Xb, Xb2, Q, K, V, Hb, Hb2, Rope, Logits })
            {
                b?.Dispose();
            }
        }
    }
}

using GpuLlama.Devices;

namespace GpuLlama.Model;

/// <summary>
/// The forward pass of a Llama model, written once against <see cref="IDevice"/>: it names no file format, no
/// dtype and no concrete device. Each layer runs on the device the placement gives it; the hidden state hops
/// between devices only where consecutive layers differ. The prompt is processed in batches of up to
/// <see cref="BatchSize"/> tokens, generation one token at a time; nothing is allocated per token.
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

    /// <param name="logitRows">How many positions of one batch can get logits (1 unless all-position logits are wanted).</param>
    public Transformer(ModelConfig config, ModelWeights weights, DevicePlacement placement, int contextLength, int batchSize = 512, int logitRows = 1)
    {
        _config = config;
        _weights = weights;
        _placement = placement;
        _shape = AttentionShape.Of(config);
        ContextLength = contextLength;
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
                _cache[l] = placement.Layers[l].AllocateKv(contextLength, config.KvDim);
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
            ForwardBatch(tokens.Slice(start, n), position + start, allLogits);
        }
    }

    private void ForwardBatch(ReadOnlySpan<int> tokens, int position, bool allLogits)
    {
        ModelConfig c = _config;
        int n = tokens.Length;

        // token embedding, on the input device (the CPU, as in llama.cpp)
        RunState s = _states[_placement.Input];
        s.Device.Embed(s.X, _weights.TokenEmbedding, tokens);

        for (int l = 0; l < c.Layers; l++)
        {
            LayerWeights w = _weights.Layers[l];
            s = Hop(s, _placement.Layers[l], n);       // move the residual stream x to this layer's device
            IDevice dev = s.Device;

            // attention rmsnorm
            dev.RmsNorm(s.Xb, s.X, w.AttnNorm, n, c.RmsEps);

            // qkv matmuls for these positions
            dev.MatMul3(s.Q, w.Wq, s.K, w.Wk, s.V, w.Wv, s.Xb, n);

            // RoPE, then remember k and v for later positions
            dev.Rope(s.Q, s.K, s.Rope, position, n, _shape);
            dev.StoreKv(_cache[l], s.K, s.V, position, n);

            // grouped-query attention over positions 0..position+n-1, then the output projection + residual
            dev.Attention(s.Xb, s.Q, _cache[l], position, n, _shape);
            dev.MatMul(s.X, w.Wo, s.Xb, n, accumulate: true);

            // ffn rmsnorm and SwiGLU: x += w2(silu(w1·x) * w3·x)
            dev.RmsNorm(s.Xb, s.X, w.FfnNorm, n, c.RmsEps);
            dev.MatMulSwiGlu(s.Hb, w.FfnGate, w.FfnUp, s.Xb, n, s.Hb2);
            dev.MatMul(s.X, w.FfnDown, s.Hb, n, accumulate: true);
        }

        // final rmsnorm and classifier, on the output device, for the last position only (or all of them)
        int rows = allLogits ? n : 1;
        RunState o = _states[_placement.Output];
        o.Device.CopyFrom(o.Xb2, 0, s.X, (n - rows) * c.Dim, rows * c.Dim);
        o.Device.RmsNorm(o.Xb, o.Xb2, _weights.OutputNorm, rows, c.RmsEps);
        o.Device.MatMul(o.Logits!, _weights.Output, o.Xb, rows);
        _lastRows = rows;
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

    /// <summary>Greedy choice over the last position's logits, computed on the output device (4 bytes come back).</summary>
    public int ArgmaxLast()
    {
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

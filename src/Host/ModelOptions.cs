using System.CommandLine;
using System.Globalization;
using GpuLlama.Devices;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>Options shared by every command that loads a model: placement, context, threads.</summary>
public sealed class ModelOptions
{
    public Argument<string> Model { get; } = new("MODEL")
    {
        Description = "A GGUF file, a Hugging Face model directory, a llama2.c .bin checkpoint, or synthetic:PRESET[:DTYPE] (presets: " + string.Join(", ", Formats.SyntheticPreset.All.Select(p => p.Name)) + "; dtypes: "
            + string.Join(", ", Formats.SyntheticSource.SupportedTypes.Select(t => t.ToString().ToLowerInvariant())) + ").",
    };

    public Option<string> GpuLayers { get; } = new("--gpu-layers", "-ngl", "--n-gpu-layers")
    {
        Description = "Repeating layers to run on the GPU, counted from the last (llama.cpp -ngl); more than the layer count also offloads the output head; 'auto' fits as many as free memory allows; 'all' offloads everything.",
        DefaultValueFactory = _ => "auto",
    };

    public Option<string?> Devices { get; } = new("--devices", "-dev")
    {
        Description = "Comma list of accelerators to use (cuda:0, opencl:1, emulated:0 = ILGPU's CPU accelerator); default: the first CUDA device, else the first OpenCL one. See `gpullama devices`.",
    };

    public Option<string?> TensorSplit { get; } = new("--tensor-split", "-ts")
    {
        Description = "Proportions of the offloaded layers per device, e.g. 3,1 (default: by free memory).",
    };

    public Option<SplitMode> SplitModeOption { get; } = new("--split-mode", "-sm")
    {
        Description = "layer: split the offloaded layers across the devices; none: use only --main-gpu.",
        DefaultValueFactory = _ => SplitMode.Layer,
    };

    public Option<int> MainGpu { get; } = new("--main-gpu", "-mg")
    {
        Description = "Index (into --devices) of the device used with --split-mode none.",
        DefaultValueFactory = _ => 0,
    };

    public Option<string?> Placement { get; } = new("--placement")
    {
        Description = "JSON file naming the device of every layer, e.g. {\"devices\":[\"cuda:0\"],\"layers\":{\"0-9\":\"cpu\",\"10-31\":\"cuda:0\"},\"output\":\"cuda:0\"}.",
    };

    public Option<int> Context { get; } = new("--ctx", "-c", "--ctx-size")
    {
        Description = "Context size in tokens (0 = the model's trained context, at most 4096).",
        DefaultValueFactory = _ => 0,
    };

    public Option<int> Batch { get; } = new("--batch", "-b", "--batch-size")
    {
        Description = "Prompt tokens processed per forward pass.",
        DefaultValueFactory = _ => 512,
    };

    public Option<int> Threads { get; } = new("--threads", "-t")
    {
        Description = "CPU threads (0 = all cores).",
        DefaultValueFactory = _ => 0,
    };

    public Option<bool> ExactQuant { get; } = new("--exact-quant")
    {
        Description = "On the CPU, multiply quantized and F16 weights with float32 activations (exact float math, as on a GPU) instead of llama.cpp's rounded ones (8-bit with integer dot products for quantized weights, F16 for F16 weights).",
    };

    public Option<bool> NoOpOffload { get; } = new("--no-op-offload", "-nopo")
    {
        Description = "Keep the CPU's layers on the CPU for prompt batches too; by default (as llama.cpp) a batch of --op-offload-min-batch+ tokens runs them on the first GPU of the placement, their weights streamed to it.",
    };

    public Option<int> OpOffloadMinBatch { get; } = new("--op-offload-min-batch")
    {
        Description = "Smallest prompt batch that streams the CPU's layers to the GPU (llama.cpp streams from 32; see docs/performance.md).",
        DefaultValueFactory = _ => PromptOffload.DefaultMinBatch,
    };

    public Option<string> CacheTypeK { get; } = new("--cache-type-k", "-ctk")
    {
        Description = "How the KV cache stores keys: f16 (default, as llama.cpp: half the memory), bf16, f32 (every value as computed), or q8_0 / q4_0 (llama.cpp's 32-value blocks: about a quarter / an eighth of f32; heads of a multiple of 32).",
        DefaultValueFactory = _ => "f16",
    };

    public Option<string> CacheTypeV { get; } = new("--cache-type-v", "-ctv")
    {
        Description = "How the KV cache stores values: f16 (default), bf16, f32, q8_0 or q4_0.",
        DefaultValueFactory = _ => "f16",
    };

    public Option<string?> Tokenizer { get; } = new("--tokenizer")
    {
        Description = "Tokenizer file (tokenizer.bin for llama2.c checkpoints, or tokenizer.model/tokenizer.json/.gguf to override the model's).",
    };

    public Option<bool> Verbose { get; } = new("--verbose", "-v")
    {
        Description = "Print the placement per layer and estimated vs allocated memory per device.",
    };

    /// <summary>Adds the model argument and every shared option to <paramref name="command"/>.</summary>
    public void AddTo(Command command, bool withModel = true)
    {
        if (withModel)
        {
            command.Arguments.Add(Model);
        }

        foreach (Option o in new Option[] { GpuLayers, Devices, TensorSplit, SplitModeOption, MainGpu, Placement, Context, Batch, Threads, ExactQuant, NoOpOffload, OpOffloadMinBatch, CacheTypeK, CacheTypeV, Tokenizer, Verbose })
        {
            command.Options.Add(o);
        }
    }

    /// <summary>Builds the engine's LoadOptions from the parsed flags; bad values name the flag.</summary>
    public LoadOptions ToLoadOptions(ParseResult r, Action<string>? log, int? gpuLayersOverride = null)
    {
        return new LoadOptions
        {
            GpuLayers = gpuLayersOverride ?? ParseGpuLayers(r.GetValue(GpuLayers)),
            Devices = ParseList(r.GetValue(Devices)),
            TensorSplit = ParseSplit(r.GetValue(TensorSplit)),
            SplitMode = r.GetValue(SplitModeOption),
            MainGpu = r.GetValue(MainGpu),
            PlacementFile = r.GetValue(Placement),
            ContextLength = r.GetValue(Context),
            BatchSize = Positive(r.GetValue(Batch), "--batch"),
            Threads = NonNegative(r.GetValue(Threads), "--threads"),
            ExactQuantDots = r.GetValue(ExactQuant),
            OpOffload = !r.GetValue(NoOpOffload),
            OpOffloadMinBatch = Positive(r.GetValue(OpOffloadMinBatch), "--op-offload-min-batch"),
            CacheTypeK = KvCacheTypes.Parse(r.GetValue(CacheTypeK)!, "--cache-type-k"),
            CacheTypeV = KvCacheTypes.Parse(r.GetValue(CacheTypeV)!, "--cache-type-v"),
            TokenizerPath = r.GetValue(Tokenizer),
            Log = log,
        };
    }

    /// <summary>"auto" → null, "all" → int.MaxValue, else a non-negative integer.</summary>
    public static int? ParseGpuLayers(string? text)
    {
        if (string.IsNullOrWhiteSpace(text) || text.Equals("auto", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        if (text.Equals("all", StringComparison.OrdinalIgnoreCase))
        {
            return int.MaxValue;
        }

        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) || n < 0)
        {
            throw new GpuLlamaException($"--gpu-layers '{text}': expected a number of layers (0 or more), 'auto' or 'all'");
        }

        return n;
    }

    public static IReadOnlyList<string>? ParseList(string? text) =>
        string.IsNullOrWhiteSpace(text) ? null : text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public static IReadOnlyList<float>? ParseSplit(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        var values = new List<float>();
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!float.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out float v) || v < 0 || !float.IsFinite(v))
            {
                throw new GpuLlamaException($"--tensor-split '{text}': '{part}' is not a non-negative number");
            }

            values.Add(v);
        }

        if (values.Sum() <= 0)
        {
            throw new GpuLlamaException($"--tensor-split '{text}': the proportions add up to zero");
        }

        return values;
    }

    public static int Positive(int v, string flag) => v > 0 ? v : throw new GpuLlamaException($"{flag} {v}: must be positive");

    public static int NonNegative(int v, string flag) => v >= 0 ? v : throw new GpuLlamaException($"{flag} {v}: must be 0 or more");
}

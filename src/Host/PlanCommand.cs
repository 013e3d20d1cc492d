using System.CommandLine;
using System.Text.Json.Nodes;
using GpuLlama.Devices;
using GpuLlama.Formats;
using GpuLlama.Model;

namespace GpuLlama.Host;

/// <summary>
/// gpullama plan: the device of every layer, weights / KV / scratch per device, free memory, and what would not
/// fit — from the file's headers alone, without loading any weight. The same accounting drives auto-fit.
/// </summary>
public static class PlanCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var json = new Option<bool>("--json") { Description = "Print the plan as JSON." };
        var command = new Command("plan", "Show where each layer would run and the memory per device, without loading weights.");
        model.AddTo(command);
        command.Options.Add(json);
        command.SetAction(r =>
        {
            using IWeightSource source = WeightSource.Open(r.GetValue(model.Model)!);
            LoadOptions load = model.ToLoadOptions(r, null);
            PlanReport report = PlanReport.Create(source, load);
            Console.Out.Write(r.GetValue(json) ? report.ToJson().ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n" : report.ToText());
            return 0;
        });
        return command;
    }
}

/// <summary>A placement and its memory, per device, with the budget each device has.</summary>
public sealed record PlanReport(string Model, int Layers, int Context, LayerPlan Plan, IReadOnlyList<DeviceMemory> Memory, IReadOnlyList<DeviceInfo> Devices, MemoryPlanOptions Options,
    long OffloadSlotBytes = 0)
{
    public static PlanReport Create(IWeightSource source, LoadOptions load)
    {
        int context = load.ContextLength > 0 ? load.ContextLength : Math.Min(source.Config.ContextLength, 4096);
        LayerPlan plan = LlamaModel.PlanPlacement(source, context, load, out IReadOnlyList<DeviceInfo> gpus);
        MemoryPlanOptions options = load.MemoryPlan(context);
        long slots = PromptOffload.SlotBytes(source.Config, source.Tensors, plan, options.OpOffloadMinBatch, Math.Min(options.BatchSize, context));
        return new PlanReport(source.Path, source.Config.Layers, context, plan, MemoryPlan.Estimate(source.Config, source.Tensors, plan, options), gpus, options, slots);
    }

    public string ToText()
    {
        var s = new System.Text.StringBuilder();
        s.AppendLine($"model {Model}, {Layers} layers, context {Context}, KV cache {Options.CacheTypeK.Name()} keys / {Options.CacheTypeV.Name()} values");
        s.AppendLine(LayerPlacement.Summary(Plan, Layers));
        s.AppendLine($"{"device",-12} {"layers",-14} {"weights MiB",12} {"KV MiB",10} {"scratch MiB",12} {"total MiB",10} {"free MiB",10}  fits");
        foreach (DeviceMemory m in Memory)
        {
            DeviceInfo? d = Devices.FirstOrDefault(x => x.Name == m.Device);
            string free = d is null ? "-" : d.FreeMemoryKnown ? Diagnostics.Mib(d.FreeMemory) : Diagnostics.Mib(d.TotalMemory) + "*";
            string fits = d is null ? "" : m.Total <= MemoryPlan.Budget(d, Options) ? "yes" : $"NO: {Diagnostics.Mib(m.Total - MemoryPlan.Budget(d, Options))} MiB short";
            s.AppendLine($"{m.Device,-12} {LayersOn(m.Device),-14} {Diagnostics.Mib(m.Weights),12} {Diagnostics.Mib(m.KvCache),10} {Diagnostics.Mib(m.Scratch),12} {Diagnostics.Mib(m.Total),10} {free,10}  {fits}");
        }

        if (Devices.Any(d => !d.FreeMemoryKnown))
        {
            s.AppendLine("* free memory unknown (OpenCL/emulated): the total is used, less the safety margin");
        }

        if (OffloadSlotBytes > 0)
        {
            string target = PromptOffload.Target(Plan.Layers, Plan.Output, d => d == LayerPlacement.Cpu)!;
            s.AppendLine($"{target}'s scratch holds {Diagnostics.Mib(OffloadSlotBytes)} MiB of weight slots: prompts of {Options.OpOffloadMinBatch}+ tokens stream the CPU's layers through them (--no-op-offload: none)");
        }

        s.AppendLine("the CPU's weights are read from the memory-mapped file (Q4_0 with AVX-512: from a copy of the same size) and are not counted as allocations");
        return s.ToString();
    }

    private string LayersOn(string device)
    {
        var idx = Enumerable.Range(0, Plan.Layers.Count).Where(i => Plan.Layers[i] == device).ToList();
        string layers = idx.Count == 0 ? "" : idx.Count == idx[^1] - idx[0] + 1 ? $"{idx[0]}-{idx[^1]}" : string.Join(",", idx);
        return (layers + (Plan.Output == device ? (layers.Length > 0 ? "+out" : "out") : "")).Trim();
    }

    public JsonObject ToJson() => new()
    {
        ["model"] = Model,
        ["layers"] = Layers,
        ["context"] = Context,
        ["type_k"] = Options.CacheTypeK.Name(),
        ["type_v"] = Options.CacheTypeV.Name(),
        ["offloaded"] = Plan.OffloadedCount,
        ["input"] = Plan.Input,
        ["layer_devices"] = new JsonArray([.. Plan.Layers.Select(l => (JsonNode)l)]),
        ["output"] = Plan.Output,
        ["offload_slot_bytes"] = OffloadSlotBytes,
        ["devices"] = new JsonArray([.. Memory.Select(m =>
        {
            DeviceInfo? d = Devices.FirstOrDefault(x => x.Name == m.Device);
            return (JsonNode)new JsonObject
            {
                ["name"] = m.Device,
                ["weights_bytes"] = m.Weights,
                ["kv_bytes"] = m.KvCache,
                ["scratch_bytes"] = m.Scratch,
                ["total_bytes"] = m.Total,
                ["free_bytes"] = d?.FreeMemory,
                ["free_known"] = d?.FreeMemoryKnown,
                ["fits"] = d is null || m.Total <= MemoryPlan.Budget(d, Options),
            };
        })]),
    };
}

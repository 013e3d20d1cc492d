using System.Text.Json;

namespace GpuLlama.Devices;

/// <summary>
/// --placement FILE.json: the device of every layer, e.g.
/// <c>{"devices": ["cuda:0","cuda:1"], "layers": {"0-9": "cpu", "10-21": "cuda:0", "22-31": "cuda:1"}, "output": "cuda:1"}</c>.
/// Ranges are "a-b" or "a"; every layer must be named exactly once; "output" defaults to the last layer's device and
/// "input" to the CPU. Every problem is one line naming the file.
/// </summary>
public static class PlacementFile
{
    public static LayerPlan Load(string path, int layers, IReadOnlyList<string> available)
    {
        if (!File.Exists(path))
        {
            GpuLlamaException.ThrowFile(path, "placement file not found");
        }

        return Parse(File.ReadAllText(path), path, layers, available);
    }

    /// <summary>Parses placement JSON; <paramref name="available"/> are the accelerators that exist (the CPU always does).</summary>
    public static LayerPlan Parse(string json, string path, int layers, IReadOnlyList<string> available)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new GpuLlamaException($"{path}: invalid JSON at line {(e.LineNumber ?? 0) + 1}: {e.Message.Split('.')[0]}");
        }

        using (doc)
        {
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                GpuLlamaException.ThrowFile(path, "expected a JSON object with \"layers\"");
            }

            var declared = new List<string>();
            if (root.TryGetProperty("devices", out JsonElement devices))
            {
                if (devices.ValueKind != JsonValueKind.Array)
                {
                    GpuLlamaException.ThrowFile(path, "\"devices\" must be an array of device names");
                }

                foreach (JsonElement d in devices.EnumerateArray())
                {
                    declared.Add(d.GetString() ?? "");
                }
            }

            string Check(string device, string where)
            {
                if (device == LayerPlacement.Cpu)
                {
                    return device;
                }

                if (declared.Count > 0 && !declared.Contains(device))
                {
                    GpuLlamaException.ThrowFile(path, $"{where} names device '{device}', which is not in \"devices\" ({string.Join(", ", declared)})");
                }

                if (!available.Contains(device))
                {
                    GpuLlamaException.ThrowFile(path, $"{where} names unknown device '{device}' (available: cpu{(available.Count > 0 ? ", " + string.Join(", ", available) : "")})");
                }

                return device;
            }

            if (!root.TryGetProperty("layers", out JsonElement map) || map.ValueKind != JsonValueKind.Object)
            {
                GpuLlamaException.ThrowFile(path, "missing \"layers\": an object mapping layer ranges like \"0-9\" to devices");
            }

            var names = new string?[layers];
            foreach (JsonProperty p in map.EnumerateObject())
            {
                (int a, int b) = ParseRange(p.Name, path, layers);
                string device = Check(p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : "", $"layers \"{p.Name}\"");
                for (int l = a; l <= b; l++)
                {
                    if (names[l] is not null)
                    {
                        GpuLlamaException.ThrowFile(path, $"layer {l} is assigned twice (to {names[l]} and, in \"{p.Name}\", to {device})");
                    }

                    names[l] = device;
                }
            }

            var missing = Enumerable.Range(0, layers).Where(l => names[l] is null).ToList();
            if (missing.Count > 0)
            {
                GpuLlamaException.ThrowFile(path, $"layers {Ranges(missing)} are not assigned to any device (the model has {layers} layers, 0-{layers - 1})");
            }

            string output = root.TryGetProperty("output", out JsonElement o) ? Check(o.GetString() ?? "", "\"output\"") : names[layers - 1]!;
            string input = root.TryGetProperty("input", out JsonElement i) ? Check(i.GetString() ?? "", "\"input\"") : LayerPlacement.Cpu;
            return new LayerPlan(input, names!, output);
        }
    }

    private static (int, int) ParseRange(string text, string path, int layers)
    {
        string[] parts = text.Split('-', StringSplitOptions.TrimEntries);
        if (parts.Length is < 1 or > 2 || !int.TryParse(parts[0], out int a) || !int.TryParse(parts[^1], out int b) || a > b)
        {
            throw new GpuLlamaException($"{path}: layer range \"{text}\" is not of the form \"a-b\" or \"a\" with a <= b");
        }

        if (a < 0 || b >= layers)
        {
            throw new GpuLlamaException($"{path}: layer range \"{text}\" is outside the model's layers 0-{layers - 1}");
        }

        return (a, b);
    }

    private static string Ranges(List<int> layers)
    {
        var parts = new List<string>();
        int i = 0;
        while (i < layers.Count)
        {
            int j = i;
            while (j + 1 < layers.Count && layers[j + 1] == layers[j] + 1)
            {
                j++;
            }

            parts.Add(i == j ? $"{layers[i]}" : $"{layers[i]}-{layers[j]}");
            i = j + 1;
        }

        return string.Join(", ", parts);
    }
}

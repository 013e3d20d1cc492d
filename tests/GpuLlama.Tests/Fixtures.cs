using Xunit;

namespace GpuLlama.Tests;

/// <summary>
/// Locates ../shared/fixtures beside the repository (searched upwards from the test assembly, so worktrees
/// and CI clones work). Tests that need it use <see cref="FixtureFactAttribute"/> and skip, naming the path,
/// when it is absent.
/// </summary>
public static class Fixtures
{
    private static readonly Lazy<string?> s_root = new(FindRoot);

    /// <summary>The fixtures folder, or null when it is not there.</summary>
    public static string? Root => s_root.Value;

    /// <summary>Where we looked, for skip messages.</summary>
    public static string Expected => Path.GetFullPath(Path.Combine(RepoRoot(), "..", "shared", "fixtures"));


    public static string Get(params string[] parts) => Path.Combine([Root ?? Expected, .. parts]);

    public static bool Has(string relative) => Root is not null && (File.Exists(Get(relative)) || Directory.Exists(Get(relative)));

    private static string RepoRoot()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "GpuLlama.sln")))
        {
            dir = Path.GetDirectoryName(dir);
        }

        return dir ?? AppContext.BaseDirectory;
    }

    private static string? FindRoot()
    {
        string? env = Environment.GetEnvironmentVariable("GPULLAMA_FIXTURES");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env))
        {
            return env;
        }

        string? dir = RepoRoot();
        while (dir is not null)
        {
            string candidate = Path.Combine(dir, "..", "shared", "fixtures");
            if (Directory.Exists(candidate))
            {
                return Path.GetFullPath(candidate);
            }

            dir = Path.GetDirectoryName(dir);
        }

        return null;
    }
}

/// <summary>A fact that needs a fixture file or folder (relative to shared/fixtures); skipped with the path when absent.</summary>
public sealed class FixtureFactAttribute : FactAttribute
{
    public FixtureFactAttribute(string relative)
    {
        if (!Fixtures.Has(relative))
        {
            Skip = $"fixtures not found at {Path.Combine(Fixtures.Expected, relative)}";
        }
    }
}

/// <summary>A theory that needs a fixture file or folder; skipped with the path when absent.</summary>
public sealed class FixtureTheoryAttribute : TheoryAttribute
{
    public FixtureTheoryAttribute(string relative)
    {
        if (!Fixtures.Has(relative))
        {
            Skip = $"fixtures not found at {Path.Combine(Fixtures.Expected, relative)}";
        }
    }
}

using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace GpuLlama.Devices;

/// <summary>
/// Software prefetch for the decode's weight streams: each matvec loop asks for the lines
/// <see cref="Distance"/> bytes ahead of the ones it is reading.
/// </summary>
/// <remarks>
/// Decoding reads every weight once from memory, so a core's share of tg is how many cache-line misses it keeps in
/// flight. On the Intel Xeon guest of the seventh session (Sapphire/Emerald Rapids, 2 vCPUs) the hardware prefetcher
/// alone kept too few: an F16 matvec streamed 7.4 GB/s from one core where a plain read streams 13, and prefetching
/// 4 KiB ahead took it to 12 (a C micro-benchmark), TinyLlama F16 tg 5.2 → 7.1 t/s and Q4_0 tg 18 → 24 on two
/// threads. On AMD Zen 4 (first and second sessions) prefetching 2-8 KiB ahead halved the F16 stream instead,
/// so the default is on for Intel and off for everyone else. GPULLAMA_PREFETCH=BYTES (a multiple of 64 up to
/// 65536; 0 turns it off) overrides the default, to measure either way; `gpullama devices` shows the distance in use.
/// A prefetch never faults, so reading past the end of a buffer is harmless. <see cref="Distance"/> is a
/// <c>static readonly</c> so that the JIT folds it, but only into kernels compiled after this class is initialized:
/// <see cref="CpuDevice"/>'s constructor and the bandwidth probe initialize it first.
/// </remarks>
internal static unsafe class CpuPrefetch
{
    /// <summary>The environment variable that overrides the vendor default.</summary>
    public const string EnvironmentVariable = "GPULLAMA_PREFETCH";

    /// <summary>Prefetch distance in bytes on Intel CPUs unless overridden.</summary>
    public const int IntelDistance = 4096;

    /// <summary>Bytes ahead of the current read that the decode loops prefetch; 0: none.</summary>
    public static readonly int Distance = Choose(Environment.GetEnvironmentVariable(EnvironmentVariable), IsIntel());

    /// <summary>
    /// The distance for an override text (null or empty: none) on an Intel or other CPU; always 0 without x86's
    /// prefetch instruction. An override that is not a multiple of 64 in [0, 65536] is ignored here;
    /// <see cref="Validate"/> is what reports it.
    /// </summary>
    internal static int Choose(string? text, bool intel) =>
        !Sse.IsSupported ? 0
        : !string.IsNullOrEmpty(text) && Parse(text) is int bytes ? bytes
        : intel ? IntelDistance
        : 0;

    /// <summary>A one-line error when the override is set and invalid; null when it is fine or unset.</summary>
    public static string? Validate(string? text) =>
        string.IsNullOrEmpty(text) || Parse(text) is not null
            ? null
            : $"{EnvironmentVariable} '{text}' is not a prefetch distance in bytes (a multiple of 64 from 0 to 65536; 0 turns prefetching off)";

    private static int? Parse(string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int bytes) && bytes <= 65536 && bytes % 64 == 0
            ? bytes
            : null;

    internal static bool IsIntel()
    {
        if (!X86Base.IsSupported)
        {
            return false;
        }

        (_, int ebx, int ecx, int edx) = X86Base.CpuId(0, 0);
        return ebx == 0x756E6547 && edx == 0x49656E69 && ecx == 0x6C65746E; // "Genu" "ineI" "ntel"
    }

    /// <summary>Prefetches the line <see cref="Distance"/> bytes past <paramref name="p"/> (one 64-byte line read per call).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Ahead(void* p)
    {
        if (Distance != 0)
        {
            Sse.Prefetch0((byte*)p + Distance);
        }
    }

    /// <summary>
    /// Prefetches the lines of [p, p + bytes) shifted by <see cref="Distance"/>: one call per loop step that reads
    /// <paramref name="bytes"/> (a constant at each call site) from p on. Successive steps' addresses are at most 64
    /// bytes apart, so every line of the stream is asked for once or twice.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Ahead(void* p, int bytes)
    {
        if (Distance != 0)
        {
            byte* a = (byte*)p + Distance;
            for (int o = 0; o < bytes; o += 64)
            {
                Sse.Prefetch0(a + o);
            }
        }
    }
}

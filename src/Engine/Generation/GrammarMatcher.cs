namespace GpuLlama.Generation;

/// <summary>
/// Where generation stands in a <see cref="Grammar"/>: the set of parse stacks that the text so far leaves open
/// (llama.cpp's llama_grammar stacks), each a persistent list of positions in rule alternatives whose top is a
/// character class (or empty: the grammar is complete). A token is allowed when its bytes, decoded as UTF-8 from
/// where the last token left off, leave some stack alive; end-of-sequence only when one is complete. The sampler
/// asks <see cref="Allows"/> of the token it drew and, when that fails, of every token (llama.cpp's order).
/// </summary>
public sealed class GrammarMatcher
{
    private readonly Grammar _grammar;
    private readonly ModelTokenizer _tokenizer;
    private List<Stack?> _stacks;
    private Utf8State _partial;

    public GrammarMatcher(Grammar grammar, ModelTokenizer tokenizer)
    {
        _grammar = grammar;
        _tokenizer = tokenizer;
        _stacks = [];
        foreach (Symbol[] alt in grammar.Rules[grammar.Root])
        {
            Expand(new Stack(alt, 0, null), _stacks);
        }

        _stacks = Distinct(_stacks);
    }

    /// <summary>Whether the text so far is a whole sentence of the grammar (end-of-sequence is allowed).</summary>
    public bool IsComplete => _partial.Remaining == 0 && _stacks.Contains(null);

    /// <summary>Whether <paramref name="token"/> may come next.</summary>
    public bool Allows(int token)
    {
        if (_tokenizer.IsEos(token))
        {
            return IsComplete;
        }

        ReadOnlySpan<byte> bytes = _tokenizer.TextBytes(token);
        return !bytes.IsEmpty && Advance(bytes, out _, out _);
    }

    /// <summary>Moves past <paramref name="token"/> (one <see cref="Allows"/> said yes to).</summary>
    public void Accept(int token)
    {
        if (_tokenizer.IsEos(token))
        {
            return;
        }

        if (!Advance(_tokenizer.TextBytes(token), out List<Stack?> stacks, out Utf8State partial))
        {
            throw new GpuLlamaException($"the grammar does not allow token {token} ('{_tokenizer.Piece(token)}') here");
        }

        _stacks = stacks;
        _partial = partial;
    }

    /// <summary>Moves past <paramref name="text"/>; false (and no move) when the grammar does not allow it.</summary>
    public bool AcceptText(string text)
    {
        if (!Advance(System.Text.Encoding.UTF8.GetBytes(text), out List<Stack?> stacks, out Utf8State partial))
        {
            return false;
        }

        _stacks = stacks;
        _partial = partial;
        return true;
    }

    /// <summary>The stacks and UTF-8 state after <paramref name="bytes"/> from the current ones; false where the grammar refuses them (nothing changes here).</summary>
    private bool Advance(ReadOnlySpan<byte> bytes, out List<Stack?> result, out Utf8State rest)
    {
        result = _stacks;
        rest = _partial;
        foreach (byte b in bytes)
        {
            if (!rest.Push(b, out int codePoint, out bool invalid))
            {
                if (invalid)
                {
                    return false;
                }

                continue; // inside a multi-byte sequence
            }

            var next = new List<Stack?>();
            foreach (Stack? s in result)
            {
                if (s is not null && s.Top.Matches(codePoint))
                {
                    Expand(s.Advanced(), next);
                }
            }

            if (next.Count == 0)
            {
                return false;
            }

            result = next.Count > 1 ? Distinct(next) : next;
        }

        if (rest.Remaining > 0)
        {
            // the token ends inside a character: some stack must take a code point that starts with these bits
            (int lo, int hi) = rest.Span();
            if (!result.Any(s => s is not null && s.Top.MatchesSome(lo, hi)))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Adds the stacks <paramref name="stack"/> stands for once every rule reference on top is expanded: tops that are character classes, or null (complete).</summary>
    private void Expand(Stack? stack, List<Stack?> into, int depth = 0)
    {
        if (depth > MaxDepth)
        {
            // rules that can be empty nested this deep (e.g. ("a"?){0,5000}) would exhaust the thread's stack
            throw new GpuLlamaException($"the grammar nests rules that can match nothing more than {MaxDepth} deep");
        }

        if (stack is null)
        {
            into.Add(null);
            return;
        }

        if (stack.Index == stack.Sequence.Length)
        {
            Expand(stack.Next, into, depth + 1); // this alternative is done: return to where the rule was referenced
            return;
        }

        Symbol s = stack.Sequence[stack.Index];
        if (!s.IsRule)
        {
            into.Add(stack);
            return;
        }

        // the continuation after the reference; a reference last in its sequence needs none (right recursion stays flat)
        Stack? after = stack.Index + 1 < stack.Sequence.Length ? new Stack(stack.Sequence, stack.Index + 1, stack.Next) : stack.Next;
        foreach (Symbol[] alt in _grammar.Rules[s.Rule])
        {
            Expand(alt.Length == 0 ? after : new Stack(alt, 0, after), into, depth + 1);
        }
    }

    private const int MaxDepth = 2000;

    private static List<Stack?> Distinct(List<Stack?> stacks) => [.. stacks.Distinct(StackComparer.Instance)];

    /// <summary>A position in an alternative, above the positions to return to (shared between stacks).</summary>
    private sealed class Stack(Symbol[] sequence, int index, Stack? next)
    {
        public Symbol[] Sequence { get; } = sequence;

        public int Index { get; } = index;

        public Stack? Next { get; } = next;

        public Symbol Top => Sequence[Index];

        public Stack? Advanced() => new(Sequence, Index + 1, Next);
    }

    private sealed class StackComparer : IEqualityComparer<Stack?>
    {
        public static readonly StackComparer Instance = new();

        public bool Equals(Stack? a, Stack? b)
        {
            while (a is not null && b is not null)
            {
                if (!ReferenceEquals(a, b) && (!ReferenceEquals(a.Sequence, b.Sequence) || a.Index != b.Index))
                {
                    return false;
                }

                if (ReferenceEquals(a, b))
                {
                    return true;
                }

                (a, b) = (a.Next, b.Next);
            }

            return a is null && b is null;
        }

        public int GetHashCode(Stack? s)
        {
            var h = new HashCode();
            for (; s is not null; s = s.Next)
            {
                h.Add(System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(s.Sequence));
                h.Add(s.Index);
            }

            return h.ToHashCode();
        }
    }

    /// <summary>A UTF-8 decoder's state between tokens: the bits of a code point so far and how many bytes it still needs.</summary>
    private struct Utf8State
    {
        private int _value;
        private int _length; // bytes of the whole sequence

        public int Remaining { get; private set; }

        /// <summary>Takes a byte; true with the code point when one is complete; invalid on a malformed sequence.</summary>
        public bool Push(byte b, out int codePoint, out bool invalid)
        {
            codePoint = 0;
            invalid = false;
            if (Remaining > 0)
            {
                if ((b & 0xC0) != 0x80)
                {
                    invalid = true;
                    return false;
                }

                _value = (_value << 6) | (b & 0x3F);
                if (--Remaining > 0)
                {
                    return false;
                }

                codePoint = _value;
                // overlong forms and surrogates are not UTF-8
                invalid = codePoint < Smallest(_length) || codePoint is >= 0xD800 and <= 0xDFFF || codePoint > 0x10FFFF;
                return !invalid;
            }

            (int need, int bits) = b switch
            {
                < 0x80 => (0, b),
                >= 0xC2 and < 0xE0 => (1, b & 0x1F),
                >= 0xE0 and < 0xF0 => (2, b & 0x0F),
                >= 0xF0 and < 0xF5 => (3, b & 0x07),
                _ => (-1, 0),
            };
            if (need < 0)
            {
                invalid = true;
                return false;
            }

            _value = bits;
            _length = need + 1;
            Remaining = need;
            codePoint = bits;
            return need == 0;
        }

        /// <summary>The code points the pending bytes can still become (not an overlong form: at least the sequence length's smallest).</summary>
        public readonly (int Lo, int Hi) Span() =>
            (Math.Max(_value << (6 * Remaining), Smallest(_length)), Math.Min(((_value + 1) << (6 * Remaining)) - 1, 0x10FFFF));

        private static int Smallest(int length) => length switch { 2 => 0x80, 3 => 0x800, 4 => 0x10000, _ => 0 };
    }
}

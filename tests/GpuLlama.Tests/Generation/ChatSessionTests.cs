using GpuLlama.Generation;
using GpuLlama.Model;
using Xunit;

namespace GpuLlama.Tests.Generation;

/// <summary>
/// ChatSession on synthetic:tiny (F32, Llama 2 template): a second turn sends only the new part of the conversation
/// and gives the tokens a fresh cache gives for the same token sequence; turns that leave the cache unlike the
/// conversation (a stop string, a reply left early) start over; a prompt too long for the context changes nothing.
/// </summary>
public sealed class ChatSessionTests
{
    private static readonly GenerationOptions s_greedy = new() { MaxTokens = 6, Sampling = new SamplerSettings { Temperature = 0 } };

    [Fact]
    public void A_second_turn_continues_the_cache_and_equals_the_conversation_from_scratch()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32");
        var chat = new ChatSession(model, "be brief");
        GeneratedToken[] first = [.. chat.Send("hello there", s_greedy)];
        Assert.Equal(StopReason.MaxTokens, chat.LastStopReason);
        (int firstTokens, int firstAt) = chat.LastPrompt;
        Assert.Equal(0, firstAt);

        GeneratedToken[] second = [.. chat.Send("and again", s_greedy)];
        Assert.Equal(firstTokens + 5, chat.LastPrompt.Position); // the first prompt and reply (its last token runs now)
        Assert.True(chat.LastPrompt.Tokens < firstTokens + 6);   // only the new part was sent
        Assert.Equal(["system", "user", "assistant", "user", "assistant"], chat.Messages.Select(m => m.Role));
        Assert.Equal(string.Concat(first.Select(t => t.Text)), chat.Messages[2].Content);

        // the same tokens through a fresh generator
        string rendered1 = ChatFormatter.Format(model.Tokenizer, [new("system", "be brief"), new("user", "hello there")], addGenerationPrompt: true);
        string rendered2 = ChatFormatter.Format(model.Tokenizer, chat.Messages.Take(4).ToList(), addGenerationPrompt: true);
        string cached = rendered1 + chat.Messages[2].Content;
        Assert.StartsWith(cached, rendered2);
        int[] sequence = [.. model.Tokenizer.Encode(rendered1, addBos: true), .. first.Select(t => t.Id), .. model.Tokenizer.Encode(rendered2[cached.Length..], addBos: false)];
        Generator fresh = model.CreateGenerator();
        Assert.Equal(fresh.Generate(sequence, s_greedy).Select(t => t.Id), second.Select(t => t.Id));
    }

    [Fact]
    public void Turns_that_leave_the_cache_unlike_the_conversation_start_over()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32");
        var chat = new ChatSession(model);
        string reply = string.Concat(chat.Send("hello there", s_greedy).Select(t => t.Text));

        // a stop string: the cache holds part of it, so the next turn sends everything again
        var chat2 = new ChatSession(model);
        _ = chat2.Send("hello there", s_greedy with { StopSequences = [reply.Substring(2, 3)] }).ToList();
        Assert.Equal(StopReason.StopSequence, chat2.LastStopReason);
        _ = chat2.Send("and again", s_greedy).ToList();
        Assert.Equal(0, chat2.LastPrompt.Position);

        // a reply the caller left early
        var chat3 = new ChatSession(model);
        _ = chat3.Send("hello there", s_greedy).Take(2).ToList();
        _ = chat3.Send("and again", s_greedy).ToList();
        Assert.Equal(0, chat3.LastPrompt.Position);
        Assert.Equal(4, chat3.Messages.Count);
    }

    [Fact]
    public void A_prompt_the_context_cannot_hold_changes_nothing()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32", new LoadOptions { ContextLength = 192 });
        var chat = new ChatSession(model);
        _ = chat.Send("hello", s_greedy).ToList();
        int at = chat.LastPrompt.Tokens + 5;
        Assert.Throws<GpuLlamaException>(() => chat.Send(string.Join(" ", Enumerable.Repeat("once upon a time", 40)), s_greedy).ToList());
        Assert.Equal(2, chat.Messages.Count);
        _ = chat.Send("hi", s_greedy).ToList();
        Assert.Equal(at, chat.LastPrompt.Position); // the cache was kept
    }

    [Fact]
    public void A_long_conversation_leaves_its_oldest_exchanges_out()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32", new LoadOptions { ContextLength = 256 });
        var chat = new ChatSession(model, "sys");
        var options = s_greedy with { MaxTokens = 16 };
        bool trimmed = false;
        for (int turn = 0; turn < 8; turn++)
        {
            _ = chat.Send($"message number {turn}", options).ToList();
            Assert.NotEqual(StopReason.ContextFull, chat.LastStopReason);
            trimmed |= chat.LastPrompt.Position == 0 && turn > 0;
        }

        Assert.True(trimmed, "eight turns of ~70 tokens never had to start over in a context of 256");
        Assert.Equal("system", chat.Messages[0].Role);
        Assert.Equal("message number 7", chat.Messages[^2].Content);
        Assert.DoesNotContain(chat.Messages, m => m.Content == "message number 0");
        string rendered = ChatFormatter.Format(model.Tokenizer, chat.Messages, addGenerationPrompt: false);
        Assert.True(model.Tokenizer.Encode(rendered, addBos: true).Length <= 256);
    }

    [Fact]
    public async Task SendAsync_streams_the_same_reply_and_continues_the_cache()
    {
        using LlamaModel model = LlamaModel.Load("synthetic:tiny:f32");
        var sync = new ChatSession(model);
        string want1 = string.Concat(sync.Send("hello there", s_greedy).Select(t => t.Text));
        string want2 = string.Concat(sync.Send("and again", s_greedy).Select(t => t.Text));

        var chat = new ChatSession(model);
        var got1 = new System.Text.StringBuilder();
        await foreach (string piece in chat.SendAsync("hello there", s_greedy))
        {
            got1.Append(piece);
        }

        var got2 = new System.Text.StringBuilder();
        await foreach (string piece in chat.SendAsync("and again", s_greedy))
        {
            got2.Append(piece);
        }

        Assert.Equal(want1, got1.ToString());
        Assert.Equal(want2, got2.ToString());
        Assert.Equal(sync.LastPrompt, chat.LastPrompt);
    }
}

using System.Text.Json;
using GpuLlama.Formats;
using GpuLlama.Generation;
using Xunit;

namespace GpuLlama.Tests.Generation;

public class ChatTemplateTests
{
    private const string Llama3Json = "vocab/llama3/tokenizer.json";
    private const string SpmGguf = "vocab/ggml-vocab-llama-spm.gguf";

    private static readonly ChatMessage[] s_conversation =
    [
        new("system", "You are a helpful assistant."),
        new("user", "  Hi there!\n"),
        new("assistant", "Hello! How can I help?"),
        new("user", "Tell me a joke."),
    ];

    [FixtureFact(Llama3Json)]
    public void Llama3_FixtureTemplate_FormatsAndEncodesWithOneBos()
    {
        // The directory: tokenizer.json + tokenizer_config.json (bos_token, chat_template) beside it.
        ModelTokenizer tok = ModelTokenizer.Load(Fixtures.Get("vocab", "llama3"));
        using JsonDocument config = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Get("vocab", "llama3", "tokenizer_config.json")));
        Assert.Equal(config.RootElement.GetProperty("chat_template").GetString(), tok.ChatTemplate);
        Assert.Equal(ChatFamily.Llama3, ChatFormatter.Detect(tok.ChatTemplate));

        // The fixture's Jinja template, evaluated by hand: bos_token + per message header/trimmed content/<|eot_id|>,
        // then the assistant header. The tokenizer adds BOS itself, so the text leaves it out.
        const string expected =
            "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n";
        string prompt = ChatFormatter.Format(tok, s_conversation, addGenerationPrompt: true);
        Assert.Equal(expected, prompt);

        int[] ids = tok.Encode(prompt);
        Assert.Equal(128000, ids[0]);
        Assert.Equal(1, ids.Count(id => id == 128000));
        Assert.Equal(128006, ids[1]);
        Assert.Equal(5, ids.Count(id => id == 128006));
        Assert.Equal(4, ids.Count(id => id == 128009));
        Assert.Equal([128006, 78191, 128007, 271], ids[^4..]);

        string noPrompt = ChatFormatter.Format(tok, s_conversation, addGenerationPrompt: false);
        Assert.Equal(expected[..^"<|start_header_id|>assistant<|end_header_id|>\n\n".Length], noPrompt);
    }

    private static ModelTokenizer SpmWith(string? template, bool addBos)
    {
        var md = new Dictionary<string, object>(GgufSource.ReadMetadata(Fixtures.Get(SpmGguf)))
        {
            ["tokenizer.ggml.add_bos_token"] = addBos,
        };
        if (template is null)
        {
            md.Remove("tokenizer.chat_template");
        }
        else
        {
            md["tokenizer.chat_template"] = template;
        }

        return ModelTokenizer.FromMetadata(md, "vocab.gguf");
    }

    private const string Llama2Template =
        "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}" +
        "{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'].strip() + '\\n<</SYS>>\\n\\n' }}" +
        "{% elif message['role'] == 'assistant' %}{{ ' '  + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    [FixtureFact(SpmGguf)]
    public void Llama2_SystemFoldedIntoFirstUser_BosTextOnlyInsideHistory()
    {
        ModelTokenizer tok = SpmWith(Llama2Template, addBos: true);
        Assert.Equal(ChatFamily.Llama2, ChatFormatter.Detect(tok.ChatTemplate));
        const string expected =
            "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHi there! [/INST] Hello! How can I help? </s>" +
            "<s>[INST] Tell me a joke. [/INST]";
        string prompt = ChatFormatter.Format(tok, s_conversation, addGenerationPrompt: true);
        Assert.Equal(expected, prompt);
        int[] ids = tok.Encode(prompt);
        Assert.Equal(1, ids[0]);
        Assert.NotEqual(1, ids[1]);
        Assert.Equal(2, ids.Count(id => id == 1));
        Assert.Equal(1, ids.Count(id => id == 2));

        // A vocabulary that does not add BOS gets it written at the start.
        ModelTokenizer noBos = SpmWith(Llama2Template, addBos: false);
        Assert.Equal("<s>" + expected, ChatFormatter.Format(noBos, s_conversation, addGenerationPrompt: true));
        Assert.Equal(ids, noBos.Encode(ChatFormatter.Format(noBos, s_conversation, addGenerationPrompt: true)));
    }

    [FixtureFact(SpmGguf)]
    public void NoTemplate_FallsBackToChatMl()
    {
        ModelTokenizer tok = SpmWith(null, addBos: true);
        Assert.Null(tok.ChatTemplate);
        string prompt = ChatFormatter.Format(tok, [new("system", "Be brief."), new("user", "Hi")], addGenerationPrompt: true);
        Assert.Equal("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", prompt);
    }

    [FixtureFact(SpmGguf)]
    public void ChatMlAndZephyrTemplates_AreRecognised()
    {
        const string chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
        ModelTokenizer tok = SpmWith(chatml, addBos: true);
        Assert.Equal(ChatFamily.ChatMl, ChatFormatter.Detect(chatml));
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n", ChatFormatter.Format(tok, [new("user", "Hi")], addGenerationPrompt: false));

        const string zephyr = "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + eos_token }}{% endif %}{% endfor %}";
        tok = SpmWith(zephyr, addBos: true);
        Assert.Equal(ChatFamily.Zephyr, ChatFormatter.Detect(zephyr));
        Assert.Equal("<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n",
            ChatFormatter.Format(tok, [new("system", "Be brief."), new("user", "Hi")], addGenerationPrompt: true));
    }

    [Fact]
    public void UnknownTemplate_Throws()
    {
        var e = Assert.Throws<GpuLlamaException>(() => ChatFormatter.Detect("{{ messages[0].content }}\n### Response:"));
        Assert.StartsWith("chat template not recognised", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}

using System.Text;

namespace GpuLlama.Generation;

/// <summary>One chat turn: role ("system", "user", "assistant") and its text.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>The chat formats we write (llama.cpp's <c>llm_chat_template</c> families of the same names).</summary>
public enum ChatFamily
{
    Llama3,
    Llama2,
    ChatMl,
    Zephyr,
}

/// <summary>
/// Formats a conversation the way the model was trained to see it. Like llama.cpp's built-in templates
/// (<c>llm_chat_apply_template</c>) we do not run Jinja: the model's template is recognised by its markers and the
/// matching format is written in code. The result is meant for <see cref="ModelTokenizer.Encode"/> with
/// parseSpecial=true, which turns the written control tokens back into their ids.
/// </summary>
public static class ChatFormatter
{
    /// <summary>Which family a Jinja chat template belongs to; no template → ChatML, as llama.cpp's common chat code falls back to.</summary>
    public static ChatFamily Detect(string? template)
    {
        if (string.IsNullOrWhiteSpace(template))
        {
            return ChatFamily.ChatMl;
        }

        if (template.Contains("<|start_header_id|>", StringComparison.Ordinal) && template.Contains("<|end_header_id|>", StringComparison.Ordinal))
        {
            return ChatFamily.Llama3;
        }

        if (template.Contains("<|im_start|>", StringComparison.Ordinal))
        {
            return ChatFamily.ChatMl;
        }

        if (template.Contains("[INST]", StringComparison.Ordinal))
        {
            return ChatFamily.Llama2;
        }

        if (template.Contains("<|user|>", StringComparison.Ordinal))
        {
            return ChatFamily.Zephyr;
        }

        string head = template.Length > 60 ? template[..60] + "…" : template;
        throw new GpuLlamaException(
            $"chat template not recognised (supported: Llama 3, Llama 2 [INST], ChatML <|im_start|>, Zephyr <|user|>); template begins \"{head.ReplaceLineEndings("\\n")}\"");
    }

    /// <summary>
    /// The prompt text for <paramref name="messages"/>. The BOS text ("&lt;|begin_of_text|&gt;", "&lt;s&gt;") at the start is
    /// written only when the tokenizer does not add BOS itself: llama.cpp warns about the double BOS otherwise.
    /// </summary>
    public static string Format(ModelTokenizer tokenizer, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(messages);
        string bos = tokenizer.BosId >= 0 ? tokenizer.Piece(tokenizer.BosId) : "";
        string leadingBos = tokenizer.AddBos ? "" : bos;
        string eos = tokenizer.EosIds.Count > 0 ? tokenizer.Piece(tokenizer.EosIds[0]) : "</s>";
        var sb = new StringBuilder();
        switch (Detect(tokenizer.ChatTemplate))
        {
            case ChatFamily.Llama3:
                // Meta's Llama 3 template: header, two newlines, trimmed content, <|eot_id|>.
                sb.Append(leadingBos);
                foreach (ChatMessage m in messages)
                {
                    sb.Append("<|start_header_id|>").Append(m.Role).Append("<|end_header_id|>\n\n").Append(m.Content.Trim()).Append("<|eot_id|>");
                }

                if (addGenerationPrompt)
                {
                    sb.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }

                break;

            case ChatFamily.Llama2:
                FormatLlama2(sb, messages, bos, leadingBos, eos);
                break;

            case ChatFamily.ChatMl:
                foreach (ChatMessage m in messages)
                {
                    sb.Append("<|im_start|>").Append(m.Role).Append('\n').Append(m.Content).Append("<|im_end|>\n");
                }

                if (addGenerationPrompt)
                {
                    sb.Append("<|im_start|>assistant\n");
                }

                break;

            case ChatFamily.Zephyr:
                foreach (ChatMessage m in messages)
                {
                    sb.Append("<|").Append(m.Role).Append("|>\n").Append(m.Content).Append(eos).Append('\n');
                }

                if (addGenerationPrompt)
                {
                    sb.Append("<|assistant|>\n");
                }

                break;
        }

        return sb.ToString();
    }

    /// <summary>
    /// Meta's Llama 2 chat format: "&lt;s&gt;[INST] &lt;&lt;SYS&gt;&gt;\n{system}\n&lt;&lt;/SYS&gt;&gt;\n\n{user} [/INST] {answer} &lt;/s&gt;&lt;s&gt;[INST] …".
    /// A system message is folded into the next user message; the model answers after "[/INST]", so there is no
    /// separate generation prompt.
    /// </summary>
    private static void FormatLlama2(StringBuilder sb, IReadOnlyList<ChatMessage> messages, string bos, string leadingBos, string eos)
    {
        string? system = null;
        bool first = true;
        foreach (ChatMessage m in messages)
        {
            switch (m.Role)
            {
                case "system":
                    system = system is null ? m.Content : system + "\n" + m.Content;
                    break;
                case "user":
                    AppendUser(m.Content);
                    break;
                default:
                    sb.Append(' ').Append(m.Content.Trim()).Append(' ').Append(eos);
                    break;
            }
        }

        if (system is not null)
        {
            // A system message with no user turn after it still reaches the model.
            AppendUser("");
        }

        void AppendUser(string text)
        {
            // Each part trimmed on its own, as llama.cpp's llama2-sys-strip format does.
            string content = system is null ? text.Trim() : "<<SYS>>\n" + system.Trim() + "\n<</SYS>>\n\n" + text.Trim();
            system = null;
            sb.Append(first ? leadingBos : bos).Append("[INST] ").Append(content).Append(" [/INST]");
            first = false;
        }
    }
}

// Chat templates without Jinja: the two families fp8rl targets, rendered as their HF templates
// render plain-text messages, plus a raw mode.
//
//   chatml (Qwen2, Qwen2.5, Qwen3):
//     <|im_start|>{role}\n{content}<|im_end|>\n ...       generation prompt: <|im_start|>assistant\n
//     Qwen2/2.5 templates add a default system turn when messages[0] is not a system message;
//     its text is read from the template ("You are Qwen, created by Alibaba Cloud. ...").
//     Qwen3's template (it has <think>) renders system/user turns and the generation prompt as
//     plain ChatML (enable_thinking left at its default, true); the reasoning blocks it puts in
//     assistant turns after the last user turn are not reproduced, so such input is refused.
//   llama3 (Llama 3 / 3.0 template):
//     <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|> ...
//     generation prompt: <|start_header_id|>assistant<|end_header_id|>\n\n
//     The Llama 3.1+ template (dated system header, tools) is recognised and refused.
//   raw: one user message, its content as is.
//
// Roles are system, user, assistant; tool calls and tool results are not supported.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace fp8rl::hf {

enum class ChatFormat { chatml, llama3, raw };

struct ChatMessage {
  std::string role;     // system | user | assistant
  std::string content;
};

struct ChatTemplate {
  ChatFormat format = ChatFormat::raw;
  std::string default_system;                   // chatml: added when messages[0] is not system
  std::string bos_token = "<|begin_of_text|>";  // llama3
  bool qwen3_thinking = false;                  // chatml from a template with <think> blocks
  std::string source;                           // tokenizer_config.json it came from, or the setting
};

// Recognises the template of `<dir>/tokenizer_config.json` (or that file itself). Throws
// ConfigError "unknown chat template in <file>; set model.chat_template to chatml, llama3 or raw"
// when it has none or one we do not render exactly.
ChatTemplate detect_chat_template(const std::string& tokenizer_config);

// model.chat_template: "auto" detects from `tokenizer_dir`; "chatml" | "llama3" | "raw" take the
// plain format (no default system turn).
ChatTemplate resolve_chat_template(std::string_view setting, const std::string& tokenizer_dir);

// The prompt text (special tokens as text; encode them with Tokenizer::encode). Throws
// ConfigError for a role or a message sequence the template cannot render.
std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> messages, bool add_generation_prompt);

}  // namespace fp8rl::hf

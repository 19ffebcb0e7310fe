// Chat templates: detection from tokenizer_config.json and rendering. The expected strings were
// rendered by jinja2 (trim_blocks, lstrip_blocks: transformers' settings) from the templates
// below: Llama 3's is the released one; the Qwen2.5 and Qwen3 ones keep the released templates'
// branches for plain-text messages (tool-call branches shortened).
#include "core/hf/chat_template.h"

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "tests/test_util.h"

using fp8rl::hf::ChatFormat;
using fp8rl::hf::ChatMessage;
using fp8rl::ConfigError;
using fp8rl::test::TempDir;

namespace {

const std::string kQwen25 = R"TPL({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)TPL";
const std::string kQwen3 = R"TPL({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\n<tools>" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- if '</think>' in content %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %})TPL";
const std::string kLlama3 = R"TPL({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %})TPL";

// Writes <dir>/tokenizer_config.json with this chat_template (and Llama 3's bos_token object).
std::string config_dir(const TempDir& dir, const nlohmann::json& tmpl) {
  nlohmann::json j = {{"bos_token", {{"content", "<|begin_of_text|>"}, {"special", true}}}, {"chat_template", tmpl}};
  if (tmpl.is_null()) j.erase("chat_template");
  dir.write("tokenizer_config.json", j.dump());
  return dir.path().string();
}

const std::vector<ChatMessage> kUser = {{"user", "  What is 2+2?\n"}};
const std::vector<ChatMessage> kConv = {
    {"system", "Be brief."}, {"user", "  2+2?\n"}, {"assistant", "4"}, {"user", "and 3+3? \xF0\x9F\x99\x82"}};

}  // namespace

TEST_CASE("chat template: Qwen2.5 ChatML with its default system turn") {
  TempDir dir;
  const auto t = fp8rl::hf::detect_chat_template(config_dir(dir, kQwen25));
  CHECK(t.format == ChatFormat::chatml);
  CHECK(t.default_system == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  CHECK(fp8rl::hf::render_chat(t, kUser, true) ==
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n");
  CHECK(fp8rl::hf::render_chat(t, kUser, false) ==
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n  What is 2+2?\n<|im_end|>\n");
  CHECK(fp8rl::hf::render_chat(t, kConv, true) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  2+2?\n<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nand 3+3? \xF0\x9F\x99\x82<|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("chat template: Qwen3 ChatML (no default system, refuses turns it would add <think> to)") {
  TempDir dir;
  const auto t = fp8rl::hf::detect_chat_template(config_dir(dir, kQwen3));
  CHECK(t.format == ChatFormat::chatml);
  CHECK(t.default_system.empty());
  CHECK(t.qwen3_thinking);
  CHECK(fp8rl::hf::render_chat(t, kUser, true) == "<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n");
  CHECK(fp8rl::hf::render_chat(t, kConv, true) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  2+2?\n<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nand 3+3? \xF0\x9F\x99\x82<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<ChatMessage> trailing = {{"user", "hi"}, {"assistant", "hello"}};
  REQUIRE_THROWS_CONTAINING(fp8rl::hf::render_chat(t, trailing, false), ConfigError, "reasoning blocks");
}

TEST_CASE("chat template: Llama 3 (bos, trimmed content, generation prompt)") {
  TempDir dir;
  const auto t = fp8rl::hf::detect_chat_template(config_dir(dir, kLlama3));
  CHECK(t.format == ChatFormat::llama3);
  CHECK(t.bos_token == "<|begin_of_text|>");
  CHECK(fp8rl::hf::render_chat(t, kUser, true) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(fp8rl::hf::render_chat(t, kUser, false) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>");
  CHECK(fp8rl::hf::render_chat(t, kConv, true) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nand 3+3? \xF0\x9F\x99\x82<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Python's str.strip() also strips Unicode spaces such as U+3000.
  const std::vector<ChatMessage> wide = {{"user", "\xE3\x80\x80x\xE3\x80\x80"}};
  CHECK(fp8rl::hf::render_chat(t, wide, false) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>");
}

TEST_CASE("chat template: unknown or unsupported templates are refused, not guessed") {
  TempDir dir;
  SECTION("Gemma-style template") {
    const std::string d = config_dir(dir, "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m.role }}{% endfor %}");
    REQUIRE_THROWS_CONTAINING(fp8rl::hf::detect_chat_template(d), ConfigError,
                              "unknown chat template in " + (dir.path() / "tokenizer_config.json").string() +
                                  "; set model.chat_template to chatml, llama3 or raw");
  }
  SECTION("no chat_template key") {
    REQUIRE_THROWS_CONTAINING(fp8rl::hf::detect_chat_template(config_dir(dir, nullptr)), ConfigError, "unknown chat template in");
  }
  SECTION("Llama 3.1 (dated system header)") {
    const std::string d = config_dir(dir, "{{- 'Cutting Knowledge Date: December 2023\\n' }}<|start_header_id|>");
    REQUIRE_THROWS_CONTAINING(fp8rl::hf::detect_chat_template(d), ConfigError, "Llama 3.1+");
  }
  SECTION("no tokenizer_config.json") {
    REQUIRE_THROWS_CONTAINING(fp8rl::hf::resolve_chat_template("auto", dir.path().string()), ConfigError,
                              "cannot open, so the chat template is unknown");
  }
  SECTION("a tool message") {
    const auto t = fp8rl::hf::resolve_chat_template("chatml", "");
    const std::vector<ChatMessage> tool = {{"tool", "{}"}};
    REQUIRE_THROWS_CONTAINING(fp8rl::hf::render_chat(t, tool, true), ConfigError, "role 'tool'");
  }
  SECTION("template list form picks 'default'") {
    nlohmann::json list = nlohmann::json::array({{{"name", "tool_use"}, {"template", "x"}}, {{"name", "default"}, {"template", kQwen3}}});
    CHECK(fp8rl::hf::detect_chat_template(config_dir(dir, list)).format == ChatFormat::chatml);
  }
}

TEST_CASE("chat template: explicit settings and raw mode") {
  const auto chatml = fp8rl::hf::resolve_chat_template("chatml", "/nonexistent");
  CHECK(chatml.default_system.empty());
  CHECK(fp8rl::hf::render_chat(chatml, kUser, true) == "<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n");
  const auto llama = fp8rl::hf::resolve_chat_template("llama3", "/nonexistent");
  CHECK(fp8rl::hf::render_chat(llama, kUser, false).starts_with("<|begin_of_text|><|start_header_id|>user"));
  const auto raw = fp8rl::hf::resolve_chat_template("raw", "/nonexistent");
  CHECK(fp8rl::hf::render_chat(raw, kUser, true) == "  What is 2+2?\n");
  REQUIRE_THROWS_CONTAINING(fp8rl::hf::render_chat(raw, kConv, true), ConfigError, "exactly one user message (got 4)");
  REQUIRE_THROWS_CONTAINING(fp8rl::hf::resolve_chat_template("jinja", ""), ConfigError, "unknown value 'jinja'");
}

// The tokenizer files of random checkpoints: they load in fp8rl's tokenizer, encode any text
// one byte per id with special tokens whole, decode back, and carry a chat template that
// detection recognises.
#include <array>
#include <filesystem>

#include "core/hf/chat_template.h"
#include "core/util/error.h"
#include "core/model/byte_tokenizer.h"
#include "core/model/random_checkpoint.h"
#include "core/recipe/model_presets.h"
#include "core/hf/tokenizer.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::hf;

TEST_CASE("random checkpoints carry a byte-level tokenizer and their family's chat template", "[byte_tokenizer]") {
  fp8rl::test::TempDir dir;
  ModelShape tiny = *recipe::qwen3_preset("tiny");
  for (const char* arch : {"qwen3", "llama"}) {
    const std::string out = (dir.path() / arch).string();
    model::write_random_checkpoint(out, arch, tiny, 1);
    const Tokenizer tok = Tokenizer::from_file(out);
    const bool llama = std::string(arch) == "llama";
    const std::string special = llama ? "<|eot_id|>" : "<|im_end|>";
    const std::string text = "héllo " + special + " 你好\n";
    const std::vector<int32_t> ids = tok.encode(text);
    INFO(arch);
    // One id per UTF-8 byte, plus one for the special token.
    CHECK(ids.size() == text.size() - special.size() + 1);
    for (int32_t id : ids) CHECK(id < tiny.vocab_size);
    CHECK(tok.decode(ids) == text);
    const ChatTemplate t = detect_chat_template(out);
    CHECK(t.format == (llama ? ChatFormat::llama3 : ChatFormat::chatml));
    const std::array<ChatMessage, 1> msgs{ChatMessage{"user", "2+2?"}};
    const std::string rendered = render_chat(t, msgs, true);
    CHECK(rendered.find("2+2?") != std::string::npos);
  }
  tiny.vocab_size = 100;  // below the 259 ids the tokenizer needs: weights only
  model::write_random_checkpoint((dir.path() / "small").string(), "qwen3", tiny, 1);
  CHECK(std::filesystem::exists(dir.path() / "small" / "model.safetensors"));
  CHECK_FALSE(std::filesystem::exists(dir.path() / "small" / "tokenizer.json"));
}

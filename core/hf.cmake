# fp8rl_hf: the Hugging Face file formats a model directory holds besides config.json:
# safetensors weights, tokenizer.json (byte-level BPE), the chat template of tokenizer_config.json.
# Host-only (no ATen), so these files use the distro's fmt (through spdlog) and nlohmann_json.
#
# The pre-tokenizer regexes need Unicode properties (\p{L}, \p{N}) that std::regex lacks: PCRE2
# (Debian/Ubuntu: libpcre2-dev). Found by header and library, so no pkg-config is needed.
# FP8RL_DEB_ROOT (environment) points at an unpacked libpcre2-dev .deb on machines that have
# the runtime library but no headers and no package registry (the GPU machine:
# scripts/gpu-deps.sh); libpcre2-8.so.0 itself is then the system's.
find_path(FP8RL_PCRE2_INCLUDE_DIR pcre2.h HINTS "$ENV{FP8RL_DEB_ROOT}/usr/include")
find_library(FP8RL_PCRE2_LIBRARY NAMES pcre2-8 libpcre2-8.so.0)
if(NOT FP8RL_PCRE2_INCLUDE_DIR OR NOT FP8RL_PCRE2_LIBRARY)
  message(FATAL_ERROR "PCRE2 (8-bit) not found: install libpcre2-dev (the tokenizer's pre-tokenizer regexes need it)")
endif()
if(NOT TARGET fp8rl::pcre2)
  add_library(fp8rl::pcre2 UNKNOWN IMPORTED)
  set_target_properties(fp8rl::pcre2 PROPERTIES
    IMPORTED_LOCATION "${FP8RL_PCRE2_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${FP8RL_PCRE2_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS "PCRE2_CODE_UNIT_WIDTH=8")
endif()

# NFC normalization (the normalizer of the real Qwen2/Qwen2.5/Qwen3 tokenizer.json): utf8proc
# (Debian/Ubuntu: libutf8proc-dev). Found the same way, under the same FP8RL_DEB_ROOT (the GPU
# machine's unpacked .debs); the static libutf8proc.a (which libutf8proc-dev ships) is preferred,
# so the binaries need no libutf8proc.so.2 where only the -dev .deb was unpacked.
find_path(FP8RL_UTF8PROC_INCLUDE_DIR utf8proc.h HINTS "$ENV{FP8RL_DEB_ROOT}/usr/include")
find_library(FP8RL_UTF8PROC_LIBRARY NAMES libutf8proc.a utf8proc
  HINTS "$ENV{FP8RL_DEB_ROOT}/usr/lib/x86_64-linux-gnu")
if(NOT FP8RL_UTF8PROC_INCLUDE_DIR OR NOT FP8RL_UTF8PROC_LIBRARY)
  message(FATAL_ERROR "utf8proc not found: install libutf8proc-dev (the tokenizer's NFC normalizer needs it)")
endif()
if(NOT TARGET fp8rl::utf8proc)
  add_library(fp8rl::utf8proc UNKNOWN IMPORTED)
  set_target_properties(fp8rl::utf8proc PROPERTIES
    IMPORTED_LOCATION "${FP8RL_UTF8PROC_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${FP8RL_UTF8PROC_INCLUDE_DIR}")
  if(FP8RL_UTF8PROC_LIBRARY MATCHES "\\.a$")
    set_target_properties(fp8rl::utf8proc PROPERTIES INTERFACE_COMPILE_DEFINITIONS "UTF8PROC_STATIC")
  endif()
endif()

add_library(fp8rl_hf STATIC
  ${CMAKE_CURRENT_LIST_DIR}/safetensors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/unicode.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_regex.cpp
  ${CMAKE_CURRENT_LIST_DIR}/chat_template.cpp)
target_include_directories(fp8rl_hf PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(fp8rl_hf
  PUBLIC fp8rl_config
  PRIVATE spdlog::spdlog nlohmann_json::nlohmann_json fp8rl_warnings fp8rl::pcre2 fp8rl::utf8proc)

# fp8rl_model: the model definitions (core/model/): config.json beyond ModelShape, the decoder of
# the Qwen3 / Qwen2 / Llama 3 families with pluggable Linear / Attention / MLP, weight loading
# from safetensors, random checkpoints. ATen throughout, so no fmt/spdlog here (core/log.h).
add_library(fp8rl_model STATIC
  ${CMAKE_CURRENT_LIST_DIR}/model/model_config.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/architecture.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/weight_reader.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/layers.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/attention.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/decoder.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/random_checkpoint.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/byte_tokenizer.cpp)
target_include_directories(fp8rl_model PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(fp8rl_model
  PUBLIC fp8rl_hf fp8rl_config
  PRIVATE fp8rl_warnings nlohmann_json::nlohmann_json)
fp8rl_use_aten(fp8rl_model PCH)

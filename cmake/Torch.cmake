# LibTorch as imported targets, built by hand instead of through TorchConfig.cmake.
#
# Why not find_package(Torch): the PyPI wheel is a CUDA build, and its config insists on
# finding CUDA, cuDNN, NVRTC... even for a CPU-only build. We need exactly:
#   fp8rl::torch_cpu  - ATen + autograd on CPU (libtorch_cpu, libc10)
#   fp8rl::torch_cuda - the CUDA backend (libtorch_cuda, libc10_cuda); only when FP8RL_CUDA
#
# FP8RL_TORCH_DIR is the `torch` package directory (the one holding include/ and lib/):
#   dev/CI: extracted from the pinned wheel by scripts/setup.sh
#   GPU machine: python3 -c "import torch, os; print(os.path.dirname(torch.__file__))"
#
# Include directories are SYSTEM and attached only to targets that link these: torch ships
# its own fmt/ headers, so a target that sees torch's include path must not use the distro's
# fmt/spdlog (see core/util/log.h for the rule and tests/lint for its check).

if(NOT FP8RL_TORCH_DIR)
  message(FATAL_ERROR "FP8RL_TORCH_DIR is not set. HINT: run scripts/setup.sh, which fetches "
                      "LibTorch 2.11.0 and passes -DFP8RL_TORCH_DIR=... to CMake.")
endif()
if(NOT EXISTS "${FP8RL_TORCH_DIR}/include/ATen/ATen.h" OR NOT EXISTS "${FP8RL_TORCH_DIR}/lib/libtorch_cpu.so")
  message(FATAL_ERROR "FP8RL_TORCH_DIR=${FP8RL_TORCH_DIR} holds no LibTorch (want include/ATen/ATen.h "
                      "and lib/libtorch_cpu.so). HINT: rerun scripts/setup.sh.")
endif()

file(READ "${FP8RL_TORCH_DIR}/include/torch/headeronly/version.h" _fp8rl_torch_version_h LIMIT 4096)
string(REGEX MATCH "TORCH_VERSION_MAJOR ([0-9]+)" _m "${_fp8rl_torch_version_h}")
set(_major "${CMAKE_MATCH_1}")
string(REGEX MATCH "TORCH_VERSION_MINOR ([0-9]+)" _m "${_fp8rl_torch_version_h}")
set(_minor "${CMAKE_MATCH_1}")
if(NOT "${_major}.${_minor}" STREQUAL "2.11")
  message(FATAL_ERROR "LibTorch in ${FP8RL_TORCH_DIR} is ${_major}.${_minor}; fp8rl pins 2.11 so the C++ API "
                      "is the same on every machine. HINT: rerun scripts/setup.sh.")
endif()
message(STATUS "fp8rl: LibTorch ${_major}.${_minor} from ${FP8RL_TORCH_DIR}")

add_library(fp8rl_torch_cpu INTERFACE)
add_library(fp8rl::torch_cpu ALIAS fp8rl_torch_cpu)
target_include_directories(fp8rl_torch_cpu SYSTEM INTERFACE
  "${FP8RL_TORCH_DIR}/include"
  "${FP8RL_TORCH_DIR}/include/torch/csrc/api/include")
# The wheel is built with the C++11 ABI (GPU_MACHINE.md); mixing ABIs fails at link time.
target_compile_definitions(fp8rl_torch_cpu INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
target_link_libraries(fp8rl_torch_cpu INTERFACE
  "${FP8RL_TORCH_DIR}/lib/libtorch_cpu.so"
  "${FP8RL_TORCH_DIR}/lib/libc10.so")
# libtorch_cpu finds libcudart/libcupti through its own RPATH ($ORIGIN/../../nvidia/cu13/lib);
# ours only needs torch/lib.
set(FP8RL_TORCH_LIBDIR "${FP8RL_TORCH_DIR}/lib")

if(FP8RL_CUDA)
  add_library(fp8rl_torch_cuda INTERFACE)
  add_library(fp8rl::torch_cuda ALIAS fp8rl_torch_cuda)
  # --no-as-needed: nothing references libtorch_cuda's symbols directly, but loading it is
  # what registers the CUDA kernels with the dispatcher.
  target_link_libraries(fp8rl_torch_cuda INTERFACE
    fp8rl::torch_cpu
    "-Wl,--no-as-needed"
    "${FP8RL_TORCH_DIR}/lib/libtorch_cuda.so"
    "${FP8RL_TORCH_DIR}/lib/libc10_cuda.so"
    "-Wl,--as-needed"
    CUDA::cudart)
endif()

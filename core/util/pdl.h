// Programmatic dependent launch (PDL, Hopper and later): whether the engine's own CUDA kernels are
// launched so that the next kernel in the stream (or CUDA graph) may start before this one ends.
// A decode step is hundreds of small kernels; between two of them the GPU drains one grid and
// only then launches the next. With PDL the next grid's blocks are already resident, each held
// at its first instruction (griddepcontrol.wait, core/util/pdl.cuh) until the previous grid has
// finished and its writes are visible, so the same kernels run in the same order on the same
// data, with the launch gap hidden. On by default (1.01-1.07x decode tokens/s at Qwen3-8B shape,
// H100: docs/BENCHMARKS.md); FP8RL_PDL=0 turns it off (read once).
#pragma once

namespace fp8rl {

bool pdl_enabled();
// Tests run both modes in one process. A CUDA graph keeps the mode it was captured with.
void set_pdl_enabled(bool on);

// Whether the kernels that quantize a small FP8 projection's input (RMSNorm / SiLU-mul + 1x128
// quantization, and the quantization alone; quant/cuda/scaling_kernels.h says for how many rows)
// let the next grid launch before their own wait (pdl::begin(true), core/util/pdl.cuh) rather
// than after it. Their successor is then the FP8 GEMV, whose blocks take the SM slots the kernel
// before frees as its blocks finish (the previous GEMV's tail) and issue their first weight loads
// there, instead of once the quantization has begun. Same kernels, same data, same order: the
// bits do not change (tested). On by default (batch 1: 1.029-1.047x tokens/s, FP8 + FP8 KV,
// H100: docs/BENCHMARKS.md); FP8RL_PDL_EARLY_TRIGGER=0 turns it off (read once). A captured CUDA
// graph keeps the value it was captured with.
bool pdl_early_trigger();
void set_pdl_early_trigger(bool on);

}  // namespace fp8rl

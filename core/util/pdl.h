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

// How early the kernels before an FP8 projection let the next grid launch: 0, after their own wait
// (pdl::begin()); 1, before it (pdl::begin(true), core/util/pdl.cuh) in the kernels that quantize
// the projection's input (RMSNorm / SiLU-mul + 1x128 quantization, and the quantization alone);
// 2, also in the decode attention's split merge, the kernel before o_proj's quantization. The
// successor at batch 1-8 is the FP8 GEMV, whose blocks then take the SM slots the kernel before
// frees as its blocks finish and issue their first weight loads there (under the tail of the GEMV
// before, or of attention), instead of once the quantization has begun. Same kernels, same data,
// same order: the bits do not change (tested). FP8RL_PDL_EARLY_TRIGGER=0-2 (read once); 0 until
// measured.
int pdl_early_trigger();
void set_pdl_early_trigger(int level);

}  // namespace fp8rl

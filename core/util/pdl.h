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

}  // namespace fp8rl

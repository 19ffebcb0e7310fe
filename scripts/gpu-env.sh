# Sourced by the scripts that build on the GPU machine: headers it lacks come as .deb files
# fetched beforehand by scripts/gpu-deps.sh into .deps/debs (carried along with the working tree,
# since that machine reaches no package registry); CUDA on.
#   root=...; source "$root/scripts/gpu-env.sh"
if { [ ! -f /usr/include/pcre2.h ] || [ ! -f /usr/include/utf8proc.h ] || [ ! -f /usr/include/gloo/algorithm.h ]; } && ls "$root"/.deps/debs/*.deb >/dev/null 2>&1; then
  mkdir -p "$root/.deps/root"
  for d in "$root"/.deps/debs/*.deb; do dpkg -x "$d" "$root/.deps/root"; done
  export FP8RL_DEB_ROOT="$root/.deps/root"
fi
export FP8RL_CUDA=ON

#!/usr/bin/env bash
# Make the published model artifacts from a dir of model files:
#   OUT/models_part_aa, models_part_ab, ... (a zip of the pack, split) and their lines in OUT/SHA256SUMS
#   (plus a "models.zip" line: the hash of the reassembled archive, which demucsServe.sh checks too).
# The archive holds the files flat, with the pack's own SHA256SUMS (made here when the dir has none), which the
# engine verifies at load time.
#
# usage: build_model_pack.sh SRC_DIR OUT_DIR [--parts N | --part-size SIZE]   (default: --parts 3)
#   SIZE as split(1) takes it: 500M, 2G, 1048576. ZIP_LEVEL (default 1): models barely compress.
set -euo pipefail
LOG_FILE="${LOG_FILE:-}"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

usage() { echo "usage: $0 SRC_DIR OUT_DIR [--parts N | --part-size SIZE]" >&2; exit 2; }
[ $# -ge 2 ] || usage
src=$(cd "$1" && pwd) || die "no such dir: $1"
out=$2
shift 2
parts=3 part_size=""
while [ $# -gt 0 ]; do
    case $1 in
        --parts) parts=${2:?}; shift 2 ;;
        --part-size) part_size=${2:?}; parts=""; shift 2 ;;
        *) usage ;;
    esac
done
init_log
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

mapfile -t files < <(cd "$src" && find . -maxdepth 1 -type f ! -name 'SHA256SUMS' ! -name '.*' -printf '%f\n' | LC_ALL=C sort)
[ "${#files[@]}" -gt 0 ] || die "no model files in $src"
# Which recipes the pack can serve (the service's /status says the same once it is loaded).
has() { for f in "$@"; do [ -f "$src/$f" ] || return 1; done; }
recipes=""
! has Kim_Vocal_2.onnx Kim_Inst.onnx 04573f0d-f3cf25b2.th || recipes="mdx23"
! has 97d170e1-dbb4db15.th || recipes="${recipes:+$recipes }cinematic"
! has MelBandRoformer.ckpt config_vocals_mel_band_roformer_kj.yaml || recipes="${recipes:+$recipes }mel-roformer"
! has model_bs_roformer_ep_317_sdr_12.9755.ckpt model_bs_roformer_ep_317_sdr_12.9755.yaml \
    || recipes="${recipes:+$recipes }bs-roformer"
hq=no
! has 97d170e1-a778de4a.th 97d170e1-dbb4db15.th 97d170e1-e41a5468.th || hq=yes
log "recipes in this pack: ${recipes:-none complete (mdx23 needs Kim_Vocal_2.onnx Kim_Inst.onnx \
04573f0d-f3cf25b2.th, cinematic 97d170e1-dbb4db15.th, mel-roformer MelBandRoformer.ckpt with \
config_vocals_mel_band_roformer_kj.yaml, bs-roformer model_bs_roformer_ep_317_sdr_12.9755.ckpt with its .yaml)} \
(cinematic high_quality: $hq)"

if [ -f "$src/SHA256SUMS" ]; then
    # Refuse to publish a pack that does not match its own manifest.
    (cd "$src" && sha256sum --quiet -c SHA256SUMS) || die "$src does not match its SHA256SUMS"
    cp "$src/SHA256SUMS" "$work/SHA256SUMS"
else
    log "no SHA256SUMS in $src: writing one into the archive"
    (cd "$src" && sha256sum -- "${files[@]}") >"$work/SHA256SUMS"
fi

log "zipping ${#files[@]} files from $src"
(cd "$src" && zip -q -X -"${ZIP_LEVEL:-1}" "$work/models.zip" -- "${files[@]}")
(cd "$work" && zip -q -X models.zip SHA256SUMS)

total=$(stat -c %s "$work/models.zip")
if [ -n "$parts" ]; then
    [ "$parts" -ge 1 ] || die "--parts must be at least 1"
    part_size=$(( (total + parts - 1) / parts ))
fi
rm -f "$out"/models_part_*
split -a 2 -b "$part_size" "$work/models.zip" "$out/models_part_"

# Replace this builder's lines in the shared manifest, keep the others (the wheel bundles' lines).
manifest="$out/SHA256SUMS"
touch "$manifest"
grep -v -E '[ *](models_part_[a-z]+|models\.zip)$' "$manifest" >"$work/manifest" || true
(cd "$out" && sha256sum models_part_*) >>"$work/manifest"
(cd "$work" && sha256sum models.zip) >>"$work/manifest"
mv -f "$work/manifest" "$manifest"

log "wrote $(find "$out" -maxdepth 1 -name 'models_part_*' | wc -l) parts of $part_size bytes max ($total bytes in all) to $out"

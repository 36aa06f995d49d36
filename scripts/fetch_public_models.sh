#!/usr/bin/env bash
# Download the public model files the ensemble uses and check them, so an operator without a private file host
# can make a pack (then: build_model_pack.sh OUT_DIR PUBLISH_DIR).
#
# usage: fetch_public_models.sh OUT_DIR [--only-vocals | --cinematic | --roformer | --both | --all]
#                                [--sums FILE] [--files "NAME ..."]
#   --only-vocals  just the vocals ensemble (Kim_Vocal_2, Kim_Inst, the demucs vocals model)
#   --cinematic    just the cinematic recipe's three checkpoints (97d170e1-*.th, MVSEP-CDX23)
#   --roformer     just the two RoFormer checkpoints and their yaml configs (mel-roformer, bs-roformer)
#   --both         the MDX23 ensemble and the cinematic checkpoints
#   --all          the MDX23 ensemble, the cinematic checkpoints and the RoFormers
#   --sums FILE    `sha256sum`-format lines the files must match; they take precedence over the checks below
#   --files LIST   exactly these names (97d170e1-*.th from CINEMATIC_URL, other .th from DEMUCS_URL, .onnx
#                  and model_bs_roformer_*.ckpt from MDX_URL, MelBandRoformer.ckpt from MEL_ROFORMER_URL,
#                  the two RoFormer yaml files from ROFORMER_CONFIG_URL)
# Checks: a demucs name "<sig>-<h8>.th" carries the first 8 hex digits of its sha256; Kim_Vocal_2.onnx has a
# published full sha256. Other files have no published hash: their sha256 is logged so it can be pinned with
# --sums. Writes OUT_DIR/SHA256SUMS for the pack. Downloads resume (see scripts/lib.sh).
#   DEMUCS_URL [https://dl.fbaipublicfiles.com/demucs/hybrid_transformer]
#   MDX_URL    [https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models]
#   CINEMATIC_URL [https://github.com/ZFTurbo/MVSEP-CDX23-Cinematic-Sound-Demixing/releases/download/v.1.0.0]
#   MEL_ROFORMER_URL [https://huggingface.co/KimberleyJSN/melbandroformer/resolve/main]
#   ROFORMER_CONFIG_URL [https://raw.githubusercontent.com/ZFTurbo/Music-Source-Separation-Training/main/configs]
# The RoFormer authors publish no hash: MelBandRoformer.ckpt must have its published size (MEL_ROFORMER_BYTES),
# the others are logged with their sha256 (pin them with --sums).
# The cinematic checkpoints have no published hash and their names are not known to follow demucs' sha256
# naming: their sha256 is logged (pin it with --sums), a name/prefix mismatch is only noted.
set -euo pipefail
LOG_FILE="${LOG_FILE:-}"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

DEMUCS_URL="${DEMUCS_URL:-https://dl.fbaipublicfiles.com/demucs/hybrid_transformer}"
MDX_URL="${MDX_URL:-https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models}"
CINEMATIC_URL="${CINEMATIC_URL:-https://github.com/ZFTurbo/MVSEP-CDX23-Cinematic-Sound-Demixing/releases/download/v.1.0.0}"
MEL_ROFORMER_URL="${MEL_ROFORMER_URL:-https://huggingface.co/KimberleyJSN/melbandroformer/resolve/main}"
ROFORMER_CONFIG_URL="${ROFORMER_CONFIG_URL:-https://raw.githubusercontent.com/ZFTurbo/Music-Source-Separation-Training/main/configs}"
KIM_VOCAL_2_SHA256=ce74ef3b6a6024ce44211a07be9cf8bc6d87728cc852a68ab34eb8e58cde9c8b
MEL_ROFORMER_BYTES="${MEL_ROFORMER_BYTES:-913106900}"
VOCALS="Kim_Vocal_2.onnx Kim_Inst.onnx 04573f0d-f3cf25b2.th"
ALL="$VOCALS Kim_Vocal_1.onnx f7e0c4bc-ba3fe64a.th d12395a8-e57c48e6.th 92cfc3b6-ef3bcb9c.th \
955717e8-8726e21a.th 5c90dfd2-34c22ccb.th 75fc33f5-1941ce65.th"
CINEMATIC="97d170e1-a778de4a.th 97d170e1-dbb4db15.th 97d170e1-e41a5468.th"
ROFORMER="MelBandRoformer.ckpt config_vocals_mel_band_roformer_kj.yaml \
model_bs_roformer_ep_317_sdr_12.9755.ckpt model_bs_roformer_ep_317_sdr_12.9755.yaml"

usage() {
    echo "usage: $0 OUT_DIR [--only-vocals | --cinematic | --roformer | --both | --all] [--sums FILE]" \
        "[--files \"NAME ...\"]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
out=$1
shift
names=$ALL sums=""
while [ $# -gt 0 ]; do
    case $1 in
        --only-vocals) names=$VOCALS; shift ;;
        --cinematic) names=$CINEMATIC; shift ;;
        --roformer) names=$ROFORMER; shift ;;
        --both) names="$ALL $CINEMATIC"; shift ;;
        --all) names="$ALL $CINEMATIC $ROFORMER"; shift ;;
        --sums) sums=$(cd "$(dirname "${2:?}")" && pwd)/$(basename "$2"); shift 2 ;;
        --files) names=${2:?}; shift 2 ;;
        *) usage ;;
    esac
done
init_log
mkdir -p "$out"
read -r -a files <<<"$names"

for name in "${files[@]}"; do
    case $name in
        97d170e1-*.th) url="$CINEMATIC_URL/$name" ;;
        *.th) url="$DEMUCS_URL/$name" ;;
        *.onnx | model_bs_roformer_*.ckpt) url="$MDX_URL/$name" ;;
        MelBandRoformer.ckpt) url="$MEL_ROFORMER_URL/$name" ;;
        config_vocals_mel_band_roformer_kj.yaml) url="$ROFORMER_CONFIG_URL/KimberleyJensen/$name" ;;
        model_bs_roformer_*.yaml) url="$ROFORMER_CONFIG_URL/viperx/$name" ;;
        *) die "unknown model file type: $name" ;;
    esac
    if [ -f "$out/$name" ]; then
        log "$name already downloaded"
    else
        log "downloading $name"
        fetch "$url" "$out/$name" || die "cannot download $name from $url"
    fi
    got=$(sha256_of "$out/$name")
    want=""
    [ -z "$sums" ] || want=$(manifest_hash "$sums" "$name")
    [ -n "$want" ] || { [ "$name" != Kim_Vocal_2.onnx ] || want=$KIM_VOCAL_2_SHA256; }
    if [ -n "$want" ]; then
        [ "$got" = "$want" ] || { rm -f "$out/$name"; die "$name: sha256 $got, expected $want (file removed)"; }
        log "$name: sha256 verified"
    elif [ "$name" = MelBandRoformer.ckpt ]; then
        size=$(stat -c %s "$out/$name")
        [ "$size" = "$MEL_ROFORMER_BYTES" ] \
            || { rm -f "$out/$name"; die "$name: $size bytes, the published file has $MEL_ROFORMER_BYTES (file removed)"; }
        log "$name: size $size verified (no published checksum); sha256 $got (pin it with --sums)"
    elif [[ $name == 97d170e1-* ]]; then
        log "$name: no published checksum; sha256 $got (pin it with --sums)"
    elif [[ $name =~ ^[0-9a-f]{8}-([0-9a-f]{8})\.th$ ]]; then
        [ "${got:0:8}" = "${BASH_REMATCH[1]}" ] \
            || { rm -f "$out/$name"; die "$name: sha256 starts with ${got:0:8}, the name says ${BASH_REMATCH[1]} (file removed)"; }
        log "$name: sha256 prefix ${BASH_REMATCH[1]} verified"
    else
        log "$name: no published checksum; sha256 $got (pin it with --sums)"
    fi
done

(cd "$out" && sha256sum -- "${files[@]}") >"$out/SHA256SUMS.new"
mv -f "$out/SHA256SUMS.new" "$out/SHA256SUMS"
log "wrote $out/SHA256SUMS ($(wc -l <"$out/SHA256SUMS") files)"

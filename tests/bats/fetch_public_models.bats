#!/usr/bin/env bats
# fetch_public_models.sh against a local mirror (never the real hosts).
load helpers/common

setup() {
    mirror="$BATS_TEST_TMPDIR/mirror"
    out="$BATS_TEST_TMPDIR/out"
    mkdir -p "$mirror/demucs" "$mirror/mdx"
    head -c 4000 /dev/urandom >"$mirror/mdx/Kim_Vocal_2.onnx"
    head -c 4000 /dev/urandom >"$mirror/mdx/Kim_Inst.onnx"
    # a demucs-style name whose suffix really is the first 8 hex digits of the file's sha256
    head -c 4000 /dev/urandom >"$BATS_TEST_TMPDIR/th"
    th="abcd0123-$(sha256sum "$BATS_TEST_TMPDIR/th" | cut -c1-8).th"
    mv "$BATS_TEST_TMPDIR/th" "$mirror/demucs/$th"
    start_server "$mirror"
    export DEMUCS_URL="$BASE_URL/demucs" MDX_URL="$BASE_URL/mdx" RETRY_DELAY=0
}

teardown() { stop_server; }

@test "the published Kim_Vocal_2 sha256 is enforced: a different file is refused and removed" {
    run "$SCRIPTS/fetch_public_models.sh" "$out" --files "Kim_Vocal_2.onnx"
    [ "$status" -ne 0 ]
    [[ $output == *"Kim_Vocal_2.onnx: sha256"*"expected ce74ef3b"* ]]
    [ ! -e "$out/Kim_Vocal_2.onnx" ]
}

@test "a demucs name's sha256 prefix is checked; a mismatch names the file" {
    run "$SCRIPTS/fetch_public_models.sh" "$out" --files "$th"
    [ "$status" -eq 0 ]
    [[ $output == *"$th: sha256 prefix"*"verified"* ]]
    cp "$mirror/demucs/$th" "$mirror/demucs/04573f0d-f3cf25b2.th"
    run "$SCRIPTS/fetch_public_models.sh" "$out" --files "04573f0d-f3cf25b2.th"
    [ "$status" -ne 0 ]
    [[ $output == *"04573f0d-f3cf25b2.th: sha256 starts with"*"the name says f3cf25b2"* ]]
}

@test "--sums pins every file; the output dir gets a pack SHA256SUMS" {
    (cd "$mirror/mdx" && sha256sum Kim_Vocal_2.onnx Kim_Inst.onnx) >"$BATS_TEST_TMPDIR/sums"
    run "$SCRIPTS/fetch_public_models.sh" "$out" --files "Kim_Vocal_2.onnx Kim_Inst.onnx $th" --sums "$BATS_TEST_TMPDIR/sums"
    [ "$status" -eq 0 ]
    (cd "$out" && sha256sum -c SHA256SUMS)
    [ "$(wc -l <"$out/SHA256SUMS")" -eq 3 ]
    # then it is a pack the builder accepts
    run "$SCRIPTS/build_model_pack.sh" "$out" "$BATS_TEST_TMPDIR/pub"
    [ "$status" -eq 0 ]
}

@test "--cinematic fetches the three cinematic checkpoints from CINEMATIC_URL and lists them" {
    mkdir -p "$mirror/cdx"
    for f in 97d170e1-a778de4a.th 97d170e1-dbb4db15.th 97d170e1-e41a5468.th; do
        head -c 3000 /dev/urandom >"$mirror/cdx/$f"
    done
    CINEMATIC_URL="$BASE_URL/cdx" run "$SCRIPTS/fetch_public_models.sh" "$out" --cinematic
    [ "$status" -eq 0 ]
    [[ $output == *"97d170e1-dbb4db15.th: no published checksum"* ]]
    (cd "$out" && sha256sum -c SHA256SUMS)
    [ "$(wc -l <"$out/SHA256SUMS")" -eq 3 ]
    cmp "$mirror/cdx/97d170e1-e41a5468.th" "$out/97d170e1-e41a5468.th"
}

roformer_mirror() {
    mkdir -p "$mirror/hf" "$mirror/configs/KimberleyJensen" "$mirror/configs/viperx"
    head -c 5000 /dev/urandom >"$mirror/hf/MelBandRoformer.ckpt"
    head -c 4500 /dev/urandom >"$mirror/mdx/model_bs_roformer_ep_317_sdr_12.9755.ckpt"
    printf 'model:\n  num_bands: 60\n' >"$mirror/configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml"
    printf 'model:\n  freqs_per_bands: !!python/tuple\n  - 2\n' \
        >"$mirror/configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml"
    export MEL_ROFORMER_URL="$BASE_URL/hf" ROFORMER_CONFIG_URL="$BASE_URL/configs"
}

@test "--roformer fetches both checkpoints and their yaml configs from their own places" {
    roformer_mirror
    MEL_ROFORMER_BYTES=5000 run "$SCRIPTS/fetch_public_models.sh" "$out" --roformer
    [ "$status" -eq 0 ]
    [[ $output == *"MelBandRoformer.ckpt: size 5000 verified"* ]]
    [[ $output == *"model_bs_roformer_ep_317_sdr_12.9755.ckpt: no published checksum"* ]]
    (cd "$out" && sha256sum -c SHA256SUMS)
    [ "$(wc -l <"$out/SHA256SUMS")" -eq 4 ]
    cmp "$mirror/hf/MelBandRoformer.ckpt" "$out/MelBandRoformer.ckpt"
    cmp "$mirror/mdx/model_bs_roformer_ep_317_sdr_12.9755.ckpt" "$out/model_bs_roformer_ep_317_sdr_12.9755.ckpt"
    cmp "$mirror/configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml" \
        "$out/model_bs_roformer_ep_317_sdr_12.9755.yaml"
    cmp "$mirror/configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml" \
        "$out/config_vocals_mel_band_roformer_kj.yaml"
    # a pack of the four files: the builder names both recipes
    run "$SCRIPTS/build_model_pack.sh" "$out" "$BATS_TEST_TMPDIR/pub"
    [ "$status" -eq 0 ]
    [[ $output == *"recipes in this pack: mel-roformer bs-roformer "* ]]
}

@test "a MelBandRoformer.ckpt of another size than the published file is refused and removed" {
    roformer_mirror
    run "$SCRIPTS/fetch_public_models.sh" "$out" --files "MelBandRoformer.ckpt"
    [ "$status" -ne 0 ]
    [[ $output == *"MelBandRoformer.ckpt: 5000 bytes, the published file has 913106900 (file removed)"* ]]
    [ ! -e "$out/MelBandRoformer.ckpt" ]
}

@test "--sums pins the RoFormer files too" {
    roformer_mirror
    echo "0000000000000000000000000000000000000000000000000000000000000000  model_bs_roformer_ep_317_sdr_12.9755.yaml" \
        >"$BATS_TEST_TMPDIR/sums"
    run "$SCRIPTS/fetch_public_models.sh" "$out" --files "model_bs_roformer_ep_317_sdr_12.9755.yaml" \
        --sums "$BATS_TEST_TMPDIR/sums"
    [ "$status" -ne 0 ]
    [[ $output == *"model_bs_roformer_ep_317_sdr_12.9755.yaml: sha256"*"expected 0000"* ]]
    [ ! -e "$out/model_bs_roformer_ep_317_sdr_12.9755.yaml" ]
}

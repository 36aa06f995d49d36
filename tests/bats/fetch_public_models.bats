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

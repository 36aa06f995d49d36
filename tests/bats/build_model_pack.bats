#!/usr/bin/env bats
# build_model_pack.sh: a dir of model files -> models_part_* + manifest lines.
load helpers/common

setup() {
    src="$BATS_TEST_TMPDIR/src"
    out="$BATS_TEST_TMPDIR/out"
    mkdir -p "$src" "$out"
    head -c 50000 /dev/urandom >"$src/Kim_Vocal_2.onnx"
    head -c 20000 /dev/urandom >"$src/04573f0d-f3cf25b2.th"
}

@test "splits into 3 parts by default; the parts rejoin into the archive the manifest names" {
    run "$SCRIPTS/build_model_pack.sh" "$src" "$out"
    [ "$status" -eq 0 ]
    [ "$(ls "$out" | grep -c '^models_part_')" -eq 3 ]
    [ -f "$out/models_part_aa" ] && [ -f "$out/models_part_ab" ] && [ -f "$out/models_part_ac" ]
    (cd "$out" && sha256sum --quiet -c SHA256SUMS --ignore-missing)
    want=$(awk '$2 == "models.zip" {print $1}' "$out/SHA256SUMS")
    [ "$(cat "$out"/models_part_* | sha256sum | cut -d' ' -f1)" = "$want" ]
    # the archive holds the files flat, with a pack manifest the engine can verify
    cat "$out"/models_part_* >"$BATS_TEST_TMPDIR/m.zip"
    mkdir "$BATS_TEST_TMPDIR/x" && unzip -q "$BATS_TEST_TMPDIR/m.zip" -d "$BATS_TEST_TMPDIR/x"
    (cd "$BATS_TEST_TMPDIR/x" && sha256sum -c SHA256SUMS)
    cmp "$src/Kim_Vocal_2.onnx" "$BATS_TEST_TMPDIR/x/Kim_Vocal_2.onnx"
}

@test "--part-size sets the size; other artifacts' manifest lines are kept" {
    echo "0000000000000000000000000000000000000000000000000000000000000000  packages_compatibles.zip" >"$out/SHA256SUMS"
    run "$SCRIPTS/build_model_pack.sh" "$src" "$out" --part-size 10000
    [ "$status" -eq 0 ]
    n=$(ls "$out" | grep -c '^models_part_')
    [ "$n" -ge 7 ]
    for f in "$out"/models_part_*; do [ "$(stat -c %s "$f")" -le 10000 ]; done
    grep -q ' packages_compatibles.zip$' "$out/SHA256SUMS"
    # a rebuild replaces the old parts and lines instead of adding to them
    run "$SCRIPTS/build_model_pack.sh" "$src" "$out" --parts 2
    [ "$(ls "$out" | grep -c '^models_part_')" -eq 2 ]
    [ "$(grep -c 'models_part_' "$out/SHA256SUMS")" -eq 2 ]
}

@test "refuses a pack whose files do not match its own SHA256SUMS" {
    (cd "$src" && sha256sum Kim_Vocal_2.onnx 04573f0d-f3cf25b2.th >SHA256SUMS)
    echo corrupt >>"$src/Kim_Vocal_2.onnx"
    run "$SCRIPTS/build_model_pack.sh" "$src" "$out"
    [ "$status" -ne 0 ]
    [[ $output == *"does not match its SHA256SUMS"* ]]
    [ -z "$(ls "$out" | grep '^models_part_' || true)" ]
}

@test "the log says which recipes the pack can run (a cinematic-only pack is a pack)" {
    rm -f "$src"/*
    for f in 97d170e1-a778de4a.th 97d170e1-dbb4db15.th 97d170e1-e41a5468.th; do
        head -c 3000 /dev/urandom >"$src/$f"
    done
    run "$SCRIPTS/build_model_pack.sh" "$src" "$BATS_TEST_TMPDIR/pubc"
    [ "$status" -eq 0 ]
    [[ $output == *"recipes in this pack: cinematic (cinematic high_quality: yes)"* ]]
}

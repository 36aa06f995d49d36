#!/usr/bin/env bats
# build_wheel_bundles.sh: wheels per Python version -> packages_compatibles.zip + packages_python{VER}.zip.
load helpers/common

setup() {
    w="$BATS_TEST_TMPDIR/wheels"
    out="$BATS_TEST_TMPDIR/out"
    for v in 3.11 3.12; do
        "$PY" "$HELPERS/make_wheel.py" "$w/$v" sparkprobe 1.0.0 >/dev/null
        "$PY" "$HELPERS/make_wheel.py" "$w/$v" sparkprobe_ver 2.0.0 "cp${v/./}" >/dev/null
    done
}

@test "shared wheels go to compatible/, the rest per version, with pinned requirements and manifest lines" {
    run "$SCRIPTS/build_wheel_bundles.sh" "$out" --wheels-dir "$w" --versions "3.11 3.12"
    [ "$status" -eq 0 ]
    [ "$(unzip -Z1 "$out/packages_compatibles.zip" | grep '\.whl$')" = "temp_packages/compatible/sparkprobe-1.0.0-py3-none-any.whl" ]
    [ "$(unzip -Z1 "$out/packages_python3.12.zip" | grep '\.whl$')" = "temp_packages/python3.12/sparkprobe_ver-2.0.0-cp312-none-any.whl" ]
    req=$(unzip -p "$out/packages_python3.11.zip" temp_packages/python3.11/requirements.txt)
    [ "$req" = "$(printf 'sparkprobe==1.0.0\nsparkprobe_ver==2.0.0')" ]
    (cd "$out" && sha256sum -c SHA256SUMS)
    [ "$(wc -l <"$out/SHA256SUMS")" -eq 3 ]
}

@test "the bundles install offline in one pip run (--no-index) into a fresh venv" {
    v=$(pyver)
    "$PY" "$HELPERS/make_wheel.py" "$w/$v" sparkprobe 1.0.0 >/dev/null
    "$PY" "$HELPERS/make_wheel.py" "$w/$v" sparkprobe_ver 2.0.0 "cp${v/./}" >/dev/null
    "$SCRIPTS/build_wheel_bundles.sh" "$out" --wheels-dir "$w" --versions "$v"
    x="$BATS_TEST_TMPDIR/x"
    unzip -q "$out/packages_compatibles.zip" -d "$x"
    unzip -q "$out/packages_python$v.zip" -d "$x"
    python3 -m venv --without-pip "$BATS_TEST_TMPDIR/venv"
    python3 -m pip --python "$BATS_TEST_TMPDIR/venv/bin/python" install -q --no-index \
        --find-links "$x/temp_packages/compatible" --find-links "$x/temp_packages/python$v" \
        -r "$x/temp_packages/python$v/requirements.txt"
    run "$BATS_TEST_TMPDIR/venv/bin/python" -c "import sparkprobe_ver; print(sparkprobe_ver.TAG)"
    [ "$output" = "cp${v/./}" ]
}

@test "a version without wheels is an error that names it" {
    run "$SCRIPTS/build_wheel_bundles.sh" "$out" --wheels-dir "$w" --versions "3.11 3.14"
    [ "$status" -ne 0 ]
    [[ $output == *"no wheels for Python 3.14"* ]]
}

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

# install_bundle VER: unzip the bundles of $out for VER and install them offline into a clean venv
install_bundle() {
    local v=$1 x="$BATS_TEST_TMPDIR/x"
    unzip -q "$out/packages_compatibles.zip" -d "$x"
    unzip -q "$out/packages_python$v.zip" -d "$x"
    python3 -m venv --without-pip "$BATS_TEST_TMPDIR/venv"
    python3 -m pip --python "$BATS_TEST_TMPDIR/venv/bin/python" install -q --no-index \
        --find-links "$x/temp_packages/compatible" --find-links "$x/temp_packages/python$v" \
        -r "$x/temp_packages/python$v/requirements.txt"
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
    install_bundle "$v"
    run "$BATS_TEST_TMPDIR/venv/bin/python" -c "import sparkprobe_ver; print(sparkprobe_ver.TAG)"
    [ "$output" = "cp${v/./}" ]
}

@test "a version without wheels is an error that names it" {
    run "$SCRIPTS/build_wheel_bundles.sh" "$out" --wheels-dir "$w" --versions "3.11 3.14"
    [ "$status" -ne 0 ]
    [[ $output == *"no wheels for Python 3.14"* ]]
}

# A small index whose wheels exercise the download mode: markers on the top-level lines and on a dependency,
# a cp312-only wheel, and a wheel whose only platform tag is manylinux_2_18.
make_index() {
    idx="$BATS_TEST_TMPDIR/index"
    "$PY" "$HELPERS/make_wheel.py" "$idx" sparkprobe 1.0.0 --requires 'sparkback==1.0.0; python_version < "3.12"' \
        --requires 'sparkfwd==1.0.0; python_version >= "3.12"' >/dev/null
    for n in sparkback sparkfwd sparkold; do "$PY" "$HELPERS/make_wheel.py" "$idx" "$n" 1.0.0 >/dev/null; done
    "$PY" "$HELPERS/make_wheel.py" "$idx" sparknew 2.0.0 cp312 >/dev/null
    "$PY" "$HELPERS/make_wheel.py" "$idx" sparkglibc 1.0.0 --platform manylinux_2_18_x86_64 >/dev/null
    req="$BATS_TEST_TMPDIR/requirements.txt"
    printf '%s\n' 'sparkprobe==1.0.0' 'sparkglibc==1.0.0' 'sparkold==1.0.0; python_version < "3.12"' \
        'sparknew==2.0.0; python_version >= "3.12"  # only for 3.12+' >"$req"
    # pip sees only this index: no config file, no other find-links, no network index
    export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_FIND_LINKS="$idx" PYTHON="$PY"
}

@test "download mode evaluates markers for each target version, not the build machine's" {
    make_index
    run "$SCRIPTS/build_wheel_bundles.sh" "$out" --requirements "$req" --versions "3.11 3.12"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ "$(unzip -p "$out/packages_python3.11.zip" temp_packages/python3.11/requirements.txt)" = \
      "$(printf 'sparkback==1.0.0\nsparkglibc==1.0.0\nsparkold==1.0.0\nsparkprobe==1.0.0')" ]
    [ "$(unzip -p "$out/packages_python3.12.zip" temp_packages/python3.12/requirements.txt)" = \
      "$(printf 'sparkfwd==1.0.0\nsparkglibc==1.0.0\nsparknew==2.0.0\nsparkprobe==1.0.0')" ]
    # the manylinux_2_18-only wheel was found (pip matches --platform tags exactly) and is shared
    unzip -Z1 "$out/packages_compatibles.zip" | grep -qx 'temp_packages/compatible/sparkglibc-1.0.0-py3-none-manylinux_2_18_x86_64.whl'
    unzip -Z1 "$out/packages_python3.12.zip" | grep -qx 'temp_packages/python3.12/sparknew-2.0.0-cp312-none-any.whl'
}

@test "download mode: a dependency with no wheel for the target version fails and names the version" {
    make_index
    rm "$idx"/sparkfwd-*.whl
    run "$SCRIPTS/build_wheel_bundles.sh" "$out" --requirements "$req" --versions "3.11 3.12"
    [ "$status" -ne 0 ]
    [[ $output == *"pip download failed for Python 3.12"* ]]
}

@test "download mode: the bundle of this machine's Python installs offline into a clean venv" {
    make_index
    v=$(pyver)
    "$SCRIPTS/build_wheel_bundles.sh" "$out" --requirements "$req" --versions "$v"
    install_bundle "$v"
    run "$BATS_TEST_TMPDIR/venv/bin/python" -c "import sparkprobe, sparkglibc; print(sparkglibc.VERSION)"
    [ "$output" = "1.0.0" ]
}

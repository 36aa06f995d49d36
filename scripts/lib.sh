# shellcheck shell=bash
# Shared helpers for demucsServe.sh and the artifact builders: timestamped logging to stdout and LOG_FILE,
# resumable downloads, sha256 checks against a `sha256sum`-format manifest. Sourced, never run.
#
# Every default path is "$SPARK_ROOT" + the usual absolute path (SPARK_ROOT is empty in production), so the
# whole chain runs in a temporary root in tests. A path set explicitly in the environment is used as given.

SPARK_ROOT="${SPARK_ROOT:-}"
LOG_FILE="${LOG_FILE-${SPARK_ROOT}/var/log/spark/boot.log}"
SCRIPT_NAME="${SCRIPT_NAME:-$(basename "$0")}"
export PYTHONUNBUFFERED=1   # the server and pip log as they go, not when a buffer fills
DOWNLOAD_ATTEMPTS="${DOWNLOAD_ATTEMPTS:-5}"   # transfer attempts per file (each resumes the last one)
VERIFY_ATTEMPTS="${VERIFY_ATTEMPTS:-3}"       # full downloads per file before a checksum mismatch is fatal
RETRY_DELAY="${RETRY_DELAY:-2}"               # seconds, doubled after each failed attempt

log() {
    local line
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) [$SCRIPT_NAME] $*"
    printf '%s\n' "$line"
    if [ -n "$LOG_FILE" ]; then printf '%s\n' "$line" >>"$LOG_FILE" 2>/dev/null || true; fi
}

die() {
    log "ERROR: $*"
    exit 1
}

# Create the log file's dir; without a writable log file, log to stdout only (and say so once).
init_log() {
    [ -n "$LOG_FILE" ] || return 0
    if ! { mkdir -p "$(dirname "$LOG_FILE")" && touch "$LOG_FILE"; } 2>/dev/null; then
        printf 'warning: cannot write %s; logging to stdout only\n' "$LOG_FILE"
        LOG_FILE=""
    fi
}

# reject_placeholders: stop when an environment variable still holds a template's unfilled REPLACE_WITH_... value
# (a sha256 left as the placeholder would otherwise fail later as an unreadable checksum line).
reject_placeholders() {
    local n bad=()
    for n in $(compgen -e); do [[ ${!n} != *REPLACE_WITH* ]] || bad+=("$n"); done
    [ "${#bad[@]}" -eq 0 ] || die "unfilled template values: ${bad[*]} still hold REPLACE_WITH_... placeholders: put the release's real values in the template (docs/deploy.md)"
}

# why_unwritable DIR ERROR: what stops this user from writing DIR: a read-only filesystem, the first dir on its
# path that cannot be entered, or the deepest existing one that cannot be written (with owner and mode).
why_unwritable() {
    local d=$1 p="" part comps
    case $2 in *"Read-only file system"*) echo "the filesystem is read-only"; return ;; esac
    IFS=/ read -r -a comps <<<"${d#/}"
    for part in "${comps[@]}"; do
        [ -n "$part" ] && [ -e "$p/$part" ] || break
        p="$p/$part"
        if [ -d "$p" ] && [ ! -x "$p" ]; then
            echo "$p (owner uid $(stat -c %u "$p"), mode $(stat -c %a "$p")) cannot be entered by uid $(id -u)"
            return
        fi
    done
    p=${p:-/}
    echo "$p (owner uid $(stat -c %u "$p"), mode $(stat -c %a "$p")) is not writable by uid $(id -u) (gid $(id -g))"
}

# ensure_writable DIR WHAT: create DIR if needed and check that this user can write into it; otherwise stop at
# once, before anything is downloaded, saying why and what to do.
ensure_writable() {
    local d=$1 what=$2 err why todo
    if err=$( { mkdir -p "$d" && probe=$(mktemp "$d/.spark-write-test.XXXXXX") && rm -f "$probe"; } 2>&1 ); then
        return 0
    fi
    why=$(why_unwritable "$d" "$err")
    case $why in
        *read-only*) todo="mount a volume (or a tmpfs) there, or point the variable at a dir on one: with --read-only only the volumes and tmpfs mounts are writable (docs/deploy.md, Hardening)" ;;
        *"cannot be entered"*) todo="on the host, let uid $(id -u) enter it: chmod 755 (or o+x) the dir mounted there, or chown it to uid $(id -u)" ;;
        *) todo="on the host, chown the dir mounted there to uid $(id -u) (or make it group-writable for gid $(id -g)); or start the container as root, the default, and its entrypoint gives the service's dirs to uid ${SPARK_UID:-10001}" ;;
    esac
    die "cannot write $what $d: $why. To fix: $todo"
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# manifest_hash MANIFEST NAME: the sha256 the manifest gives for NAME (empty when absent).
# Accepts both `sha256sum` line forms: "<hash>  name" and "<hash> *name".
manifest_hash() {
    awk -v n="$2" '{ f = $2; sub(/^\*/, "", f); if (f == n) { print $1; exit } }' "$1"
}

# manifest_names MANIFEST PATTERN: the names in the manifest that match an awk regex, sorted.
manifest_names() {
    awk -v p="$2" '{ f = $2; sub(/^\*/, "", f); if (f ~ p) print f }' "$1" | LC_ALL=C sort
}

# fetch URL DEST: download to DEST.part, resuming whatever a previous attempt (or run) left there, and rename
# to DEST when the transfer completes. Returns non-zero after DOWNLOAD_ATTEMPTS failed transfers.
fetch() {
    local url=$1 dest=$2 part="$2.part" attempt=1 rc delay=$RETRY_DELAY
    mkdir -p "$(dirname "$dest")"
    while :; do
        if [ -s "$part" ]; then log "resuming $(basename "$dest") at byte $(stat -c %s "$part")"; fi
        rc=0
        curl -fsSL --connect-timeout 20 --speed-limit 1024 --speed-time 60 -C - -o "$part" "$url" || rc=$?
        [ "$rc" -eq 0 ] && { mv -f "$part" "$dest"; return 0; }
        case $rc in
            # cut mid-transfer, timeouts, resets: keep the partial file and resume from it
            7|18|28|52|55|56) log "download of $(basename "$dest") interrupted (curl exit $rc), attempt $attempt/$DOWNLOAD_ATTEMPTS" ;;
            # anything else (HTTP error such as 416 for a stale partial, server without ranges): start over
            *) log "download of $(basename "$dest") failed (curl exit $rc), attempt $attempt/$DOWNLOAD_ATTEMPTS"
               rm -f "$part" ;;
        esac
        [ "$attempt" -ge "$DOWNLOAD_ATTEMPTS" ] && return 1
        attempt=$((attempt + 1))
        sleep "$delay"
        delay=$((delay * 2))
    done
}

# get_verified BASE_URL MANIFEST DIR NAME: make DIR/NAME a file whose sha256 matches the manifest.
# A file already there that matches is kept (no download). One that does not is first completed by resuming
# (the usual damage is truncation), then fetched whole; after VERIFY_ATTEMPTS downloads it is fatal.
get_verified() {
    local base=$1 manifest=$2 dir=$3 name=$4 want got downloads=0
    want=$(manifest_hash "$manifest" "$name")
    [ -n "$want" ] || die "$name is not listed in the manifest $(basename "$manifest")"
    while :; do
        if [ -f "$dir/$name" ]; then
            got=$(sha256_of "$dir/$name")
            if [ "$got" = "$want" ]; then
                log "verified $name"
                return 0
            fi
            if [ "$downloads" -ge "$VERIFY_ATTEMPTS" ]; then
                die "checksum mismatch for $name after $downloads downloads (expected $want, got $got); the file on $base is not the one the manifest describes"
            fi
            log "checksum mismatch for $name (expected $want, got $got)"
            if [ "$downloads" -eq 0 ]; then mv -f "$dir/$name" "$dir/$name.part"; else rm -f "$dir/$name"; fi
        fi
        fetch "$base/$name" "$dir/$name" || die "cannot download $name from $base"
        downloads=$((downloads + 1))
    done
}

# ---- the installed model pack, checked against its own SHA256SUMS at every start -----------------------------
# DIR/.spark-verified caches "sha size mtime inode name" per file verified earlier: a file whose size, mtime and
# inode are unchanged is not hashed again (a start stays fast on a multi-GB pack); any write or replacement
# changes one of them and the file is hashed.
PACK_CACHE_NAME=.spark-verified

# size, mtime and ctime to the nanosecond, inode: a same-size rewrite within the same second still shows
file_stamp() { stat -c '%s %.9Y %.9Z %i' "$1" 2>/dev/null; }

# verify_pack DIR: print the names in DIR/SHA256SUMS that are missing or do not match, and rewrite the cache
# with the ones that do (when DIR is writable: a pack baked into a read-only image is simply hashed each time).
# No SHA256SUMS: nothing to check.
verify_pack() {
    local dir=$1 cache="$1/$PACK_CACHE_NAME" want name stamp got new
    [ -f "$dir/SHA256SUMS" ] || return 0
    new=$(mktemp "$cache.XXXXXX" 2>/dev/null) || new=/dev/null
    while read -r want name; do
        name=${name#\*}
        [ -n "$name" ] || continue
        if ! stamp=$(file_stamp "$dir/$name"); then echo "$name"; continue; fi
        if grep -qxF "$want $stamp $name" "$cache" 2>/dev/null; then got=$want; else got=$(sha256_of "$dir/$name"); fi
        if [ "$got" = "$want" ]; then echo "$want $stamp $name" >>"$new"; else echo "$name"; fi
    done <"$dir/SHA256SUMS"
    [ "$new" = /dev/null ] || mv -f "$new" "$cache"
}

# remember_verified DIR: cache every file of DIR/SHA256SUMS as verified without hashing (just checked elsewhere).
remember_verified() {
    local dir=$1 want name stamp
    [ -f "$dir/SHA256SUMS" ] || return 0
    while read -r want name; do
        name=${name#\*}
        stamp=$(file_stamp "$dir/$name") && echo "$want $stamp $name"
    done <"$dir/SHA256SUMS" >"$dir/$PACK_CACHE_NAME"
}

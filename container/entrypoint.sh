#!/bin/sh
# Entry point of the LoFiHippSeg image.
#   IMAGE BIDS_DIR OUTPUT_DIR participant|group [options]  -> lofihippseg bids ...  (the BIDS App)
#   IMAGE lofihippseg COMMAND ...                           -> any lofihippseg command
#   IMAGE python|python3|bash|sh ...                        -> that program
#   IMAGE --version                                         -> lofihippseg --version
# matplotlib's cache: a folder of this user's own under /tmp, seeded with the font list made
# when the image was built (else matplotlib rebuilds it, and says so, on every run)
if [ -z "${MPLCONFIGDIR:-}" ]; then
    MPLCONFIGDIR="/tmp/matplotlib-$(id -u)"
    export MPLCONFIGDIR
    if [ ! -d "$MPLCONFIGDIR" ] && mkdir -p "$MPLCONFIGDIR" 2>/dev/null; then
        cp /opt/lofihippseg/matplotlib/fontlist-*.json "$MPLCONFIGDIR/" 2>/dev/null || true
    fi
fi
# Without --user the image runs as user 1000, which cannot write an output folder mounted from
# the host by another user: say so in one line before the command fails with a bare
# "Permission denied". The output folder: -o/--out of a lofihippseg command, or the BIDS App's
# second argument.
out_dir=""
case "${1:-}" in
    lofihippseg)
        prev=""
        for arg in "$@"; do
            case "$prev" in -o|--out|--out-dir) out_dir=$arg ;; esac
            case "$arg" in --out=*|--out-dir=*) out_dir=${arg#*=} ;; esac
            prev=$arg
        done ;;
    python|python3|python3.11|bash|sh|--version|-h|--help|"") ;;
    *) out_dir=${2:-} ;;
esac
if [ -n "$out_dir" ]; then
    existing=$out_dir
    while [ ! -e "$existing" ] && [ "$existing" != "$(dirname "$existing")" ]; do
        existing=$(dirname "$existing")
    done
    if [ -d "$existing" ] && [ ! -w "$existing" ]; then
        echo "error: $out_dir: permission denied for the container's user $(id -u):$(id -g);" \
            "run it as yourself: add --user \$(id -u):\$(id -g) to docker/podman run" \
            "(or make the folder writable for user $(id -u))" >&2
        exit 2
    fi
fi
case "${1:-}" in
    lofihippseg|python|python3|python3.11|bash|sh) exec "$@" ;;
    --version) exec lofihippseg --version ;;
    "") exec lofihippseg bids --help ;;
esac
exec lofihippseg bids "$@"

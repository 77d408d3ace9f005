#!/bin/sh
# Entry point of the LoFiHippSeg image.
#   IMAGE BIDS_DIR OUTPUT_DIR participant|group [options]  -> lofihippseg bids ...  (the BIDS App)
#   IMAGE lofihippseg COMMAND ...                           -> any lofihippseg command
#   IMAGE python|python3|bash|sh ...                        -> that program
#   IMAGE --version                                         -> lofihippseg --version
# matplotlib's cache: in $HOME when it is writable (Apptainer binds it), else (docker or podman
# with --user UID:GID, whose HOME is the image's) in a folder of this user's own under /tmp
if [ -z "${MPLCONFIGDIR:-}" ] && ! [ -w "${HOME:-/}" ]; then
    MPLCONFIGDIR="/tmp/matplotlib-$(id -u)"
    export MPLCONFIGDIR
fi
case "${1:-}" in
    lofihippseg|python|python3|python3.11|bash|sh) exec "$@" ;;
    --version) exec lofihippseg --version ;;
    "") exec lofihippseg bids --help ;;
esac
exec lofihippseg bids "$@"

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
case "${1:-}" in
    lofihippseg|python|python3|python3.11|bash|sh) exec "$@" ;;
    --version) exec lofihippseg --version ;;
    "") exec lofihippseg bids --help ;;
esac
exec lofihippseg bids "$@"

# Sourced by run.sh and instructions.sh.
#
# need COMMAND PACKAGE: installs Debian's PACKAGE if COMMAND is missing.
need() {
    command -v "$1" >/dev/null 2>&1 && return
    echo "== installing $1 (Debian package $2)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "$2"
}

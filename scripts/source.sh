# Shell shortcuts over the make targets, for those who prefer them. From the project root:
#   . scripts/source.sh
#   run x [-f] [VARIABLE=value ...]     make run TAG=x [FIX=1]    (e.g. run x -f GPUS=0,1)
#   con x [id] [VARIABLE=value ...]     make continue TAG=x [ID=id]
#   re|rerun x [id] [VARIABLE=value ...]  make rerun TAG=x [ID=id]
#   record [tag/id ...]                 make record EXP="tag/id ..."
#   title [list] / table [list]         make title|table [LIST=list]
#   expls / expels x                    make ls / make ls TAG=x
#   itb [tag[/id] ...]                  make tb TAGS="tag[/id] ..."
# `continue` itself is not defined: it is a shell keyword (a function of that name breaks
# `continue` in loops under bash, and is a syntax error in dash).
# Every argument reaches make as one VARIABLE=value word, never as shell text.

_gitexp_usage() {
    printf 'usage: %s\n' "$1" >&2
    return 2
}

run() {
    [ "$#" -ge 1 ] || { _gitexp_usage 'run TAG [-f] [VARIABLE=value ...]'; return; }
    _gitexp_tag=$1
    shift
    _gitexp_fix=0
    for _gitexp_arg in "$@"; do
        shift
        if [ "$_gitexp_arg" = -f ]; then _gitexp_fix=1; else set -- "$@" "$_gitexp_arg"; fi
    done
    make run TAG="$_gitexp_tag" FIX="$_gitexp_fix" "$@"
}

# target TAG [ID] [VARIABLE=value ...]: the ID is the second word unless it is an assignment
_gitexp_tag_id() {
    _gitexp_target=$1
    _gitexp_tag=$2
    shift 2
    case "${1-}" in
        '' | *=*) make "$_gitexp_target" TAG="$_gitexp_tag" "$@" ;;
        *) _gitexp_id=$1; shift; make "$_gitexp_target" TAG="$_gitexp_tag" ID="$_gitexp_id" "$@" ;;
    esac
}

con() {
    [ "$#" -ge 1 ] || { _gitexp_usage 'con TAG [ID] [VARIABLE=value ...]'; return; }
    _gitexp_tag_id continue "$@"
}

rerun() {
    [ "$#" -ge 1 ] || { _gitexp_usage 'rerun TAG [ID] [VARIABLE=value ...]'; return; }
    _gitexp_tag_id rerun "$@"
}

re() { rerun "$@"; }

record() {
    if [ "$#" -eq 0 ]; then make record; else make record EXP="$*"; fi
}

title() {
    if [ "$#" -eq 0 ]; then make title; else make title LIST="$1"; fi
}

table() {
    if [ "$#" -eq 0 ]; then make table; else make table LIST="$1"; fi
}

expls() { make ls "$@"; }

expels() {
    [ "$#" -ge 1 ] || { _gitexp_usage 'expels TAG'; return; }
    _gitexp_tag=$1
    shift
    make ls TAG="$_gitexp_tag" "$@"
}

itb() {
    make tb TAGS="$*"
}

#!/bin/sh
# List the experiments: `sh scripts/ls.sh` (make ls [TAG=x]).
#   make ls         one line a tag: its ids, how many finished, running and failed, the subject
#                   of the commit it ran
#   make ls TAG=x   one line an id of x: status, epoch, seed, start time, and the run's own
#                   monitored metric (hparams.monitor) with its best value;
#                   a run killed while running shows as "stopped" (make continue takes it up)
# TAG comes from the environment. The statistic.json files are read with jq; the per-tag
# "running" count is what statistic.json says, killed runs included.
set -eu

RESULTS=__result__
TAG_PATTERN='[A-Za-z0-9][A-Za-z0-9._-]*'

err() { printf 'error: %s\n' "$1" >&2; exit 1; }
check_cmd() { command -v "$1" >/dev/null 2>&1; }

# print tab-separated lines as columns, numbers to the right
align() {
    awk -F '\t' '
        { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > width[i]) width[i] = length($i) }
          if (NF > columns) columns = NF }
        END { for (r = 1; r <= NR; r++) { line = ""
                for (i = 1; i <= columns; i++) {
                    numeric = r > 1 && cell[r, i] ~ /^-?[0-9][0-9.e+-]*$/
                    line = line (i > 1 ? "  " : "") sprintf(numeric ? "%" width[i] "s" : "%-" width[i] "s", cell[r, i]) }
                sub(/ +$/, "", line); print line } }'
}

# run a jq program on the array of the files' objects. jq 1.6 names no file in a parse error
# and reads nothing from an empty file: then find the first file that is not one JSON object.
read_all() {
    program="[inputs | objects] | if length != \$files then error(\"unreadable\") else . end | $1"
    shift
    if jq -rn --argjson files "$#" "$program" "$@" 2>/dev/null; then
        return 0
    fi
    for file in "$@"; do
        if ! problem=$(jq -en 'input | objects' "$file" 2>&1 >/dev/null); then
            case $problem in
                *'parse error'*) ;;
                *) problem='empty, or not a JSON object' ;;
            esac
            err "$file is not valid JSON ($problem): restore it, or remove its experiment"
        fi
    done
    err "jq could not read the statistic.json files: $*"
}

list_tags() {
    set -- "$RESULTS"/*/*/statistic.json
    [ -e "$1" ] || { printf 'no experiments yet: make run TAG=x starts one\n'; return 0; }
    printf 'tag\tids\tfinished\trunning\tfailed\tcommit\n' > "$tmp"
    for folder in "$RESULTS"/*/; do
        tag=${folder%/}
        tag=${tag##*/}
        set -- "$folder"*/statistic.json
        [ -e "$1" ] || continue
        # shellcheck disable=SC2016  # a jq program: its $i is jq's, not the shell's
        line=$(read_all '
            def ranges: reduce .[] as $i ([]; if length > 0 and .[-1][1] == $i - 1
                then .[-1][1] = $i else . + [[$i, $i]] end)
                | map(if .[0] == .[1] then "\(.[0])" else "\(.[0])-\(.[1])" end) | join(",");
            [(map(.id) | sort | ranges),
                        (map(select(.status == "finished")) | length),
                        (map(select(.status == "running")) | length),
                        (map(select(.status == "failed")) | length),
                        (map(.commit) | max // "")] | @tsv' "$@")
        commit=${line##*"	"}
        subject=$(git log -1 --format=%s "$commit" 2>/dev/null || printf '?')
        printf '%s\t%s\t%s\n' "$tag" "${line%"	"*}" "${commit%"${commit#??????????}"} $subject" >> "$tmp"
    done
    align < "$tmp"
}

list_ids() {
    case $1 in
        *[!A-Za-z0-9._-]* | [!A-Za-z0-9]*) err "TAG=$1 is not a tag: use letters, digits, '.', '_' and '-' ($TAG_PATTERN)" ;;
    esac
    set -- "$RESULTS/$1"/*/statistic.json
    [ -e "$1" ] || err "unknown tag $TAG: no experiment in $RESULTS/$TAG (make ls lists the tags)"
    # not piped: set -e stops this script only for a failure of the last command of a pipe
    # shellcheck disable=SC2016  # a jq program: its $m is jq's, not the shell's
    rows=$(read_all 'sort_by(.id)[]
        | (.hparams.monitor // "" | tostring) as $m
        | [.id, .status, .epoch, .seed, .start, $m,
           (if $m == "" then "" else (.metrics.best // {})[$m] // "" end
            | if type == "number" then . * 10000 | round / 10000 else . end)]
        | map(. // "") | @tsv' "$@")
    {
        printf 'id\tstatus\tepoch\tseed\tstart\tmonitor\tbest\n'
        printf '%s\n' "$rows" | mark_stopped "$TAG"
    } > "$tmp"
    align < "$tmp"
}

# A run killed with -9 still says "running" in its statistic.json; a live run holds the flock
# on its .lock file (scripts/experiment.py), so a free lock means it stopped: make continue.
mark_stopped() {
    while IFS='	' read -r id status rest; do
        lock="$RESULTS/$1/$id/.lock"
        if [ "$status" = running ] && [ -f "$lock" ] && check_cmd flock && flock -n "$lock" true; then
            status='stopped'
        fi
        printf '%s\t%s\t%s\n' "$id" "$status" "$rest"
    done
}

main() {
    check_cmd jq || err "jq is not installed: install it (apt-get install jq) and run make ls again"
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    if [ -n "${TAG:-}" ]; then
        list_ids "$TAG"
    else
        list_tags
    fi
}

main "$@"

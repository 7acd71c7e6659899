# gitexp: every experiment traceable to its code (a git tag), seed, log, metrics and checkpoints.
# `make help` lists the targets. The logic lives in scripts/; recipes only call it.
#
# Variables, given on the command line (one set in the environment is ignored, with a note):
#   TAG=x          experiment tag: make run tags HEAD as x and runs it as x/<id>
#   ID=n           experiment id under TAG (continue: highest unfinished; rerun: 0)
#   FIX=1          fixed seed (code/seed) and deterministic kernels, for exact reruns
#   MSG="..."      make run: commit tracked changes with this message first
#   GPUS=0,1       GPUs to use, one process each (without GPUS: CPU, or the default GPU; make
#                  eval: CPU, or the one GPU GPUS names)
#   NPROC=n        n processes on CPU through torchrun (gloo)
#   ACCEPT_DATA=1  make continue: go on over data whose fingerprint changed, which you declare
#                  the same data (a re-sync, a copy); the record keeps both fingerprints
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   several machines through torchrun (NNODES=1:
#                  torchrun even for one process)
#   NODES=n        make submit: nodes of the Slurm job (default 1)
#   SBATCH="..."   make submit, make sweep SLURM=1: more sbatch options (partition, time, account)
#   SLURM=1        make sweep: submit the runs as one Slurm job array (PARALLEL=k: k at most at once)
#   NAME=s         make sweep: the sweep file code/sweeps/<NAME>.py
#   JOBS=n         make sweep: n runs at a time on CPU (default 1; with GPUS: one per GPU)
#   EXP="x/0 y/3"  make record: experiments to add to a list (default: the last finished);
#                  make rm / restore: the experiments to move to the trash and back; make eval:
#                  the runs to evaluate
#   CKPT=best      make eval: the checkpoint evaluated: best (default), last, or an epoch number
#   WITH=<commit>  make eval: the evaluation code and data (data.py, task.py, config.py) of that
#                  commit (a tag, branch or hash), applied to the run's model; default: the run's own
#   A=x/0 B=y/1    make diff: the two experiments to compare (a bare tag: the mean of its distinct runs)
#   FULL=1         make diff: the whole code diff, not its --stat; make table: every run's row
#   YES=1          make empty-trash: delete without asking
#   KEY=k          make data-rm: the prepared data __data__/<k>/ to remove (a unique prefix of 6 or more)
#   LIST=record    experiment list __statistic__/exper-list/<LIST>.txt for record/title/table
#   CHANGED=1      make table: show only the columns whose values differ
#   TAGS="a b/2"   make tb: runs to compare (a bare tag means all its ids; default: all;
#                  LIST=l instead: the runs of a list, a sweep's among them); make report: only
#                  these tags of LIST's report
#   PORT, HOST     make tb: port (default: first free from 6006) and address (127.0.0.1)
#   TB=0           make run/continue/rerun: no background TensorBoard
#   BENCH_QUICK=1  make bench: a quick version (about a minute)
#   BENCH_SCALE=n  make bench: only ls, title and table, on n generated experiments (e.g. 100000)
#   PYTHON=path    interpreter to use instead of .venv (then no .venv is made)

.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules --no-print-directory
SHELL := /bin/sh

USER_VARIABLES := TAG ID FIX MSG GPUS NPROC ACCEPT_DATA NNODES NODE_RANK MASTER_ADDR MASTER_PORT \
                  EXP LIST CHANGED TAGS PORT HOST TB PYTHON BENCH_QUICK BENCH_SCALE NAME JOBS A B FULL YES \
                  NODES SBATCH SLURM PARALLEL KEY CKPT WITH
# make expands $(...) in a value wherever the variable is used, so each value is frozen as
# literal text here and reaches the scripts through the environment, never a recipe's shell text.
# A value from the environment (`TB=0 make run`, `export GPUS=0`) is ignored, and said so once.
IGNORED_FROM_ENVIRONMENT := $(strip $(foreach v,$(USER_VARIABLES),$(if $(and $(filter environment%,$(origin $(v))),$(value $(v))),$(v))))
ifneq ($(IGNORED_FROM_ENVIRONMENT),)
$(info note: $(IGNORED_FROM_ENVIRONMENT) set in the environment, ignored: give them on the command line, e.g. make $(or $(firstword $(MAKECMDGOALS)),help) $(foreach v,$(IGNORED_FROM_ENVIRONMENT),$(v)=$(value $(v))))
endif
define literal
override $(1) := $$(if $$(filter environment%,$$(origin $(1))),,$$(value $(1)))
endef
$(foreach v,$(USER_VARIABLES),$(eval $(call literal,$(v))))
export $(USER_VARIABLES)
export GITEXP_USER_VARIABLES := $(USER_VARIABLES)# so make submit keeps them out of the job's environment
# Any other NAME=value on the command line would be ignored in silence (make run n_layer=4 would
# run the committed config): refused before anything is made, the Makefile itself depending on
# a target that fails (make remakes its makefiles first, even under -n). Make's own pass. Not
# exported, since make would expand a command-line value for the recipe's environment.
UNKNOWN_VARIABLES := $(filter-out $(USER_VARIABLES) MAKE% MFLAGS SHELL,$(foreach v,$(.VARIABLES),$(if \
                       $(filter command line,$(origin $(v))),$(v))))
ifneq ($(UNKNOWN_VARIABLES),)
unexport $(UNKNOWN_VARIABLES)
$(lastword $(MAKEFILE_LIST)): variables-refused
endif

VENV := .venv
export PY := $(if $(PYTHON),$(PYTHON),$(VENV)/bin/python)
# the launcher's scripts share the loop's standard-library modules (gitexp.files, .layout,
# .protocol, .schema): code/ is on their path
export PYTHONPATH := $(CURDIR)/code$(if $(PYTHONPATH),:$(PYTHONPATH))
PY_READY := $(if $(PYTHON),,$(VENV)/.installed)

# ---- commands -----------------------------------------------------------------------------------

.PHONY: help
help: ## list the targets (variables: see the top of the Makefile)
	@printf 'usage: make TARGET [VARIABLE=value ...]\n\ntargets:\n'
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z_-]*:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@printf '\nvariables:\n'
	@sed -n 's/^#   /  /p' $(MAKEFILE_LIST)

# exec: the launcher is make's own child, so a SIGTERM to make (which make passes on to its
# children, then waits for them) stops the run with a checkpoint, not make alone
.PHONY: run
run: $(PY_READY) ## tag HEAD as TAG and run it as TAG/<id> (FIX=1 GPUS=0,1 NPROC=n MSG="...")
	@exec "$$PY" scripts/experiment.py run

.PHONY: submit
submit: $(PY_READY) ## check, tag HEAD as TAG and submit it as a Slurm job (FIX=1 NPROC=n|GPUS=0,1 NODES=n SBATCH="...")
	@"$$PY" scripts/slurm.py submit

.PHONY: more
more: $(PY_READY) ## another run of tag TAG's code as TAG/<id>, wherever HEAD is: a new seed (FIX=1: the tag's)
	@exec "$$PY" scripts/experiment.py more

.PHONY: sweep
sweep: $(PY_READY) ## run the grid of code/sweeps/NAME.py, each point its own tag (GPUS=0,1 or JOBS=n; FIX=1)
	@exec "$$PY" scripts/sweep.py

.PHONY: continue
continue: $(PY_READY) ## continue the unfinished TAG/ID from its last checkpoint, with its code and recorded devices
	@exec "$$PY" scripts/experiment.py continue

.PHONY: rerun
rerun: $(PY_READY) ## reproduce TAG/ID (default 0) from its tag as a new id, then compare metrics
	@exec "$$PY" scripts/experiment.py rerun

.PHONY: eval
eval: $(PY_READY) ## evaluate EXP="x/3 y" again with its checkpoint (CKPT=best|last|<epoch>), by its own code or WITH=<commit>'s; recorded in its statistic.json
	@"$$PY" scripts/eval.py

.PHONY: check
check: $(PY_READY) ## prove, in seconds, your task's contract and exact resume, recording nothing (NPROC=2 FIX=1)
	@"$$PY" scripts/check.py

.PHONY: data
data: $(PY_READY) ## prepare the data the working tree's code/ needs, in __data__/<key>/ (a run does it too)
	@"$$PY" -m gitexp.datastore

.PHONY: data-ls
data-ls: $(PY_READY) ## list the prepared data __data__/<key>/: size, what made it, the runs that used it
	@"$$PY" scripts/data.py ls

.PHONY: data-rm
data-rm: $(PY_READY) ## remove the prepared data KEY=<key> (a unique prefix), which no recorded run used
	@"$$PY" scripts/data.py rm

.PHONY: venv
venv: $(PY_READY) ## create .venv from code/requirements.txt (done by any target that needs it)

.PHONY: test
test: $(PY_READY) ## run the test suite (in throw-away copies of this template)
	@"$$PY" -m pytest tests

.PHONY: bench
bench: $(PY_READY) ## measure tracking overhead, launch cost and table speed (BENCH_QUICK=1: ~1 minute; BENCH_SCALE=n)
	@"$$PY" scripts/bench.py

.PHONY: test-gpu
test-gpu: $(PY_READY) ## run the GPU tests (where CUDA is; PYTHON=python3 on a machine with its own torch)
	@"$$PY" -m pytest tests -m gpu

.PHONY: test-slurm
test-slurm: $(PY_READY) ## run the Slurm tests on a private two-node Slurm started here (as root; Debian's slurmctld slurmd munge)
	@"$$PY" -m pytest tests -m slurm

.PHONY: test-faults
test-faults: $(PY_READY) ## run the whole fault suite alone: ten kills at each kind of moment, a full disk
	@"$$PY" -m pytest tests -m "faults or slow"

# ---- many experiments ---------------------------------------------------------------------------

.PHONY: diff
diff: $(PY_READY) ## compare A=x/0 with B=y/1: hparams, metrics, run facts, the code diff (FULL=1: all of it)
	@"$$PY" scripts/diff.py

.PHONY: rm
rm: $(PY_READY) ## move EXP="x/3 y" to the trash __result__/.trash/ (their git tags stay)
	@"$$PY" scripts/trash.py rm

.PHONY: restore
restore: $(PY_READY) ## bring EXP="x/3 y" back from the trash, exactly as they were
	@"$$PY" scripts/trash.py restore

.PHONY: empty-trash
empty-trash: $(PY_READY) ## delete the trash for good, after listing it and asking (YES=1: without asking)
	@"$$PY" scripts/trash.py empty

# ---- tensorboard --------------------------------------------------------------------------------

.PHONY: tb
tb: $(PY_READY) ## compare runs in TensorBoard until Ctrl+C (TAGS="a b/2" or LIST=l, default all; PORT= HOST=)
	@"$$PY" scripts/tb.py serve

.PHONY: tb-stop
tb-stop: $(PY_READY) ## stop the background TensorBoard that make run starts (TB=0: none)
	@"$$PY" scripts/tb.py stop

# ---- files --------------------------------------------------------------------------------------

# --clear, so the environment is exactly code/requirements.txt; a .venv that is a link to an
# environment elsewhere (shared by several clones) would be cleared through the link: refused
$(VENV)/.installed: code/requirements.txt
	@if [ -L "$(VENV)" ]; then printf 'error: %s is a link to another environment, which rebuilding it from code/requirements.txt would clear: give PYTHON=%s/bin/python to use it as it is, or remove the link\n' "$(VENV)" "$(VENV)" >&2; exit 2; fi
	python3 -m venv --clear $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r code/requirements.txt
	touch $@

# ---- statistics (record, title, table, ls) -----------------------------------------------------
# A list __statistic__/exper-list/<LIST>.txt names experiments (tag/id, or a bare tag: all its
# ids). Its title (the columns, yours to edit) and its table are files made from it. Their
# prerequisite __statistic__/.deps/<LIST>.state stands for every statistic.json the list names:
# its recipe, run each time, stats them all (scripts/scan.py) and rewrites the state only when
# one of them, or what the list names, changed. So a changed statistic.json remakes both, and
# make's graph stays a few files at 100,000 experiments. The .deps/ files are derived: deleting
# them costs one cold read.

# LIST becomes a file name and a target, so it is used only if it matches [A-Za-z0-9][A-Za-z0-9._-]*
# and the list exists; otherwise title and table run `lists.py check`, which says what is wrong.
NAME_CHARS := a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M N O P \
              Q R S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9 . _ -
strip_chars = $(if $(2),$(call strip_chars,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
is_name = $(and $(filter 1,$(words x$(1)x)),$(if $(call strip_chars,$(1),$(NAME_CHARS)),,y),$(if $(filter .% _% -%,$(1)),,y))
LIST_NAME := $(or $(LIST),record)
STATISTIC_LIST := $(if $(call is_name,$(LIST_NAME)),$(if $(wildcard __statistic__/exper-list/$(LIST_NAME).txt),$(LIST_NAME)))

.PHONY: record
record: $(PY_READY) ## add EXP="x/0 y" (default: the last finished) to the list LIST (default record)
	@"$$PY" scripts/lists.py record

.PHONY: title
title: $(if $(STATISTIC_LIST),__statistic__/title/$(STATISTIC_LIST).json,list-refused) ## write the columns of LIST's table to __statistic__/title/ (comment keys out with //)

# CHANGED is checked before anything is made: one word, and 0 or 1
CHANGED_OK := $(and $(filter 1,$(words x$(CHANGED)x)),$(filter x x0 x1,x$(CHANGED)))

.PHONY: table
table: $(if $(CHANGED_OK),$(if $(STATISTIC_LIST),__statistic__/table/$(STATISTIC_LIST).csv,list-refused),changed-refused) ## write LIST's table and per-tag summary in __statistic__/table/; print the summary (FULL=1: every run; CHANGED=1)
	@"$$PY" scripts/table.py show

REPORT := $(if $(STATISTIC_LIST),__statistic__/report/$(STATISTIC_LIST).html)

.PHONY: report
report: export REPORT_FILE = $(REPORT)
report: $(if $(STATISTIC_LIST),$(if $(TAGS),report-tags,$(REPORT)),list-refused) ## write LIST's report, one HTML page: summary, sweep plots, curves averaged over seeds (TAGS="a b")
	@if [ -z "$$TAGS" ]; then printf 'report: %s\n' "$$REPORT_FILE"; fi

.PHONY: report-tags
report-tags: export STATISTIC_STEM = $(STATISTIC_LIST)
report-tags: __statistic__/table/$(STATISTIC_LIST).csv | $(PY_READY)
	@"$$PY" scripts/report.py

.PHONY: variables-refused
variables-refused: export GIVEN := $(foreach v,$(UNKNOWN_VARIABLES),$(v)=$(value $(v)))
variables-refused:
	@printf 'error: %s %s (make help lists them): config values live in code/config.py (commit the change, then make run), or a sweep (code/sweeps/<NAME>.py)\n' \
	    "$$GIVEN" '$(if $(word 2,$(UNKNOWN_VARIABLES)),are not make variables,is not a make variable)' >&2; exit 2

.PHONY: changed-refused
changed-refused:
	@printf "error: CHANGED='%s' is not 0 or 1: CHANGED=1 shows only the columns that differ\n" "$$CHANGED" >&2; exit 2

.PHONY: ls
ls: $(PY_READY) ## list the tags; TAG=x: its ids with status, seed and best monitored metric
	@"$$PY" scripts/ls.py

.PHONY: list-refused
list-refused: $(PY_READY)
	@"$$PY" scripts/lists.py check

# the scripts read the list's name from STATISTIC_STEM, never from their command line
.PHONY: FORCE
FORCE:
__statistic__/.deps/%.state: export STATISTIC_STEM = $*
__statistic__/.deps/%.state: FORCE | $(PY_READY)
	@"$$PY" scripts/scan.py

# the scripts a title is made by (a change to one remakes it), and a table besides
TITLE_SCRIPTS := $(addprefix scripts/,title.py rows.py facts.py scan.py lists.py cache.py store.py parallel.py names.py \
                   cli.py) $(addprefix code/gitexp/,files.py layout.py)
TABLE_SCRIPTS := $(TITLE_SCRIPTS) $(addprefix scripts/,table.py table_layout.py table_summary.py)

# the title is the user's file: title.py replaces it only when it has made a new one
.PRECIOUS: __statistic__/title/%.json __statistic__/.deps/%.state
__statistic__/title/%.json: export STATISTIC_STEM = $*
__statistic__/title/%.json: __statistic__/.deps/%.state __statistic__/exper-list/%.txt \
                            $(TITLE_SCRIPTS) | $(PY_READY)
	@"$$PY" scripts/title.py

__statistic__/table/%.csv: export STATISTIC_STEM = $*
__statistic__/table/%.csv: __statistic__/title/%.json __statistic__/.deps/%.state \
                           $(TABLE_SCRIPTS) | $(PY_READY)
	@"$$PY" scripts/table.py write

__statistic__/report/%.html: export STATISTIC_STEM = $*
# remade when the list's table, a sweep's record or the scripts change; a run's curves and media
# change with its statistic.json, and so with the table
__statistic__/report/%.html: __statistic__/table/%.csv scripts/report.py scripts/report_figures.py \
                             code/gitexp/results.py code/gitexp/events.py $(wildcard __statistic__/sweeps/*.json) \
                             | $(PY_READY)
	@"$$PY" scripts/report.py

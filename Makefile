# The two commands of the README. Both create .venv when it is missing and install the project
# (pvit-pipeline from the root, pvit from model/, both editable; console scripts pvit-pipeline and
# pvit-train). A changed pyproject.toml reinstalls.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint typecheck clean

$(STAMP): pyproject.toml model/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e model -e '.[train,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pvit-pipeline build --source procedural --out shards/ --frames 8 --size 56 --label-stride 4 --num-samples 640 --option aspect=1
	$(BIN)/pvit-pipeline verify shards/procedural
	rm -rf runs/demo  # a fresh run each time: the picture below reads the newest checkpoint there
	$(BIN)/pvit-train --recipe train/recipes/demo_procedural.yaml --shards shards
	$(BIN)/pvit-pipeline show shards/procedural --split val --count 2
	$(BIN)/python -m train.visualize --checkpoint $$(ls runs/demo/checkpoints/step_*.pt | tail -n 1) \
		--shards shards --source procedural --out runs/demo/predictions.png

# What CI runs (.ci/run): lint, format and type checks first (seconds), then the default tests (CPU, a few
# minutes), then the slow ones (multi-process runs, kills and resumes, DDP), which gate the same way.
test: lint typecheck
	$(BIN)/pytest -q
	$(BIN)/pytest -q -m "slow and not gpu and not bench"

bench: $(STAMP)
	$(BIN)/pvit-pipeline bench --workers 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy with the settings in pyproject.toml ([tool.mypy]).
typecheck: $(STAMP)
	$(BIN)/mypy pipeline model/pvit train

clean:
	rm -rf shards/procedural runs

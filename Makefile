# make demo : set up .venv and run the main job (the synthetic CLIP-ViP reproduction) on its embedded default
# make test : set up .venv, lint, and run the whole test suite
.PHONY: setup demo test lint

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/clipvip demo --out demo_out

lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks

test: setup lint
	.venv/bin/python -m pytest -q

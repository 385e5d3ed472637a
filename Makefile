# Two commands set everything up on a fresh machine with python3 and make:
#   make demo   -- SVG(1)-ER swings up the cart-pole, 4 vmapped seeds, runs/demo/curve.png
#   make test   -- the test suite
# Both create .venv on first use and refresh it when pyproject.toml or
# requirements.lock change.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo demo-lqg test bench tour clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c requirements.lock -e ".[test,playground]"
	touch $(STAMP)

# SVG(1)-ER swings up the cart-pole: 4 vmapped seeds, 60k environment steps each,
# with the tuned settings (svgx/tuned.py). About 4-5 minutes on 2 CPU cores (most of
# the first 1.5-2.5 minutes compiling); the curve rises from about 45 to about 120
# (of about 250), and about half the seeds end at 100% success (README, Quick start).
demo: $(STAMP)
	$(VENV)/bin/svgx train --out runs/demo --overwrite --seeds 4 \
	  --env cartpole --algo svg1_er --steps 60000 --chunks 6

# The first demo: SVG(1)-ER on the lqg probe (20 steps), 4 seeds, about a minute;
# the curve rises from about -28 to about -12 (optimum: see README).
demo-lqg: $(STAMP)
	$(VENV)/bin/svgx train --out runs/demo-lqg --overwrite --seeds 4 \
	  --env lqg --env-options horizon 20 --algo svg1_er --linear-policy --no-squash --time-input True \
	  --iterations 4000 --chunks 20 --n-envs 4 --updates-per-step 4 --replay-capacity 8000 \
	  --batch-size 64 --critic-hidden 64 64 --policy-lr 1e-3 --gamma 1 --init-std 0.3 --tau 0.05 \
	  --reward-scale 0.05

# System packages pip cannot bring (headless OpenGL), lint and format check (ruff),
# then the tests in two worker processes: the suite
# is bound by single-threaded XLA compilation and tracing, so one process leaves
# a core idle.
test: $(STAMP)
	scripts/install-system-packages
	$(VENV)/bin/ruff check svgx envs tests experiments
	$(VENV)/bin/ruff format --check svgx envs tests experiments
	$(VENV)/bin/python -m pytest -q -n 2 --dist worksteal

# Every task with a random policy and a short speed table (the first demo).
tour: $(STAMP)
	$(VENV)/bin/python -m experiments.bench_envs --quick

bench: $(STAMP)
	$(VENV)/bin/python -m experiments.bench_envs

clean:
	rm -rf $(VENV) .pytest_cache

# `make run` starts the app on the built-in demo data; `make test` runs the whole suite (with the Ray extra).
# Both create or refresh the repo's .venv when requirements.txt is newer than it.
PY := .venv/bin/python
STAMP := .venv/.requirements-stamp
RAY_STAMP := .venv/.requirements-ray-stamp
PORT ?= 8501

.PHONY: run test clean-venv

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	# torch first, alone from its CPU wheel: open_clip would otherwise pull a CUDA build.
	$(PY) -m pip install -q torch==$$(grep '^torch==' requirements.txt | cut -d= -f3)
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

# The optional Ray extra (`shards score --engine ray`): the suite tests that path, the app does not need it.
$(RAY_STAMP): requirements-ray.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-ray.txt
	touch $(RAY_STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: $(STAMP) $(RAY_STAMP)
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf .venv

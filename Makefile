# Cluster artifacts and checks. PYTHON: the interpreter whose installation the environment archive packs
# (default: the project's .venv, falling back to python3).
PYTHON ?= $(shell [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)

.PHONY: package package-zip package-env test test-airflow clean

package: ## dist/mgoe-<version>.zip (--py-files) and dist/mgoe-env-<version>.tar.gz (--archives)
	$(PYTHON) scripts/package.py all

package-zip: ## only the --py-files zip
	$(PYTHON) scripts/package.py zip

package-env: ## only the packed Python environment
	$(PYTHON) scripts/package.py env

test: ## the whole test suite (sets up .venv first)
	bash scripts/test.sh

test-airflow: ## the Airflow DAG tests, in their own .venv-airflow
	bash scripts/test_airflow.sh

clean:
	rm -rf dist build

"""``turnout serve`` imports only what serving needs: the CLI and the app it loads pull in no aiohttp (the
default upstream client is httptools; aiohttp alone is ~0.1 s of start-up), no JSON-schema library, no eval
runner, no template engine and none of the other subcommands' modules. Each is imported where it is used: an
aiohttp session, a schema assertion, an eval run, the first review page, its own subcommand."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness import ROOT

NOT_FOR_SERVING = (
    "aiohttp",
    "jsonschema",
    "referencing",
    "jinja2",
    "gateway.evals",
    "collectors.evals.runner",
    "collectors.datasets.build",
    "gateway.eval_cli",
    "gateway.drift_cli",
    "gateway.deploy_cli",
    "gateway.dataset_cli",
    "gateway.demo",
)


def loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"import json, pathlib, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_serving_loads_no_other_client_schema_library_or_subcommand() -> None:
    loaded = loaded_by("import gateway.cli, gateway.app")
    assert "gateway.h1_client" in loaded
    assert [name for name in NOT_FOR_SERVING if name in loaded] == []


def test_each_is_loaded_where_it_is_used() -> None:
    """The names above are the ones really loaded (so the test above cannot pass on a misspelt name)."""
    loaded = loaded_by(
        "from gateway import aiohttp_client, dataset_cli, demo, deploy_cli, drift_cli, eval_cli\n"
        "from collectors.evals.assertions.structured import schema_check\n"
        "from gateway.review.pages import _templates\n"
        "_templates()\n"
        "assert schema_check({'type': 'object'}, [], pathlib.Path('.')) is not None"
    )
    assert [name for name in NOT_FOR_SERVING if name not in loaded] == []

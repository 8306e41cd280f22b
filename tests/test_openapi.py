"""The OpenAPI schema matches behaviour: schemathesis, with every check, against a real `dogbreed serve`.

Bounded: loopback only, a fixed seed, at most 10 fuzzed cases per operation plus the coverage phase's boundary
cases (~380 requests, ~30 s on 2 cores); see tests/schemathesis.toml and tests/schemathesis_hooks.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serve_helpers import start_server, stop_server

TESTS = Path(__file__).resolve().parent


def test_schema_declares_required_fields_constraints_and_responses(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from dogbreed.serve.app import create_app
    from dogbreed.serve.limits import Limits

    class Fake:  # the schema needs only the breed list, not a model
        from dogbreed.breeds import stanford_breeds

        classes = list(stanford_breeds())
        top_k = 5
        draft_size = 257
        gallery = None

    spec = TestClient(create_app(predictor=Fake(), feedback_db=tmp_path / "fb.sqlite3")).get("/openapi.json").json()
    predict = spec["paths"]["/v1/predict"]["post"]
    assert set(predict["responses"]) == {"200", "400", "408", "413", "415", "422", "500", "503"}
    # Every route that reads a body can give the body timeout's 408 (`limits.GuardMiddleware`).
    for route in ("/v1/explain", "/v1/feedback"):
        assert "408" in spec["paths"][route]["post"]["responses"], route
    assert predict["responses"]["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    # explain's answer headers are declared, not only described (generated clients read what is declared)
    assert set(spec["paths"]["/v1/explain"]["post"]["responses"]["200"]["headers"]) == {"X-Dogbreed-Breed",
                                                                                         "X-Dogbreed-Dogs"}
    body = spec["components"]["schemas"][predict["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
                                         .split("/")[-1]]
    assert body["required"] == ["file"]
    assert body["properties"]["file"]["minItems"] == 1
    assert body["properties"]["file"]["maxItems"] == Limits().max_files
    assert body["properties"]["file"]["items"]["minLength"] == 1
    top_k = next(p for p in predict["parameters"] if p["name"] == "top_k")["schema"]
    assert (top_k["minimum"], top_k["maximum"]) == (1, 120)
    pred = spec["components"]["schemas"]["PredictionOut"]
    assert pred["properties"]["verdict"]["enum"] == ["dog", "no_dog", "uncertain_breed"]
    fb = spec["paths"]["/v1/feedback"]["post"]
    assert {"200", "413", "429", "503", "507"} <= set(fb["responses"])
    fb_body = spec["components"]["schemas"][fb["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
                                            .split("/")[-1]]
    assert set(fb_body["required"]) == {"file", "breed"}
    breed = fb_body["properties"]["breed"]
    # not an enum: any spelling of a name is taken ("pug"), which an enum would make a generated client refuse
    assert breed["minLength"] == 1 and breed["format"] == "breed" and "enum" not in breed
    assert breed["examples"] == ["Samoyed", "n02085620"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("st", path=os.path.dirname(sys.executable)) is None,
                    reason="schemathesis is not installed (pip install -e '.[test]')")
def test_schemathesis_all_checks_pass(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        # The first heat-map builds the PyTorch explainer (tens of seconds on a busy 2-core box); do it before
        # the run, so the response-time check measures requests, not that one-time load.
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (120, 90, 60)).save(buf, format="PNG")
        warm = httpx.post(server.url + "/v1/explain", files={"file": ("w.png", buf.getvalue())}, timeout=300)
        assert warm.status_code == 200, warm.text
        env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks",
                   PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        st = str(Path(sys.executable).parent / "st")
        res = subprocess.run(
            [st, "--config-file", str(TESTS / "schemathesis.toml"), "run", f"{server.url}/openapi.json",
             "--checks", "all", "--max-examples", "10", "--seed", "1", "--generation-database", "none",
             # Response time is a hang detector here, not a speed target (those live in bench/): a heat-map on a
             # 2-core machine busy with other work has been measured at 54 s.
             "--request-timeout", "240", "--max-response-time", "240", "--no-color"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        tail = res.stdout[-4000:] + res.stderr[-2000:]
        assert res.returncode == 0, tail
        assert " passed" in res.stdout and "failed" not in res.stdout.split("SUMMARY")[-1], tail
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200  # still up
        assert "Traceback" not in server.log.read_text()
    finally:
        stop_server(server)

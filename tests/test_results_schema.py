"""Every committed benchmark result follows one schema (inr_codecs.bench.results); the bench
package says which extra it needs when that is missing."""
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

RESULTS = sorted((pathlib.Path(__file__).parent.parent / "benchmarks" / "results").glob("*.json"))


@pytest.fixture(scope="module")
def results():
    return pytest.importorskip("inr_codecs.bench.results", reason="needs the bench extra", exc_type=ImportError)


@pytest.fixture
def minimal():
    return {"schema": "inr-codecs.benchmark/1", "benchmark": "rd", "date": "2026-01-02", "command": None,
            "machine": {"cpus": 2}, "settings": {"steps": 3}, "runs": [{"codec": "siren", "psnr_db": 30.5}]}


def test_there_are_results():
    assert len(RESULTS) >= 10


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_every_results_file_validates(results, path):
    res = results.read(path)
    assert res["schema"] == results.SCHEMA
    assert path.stem.startswith(res["benchmark"] + "_"), (path.name, res["benchmark"])
    assert res["runs"] and res["machine"]


@pytest.mark.parametrize("key", ["runs", "machine", "schema", "settings", "benchmark"])
def test_validate_rejects_a_missing_entry(results, minimal, key):
    del minimal[key]
    with pytest.raises(ValueError, match=f"'{key}'"):
        results.validate(minimal)


@pytest.mark.parametrize("change, message", [
    ({"schema": "inr-codecs.benchmark/0"}, "schema 'inr-codecs.benchmark/0', expected 'inr-codecs.benchmark/1'"),
    ({"runs": {"a": 1}}, "'runs' is a dict, expected list"),
    ({"runs": [[1, 2]]}, r"runs\[0\] is a list"),
    ({"runs": [{"section": 3}]}, r"runs\[0\]\['section'\]"),
    ({"date": "22.11.2026"}, "'date' is '22.11.2026', expected YYYY-MM-DD or null"),
    ({"command": 3}, "'command' is a int, expected str or null"),
    ({"volume": "nuclei"}, "unknown top-level entries 'volume'"),
])
def test_validate_names_the_problem(results, minimal, change, message):
    with pytest.raises(ValueError, match=message):
        results.validate({**minimal, **change})


def test_validate_rejects_what_is_not_an_object(results):
    with pytest.raises(ValueError, match="JSON object"):
        results.validate([])


def test_read_names_the_file(results, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"machine": {}, "runs": []}))
    with pytest.raises(ValueError, match="old.json: .*no 'schema' entry"):
        results.read(path)


def test_write_read_round_trip(results, tmp_path):
    res = results.new("siren", {"chunks": [64, 64, 64]}, command="python bench.py --steps 3")
    assert res["date"] and res["machine"]["cpus"] >= 1 and res["runs"] == []
    res["runs"] += [{"volume": "v", "psnr_db": 31.25, "acc": {"0.5": 0.9}}, {"section": "gpu", "skipped": "no"}]
    res["notes"] = "a note"
    path = tmp_path / "sub" / "r.json"
    results.write(res, path)
    assert results.read(path) == res
    assert list(json.loads(path.read_text())) == [k for k in results.KEYS if k in res]   # schema order
    assert not list(path.parent.glob("*.tmp"))
    with pytest.raises(ValueError, match="'runs'"):
        results.write({k: v for k, v in res.items() if k != "runs"}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_bench_needs_its_extra():
    """Without scikit-image or matplotlib, importing inr_codecs.bench names the extra to install, and the
    CLI still works except `bench`, which says the same."""
    code = textwrap.dedent("""
        import sys
        sys.modules["skimage"] = None       # as if not installed (find_spec sees None)
        sys.modules["matplotlib"] = None
        try:
            import inr_codecs.bench
        except ImportError as e:
            print(e)
        else:
            raise SystemExit("inr_codecs.bench imported without its extra")
        from inr_codecs.cli import main
        assert main(["bench", "nuclei", "--ratios", "64"]) == 2
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for text in (out.stdout, out.stderr):
        assert "needs the 'bench' extra: pip install 'inr-codecs[bench]' (missing: skimage, matplotlib)" in text
    assert out.stderr.startswith("inr-codecs bench: error:")

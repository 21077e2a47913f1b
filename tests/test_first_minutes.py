"""A newcomer's first minutes, tried as they would: `--help` of every script answers without importing
TensorFlow, TensorFlow's start-up lines are hidden (and nothing else is), an example started without its
data says which file is missing and where to get it, and examples/get_data.py downloads the data files
with their checksums (against a local HTTP server on 127.0.0.1 serving the real files: no internet).
"""

import functools
import glob
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest

from bert4keras.snippets import data_file

pytestmark = pytest.mark.slow  # runs scripts in subprocesses: deselect with -m 'not slow'

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "examples", "*.py")) + [os.path.join(REPO, "pretraining", "pretraining.py")])
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def run(args, **kwargs):
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell: nothing set
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, **kwargs)


# These do not depend on the Keras backend (the Quickstart test at the end runs on each): once, under TensorFlow.
once = pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent: runs under KERAS_BACKEND=tensorflow")


@once
def test_help_of_every_script_answers_without_importing_a_backend():
    probe = (
        "import runpy, sys\n"
        "for path in sys.argv[1:]:\n"
        "    sys.argv = [path, '--help']\n"
        "    try:\n"
        "        runpy.run_path(path, run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (path, e.code)\n"
        "    loaded = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]\n"
        "    assert not loaded, (path, loaded)\n"
        "    print('ok', path)\n"
    )
    result = run(["-c", probe, *SCRIPTS])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ok ") == len(SCRIPTS) and "usage:" in result.stdout


@once
def test_tensorflow_start_up_lines_are_hidden_and_everything_else_is_kept():
    code = (
        "import os, sys\n"
        "from bert4keras.snippets import quiet_tensorflow_startup\n"
        "with quiet_tensorflow_startup():\n"
        "    import tensorflow\n"
        "    print('a python line', file=sys.stderr)\n"
        "    os.write(2, b'a native line\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    loud = run(["-c", "import tensorflow"])
    quiet = run(["-c", code])
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "a python line\na native line\nafter\n", (quiet.stderr, loud.stderr)


@once
def test_data_file_names_the_missing_file_the_folder_and_the_way_to_get_it(tmp_path):
    (tmp_path / "zh").mkdir()
    (tmp_path / "zh" / "there.txt").write_text("x")
    assert data_file(str(tmp_path), "zh/there.txt") == os.path.join(str(tmp_path), "zh", "there.txt")
    with pytest.raises(FileNotFoundError, match=r"zh/sentiment\.zip not found in .*SOURCES\.md.*get_data\.py"):
        data_file(str(tmp_path), "zh/sentiment.zip")
    with pytest.raises(FileNotFoundError, match="the folder does not exist"):
        data_file(str(tmp_path / "nowhere"), "zh/sentiment.zip")


@once
def test_an_example_without_its_data_says_which_file_and_where_to_get_it(tmp_path):
    result = run([os.path.join(REPO, "examples", "task_sentiment_zh.py"), "--data-dir", str(tmp_path / "none")])
    assert result.returncode != 0
    assert "vocab/chinese_bert_vocab.txt not found" in result.stderr and "get_data.py" in result.stderr


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server laid out as raw.githubusercontent.com (<repository>/HEAD/<path>), holding copies
    of two real data files and, for a third, bytes that do not match the checksum."""
    sys.path.insert(0, os.path.join(REPO, "examples"))
    try:
        import get_data
    finally:
        sys.path.pop(0)
    data = os.environ.get("BERT4KERAS_DATA") or os.path.join(REPO, "..", "shared", "data")
    root = tmp_path / "mirror"
    for name in ("en/sst2_test.tsv", "vocab/chinese_bert_vocab.txt", "spm/sp_test_model.model"):
        repo, path, _, _ = get_data.FILES[name]
        target = root / repo / "HEAD" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(data, *name.split("/")), target)
    with open(root / "google/sentencepiece/HEAD/python/test/test_model.model", "ab") as f:
        f.write(b"tampered")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", data
    server.shutdown()
    server.server_close()


@once
def test_get_data_downloads_checks_and_skips(mirror, tmp_path):
    url, data = mirror
    out = tmp_path / "data"
    script = os.path.join(REPO, "examples", "get_data.py")
    good = ["en/sst2_test.tsv", "vocab/chinese_bert_vocab.txt"]
    result = run([script, "--data-dir", str(out), "--base-url", url, "--only", *good])
    assert result.returncode == 0, result.stderr
    for name in good:
        with open(out / name, "rb") as got, open(os.path.join(data, *name.split("/")), "rb") as real:
            assert hashlib.sha256(got.read()).digest() == hashlib.sha256(real.read()).digest()
    again = run([script, "--data-dir", str(out), "--base-url", url, "--only", *good])
    assert again.returncode == 0 and again.stdout.count("already there") == 2

    # A file whose bytes do not match its checksum, and one the server does not have: named, nothing written.
    bad = run([script, "--data-dir", str(out), "--base-url", url, "--only", "spm/sp_test_model.model",
               "zh/sentiment.zip"])
    assert bad.returncode == 1
    assert "spm/sp_test_model.model: checksum mismatch" in bad.stderr and "zh/sentiment.zip: could not download" in bad.stderr
    files = sorted(os.path.relpath(os.path.join(d, f), out).replace(os.sep, "/")
                   for d, _, names in os.walk(out) for f in names)
    assert files == sorted(good)  # nothing for the failed two, no partial file left

    listing = run([script, "--list"])
    assert listing.returncode == 0 and "zh/sentiment.zip\tbojone/bert4keras: examples/datasets/sentiment.zip" in listing.stdout


def test_the_readme_quickstart_runs_as_written(tmp_path):
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("## Quickstart"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```", section.index("```python"))]
    assert "get_model_path()" in code and "load_model" in code
    result = run(["-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "classifier.keras").exists()

"""Issue 25: never touch what is not ours. The output folder's ownership and lock, hostile inputs under the data
root, bad settings and unsafe YAML, and OS errors while writing: each exits 0 with every input accounted for, or 2
with one paragraph, and leaves every file the audit did not write byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import auditor.pipeline
import auditor.runs
from auditor.cli import main
from auditor.data import read_class_names
from auditor.errors import AuditorError
from auditor.outdir import LOCK, MARKER, is_output
from auditor.runs import load_run
from tests.conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]
FAST = ["--findings.enabled", "false"]  # the cases here are about files, not findings


def _audit(data, out, *extra) -> list[str]:
    return ["audit", "--data.root", str(data), "--model.factory", "tests.conftest:tiny_cnn", "--out", str(out),
            "--sweep.batch_size", "4", *extra]


def _checksums(folder: Path) -> dict[str, str]:
    """Every file under `folder` (symlinks as their targets' names), by path relative to it."""
    sums = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            sums[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            sums[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def _refused(capsys, *parts: str) -> str:
    """The exit-2 paragraph: one line, no traceback, naming each of `parts`."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("auditor: error: ") and sum("error" in line for line in err.splitlines()) == 1, err
    for part in parts:
        assert part in message, (part, message)
    return message


# -- the output folder ------------------------------------------------------------------------------------------


def test_a_folder_holding_our_names_without_a_marker_is_refused_untouched(tmp_path, capsys):
    data, _ = make_image_folder(tmp_path, per_class=2)
    out = tmp_path / "mine"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "my_features.npz").write_bytes(b"the user's features")
    (out / "summary.json").write_text('{"mine": true}')
    before = _checksums(tmp_path)
    assert main(_audit(data, out, *FAST)) == 2
    _refused(capsys, str(out), "shards, summary.json", "never replaces or deletes")
    assert _checksums(tmp_path) == before
    assert sorted(p.name for p in out.iterdir()) == ["shards", "summary.json"]  # no marker, lock or log either


def test_a_folder_with_other_files_is_used_beside_them(tmp_path):
    data, _ = make_image_folder(tmp_path, per_class=2)
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "notes" / "features.npz").write_bytes(b"\x00" * 10)
    before = _checksums(out)
    assert main(_audit(data, out)) == 0  # findings on: every stage writes what it writes
    after = _checksums(out)
    assert {k: after[k] for k in before} == before
    created = {Path(rel).parts[0] for rel in set(after) - set(before)}
    assert MARKER in created and "report.html" in created
    assert all(is_output(name) for name in created), sorted(created)  # OUTPUTS names everything the audit writes
    assert json.loads((out / MARKER).read_text())["tool"] == "auditor"


def test_the_run_directory_layout_and_the_outputs_list_agree():
    layout = auditor.runs.__doc__.split("Layout of RUN_DIR:")[1].split("\n\n")[0]
    names = [line.split()[0] for line in layout.splitlines() if line.startswith("  ") and line[2] != " "]
    assert "thumbs.npy" in names and "report.html" in names and len(names) > 20
    for name in names:
        assert is_output(name.rstrip("/").replace("<method>", "gradcampp")), name
    assert not any(is_output(name) for name in ("my_features.npz", "notes.txt", "cat", "data", "config.yaml"))


def test_foreign_files_in_a_marked_run_folders_shards_are_kept(tmp_path):
    data, _ = make_image_folder(tmp_path, per_class=2)
    out = tmp_path / "run"
    assert main(_audit(data, out, *FAST)) == 0
    (out / "shards").mkdir()
    (out / "shards" / "my_features.npz").write_bytes(b"the user's features")
    (out / "shards" / "1-2.npz").write_bytes(b"not a shard name of ours")
    assert main(_audit(data, out, *FAST, "--run.resume", "false")) == 0  # a fresh sweep clears its own shards only
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["1-2.npz", "my_features.npz"]
    assert (out / "shards" / "my_features.npz").read_bytes() == b"the user's features"


def test_shard_names_without_our_stamp_are_refused(tmp_path, capsys):
    data, _ = make_image_folder(tmp_path, per_class=2)
    out = tmp_path / "run"
    assert main(_audit(data, out, *FAST)) == 0
    (out / "shards").mkdir()
    (out / "shards" / "000000000-000000004.npz").write_bytes(b"someone else's")
    assert main(_audit(data, out, *FAST)) == 2
    _refused(capsys, "no fingerprint.json says an audit wrote")
    assert (out / "shards" / "000000000-000000004.npz").read_bytes() == b"someone else's"


@pytest.mark.parametrize("where", ["root", "inside root", "masks"])
def test_out_in_the_data_is_refused_and_a_class_named_shards_keeps_its_images(tmp_path, capsys, where):
    data, masks = make_image_folder(tmp_path, classes=("cat", "shards"), per_class=2)
    out = {"root": data, "inside root": data / "shards", "masks": masks / "run"}[where]
    before = _checksums(tmp_path)
    assert main(_audit(data, out, "--data.masks", str(masks), *FAST)) == 2
    _refused(capsys, str(out), "data folder", "Choose a folder outside it")
    assert _checksums(tmp_path) == before
    assert not (masks / "run").exists()


def test_out_equal_to_the_manifests_folder_is_refused(tmp_path, capsys):
    make_image_folder(tmp_path, per_class=2)
    (tmp_path / "m.csv").write_text("path,label\ndata/cat/0.png,cat\ndata/dog/0.png,dog\n")
    before = _checksums(tmp_path)
    assert main(["audit", "--data.manifest", str(tmp_path / "m.csv"), "--model.factory", "tests.conftest:tiny_cnn",
                 "--out", str(tmp_path)]) == 2
    _refused(capsys, "the folder of data.manifest")
    assert _checksums(tmp_path) == before


@pytest.mark.parametrize("case", ["a file", "under a file"])
def test_out_that_is_or_lies_under_a_file_is_refused(tmp_path, capsys, case):
    data, _ = make_image_folder(tmp_path, per_class=2)
    (tmp_path / "report").write_text("a file")
    out = tmp_path / "report" if case == "a file" else tmp_path / "report" / "run"
    assert main(_audit(data, out, *FAST)) == 2
    _refused(capsys, str(out), *(["is a file"] if case == "a file" else ["Not a directory", "ENOTDIR"]))
    assert (tmp_path / "report").read_text() == "a file"


_HOLDER = """
import sys, time
from auditor.outdir import claimed
with claimed(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_audit_into_a_held_folder_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path, capsys):
    first, _ = make_image_folder(tmp_path / "first", per_class=3)
    second, _ = make_image_folder(tmp_path / "second", per_class=5, seed=1)
    out = tmp_path / "run"
    assert main(_audit(first, out, *FAST)) == 0
    finished = _checksums(out)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_audit(second, out, *FAST)) == 2
        _refused(capsys, "Another audit is writing to", f"pid {holder.pid}", "started ")
        assert {k: v for k, v in _checksums(out).items() if k != LOCK} == {k: v for k, v in finished.items()
                                                                            if k != LOCK}
        run = load_run(out)  # the first audit's run folder, consistent: 6 images everywhere
        assert len(run.records) == run.summary["n_images"] == len(run.maps) == 6
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: the kernel drops the flock, the lock file stays
        holder.wait()
    assert (out / LOCK).is_file()
    assert main(_audit(second, out, *FAST)) == 0
    run = load_run(out)
    assert len(run.records) == run.summary["n_images"] == len(run.maps) == 10


# -- every input accounted for ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """One audit of a folder holding every kind of hostile path (the tests below each check one of them)."""
    root = tmp_path_factory.mktemp("hostile")
    data, _ = make_image_folder(root, per_class=3)
    outside = root / "outside.png"
    outside.write_bytes((data / "cat" / "0.png").read_bytes())
    os.symlink(root / "nowhere.png", data / "cat" / "dangling.png")
    os.symlink("loop.png", data / "cat" / "loop.png")
    os.symlink(outside, data / "dog" / "external.png")
    os.symlink(root, data / "dog" / "external_folder")
    os.symlink("../cat/1.png", data / "dog" / "inside.png")
    (data / os.fsdecode(b"cat/caf\xe9.png")).write_bytes((data / "cat" / "2.png").read_bytes())
    before = _checksums(root)
    out = root / "run"
    assert main(_audit(data, out, *FAST)) == 0
    assert _checksums(root / "data") == {k[len("data/"):]: v for k, v in before.items() if k.startswith("data/")}
    return out


def _skip_reason(run_dir: Path, sample_id: str) -> str:
    skipped = pd.read_csv(run_dir / "skipped.csv", dtype=str, keep_default_na=False).set_index("id")
    return skipped.loc[sample_id, "reason"]


@pytest.mark.parametrize("sample_id, reason", [
    ("cat/dangling.png", "broken symlink"),
    ("cat/loop.png", "symlink loop"),
    ("dog/external.png", "symlink outside the data root: not followed (set data.follow_external_symlinks: true"),
    ("dog/external_folder", "symlink outside the data root"),
    ("cat/caf\\xe9.png", "file name not UTF-8"),
])
def test_every_hostile_path_is_skipped_with_its_reason(hostile_run, sample_id, reason):
    assert _skip_reason(hostile_run, sample_id).startswith(reason)


def test_skips_are_counted_and_shown_and_the_rest_is_audited(hostile_run):
    run = load_run(hostile_run)
    assert run.summary["n_skipped"] == 5 and run.summary["n_images"] == 6 + 1 + 5
    assert run.summary["skipped_reasons"] == {"broken symlink": 1, "symlink loop": 1,
                                              "symlink outside the data root": 2, "file name not UTF-8": 1}
    assert "dog/inside.png" in set(run.records["id"])  # a link within the root is followed
    assert "outside.png" not in (hostile_run / "skipped.csv").read_text()  # the outside target is never named
    page = (hostile_run / "report.html").read_text(encoding="utf-8")
    assert "caf\\xe9.png" in page


def test_external_symlinks_are_audited_when_allowed(tmp_path):
    data, _ = make_image_folder(tmp_path, per_class=2)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_bytes((data / "cat" / "0.png").read_bytes())
    os.symlink(tmp_path / "elsewhere" / "x.png", data / "cat" / "linked.png")
    out = tmp_path / "run"
    assert main(_audit(data, out, *FAST, "--data.follow_external_symlinks", "true")) == 0
    run = load_run(out)
    assert run.summary["n_skipped"] == 0 and "cat/linked.png" in set(run.records["id"])


def test_classes_file_with_a_byte_order_mark_and_crlf_reads_as_meant(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes("\ufeffcat\r\ndog\r\n".encode("utf-8"))
    assert read_class_names(None, str(path)) == ["cat", "dog"]


def test_an_empty_classes_file_is_refused(tmp_path, capsys):
    data, _ = make_image_folder(tmp_path, per_class=2)
    (tmp_path / "classes.txt").write_text("\n  \n")
    assert main(_audit(data, tmp_path / "run", "--model.classes_file", str(tmp_path / "classes.txt"))) == 2
    _refused(capsys, "holds no class names")
    with pytest.raises(AuditorError, match="not UTF-8"):
        (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
        read_class_names(None, str(tmp_path / "latin1.txt"))


# -- settings and YAML ----------------------------------------------------------------------------------------------

BAD_SETTINGS = {
    "batch size negative": (["--sweep.batch_size", "-4"], "sweep.batch_size must be 1 or more"),
    "batch size zero": (["--sweep.batch_size", "0"], "sweep.batch_size must be 1 or more"),
    "workers negative": (["--sweep.num_workers", "-1"], "sweep.num_workers must be 0 or more"),
    "map size zero": (["--sweep.map_size", "0"], "sweep.map_size must be 2 or more"),
    "shard size negative": (["--sweep.shard_size", "-3"], "sweep.shard_size must be 1 or more"),
    "limit negative": (["--data.limit", "-5"], "data.limit must be 1 or more"),
    "share above 1": (["--findings.region_threshold", "1.5"], "findings.region_threshold must be between 0 and 1"),
    "not finite": (["--attention.iou_threshold", ".nan"], "attention.iou_threshold must be a finite number"),
    "device banana": (["--device", "banana"], "sweep.device must be auto, cpu, cuda, cuda:N"),
    "device missing": (["--device", "cuda:99"], "sweep.device is 'cuda:99', but torch sees"),
    "alias in --set": (["--set", "model.factory_kwargs={a: &x [1, 2], b: *x}"], "uses the YAML alias *x"),
}


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_bad_settings_are_refused_at_load(tmp_path, capsys, name):
    extra, message = BAD_SETTINGS[name]
    assert main(_audit(tmp_path / "data", tmp_path / "run", *extra)) == 2
    _refused(capsys, message)
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    assert main(_audit(tmp_path / "data", tmp_path / "run", "--device", "cuda")) == 2
    _refused(capsys, "sweep.device is 'cuda', but torch sees no CUDA GPU")


LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize("where", ["string key", "factory_kwargs"])
def test_a_billion_laughs_config_is_refused_at_once(tmp_path, capsys, where):
    tail = "model: {arch: *i}\n" if where == "string key" else "model: {factory_kwargs: {x: *i}}\n"
    (tmp_path / "bomb.yaml").write_text(LAUGHS + tail)
    started = time.perf_counter()
    assert main(["audit", "--config", str(tmp_path / "bomb.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert time.perf_counter() - started < 5
    _refused(capsys, "bomb.yaml uses the YAML alias *a", "aliases are refused")


def test_an_oversized_config_is_refused_before_parsing(tmp_path, capsys):
    (tmp_path / "big.yaml").write_text("# padding\n" * 120_000)
    assert main(["audit", "--config", str(tmp_path / "big.yaml")]) == 2
    _refused(capsys, "larger than 1024 KiB")


# -- the disk filling up --------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs at tmp_path/disk (root only; skipped where mounting is not allowed), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot mount a tmpfs here: {err}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def _fill_disk_before(monkeypatch, disk: Path, module, name: str) -> None:
    """Fill `disk` to the last byte just before module.name runs: the next write there gets ENOSPC."""
    original = getattr(module, name)

    def filled(*args, **kwargs):
        with open(disk / "filler", "wb", buffering=0) as handle:  # unbuffered: closing has nothing left to flush
            try:
                while True:
                    handle.write(b"\x00" * (1 << 16))
                    handle.flush()
            except OSError:
                pass
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, filled)


@pytest.mark.parametrize("stage", ["sweep", "report"])
def test_a_full_disk_is_a_paragraph_and_the_same_command_resumes(tmp_path, capsys, monkeypatch, small_disk, stage):
    data, _ = make_image_folder(tmp_path, per_class=4)
    out = small_disk / "run"
    argv = _audit(data, out, *FAST, "--sweep.shard_size", "4")
    if stage == "sweep":
        _fill_disk_before(monkeypatch, small_disk, auditor.pipeline, "run_sweep")
    else:
        _fill_disk_before(monkeypatch, small_disk, auditor.pipeline, "finish_run")
    before = _checksums(tmp_path / "data")
    assert main(argv) == 2
    message = _refused(capsys, "No space left on device (ENOSPC)", f"The run folder {out} holds",
                       "Free some disk space", "run the same command again")
    if stage == "report":
        assert f"at {out / 'report.html'}" in message and "records.parquet" in message
        assert "resumes after the 2 finished shard(s)" in message
    else:
        assert f"at {out / 'shards' / '000000000-000000004.npz'}" in message and "it starts over" in message
    monkeypatch.undo()
    (small_disk / "filler").unlink()
    assert main(argv) == 0
    if stage == "report":
        assert "resuming after 8 finished samples" in (out / "audit.log").read_text()
    assert load_run(out).summary["n_audited"] == 8
    assert _checksums(tmp_path / "data") == before

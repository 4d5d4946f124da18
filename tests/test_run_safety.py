"""Run directories and checkpoints are safe: a used directory is refused, one writer at a
time, ``--resume`` refuses a config that changes the math, checkpoints are verified before
loading (with fallback), a full disk is reported and cleaned up, user errors are one line
(exit 2), and SIGTERM saves a checkpoint that resumes bit for bit. End to end on the shipped
tiny model, one or two steps; the command line runs in real subprocesses."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from skpo.config import load_config
from skpo.training import checkpoint as ckpt
from skpo.training.setup import build_trainer


@pytest.fixture(scope="module")
def tiny_dir():
    from skpo.models.loading import tiny_arith_dir

    return os.environ.get("SKPO_TEST_MODEL") or str(tiny_arith_dir())


def overrides(tiny_dir, out, *extra) -> list[str]:
    """The smallest real run: GRPO, 2 prompts × 2 answers of 16 tokens, one step."""
    return [f"model.path={tiny_dir}", "train.method=grpo", "train.steps=1", "train.prompts_per_step=2",
            "method.group_size=2", "rollout.max_new_tokens=16", "train.lr=1e-3", f"log.out_dir={out}",
            "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=20", "eval.every=0", *extra]


def config(tiny_dir, out, *extra):
    return load_config(None, overrides(tiny_dir, out, *extra))


def trained(tiny_dir, out, *extra):
    trainer = build_trainer(config(tiny_dir, out, *extra))
    trainer.train()
    return trainer


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def cli(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m skpo.cli ARGS`` in a fresh process, stdout and stderr captured."""
    return subprocess.run([sys.executable, "-m", "skpo.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess, command: str, *needles: str) -> str:
    """Exit 2, no traceback, exactly one line on stderr, ``skpo <command>: …`` naming ``needles``."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert lines[0].startswith(f"skpo {command}: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def damage(path: Path) -> None:
    """Truncate a file to half: what a crash mid-copy or a full disk leaves."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------- 5: used directory
def test_new_run_in_used_directory_is_refused_and_leaves_it_untouched(tiny_dir, tmp_path):
    out = tmp_path / "run"
    trained(tiny_dir, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    proc = cli("train", *overrides(tiny_dir, out))
    line = one_line_error(proc, "train", str(out), "--resume", "--overwrite")
    assert "another run" in line
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # nothing pruned, no metrics overwritten


def test_overwrite_replaces_the_run_and_keeps_foreign_files(tiny_dir, tmp_path):
    out = tmp_path / "run"
    old = trained(tiny_dir, out, "train.steps=2", "log.save_every=1", "log.keep_checkpoints=3")
    old_id = json.loads((out / "run.json").read_text())["run_id"]
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "README").write_text("mine too")
    new = build_trainer(config(tiny_dir, out), overwrite=True)
    assert old.run_id == old_id != new.run_id
    new.train()
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_000001"]
    assert (ckpts / "latest").read_text() == "step_000001"
    assert (out / "notes.txt").read_text() == "mine" and (ckpts / "README").read_text() == "mine too"
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    run = json.loads((out / "run.json").read_text())
    assert run["run_id"] == new.run_id and run["resumes"] == []
    assert ckpt.read_state(ckpts / "step_000001")["run_id"] == new.run_id  # the checkpoint names its run


def test_overwrite_never_clears_a_directory_that_is_not_a_run(tiny_dir, tmp_path):
    from skpo.training.run_dir import RunDirError

    out = tmp_path / "project"
    out.mkdir()
    (out / "config.yaml").write_text("my: own file\n")
    (out / "metrics.jsonl").write_text('{"mine": 1}\n')
    for overwrite in (False, True):
        with pytest.raises(RunDirError, match="not a skpo run directory"):
            build_trainer(config(tiny_dir, out), overwrite=overwrite)
    assert (out / "config.yaml").read_text() == "my: own file\n"
    assert (out / "metrics.jsonl").read_text() == '{"mine": 1}\n'


def test_resume_and_eval_pass_over_a_checkpoint_of_another_run(tiny_dir, tmp_path, caplog):
    from skpo.commands.evaluate import resolve_model_dir

    other, mine = tmp_path / "other", tmp_path / "mine"
    trained(tiny_dir, other, "train.steps=2")
    trained(tiny_dir, mine)
    # a higher step of another run lands in this run's folder (a copy, an old mixed directory)
    shutil.copytree(other / "checkpoints" / "step_000002", mine / "checkpoints" / "step_000002")
    (mine / "checkpoints" / "latest").write_text("step_000002")
    with caplog.at_level(logging.WARNING, logger="skpo"):
        assert resolve_model_dir(str(mine)) == mine / "checkpoints" / "step_000001" / "model"
        resumed = build_trainer(config(tiny_dir, mine), resume=True)
    assert resumed.state.step == 1
    assert "belongs to run" in caplog.text and "step_000002" in caplog.text
    resumed.close()


# ----------------------------------------------------------------------------- 6: lock
def test_second_writer_fails_at_once_naming_the_directory_and_holder(tiny_dir, tmp_path):
    out = tmp_path / "run"
    holder = textwrap.dedent(f"""
        import time
        from skpo.config import load_config
        from skpo.training.setup import build_trainer
        trainer = build_trainer(load_config(None, {overrides(tiny_dir, out)!r}))
        print("READY", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        before = sorted(p.name for p in out.iterdir())
        # the dangerous case: a second writer that would clear the directory
        second = cli("train", "--overwrite", *overrides(tiny_dir, out))
        one_line_error(second, "train", str(out), f"pid {proc.pid}", "in use")
        assert sorted(p.name for p in out.iterdir()) == before and (out / "run.json").is_file()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    from skpo.training.run_dir import RunLock

    RunLock(out).acquire().release()  # a crashed holder's lock is gone with it


# ----------------------------------------------------------------------------- 7: resume config
@pytest.mark.slow(reason="the comparison runs in the quick test_resume_config_rules and its one-line error path in the quick test_user_errors_are_one_line_with_exit_2")
def test_resume_refuses_changes_that_alter_the_math_naming_each(tiny_dir, tmp_path):
    out = tmp_path / "run"
    trained(tiny_dir, out)
    cfg_before = (out / "config.yaml").read_text()
    proc = cli("train", "--resume", *overrides(tiny_dir, out, "train.lr=0.002", "train.method=dapo",
                                               "rollout.temperature=0.7", "train.steps=2"))
    line = one_line_error(proc, "train", "train.lr: 0.001 → 0.002", 'train.method: "grpo" → "dapo"',
                          "rollout.temperature: 1.0 → 0.7")
    assert "train.steps" not in line.split("allowed on resume")[0]  # allowed under a constant schedule
    assert (out / "config.yaml").read_text() == cfg_before


def test_resume_config_rules():
    from skpo.config import RunConfig
    from skpo.training.run_dir import config_changes

    base = RunConfig().model_dump(mode="json")

    def changed(**sections):
        new = json.loads(json.dumps(base))
        for dotted, value in sections.items():
            section, key = dotted.split("__")
            new[section][key] = value
        return config_changes(base, new)

    allowed, refused = changed(train__steps=400, train__micro_batch_tokens=64, eval__k=8, log__save_every=5,
                               reward__workers=2, log__out_dir="elsewhere")
    assert refused == {} and set(allowed) == {"train.steps", "train.micro_batch_tokens", "eval.k", "log.save_every",
                                              "reward.workers"}  # out_dir names the directory: not compared
    for key, value in [("train__lr", 1e-4), ("train__seed", 3), ("train__prompts_per_step", 8), ("model__dtype", "bfloat16"),
                       ("rollout__max_new_tokens", 32), ("data__task", "jsonl"), ("reward__math_timeout_s", 1.0),
                       ("train__warmup_steps", 2), ("train__mini_batches", 2)]:
        assert list(changed(**{key: value})[1]) == [key.replace("__", ".")], key
    cosine = json.loads(json.dumps(base))
    cosine["train"]["lr_schedule"] = "cosine"
    longer = json.loads(json.dumps(cosine))
    longer["train"]["steps"] = 400
    assert config_changes(cosine, longer) == ({}, {"train.steps": [200, 400]})  # the schedule depends on it


def test_resume_with_allowed_changes_records_them_and_the_effective_config(tiny_dir, tmp_path):
    import yaml

    out = tmp_path / "run"
    first = trained(tiny_dir, out)
    resumed = build_trainer(config(tiny_dir, out, "train.steps=2", "log.keep_checkpoints=3"), resume=True)
    resumed.train()
    assert resumed.run_id == first.run_id
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["steps"] == 2 and saved["log"]["keep_checkpoints"] == 3
    run = json.loads((out / "run.json").read_text())
    assert run["run_id"] == first.run_id
    [record] = run["resumes"]
    assert record["step"] == 1 and record["checkpoint"] == "step_000001"
    assert record["changed"] == {"train.steps": [1, 2], "log.keep_checkpoints": [2, 3]}
    assert ckpt.read_state(out / "checkpoints" / "step_000002")["config"]["train"]["steps"] == 2


# ----------------------------------------------------------------------------- 8: verification
def test_truncated_weights_fall_back_to_the_newest_intact_checkpoint(tiny_dir, tmp_path, caplog):
    from skpo.commands.evaluate import resolve_model_dir

    out = tmp_path / "run"
    trained(tiny_dir, out, "train.steps=2", "log.save_every=1")
    damage(out / "checkpoints" / "step_000002" / "model" / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="skpo"):
        assert resolve_model_dir(str(out)) == out / "checkpoints" / "step_000001" / "model"
        resumed = build_trainer(config(tiny_dir, out, "train.steps=2", "log.save_every=1"), resume=True)
    assert resumed.state.step == 1
    warning = next(r.getMessage() for r in caplog.records if "step_000002" in r.getMessage())
    assert "model/model.safetensors" in warning and "step_000001" in warning
    resumed.train()  # redoes step 2 and replaces the damaged checkpoint
    ckpt.verify_checkpoint(out / "checkpoints" / "step_000002")
    skipped = json.loads((out / "run.json").read_text())["resumes"][0]["skipped"]
    assert [s["checkpoint"] for s in skipped] == ["step_000002"]


def test_no_intact_checkpoint_is_one_line_naming_the_files(tiny_dir, tmp_path, capsys):
    from skpo.cli import main

    out = tmp_path / "run"
    trained(tiny_dir, out, "train.steps=2", "log.save_every=1")
    damage(out / "checkpoints" / "step_000002" / "model" / "model.safetensors")
    with (out / "checkpoints" / "step_000001" / "optimizer.pt").open("ab") as f:
        f.write(b"x")
    one_line_error(cli("train", "--resume", *overrides(tiny_dir, out, "train.steps=2")), "train",
                   "no intact checkpoint", "step_000002: model/model.safetensors", "step_000001: optimizer.pt")
    # the same one-line path in-process (the subprocess above shows it is what the shell sees)
    for model, needles in ((out, ("no intact checkpoint", "model/model.safetensors")),
                           (out / "checkpoints" / "step_000002" / "model", ("step_000002: model/model.safetensors",))):
        capsys.readouterr()
        code = main(["eval", "--model", str(model)])
        one_line_error(subprocess.CompletedProcess([], code, "", capsys.readouterr().err), "eval", *needles)


# ----------------------------------------------------------------------------- 9: disk full
@pytest.mark.parametrize("how", ["oserror", "safetensors"])
def test_disk_full_during_save_says_so_and_cleans_up(tiny_dir, tmp_path, monkeypatch, how):
    out = tmp_path / "run"
    trainer = trained(tiny_dir, out)
    good = ckpt.latest_checkpoint(out)
    trainer.state.step = 2
    if how == "oserror":  # a Python write: OSError with errno ENOSPC
        real = torch.save

        def save(obj, f, *a, **k):
            if str(f).endswith("optimizer.pt"):
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
            return real(obj, f, *a, **k)

        monkeypatch.setattr(ckpt.torch, "save", save)
    else:  # safetensors' Rust writer: the errno only in the text
        monkeypatch.setattr(type(trainer.policy), "save_pretrained", lambda self, *a, **k: (_ for _ in ()).throw(
            RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")))
    with pytest.raises(Exception) as err:
        trainer.save()
    message = str(err.value)
    assert "disk full" in message and str(out / "checkpoints") in message and "step_000002" in message
    assert type(err.value).__name__ == "DiskFullError" and isinstance(err.value, ckpt.CheckpointError)
    assert "needs about" in message and "MiB" in message and "free" in message
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the partial checkpoint is gone
    assert ckpt.latest_checkpoint(out) == good


def test_leftovers_of_a_crashed_save_are_removed_at_the_next_start(tiny_dir, tmp_path):
    out = tmp_path / "run"
    trained(tiny_dir, out)
    partial = out / "checkpoints" / ".tmp-step_000002-4242"
    (partial / "model").mkdir(parents=True)
    (partial / "model" / "model.safetensors").write_bytes(b"\0" * 1000)
    (out / "checkpoints" / ".latest.tmp").write_text("step_000002")
    resumed = build_trainer(config(tiny_dir, out, "train.steps=2"), resume=True)
    assert not partial.exists() and not (out / "checkpoints" / ".latest.tmp").exists()  # before any save
    resumed.close()


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs {where}"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow(reason="the disk-full path (message, clean-up) runs in the quick test_disk_full_during_save_says_so_and_cleans_up")
def test_disk_full_for_real_on_a_small_tmpfs(tiny_dir, tmp_path):
    """A 3 MiB tmpfs (private mount namespace): the run starts, the first checkpoint (~13 MiB)
    does not fit; one line saying so, and no temporary folder left on the full disk."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here (no unprivileged user namespaces)")
    out = mnt / "run"
    args = " ".join(f"'{a}'" for a in overrides(tiny_dir, out))
    script = (f"mount -t tmpfs -o size=3m tmpfs {mnt} && cd {os.getcwd()} && "
              f"{sys.executable} -m skpo.cli train {args}; echo \"rc=$?\"; ls -A {out}/checkpoints")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=180)
    assert "rc=2" in proc.stdout, (proc.stdout, proc.stderr)
    line = one_line_error(subprocess.CompletedProcess([], 2, "", proc.stderr), "train", "disk full", "step_000001",
                          str(out / "checkpoints"), "needs about")
    assert "MiB is free" in line
    assert ".tmp-" not in proc.stdout.split("rc=2", 1)[1]


# ----------------------------------------------------------------------------- 10: one-line errors
def _rows(tmp_path: Path, n: int, offset: int = 0) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i}+{i}=", "final": str(2 * i)}) + "\n"
                            for i in range(offset, offset + n)))
    return path


def test_resume_on_changed_training_data_is_refused_or_recorded(tiny_dir, tmp_path, capsys):
    """The run.json of a run on a data file holds its fingerprint; the file rewritten and grown
    from 40 rows to 50 makes --resume (and --check --resume) stop with the difference, and
    --allow-data-change go on with both fingerprints recorded."""
    import hashlib

    from skpo.cli import main

    out, data = tmp_path / "run", _rows(tmp_path, 40)
    args = overrides(tiny_dir, out, f"data.path={data}", "data.answer_column=final", "data.reward=math")
    trained(tiny_dir, out, *args[-3:])
    size = data.stat().st_size
    before = {"path": str(data.resolve()), "bytes": size, "rows": 40, "hashed": "full",
              "sha256": hashlib.sha256(f"\0{size}\0".encode() + hashlib.sha256(data.read_bytes()).digest()).hexdigest()}
    assert json.loads((out / "run.json").read_text())["data"] == before

    _rows(tmp_path, 50, offset=7)  # rewritten and grown
    again = [*args, "train.steps=2"]
    for argv in (["train", "--resume", *again], ["train", "--check", "--resume", *again]):
        capsys.readouterr()
        code = main(argv)
        one_line_error(subprocess.CompletedProcess([], code, "", capsys.readouterr().err), "train",
                       f"training data of {out} changed", f"bytes {size} → {data.stat().st_size}", "rows 40 → 50",
                       f"sha256 {before['sha256'][:12]}", "--allow-data-change")
    assert json.loads((out / "run.json").read_text())["data"] == before  # nothing recorded by a refusal

    capsys.readouterr()
    assert main(["train", "--check", "--resume", "--allow-data-change", *again]) == 0
    assert "--allow-data-change: the training data changed" in capsys.readouterr().out
    resumed = build_trainer(load_config(None, again), resume=True, allow_data_change=True)
    resumed.train()
    run = json.loads((out / "run.json").read_text())
    [record] = run["resumes"]
    assert record["data_changed"]["before"] == before
    assert record["data_changed"]["now"] == run["data"] and run["data"]["rows"] == 50
    assert resumed.state.step == 2


def test_data_fingerprint_of_large_files_and_folders(tmp_path, monkeypatch):
    """Above the whole-file limit a file is hashed by its size, first and last MiB and 16
    sampled blocks; a folder by each file's name, size and hash."""
    from skpo.training import run_dir

    monkeypatch.setattr(run_dir, "FULL_HASH_BYTES", 3 * 2**20)
    big = tmp_path / "big.jsonl"
    content = bytearray(os.urandom(6 * 2**20))
    big.write_bytes(content)
    first = run_dir.data_fingerprint(big, rows=10)
    assert first["hashed"] == "sampled" and first["bytes"] == 6 * 2**20
    step = (len(content) - 2 * run_dir.EDGE_BYTES) // (run_dir.SAMPLES + 1)
    for where, seen in ((10, True), (len(content) - 10, True), (run_dir.EDGE_BYTES + step + 5, True),
                        (run_dir.EDGE_BYTES + step + run_dir.SAMPLE_BYTES + 5, False)):  # the last: between samples
        changed = bytearray(content)
        changed[where] ^= 0xFF
        big.write_bytes(changed)
        assert (run_dir.data_fingerprint(big, rows=10)["sha256"] != first["sha256"]) is seen, where
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_text("1\n")
    (folder / "b.jsonl").write_text("2\n")
    shards = run_dir.data_fingerprint(folder, rows=2)
    assert shards["hashed"] == "full" and shards["bytes"] == 4
    (folder / "b.jsonl").rename(folder / "c.jsonl")
    assert run_dir.data_fingerprint(folder, rows=2)["sha256"] != shards["sha256"]
    assert run_dir.data_changes(shards, {**shards, "path": "/elsewhere"}) == {}  # moved, same content
    assert run_dir.data_changes(None, shards) == {}  # a run from before fingerprints


def test_user_errors_are_one_line_with_exit_2(tiny_dir, tmp_path, capsys):
    from skpo.cli import main

    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    one_line_error(cli("train", *overrides(tiny_dir, tmp_path / "a", "data.task=jsonl", f"data.path={data}")),
                   "train", f"{data}: row 2 (line 2): missing key 'answer'")
    # the same one-line path in-process (the subprocess above shows it is what the shell sees)
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, needles in ((["train", "--resume", *overrides(tiny_dir, empty)], ("--resume", str(empty / "checkpoints"))),
                          (["train", "train.lr=fast", "train.stepz=3"], ("train.lr", "train.stepz")),
                          (["main", "--config", str(tmp_path / "missing.yaml")], ("missing.yaml",))):
        capsys.readouterr()
        code = main(argv)
        one_line_error(subprocess.CompletedProcess([], code, "", capsys.readouterr().err), argv[0], *needles)


@pytest.mark.slow(reason="the error is reported in-process by the quick test_user_errors_are_one_line_with_exit_2; "
                         "this shows the traceback a real process prints under --debug / SKPO_DEBUG=1")
def test_debug_shows_the_traceback_of_a_user_error(tiny_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for debug_args, env in ((["--debug"], None), ([], {"SKPO_DEBUG": "1"})):
        proc = cli(*debug_args, "train", "--resume", *overrides(tiny_dir, empty), env=env)
        assert proc.returncode == 1 and "Traceback" in proc.stderr and "NoCheckpointError" in proc.stderr


@pytest.mark.slow(reason="the metrics repair runs in the quick test_a_torn_last_metrics_line_is_dropped (in-process) and "
                         "resume in the quick test_a_stop_signal_saves_resumes_exactly_and_cuts_an_evaluation_short")
def test_torn_last_metrics_line_is_dropped_on_resume(tiny_dir, tmp_path):
    out = tmp_path / "run"
    trained(tiny_dir, out)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "reward/me')  # a crash in the middle of a write
    proc = cli("train", "--resume", *overrides(tiny_dir, out, "train.steps=2"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "metrics.jsonl: line 2 is incomplete" in proc.stderr
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ----------------------------------------------------------------------------- 11: signals
def _signalled_run(tiny_dir, out, stderr_path: Path, *extra) -> subprocess.Popen:
    """``skpo train`` in a subprocess that announces step index 1 (``MID``) and waits there
    until a signal has reached the trainer's handler (``GOT``)."""
    script = textwrap.dedent(f"""
        import sys, time
        from skpo import cli
        from skpo.training.trainer import Trainer
        got = []
        try:
            from skpo.training import signals
        except ImportError:  # a tree without signal handling: the default action ends the child
            pass
        else:
            real_handle = signals.StopOnSignals._handle
            def handle(self, signum, frame):
                real_handle(self, signum, frame)  # first: a second signal must find the first recorded
                got.append(signum)
                print("GOT", flush=True)
            signals.StopOnSignals._handle = handle
        real_step = Trainer.train_step
        def train_step(self, step):
            if step == 1:
                print("MID", flush=True)
                deadline = time.time() + 60
                while not got and time.time() < deadline:
                    time.sleep(0.01)
            return real_step(self, step)
        Trainer.train_step = train_step
        sys.exit(cli.main(["train", *{overrides(tiny_dir, out, *extra)!r}]))
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=stderr_path.open("w"),
                            text=True)


def _wait_for(proc: subprocess.Popen, word: str) -> None:
    for line in proc.stdout:
        if line.strip() == word:
            return
    raise AssertionError(f"the child ended before printing {word}")


@pytest.mark.slow(reason="the same stop, save and exact resume run in-process in the quick "
                         "test_a_stop_signal_saves_resumes_exactly_and_cuts_an_evaluation_short; this sends a real "
                         "SIGTERM to a CLI process and checks its exit status and last line")
def test_sigterm_saves_and_resume_continues_bit_for_bit(tiny_dir, tmp_path):
    full = trained(tiny_dir, tmp_path / "full", "train.steps=3")
    out, err = tmp_path / "split", tmp_path / "stderr.txt"
    proc = _signalled_run(tiny_dir, out, err, "train.steps=3")
    try:
        _wait_for(proc, "MID")
        proc.send_signal(signal.SIGTERM)  # in the middle of step 2 (index 1)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err.read_text()
    last = err.read_text().strip().splitlines()[-1]
    assert last == (f"skpo train: stopped by SIGTERM after step 2; saved {out / 'checkpoints' / 'step_000002'}; "
                    "continue with --resume")
    assert "Traceback" not in err.read_text()
    ckpt.verify_checkpoint(out / "checkpoints" / "step_000002")
    resumed = build_trainer(config(tiny_dir, out, "train.steps=3"), resume=True)
    assert resumed.state.step == 2
    resumed.train()
    a, b = weights(full.policy), weights(resumed.policy)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.slow(reason="the signal handler and the stop path run in the quick "
                         "test_a_stop_signal_saves_resumes_exactly_and_cuts_an_evaluation_short")
def test_second_signal_aborts_at_once_without_saving(tiny_dir, tmp_path):
    out, err = tmp_path / "run", tmp_path / "stderr.txt"
    proc = _signalled_run(tiny_dir, out, err, "train.steps=3")
    try:
        _wait_for(proc, "MID")
        proc.send_signal(signal.SIGINT)
        _wait_for(proc, "GOT")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM  # killed by the signal itself, not a clean exit
    assert "second SIGTERM: aborting without saving" in err.read_text()
    assert not list(out.glob("checkpoints/step_*"))  # nothing saved after the first signal


def test_a_torn_last_metrics_line_is_dropped(tmp_path, caplog):
    """What a crash in the middle of a write leaves is dropped on resume, with a warning; the lines
    after the resumed step go too; a damaged line elsewhere is an error naming file and line."""
    from skpo.jsonl import JsonlError
    from skpo.training.logging import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a": 3}\n{"step": 4, "rew')
    with caplog.at_level(logging.WARNING, logger="skpo"):
        assert truncate_metrics(path, 2) == 2
    assert "line 4 is incomplete" in caplog.text
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(JsonlError, match=r"metrics\.jsonl: line 2"):
        truncate_metrics(path, 3)


def test_resume_compares_the_resolved_method_not_the_overrides(tiny_dir, tmp_path):
    """A no-op override (SKPO's upstream weight is 0.5 already) resumes; a real one is refused
    showing the old and new resolved values — in --check and at start."""
    from skpo.commands.train import main as train_main
    from skpo.training.run_dir import ResumeConfigError

    out = tmp_path / "run"
    base = ["train.method=skpo", "method.group_size=2", "train.prompts_per_step=2", "rollout.max_new_tokens=16",
            "train.lr=1e-3", "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=20", "eval.every=0",
            f"log.out_dir={out}", f"model.path={tiny_dir}"]
    build_trainer(load_config(None, [*base, "train.steps=1"])).train()
    noop = [*base, "train.steps=2", "method.terms.upstream.weight=0.5"]
    assert train_main(["--check", "--resume", *noop]) == 0
    resumed = build_trainer(load_config(None, noop), resume=True)
    assert resumed.state.step == 1
    resumed.close()
    changed = [*base, "train.steps=2", "method.terms.upstream.weight=0.3"]
    with pytest.raises(ResumeConfigError, match=r"method\.terms\.upstream\.weight: 0\.5 → 0\.3"):
        build_trainer(load_config(None, changed), resume=True)
    assert train_main(["--check", "--resume", *changed]) == 2


OLD_RUNS = yaml.safe_load((Path(__file__).parent / "data" / "runs_before_method_home.yaml").read_text())


@pytest.mark.parametrize("name", sorted(OLD_RUNS))
def test_records_saved_with_the_earlier_method_keys_pass_the_resume_checks(name, tmp_path):
    """A run saved when the run config still held method keys (``rollout.group_size``,
    ``rollout.skpo.*``, ``rollout.mc_k``, ``train.kl_coef``, …; tests/data/runs_before_method_home.yaml,
    from runs of that release) passes the resume checks against its command line, given again as
    it was or in the new spelling, and nothing in them is a refused change."""
    from skpo.methods import method_to_document
    from skpo.training.run_dir import check_resolved_method, check_resume_config

    old = OLD_RUNS[name]
    saved = {**old["config"], "log": {**old["config"]["log"], "out_dir": str(tmp_path)}}
    from skpo.config import OLD_SPELLINGS

    # the same settings in the new spelling (dapo's rollout.skpo.skip applied to nothing: left out)
    new_spelling = [f"{OLD_SPELLINGS.get(k, k)}={v}" for k, _, v in (o.partition("=") for o in old["overrides"])
                    if not (name == "dapo" and k == "rollout.skpo.skip")]
    for given in (old["overrides"], new_spelling):
        cfg = load_config(None, [*given, f"log.out_dir={tmp_path}", "train.steps=2"])
        assert check_resume_config(saved, cfg.model_dump(mode="json"), tmp_path) == {"train.steps": [1, 2]}
        check_resolved_method(old["method_resolved"], json.loads(json.dumps(method_to_document(cfg.resolved().method))),
                              tmp_path)


def test_a_run_saved_with_the_earlier_method_keys_resumes(tiny_dir, tmp_path):
    """End to end: a checkpoint whose saved config and run record are those of a run of the
    earlier layout (its state.json config and run.json's resolved method replaced by the
    recorded ones) resumes, in --check and at start, with the run's own command line."""
    from skpo.commands.train import main as train_main
    from skpo.models.manifest import sha256_file

    old, out = OLD_RUNS["skpo"], tmp_path / "run"
    given = [*old["overrides"], f"model.path={tiny_dir}", f"log.out_dir={out}"]
    build_trainer(load_config(None, given)).train()
    state_path = out / "checkpoints" / "step_000001" / "state.json"
    state = json.loads(state_path.read_text())
    state["config"] = {**old["config"], "model": {**old["config"]["model"], "path": tiny_dir},
                       "log": {**old["config"]["log"], "out_dir": str(out)}}
    state_path.write_text(json.dumps(state))
    manifest_path = state_path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["state.json"] = {"size": state_path.stat().st_size, "sha256": sha256_file(state_path)}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    run = json.loads((out / "run.json").read_text())
    assert run["method_resolved"] == old["method_resolved"]  # what this release resolves, too
    (out / "run.json").write_text(json.dumps({**run, "method_resolved": old["method_resolved"]}))
    again = [*given, "train.steps=2"]
    assert train_main(["--check", "--resume", *again]) == 0
    resumed = build_trainer(load_config(None, again), resume=True)
    assert resumed.state.step == 1
    resumed.train()
    assert resumed.state.step == 2


@pytest.mark.slow(reason="every quick test that saves goes through the save's lock; this races two processes on it")
def test_saves_into_one_directory_take_turns(tiny_dir, tmp_path):
    """Two processes calling the checkpoint save function on one run directory directly (no run
    directory lock: not through ``skpo train``) queue on the save's own lock: every save completes
    and verifies, none removes the other's checkpoint in the making."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys, torch
        from skpo.models.loading import load_policy, load_tokenizer
        from skpo.training import checkpoint as ckpt
        model, tok = load_policy({tiny_dir!r}), load_tokenizer({tiny_dir!r})
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        base = int(sys.argv[1])
        for i in range(5):
            ckpt.save_checkpoint({str(out)!r}, base + i, model, tok, opt, sched, {{"step": base + i}}, keep=20)
        print("saved", flush=True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(base)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for base in (10, 20)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert all(o[0].strip() == "saved" for o in outs)  # every one of the 10 saves returned
    steps = sorted((out / "checkpoints").glob("step_*"))
    assert steps and not list((out / "checkpoints").glob(".tmp-*"))
    for step_dir in steps:  # (a save at an earlier step drops later ones: one run's timeline)
        ckpt.verify_checkpoint(step_dir)
    assert (out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()).is_dir()


@pytest.mark.slow(reason="the evaluation cut short runs in-process in the quick "
                         "test_a_stop_signal_saves_resumes_exactly_and_cuts_an_evaluation_short")
def test_sigterm_during_evaluation_stops_within_one_batch_and_saves(tiny_dir, tmp_path):
    """A signal that arrives while the in-training evaluation runs ends it after the batch in
    flight (no further batch is generated), the step is saved with its evaluation recorded as
    interrupted, and the run resumes from there."""
    out, err = tmp_path / "run", tmp_path / "stderr.txt"
    args = overrides(tiny_dir, out, "train.steps=3", "eval.every=1", "eval.benchmarks=[arith]", "eval.limit=64",
                     "eval.k=4", "rollout.engine_batch_size=16")
    script = textwrap.dedent(f"""
        import sys, time
        from skpo import cli
        from skpo.engines import hf_engine
        from skpo.training import signals
        got, after = [], []
        real_handle = signals.StopOnSignals._handle
        def handle(self, signum, frame):
            real_handle(self, signum, frame)
            got.append(signum)
        signals.StopOnSignals._handle = handle
        real_generate = hf_engine.HFEngine.generate
        def generate(self, prompts, n, params, max_new_tokens=None):
            evaluating = n == 4  # the evaluation samples k=4, training 2 per prompt
            if evaluating and got:
                after.append(1)
                print("AFTER", flush=True)
            out = real_generate(self, prompts, n, params, max_new_tokens=max_new_tokens)
            if evaluating and not got:
                print("EVAL", flush=True)
                deadline = time.time() + 60
                while not got and time.time() < deadline:
                    time.sleep(0.01)
            return out
        hf_engine.HFEngine.generate = generate
        sys.exit(cli.main(["train", *{args!r}]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=err.open("w"), text=True)
    try:
        _wait_for(proc, "EVAL")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err.read_text()
    assert "AFTER" not in rest  # no evaluation batch was generated once the signal had arrived
    assert err.read_text().strip().splitlines()[-1].startswith("skpo train: stopped by SIGTERM after step 1; saved")
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 1 and last["eval/interrupted"] == 1.0 and "eval/arith/avg@4" not in last
    resumed = build_trainer(config(tiny_dir, out, "train.steps=3", "eval.every=0"), resume=True)
    assert resumed.state.step == 1
    resumed.close()


def test_a_stop_signal_saves_resumes_exactly_and_cuts_an_evaluation_short(tiny_dir, tmp_path, monkeypatch):
    """In-process, the path a SIGTERM takes (the subprocess tests send real ones): a signal during
    step 2 saves after it and resumes to the weights of an uninterrupted run; a signal during the
    evaluation of step 1 ends it after the batch in flight and records it as interrupted."""
    from skpo.engines import hf_engine
    from skpo.errors import TrainingInterrupted
    from skpo.training.trainer import Trainer

    full = trained(tiny_dir, tmp_path / "full", "train.steps=3")
    real_step = Trainer.train_step

    def signalled_step(self, step):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler records it; the step finishes
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "train_step", signalled_step)
    split = build_trainer(config(tiny_dir, tmp_path / "split", "train.steps=3"))
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after step 2"):
        split.train()
    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = build_trainer(config(tiny_dir, tmp_path / "split", "train.steps=3"), resume=True)
    assert resumed.state.step == 2
    resumed.train()
    a, b = weights(full.policy), weights(resumed.policy)
    assert all(torch.equal(a[k], b[k]) for k in a)

    calls = []
    real_generate = hf_engine.HFEngine.generate

    def generate(self, prompts, n, params, max_new_tokens=None):
        if n == 4:  # the evaluation (k=4); training samples 2 per prompt
            calls.append(len(prompts))
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return real_generate(self, prompts, n, params, max_new_tokens=max_new_tokens)

    monkeypatch.setattr(hf_engine.HFEngine, "generate", generate)
    out = tmp_path / "evaluating"
    trainer = build_trainer(config(tiny_dir, out, "train.steps=3", "eval.every=1", "eval.limit=64", "eval.k=4",
                                   "rollout.engine_batch_size=16"))
    with pytest.raises(TrainingInterrupted, match="after step 1"):
        trainer.train()
    assert len(calls) == 1  # no batch after the one in flight
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 1 and last["eval/interrupted"] == 1.0


# ----------------------------------------------------------------------------- smaller ones
def test_a_model_folder_with_truncated_weights_is_one_line(tiny_dir, tmp_path, capsys):
    """``skpo train``, ``skpo train --check`` and ``skpo eval`` on a model folder whose
    safetensors file was cut short: one line naming the file (it was a traceback, and --check passed)."""
    from skpo.cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    damage(model / "model.safetensors")
    for argv in (["train", *overrides(model, tmp_path / "a")], ["train", "--check", *overrides(model, tmp_path / "b")],
                 ["eval", "--model", str(model), "--limit", "2", "--k", "1", "--no-progress"]):
        capsys.readouterr()
        code = main(argv)
        one_line_error(subprocess.CompletedProcess([], code, "", capsys.readouterr().err), argv[0],
                       f"{model / 'model.safetensors'}: not a whole safetensors file")
    assert not (tmp_path / "a").exists() or not (tmp_path / "a" / "run.json").exists()


def test_a_dangling_latest_falls_back_with_a_warning(tiny_dir, tmp_path, caplog):
    from skpo.commands.evaluate import resolve_model_dir

    out = tmp_path / "run"
    trained(tiny_dir, out, "train.steps=2", "log.save_every=1")
    shutil.rmtree(out / "checkpoints" / "step_000002")  # what `latest` names is gone
    with caplog.at_level(logging.WARNING, logger="skpo"):
        assert resolve_model_dir(str(out)) == out / "checkpoints" / "step_000001" / "model"
    [warning] = [r.getMessage() for r in caplog.records if "latest" in r.getMessage()]
    assert "'step_000002', which is not a checkpoint folder here" in warning and "using" in warning
    assert warning.endswith(f"using {out / 'checkpoints' / 'step_000001'} instead")
    (out / "checkpoints" / "latest").unlink()
    (out / "checkpoints" / "latest").symlink_to("step_000009")  # a link laid by hand, to nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="skpo"):
        path, skipped = ckpt.find_checkpoint(out)
    assert path == out / "checkpoints" / "step_000001" and [p.name for p, _ in skipped] == ["latest"]
    assert "step_000009" in caplog.text


class _CountingEngine:
    """The evaluation's engine, counting its batches; the first one sends this process SIGTERM."""

    batches = 0

    def __new__(cls, *args, **kwargs):
        from skpo.engines.hf_engine import HFEngine

        class Counting(HFEngine):
            def _generate_chunk(self, prompts, rows, params):
                _CountingEngine.batches += 1
                if _CountingEngine.batches == 1:
                    os.kill(os.getpid(), signal.SIGTERM)  # recorded by the handler; this batch finishes
                return super()._generate_chunk(prompts, rows, params)

        return Counting(*args, **kwargs)


def test_a_signal_stops_an_evaluation_within_one_engine_batch(tiny_dir, tmp_path, monkeypatch, capsys):
    """Each engine call of an evaluation holds 4 batches here (16 rows of 8 prompts × k=4 per
    batch of 8): a signal during the first one ends it after that batch — in training (the step
    is saved, its evaluation recorded as interrupted) and in ``skpo eval`` (one line, 128 + 15)."""
    from skpo.cli import main
    from skpo.errors import TrainingInterrupted
    from skpo.evaluation import runner

    monkeypatch.setattr(runner, "HFEngine", _CountingEngine)
    out = tmp_path / "run"
    trainer = build_trainer(config(tiny_dir, out, "train.steps=2", "eval.every=1", "eval.limit=16", "eval.k=4",
                                   "rollout.engine_batch_size=8"))
    _CountingEngine.batches = 0
    with pytest.raises(TrainingInterrupted, match="after step 1"):
        trainer.train()
    assert _CountingEngine.batches == 1
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 1 and last["eval/interrupted"] == 1.0

    _CountingEngine.batches = 0
    capsys.readouterr()
    code = main(["eval", "--model", tiny_dir, "--limit", "16", "--k", "4", "--batch-size", "8", "--no-progress",
                 "--out", str(tmp_path / "results.json")])
    assert code == 128 + signal.SIGTERM and _CountingEngine.batches == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("skpo eval: stopped by SIGTERM: arith: stopped after 0 of 16 problems; nothing written")
    assert not (tmp_path / "results.json").exists()
